//! The network and its weights: [`Classifier`] (load, fold, run), where the weights come
//! from ([`WeightsSource`]), which CPU backend runs it ([`Backend`]), and top-k softmax.
//! Everything here needs Burn; the crate's `inference` feature (on by default) brings it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;

use burn::module::Module;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Tensor, TensorData};

use crate::cache::{self, default_cache_dir};
use crate::classes::IMAGENET_CLASSES;
use crate::googlenet::weights::{PthSource, RandomSource, ZeroSource};
use crate::googlenet::weights::{WEIGHTS_NAME, WEIGHTS_SHA256_PREFIX, WEIGHTS_URL};
use crate::googlenet::{GoogLeNet, NUM_CLASSES, Network};
use crate::preprocess::{self, ImageTensor};

/// The CPU backend that runs the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Backend {
    /// burn-ndarray: the long-standing pure-Rust CPU backend (deprecated upstream in 0.22).
    Ndarray,
    /// burn-flex: upstream's replacement for burn-ndarray in 0.22; about 2.5x faster on
    /// GoogLeNet here (see BENCHMARKS.md), hence the default.
    #[default]
    Flex,
}

impl Backend {
    /// All backends, for tests and benchmarks.
    pub const ALL: [Backend; 2] = [Backend::Ndarray, Backend::Flex];

    fn device(self) -> Device {
        match self {
            #[allow(deprecated)] // still supported in 0.22, and our users asked for it by name
            Backend::Ndarray => Device::ndarray(),
            Backend::Flex => Device::flex(),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Ndarray => "ndarray",
            Backend::Flex => "flex",
        })
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ndarray" => Ok(Backend::Ndarray),
            "flex" => Ok(Backend::Flex),
            other => Err(format!(
                "unknown backend {other:?}: expected \"ndarray\" or \"flex\""
            )),
        }
    }
}

/// Where the weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// torchvision's official `googlenet-1378be20.pth` from the cache directory, downloaded
    /// (and SHA-256 checked) on first use.
    Auto,
    /// A torchvision-format `.pth`, or a Burn-native `.bpk` written by
    /// [`Classifier::save_native`].
    Path(PathBuf),
    /// Seeded, deterministic, untrained weights: for transport and load tests, never for labels.
    Random {
        /// Same seed, same weights, on every machine and version.
        seed: u64,
    },
}

impl FromStr for WeightsSource {
    type Err = String;

    /// `auto`, `random` (seed 0), `random:SEED`, or a path.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" => Err("empty weights source: expected auto, random or a path".to_string()),
            "auto" => Ok(WeightsSource::Auto),
            "random" => Ok(WeightsSource::Random { seed: 0 }),
            _ => match s.strip_prefix("random:") {
                Some(seed) => seed
                    .parse()
                    .map(|seed| WeightsSource::Random { seed })
                    .map_err(|_| format!("bad seed in {s:?}: expected random:INTEGER")),
                None => Ok(WeightsSource::Path(PathBuf::from(s))),
            },
        }
    }
}

impl fmt::Display for WeightsSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WeightsSource::Auto => f.write_str("auto"),
            WeightsSource::Path(p) => write!(f, "{}", p.display()),
            WeightsSource::Random { seed } => write!(f, "random:{seed}"),
        }
    }
}

/// What the loaded weights are, for display next to every answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightsIdentity {
    /// `googlenet-1378be20` for the official weights, `random-seed-N`, or the file's stem.
    pub name: String,
    /// False for random weights: their labels mean nothing and must be shown as untrained.
    pub trained: bool,
    /// SHA-256 of the weights file, when loaded from one.
    pub sha256: Option<String>,
}

