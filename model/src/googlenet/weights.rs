//! Where GoogLeNet's numbers come from, and the one place that knows torchvision's key names.
//!
//! The network is built by asking a [`TensorSource`] for each tensor by its torchvision
//! state-dict key (`conv1.conv.weight`, `inception3a.branch2.1.bn.running_var`, `fc.bias`…) and
//! the shape GoogLeNet needs. Sources: a torchvision `.pth` ([`PthSource`], read with
//! burn-store's PyTorch reader), seeded random weights ([`RandomSource`]), and zeros
//! ([`ZeroSource`], the skeleton a Burn-native copy is loaded into).
//!
//! Reading tensors by name (rather than letting a store match module paths) keeps every
//! failure specific: a missing key, a wrong shape, a non-float dtype, unreadable bytes or
//! NaNs each fail with the tensor's name, and nothing is ever partially loaded.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use burn::store::pytorch_reader::{DType, PytorchReader};

use crate::ModelError;

/// torchvision's official IMAGENET1K_V1 GoogLeNet weights.
pub const WEIGHTS_URL: &str = "https://download.pytorch.org/models/googlenet-1378be20.pth";
/// File name of the official weights; torchvision names files `<arch>-<sha256 prefix>.pth`.
pub const WEIGHTS_FILE: &str = "googlenet-1378be20.pth";
/// The first 8 hex digits of the official file's SHA-256.
pub const WEIGHTS_SHA256_PREFIX: &str = "1378be20";
/// Identity name of the official weights.
pub const WEIGHTS_NAME: &str = "googlenet-1378be20";

/// BatchNorm epsilon in torchvision's `BasicConv2d` (not PyTorch's default 1e-5).
pub(crate) const BATCH_NORM_EPS: f64 = 1e-3;

/// Keys a torchvision checkpoint may hold that inference does not use: the auxiliary
/// classifiers (training only) and BatchNorm's step counter.
fn is_ignored_key(key: &str) -> bool {
    key.starts_with("aux1.") || key.starts_with("aux2.") || key.ends_with(".num_batches_tracked")
}

/// A provider of torchvision-named float tensors.
pub(crate) trait TensorSource {
    /// The tensor `key`, row-major, which must have exactly `shape`.
    fn tensor(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError>;
}

/// Reads one torchvision `BasicConv2d` (`{prefix}.conv.weight` and `{prefix}.bn.*`) and folds
/// the BatchNorm into the convolution:
/// `w' = w * gamma / sqrt(var + eps)`, `b' = beta - mean * gamma / sqrt(var + eps)`.
/// Computed in f64 so folding adds no error beyond the final f32 rounding. `shape` is the
/// convolution weight's, PyTorch's `[out, in, kh, kw]`.
pub(crate) fn fold_batch_norm(
    source: &mut dyn TensorSource,
    prefix: &str,
    shape: [usize; 4],
) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
    let out = shape[0];
    let weight = source.tensor(&format!("{prefix}.conv.weight"), &shape)?;
    let gamma = source.tensor(&format!("{prefix}.bn.weight"), &[out])?;
    let beta = source.tensor(&format!("{prefix}.bn.bias"), &[out])?;
    let mean = source.tensor(&format!("{prefix}.bn.running_mean"), &[out])?;
    let var_key = format!("{prefix}.bn.running_var");
    let var = source.tensor(&var_key, &[out])?;
    if let Some(v) = var.iter().find(|v| **v < 0.0) {
        return Err(ModelError::BadTensor {
            key: var_key,
            reason: format!("a variance is negative ({v})"),
        });
    }
    let per_out = weight.len() / out;
    let mut folded = weight;
    let mut bias = Vec::with_capacity(out);
    for o in 0..out {
        let scale = f64::from(gamma[o]) / (f64::from(var[o]) + BATCH_NORM_EPS).sqrt();
        for w in &mut folded[o * per_out..(o + 1) * per_out] {
            *w = (f64::from(*w) * scale) as f32;
        }
        bias.push((f64::from(beta[o]) - f64::from(mean[o]) * scale) as f32);
    }
    Ok((folded, bias))
}

/// A torchvision-format checkpoint (`torch.save(model.state_dict())`), read lazily.
pub(crate) struct PthSource {
    path: PathBuf,
    reader: PytorchReader,
    used: HashSet<String>,
}

