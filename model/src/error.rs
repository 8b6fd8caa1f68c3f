//! Why a model could not be loaded or run: one error type for the whole crate's inference side.

use std::path::PathBuf;

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
    /// [`WeightsSource::Auto`](crate::WeightsSource::Auto) found no verified copy in the cache
    /// and could not download one (network failure, or downloading disabled in
    /// [`LoadOptions`](crate::LoadOptions)).
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
    /// A Burn-native `.bpk` was written for another layout of the folded network (an older or
    /// newer Glimpse), or by something else: loading it would give wrong answers or fail
    /// halfway, so it is refused whole. [`WeightsSource::Auto`](crate::WeightsSource::Auto)
    /// rebuilds its cached copy from the `.pth` by itself; a `.bpk` given as a path must be
    /// re-created from its `.pth`.
    #[error(
        "native weights {path} are in format {}, this Glimpse reads only {expected}: \
         re-create the .bpk from its .pth (or pass the .pth itself with --weights)",
        found.as_deref().map_or_else(|| "(none recorded)".to_string(), |f| format!("{f:?}"))
    )]
    NativeFormat {
        /// The `.bpk` file.
        path: PathBuf,
        /// The format it records (burnpack metadata `glimpse.format`), if any.
        found: Option<String>,
        /// The format this version writes and reads.
        expected: String,
    },
    /// Reading, hashing, creating or renaming a file in the weights cache directory failed.
    #[error("cache file {path}: {source}")]
    Cache {
        /// The cache file or directory involved.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// [`WeightsSource::Auto`](crate::WeightsSource::Auto) needs a cache directory: none was
    /// given in [`LoadOptions`](crate::LoadOptions) and the platform has none (on Linux:
    /// neither `XDG_CACHE_HOME` nor `HOME` is set).
    #[error("no cache directory: set XDG_CACHE_HOME or HOME, or pass --weights PATH")]
    NoCacheDir,
    /// [`Classifier::save_native`](crate::Classifier::save_native) could not create the
    /// directory, write the `.bpk` or rename it into place.
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