/// One of the top-k answers for an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// ImageNet class index, 0..1000.
    pub index: usize,
    /// torchvision's name for the class.
    pub label: &'static str,
    /// Softmax probability over all 1000 classes.
    pub probability: f32,
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The weights file given (a `.pth` or `.bpk` path) does not exist.
    #[error("weights file {path} does not exist")]
    WeightsNotFound {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// The weights file exists but could not be opened or parsed as a PyTorch checkpoint or
    /// a Burn-native `.bpk`.
    #[error("cannot read weights file {path}: {reason}")]
    WeightsUnreadable {
        /// The file that failed.
        path: PathBuf,
        /// The reader's error.
        reason: String,
    },
    /// The weights file lacks a tensor GoogLeNet needs: it is not a torchvision GoogLeNet
    /// checkpoint (or a native copy of one).
    #[error("weights file {path} has no tensor {key:?}: not a torchvision GoogLeNet checkpoint")]
    MissingTensor {
        /// The state-dict key that is missing, e.g. `conv1.conv.weight`.
        key: String,
        /// The file that lacks it.
        path: PathBuf,
    },
    /// A tensor is present but unusable: wrong shape, data that cannot be read (a truncated
    /// file), a non-floating-point type, or a negative batch-norm running variance.
    #[error("bad tensor {key:?} in the weights: {reason}")]
    BadTensor {
        /// The state-dict key of the tensor.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// [`WeightsSource::Auto`] found no verified copy in the cache and could not download one
    /// (network failure, or downloading disabled in [`LoadOptions`]).
    #[error(
        "no GoogLeNet weights: none cached at {cached} and downloading {url} failed ({reason}). \
         Pass --weights PATH with a copy of googlenet-1378be20.pth (or its .bpk), \
         --weights random[:SEED] for untrained weights (labels are meaningless), or \
         --model synthetic to run without a model"
    )]
    WeightsUnavailable {
        /// Where the cached `.pth` was expected.
        cached: PathBuf,
        /// The URL the download was (or would have been) made from.
        url: String,
        /// Why the download failed.
        reason: String,
    },
    /// The downloaded file's SHA-256 does not match torchvision's published one; the file is
    /// deleted, not cached.
    #[error("downloaded {url} has SHA-256 {actual}, expected one starting with {expected_prefix}")]
    Checksum {
        /// Where the file came from.
        url: String,
        /// The hex prefix of the expected digest (torchvision names its files by it).
        expected_prefix: String,
        /// The full hex SHA-256 of what was downloaded.
        actual: String,
    },
    /// Reading, hashing, creating or renaming a file in the weights cache directory failed.
    #[error("cache file {path}: {source}")]
    Cache {
        /// The cache file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// [`WeightsSource::Auto`] needs a cache directory: none was given in [`LoadOptions`] and
    /// the platform has none (on Linux: neither `XDG_CACHE_HOME` nor `HOME` is set).
    #[error("no cache directory: set XDG_CACHE_HOME or HOME, or pass --weights PATH")]
    NoCacheDir,
    /// [`Classifier::save_native`] could not create the directory, write the `.bpk` or rename
    /// it into place.
    #[error("cannot save native weights to {path}: {reason}")]
    Save {
        /// The destination path.
        path: PathBuf,
        /// The underlying error.
        reason: String,
    },
    /// The forward pass produced output that could not be read back, or the wrong number of
    /// logits.
    #[error("inference failed: {0}")]
    Inference(String),
    /// A bug or a poisoned state, e.g. an earlier forward pass panicked while holding the
    /// model; the classifier should be reloaded.
    #[error("internal error: {0}")]
    Internal(String),
}

/// How [`WeightsSource::Auto`] finds its file. `Default` is what the CLI uses.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Cache directory; `None` = [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Where to download from when nothing is cached. Default: [`WEIGHTS_URL`].
    pub url: String,
    /// Whether downloading is allowed at all. Default: true.
    pub download: bool,
    /// Whether to draw a progress bar on stderr while downloading. Default: true
    /// (indicatif hides it when stderr is not a terminal).
    pub progress: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            cache_dir: None,
            url: WEIGHTS_URL.to_string(),
            download: true,
            progress: true,
        }
    }
}

/// GoogLeNet with loaded weights on one backend. `Send + Sync`: calls from several threads
/// are serialized (each forward pass already uses every core).
pub struct Classifier {
    model: Mutex<Network>,
    device: Device,
    backend: Backend,
    identity: WeightsIdentity,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("backend", &self.backend)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Loads the weights onto `backend` with [`LoadOptions::default`].
    pub fn load(source: &WeightsSource, backend: Backend) -> Result<Classifier, ModelError> {
        Self::load_with(source, backend, &LoadOptions::default())
    }

    /// Loads the weights onto `backend`, with explicit cache/download options.
    pub fn load_with(
        source: &WeightsSource,
        backend: Backend,
        options: &LoadOptions,
    ) -> Result<Classifier, ModelError> {
        let device = backend.device();
        let (model, identity) = match source {
            WeightsSource::Random { seed } => {
                let model = GoogLeNet::load(&mut RandomSource { seed: *seed }, &device)?;
                let identity = WeightsIdentity {
                    name: format!("random-seed-{seed}"),
                    trained: false,
                    sha256: None,
                };
                (model, identity)
            }
            WeightsSource::Path(path) => load_path(path, &device)?,
            WeightsSource::Auto => load_auto(options, &device)?,
        };
        let model = Network::new(model, backend == Backend::Flex, &device)?;
        tracing::info!(weights = %identity.name, trained = identity.trained, %backend, "GoogLeNet loaded");
        Ok(Classifier {
            model: Mutex::new(model),
            device,
            backend,
            identity,
        })
    }