impl PthSource {
    pub(crate) fn open(path: &Path) -> Result<Self, ModelError> {
        if !path.exists() {
            return Err(ModelError::WeightsNotFound {
                path: path.to_path_buf(),
            });
        }
        let reader = PytorchReader::new(path).map_err(|e| ModelError::WeightsUnreadable {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(PthSource {
            path: path.to_path_buf(),
            reader,
            used: HashSet::new(),
        })
    }

    /// Logs keys that were neither used nor known to be unneeded: harmless for inference,
    /// but a sign the file is not plain torchvision GoogLeNet.
    pub(crate) fn finish(self) {
        let mut extra: Vec<String> = self
            .reader
            .keys()
            .into_iter()
            .filter(|k| !self.used.contains(k) && !is_ignored_key(k))
            .collect();
        if !extra.is_empty() {
            extra.sort();
            tracing::warn!(
                path = %self.path.display(),
                count = extra.len(),
                first = %extra[0],
                "checkpoint has tensors GoogLeNet does not use"
            );
        }
    }
}

impl TensorSource for PthSource {
    fn tensor(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let bad = |reason: String| ModelError::BadTensor {
            key: key.to_string(),
            reason,
        };
        let tensor = self
            .reader
            .get(key)
            .ok_or_else(|| ModelError::MissingTensor {
                key: key.to_string(),
                path: self.path.clone(),
            })?;
        if tensor.shape() != shape {
            return Err(bad(format!(
                "shape is {:?}, torchvision GoogLeNet has {:?}",
                tensor.shape(),
                shape
            )));
        }
        let bytes = tensor.read().map_err(|e| {
            bad(format!(
                "cannot read its data ({e}); is the file truncated?"
            ))
        })?;
        let values: Vec<f32> = match tensor.dtype() {
            DType::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            DType::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_bits(u16::from_ne_bytes([c[0], c[1]])).to_f32())
                .collect(),
            DType::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_bits(u16::from_ne_bytes([c[0], c[1]])).to_f32())
                .collect(),
            DType::F64 => bytes
                .chunks_exact(8)
                .map(|c| {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(c);
                    f64::from_ne_bytes(b) as f32
                })
                .collect(),
            other => return Err(bad(format!("dtype {other:?} is not a floating-point type"))),
        };
        if values.len() != shape.iter().product::<usize>() {
            return Err(bad(format!(
                "holds {} values, expected {}",
                values.len(),
                shape.iter().product::<usize>()
            )));
        }
        if values.iter().any(|v| !v.is_finite()) {
            return Err(bad("contains NaN or infinite values".to_string()));
        }
        self.used.insert(key.to_string());
        Ok(values)
    }
}

/// Seeded, deterministic untrained weights: Kaiming-normal convolutions, identity
/// BatchNorm, a small-normal classifier. Each tensor's stream is seeded from the seed and
/// the tensor's key, so values do not depend on the order tensors are requested in.
pub(crate) struct RandomSource {
    pub seed: u64,
}

impl TensorSource for RandomSource {
    fn tensor(&mut self, key: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        let n: usize = shape.iter().product();
        let constant = |v: f32| Ok(vec![v; n]);
        if key.ends_with(".bn.weight") || key.ends_with(".bn.running_var") {
            return constant(1.0);
        }
        if key.ends_with(".bn.bias") || key.ends_with(".bn.running_mean") || key == "fc.bias" {
            return constant(0.0);
        }
        let fan_in: usize = shape.iter().skip(1).product();
        // Kaiming (He) normal keeps activations from vanishing through 57 ReLU layers, so
        // untrained outputs still spread over several classes.
        let gain = if key == "fc.weight" { 1.0 } else { 2.0 };
        let std = (gain / fan_in.max(1) as f64).sqrt();
        let mut rng = SplitMix64(self.seed ^ fnv1a(key.as_bytes()));
        Ok((0..n).map(|_| (rng.normal() * std) as f32).collect())
    }
}

/// All zeros: the skeleton that a Burn-native copy is loaded into.
pub(crate) struct ZeroSource;

impl TensorSource for ZeroSource {
    fn tensor(&mut self, _key: &str, shape: &[usize]) -> Result<Vec<f32>, ModelError> {
        Ok(vec![0.0; shape.iter().product()])
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// SplitMix64: tiny, fast and stable across versions (unlike `rand`'s std generators), so
/// `--weights random` with a given seed means the same weights forever.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller).
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}
