//! The Burn-native copy of the folded network (`.bpk`, burnpack): written once from a `.pth`
//! so later starts skip pickle parsing and BatchNorm folding, and read back only when it
//! records the folded layout this version builds ([`NATIVE_FORMAT`]).

use std::path::Path;

use burn::module::Module;
use burn::store::burn_pack::Reader;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::Device;

use crate::cache;
use crate::googlenet::GoogLeNet;
use crate::googlenet::weights::ZeroSource;
use crate::{ModelError, WeightsIdentity};

/// The extension that marks a `--weights` path as native rather than a torchvision `.pth`.
pub(crate) const NATIVE_EXTENSION: &str = "bpk";
/// Burnpack metadata key: the weights' display name.
const METADATA_NAME: &str = "glimpse.weights.name";
/// Burnpack metadata key: the folded layout the file was written for.
pub(crate) const METADATA_FORMAT: &str = "glimpse.format";
/// Bumped whenever the folded module layout changes, so stale native copies are refused
/// ([`ModelError::NativeFormat`]) and, in the cache, rebuilt from the `.pth`.
pub(crate) const NATIVE_FORMAT: &str = "googlenet-folded-v1";

/// Reads a `.bpk` written by [`save_native`], refusing one written for another layout before
/// any tensor is read.
pub(crate) fn load_native(path: &Path, device: &Device) -> Result<GoogLeNet, ModelError> {
    if !path.exists() {
        return Err(ModelError::WeightsNotFound {
            path: path.to_path_buf(),
        });
    }
    let unreadable = |reason: String| ModelError::WeightsUnreadable {
        path: path.to_path_buf(),
        reason,
    };
    check_format(path)?;
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

/// The file's recorded format must be [`NATIVE_FORMAT`]. Only the header and metadata are
/// read here; the tensors stay on disk.
fn check_format(path: &Path) -> Result<(), ModelError> {
    let reader = Reader::from_file_exact(path).map_err(|e| ModelError::WeightsUnreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let found = reader.metadata().get(METADATA_FORMAT);
    if found.map(String::as_str) == Some(NATIVE_FORMAT) {
        return Ok(());
    }
    Err(ModelError::NativeFormat {
        path: path.to_path_buf(),
        found: found.cloned(),
        expected: NATIVE_FORMAT.to_string(),
    })
}

/// Writes `model` as a `.bpk` recording [`NATIVE_FORMAT`], to a temporary name renamed into
/// place, so a crash or a concurrent start never leaves a half-written file under `path`.
pub(crate) fn save_native(
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