    /// What the weights are.
    pub fn identity(&self) -> &WeightsIdentity {
        &self.identity
    }

    /// The backend running the network.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Raw logits `[N][1000]` for `images`, in one forward pass.
    pub fn logits(&self, images: &[ImageTensor]) -> Result<Vec<Vec<f32>>, ModelError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let n = images.len();
        let mut input = Vec::with_capacity(n * ImageTensor::LEN);
        for image in images {
            input.extend_from_slice(image.as_slice());
        }
        let side = preprocess::CROP as usize;
        let input =
            Tensor::<4>::from_data(TensorData::new(input, [n, 3, side, side]), &self.device);
        let model = self
            .model
            .lock()
            .map_err(|_| ModelError::Internal("a previous inference panicked".into()))?;
        let output = model.forward(input);
        drop(model);
        let data = output
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| ModelError::Inference(format!("{e:?}")))?;
        if data.len() != n * NUM_CLASSES {
            return Err(ModelError::Inference(format!(
                "expected {} outputs, got {}",
                n * NUM_CLASSES,
                data.len()
            )));
        }
        Ok(data.chunks(NUM_CLASSES).map(<[f32]>::to_vec).collect())
    }

    /// The `top_k` most probable classes for each image (softmax over all 1000), best first,
    /// from one forward pass over the whole batch. `top_k` is capped at 1000.
    pub fn classify_batch(
        &self,
        images: &[ImageTensor],
        top_k: usize,
    ) -> Result<Vec<Vec<Prediction>>, ModelError> {
        Ok(self
            .logits(images)?
            .iter()
            .map(|logits| top_k_softmax(logits, top_k))
            .collect())
    }

    /// Writes the folded network in Burn's native format (`.bpk`), for fast start with
    /// [`WeightsSource::Path`]. Written to a temporary name and renamed into place.
    pub fn save_native(&self, path: &Path) -> Result<(), ModelError> {
        let model = self
            .model
            .lock()
            .map_err(|_| ModelError::Internal("a previous inference panicked".into()))?;
        save_native(model.stock(), path, &self.identity)
    }
}

/// Softmax probabilities of the `k` largest logits, best first (ties: lower index first).
pub fn top_k_softmax(logits: &[f32], k: usize) -> Vec<Prediction> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f64 = logits.iter().map(|l| f64::from(l - max).exp()).sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b)));
    order
        .into_iter()
        .take(k.min(NUM_CLASSES))
        .map(|index| Prediction {
            index,
            label: IMAGENET_CLASSES.get(index).copied().unwrap_or("?"),
            probability: (f64::from(logits[index] - max).exp() / total) as f32,
        })
        .collect()
}

const NATIVE_EXTENSION: &str = "bpk";
const METADATA_NAME: &str = "glimpse.weights.name";
const METADATA_FORMAT: &str = "glimpse.format";
/// Bumped whenever the folded module layout changes, so stale native copies are rebuilt.
const NATIVE_FORMAT: &str = "googlenet-folded-v1";

fn load_path(path: &Path, device: &Device) -> Result<(GoogLeNet, WeightsIdentity), ModelError> {
    if path.extension().is_some_and(|e| e == NATIVE_EXTENSION) {
        let model = load_native(path, device)?;
        let stem = file_stem(path);
        return Ok((
            model,
            WeightsIdentity {
                name: stem.trim_end_matches(".folded").to_string(),
                trained: true,
                sha256: None,
            },
        ));
    }
    let mut source = PthSource::open(path)?;
    let model = GoogLeNet::load(&mut source, device)?;
    source.finish();
    let sha256 = cache::sha256_file(path).ok();
    let name = match &sha256 {
        Some(d) if d.starts_with(WEIGHTS_SHA256_PREFIX) => WEIGHTS_NAME.to_string(),
        _ => file_stem(path),
    };
    Ok((
        model,
        WeightsIdentity {
            name,
            trained: true,
            sha256,
        },
    ))
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "weights".to_string())
}

