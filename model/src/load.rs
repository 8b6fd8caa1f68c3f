//! Turning a [`WeightsSource`] into a loaded, folded network and its [`WeightsIdentity`]:
//! seeded random weights, a `.pth` or `.bpk` path, or the cached official file (`auto`).

use std::path::Path;

use burn::tensor::Device;

use crate::cache::{self, default_cache_dir};
use crate::googlenet::GoogLeNet;
use crate::googlenet::weights::{PthSource, RandomSource, WEIGHTS_NAME, WEIGHTS_SHA256_PREFIX};
use crate::native::{self, NATIVE_EXTENSION};
use crate::{LoadOptions, ModelError, WeightsIdentity, WeightsSource};

/// Loads the network `source` names onto `device`.
pub(crate) fn load(
    source: &WeightsSource,
    options: &LoadOptions,
    device: &Device,
) -> Result<(GoogLeNet, WeightsIdentity), ModelError> {
    match source {
        WeightsSource::Random { seed } => {
            let model = GoogLeNet::load(&mut RandomSource { seed: *seed }, device)?;
            let identity = WeightsIdentity {
                name: format!("random-seed-{seed}"),
                trained: false,
                sha256: None,
            };
            Ok((model, identity))
        }
        WeightsSource::Path(path) => load_path(path, device),
        WeightsSource::Auto => load_auto(options, device),
    }
}

fn load_path(path: &Path, device: &Device) -> Result<(GoogLeNet, WeightsIdentity), ModelError> {
    if path.extension().is_some_and(|e| e == NATIVE_EXTENSION) {
        let model = native::load_native(path, device)?;
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

/// The cached native copy when it is usable (present, this version's format, complete);
/// otherwise the verified `.pth` (downloaded if needed), from which the native copy is then
/// (re)written for the next start.
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
        match native::load_native(&native, device) {
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
    if let Err(e) = native::save_native(&model, &native, &identity) {
        tracing::warn!(error = %e, "cannot write the native weights copy; next start re-reads the .pth");
    }
    Ok((model, identity))
}