fn load_auto(
    options: &LoadOptions,
    device: &Device,
) -> Result<(GoogLeNet, WeightsIdentity), ModelError> {
    let dir = match &options.cache_dir {
        Some(dir) => dir.clone(),
        None => default_cache_dir().ok_or(ModelError::NoCacheDir)?,
    };
    let native = cache::native_path(&dir);
    if native.exists() {
        match load_native(&native, device) {
            Ok(model) => {
                return Ok((
                    model,
                    WeightsIdentity {
                        name: WEIGHTS_NAME.to_string(),
                        trained: true,
                        sha256: cache::read_digest(&dir),
                    },
                ));
            }
            Err(e) => {
                tracing::warn!(path = %native.display(), error = %e, "ignoring unusable native weights copy");
            }
        }
    }
    let (pth, digest) = cache::ensure_pth(&dir, &options.url, options.download, options.progress)?;
    let mut source = PthSource::open(&pth)?;
    let model = GoogLeNet::load(&mut source, device)?;
    source.finish();
    let identity = WeightsIdentity {
        name: WEIGHTS_NAME.to_string(),
        trained: true,
        sha256: Some(digest),
    };
    if let Err(e) = save_native(&model, &native, &identity) {
        tracing::warn!(error = %e, "cannot write the native weights copy; next start re-reads the .pth");
    }
    Ok((model, identity))
}

fn load_native(path: &Path, device: &Device) -> Result<GoogLeNet, ModelError> {
    if !path.exists() {
        return Err(ModelError::WeightsNotFound {
            path: path.to_path_buf(),
        });
    }
    let unreadable = |reason: String| ModelError::WeightsUnreadable {
        path: path.to_path_buf(),
        reason,
    };
    let mut model = GoogLeNet::load(&mut ZeroSource, device)?;
    let mut store = BurnpackStore::from_file(path).auto_extension(false);
    let result = model
        .load_from(&mut store)
        .map_err(|e| unreadable(e.to_string()))?;
    if let Some((key, _)) = result.missing.first() {
        return Err(ModelError::MissingTensor {
            key: key.clone(),
            path: path.to_path_buf(),
        });
    }
    if let Some(e) = result.errors.first() {
        return Err(unreadable(e.to_string()));
    }
    let model = model.to_device(device);
    Ok(model)
}

fn save_native(
    model: &GoogLeNet,
    path: &Path,
    identity: &WeightsIdentity,
) -> Result<(), ModelError> {
    let fail = |reason: String| ModelError::Save {
        path: path.to_path_buf(),
        reason,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
    }
    let tmp = cache::temp_path(path);
    let mut store = BurnpackStore::from_file(&tmp)
        .auto_extension(false)
        .overwrite(true)
        .metadata(METADATA_FORMAT, NATIVE_FORMAT)
        .metadata(METADATA_NAME, identity.name.clone());
    let saved = model
        .save_into(&mut store)
        .map_err(|e| fail(e.to_string()))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string())));
    if saved.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    saved
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ImageError;

    #[test]
    fn public_types_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Classifier>();
        send_sync::<ImageTensor>();
        send_sync::<Prediction>();
        send_sync::<ModelError>();
        send_sync::<ImageError>();
    }

    #[test]
    fn backend_parses_and_prints() {
        for b in Backend::ALL {
            assert_eq!(b.to_string().parse::<Backend>(), Ok(b));
        }
        assert!("cuda".parse::<Backend>().is_err());
        assert_eq!(Backend::default(), Backend::Flex);
    }

    #[test]
    fn weights_source_parses() {
        assert_eq!("auto".parse(), Ok(WeightsSource::Auto));
        assert_eq!("random".parse(), Ok(WeightsSource::Random { seed: 0 }));
        assert_eq!("random:42".parse(), Ok(WeightsSource::Random { seed: 42 }));
        assert!("random:x".parse::<WeightsSource>().is_err());
        assert_eq!(
            "/tmp/w.pth".parse(),
            Ok(WeightsSource::Path(PathBuf::from("/tmp/w.pth")))
        );
    }

    #[test]
    fn softmax_top_k_is_sorted_and_normalized() {
        let mut logits = vec![0.0f32; NUM_CLASSES];
        logits[3] = 5.0;
        logits[7] = 4.0;
        logits[1] = 4.0;
        let top = top_k_softmax(&logits, 3);
        assert_eq!(top.iter().map(|p| p.index).collect::<Vec<_>>(), [3, 1, 7]);
        assert_eq!(top[0].label, IMAGENET_CLASSES[3]);
        let denom = 5f64.exp() + 2.0 * 4f64.exp() + 997.0;
        assert!((f64::from(top[0].probability) - 5f64.exp() / denom).abs() < 1e-6);
        assert!(top_k_softmax(&logits, 5000).len() == NUM_CLASSES);
        let sum: f32 = top_k_softmax(&logits, 1000)
            .iter()
            .map(|p| p.probability)
            .sum();
        assert!((sum - 1.0).abs() < 1e-4);
    }
}
