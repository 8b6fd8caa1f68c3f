//! glimpse-model: torchvision's pretrained GoogLeNet (IMAGENET1K_V1) in Burn, answering like
//! torchvision does.
//!
//! - [`Classifier`] loads weights ([`WeightsSource`]: the official file from the cache or the
//!   internet, a local `.pth`/`.bpk`, or seeded random weights), folds BatchNorm into the
//!   convolutions, and runs batches on a CPU [`Backend`] chosen at run time: by default
//!   burn-flex with Glimpse's fused channels-last operators (`fused/`, plugged into Burn
//!   through its backend-extension mechanism), in as many lanes as asked for.
//! - [`decode`] / [`preprocess`](fn@preprocess) / [`prepare`] turn untrusted image bytes into
//!   the exact tensor torchvision's transforms produce, refusing oversized images before
//!   allocating.
//! - [`IMAGENET_CLASSES`] labels the 1000 outputs.
//!
//! Without the `inference` feature (on by default) only decoding, preprocessing and the labels
//! are built, with no Burn: what the fuzz targets and other light users need.
//!
//! Every call here is blocking and CPU-bound: async callers should run them on a blocking
//! thread (`spawn_blocking` or a dedicated worker).

#[cfg(feature = "inference")]
mod backend;
#[cfg(feature = "inference")]
mod cache;
mod classes;
#[cfg(feature = "inference")]
mod classifier;
#[cfg(feature = "inference")]
mod error;
#[cfg(feature = "inference")]
mod fused;
#[cfg(feature = "inference")]
mod googlenet;
#[cfg(feature = "inference")]
pub mod kernels;
#[cfg(feature = "inference")]
mod load;
#[cfg(feature = "inference")]
mod native;
#[cfg(feature = "inference")]
mod network;
#[cfg(feature = "inference")]
mod prediction;
pub mod preprocess;
#[cfg(feature = "inference")]
mod weights_source;

pub use classes::IMAGENET_CLASSES;
pub use preprocess::{
    DecodeLimits, ImageError, ImageInfo, ImageTensor, decode, prepare, preprocess, probe,
};

#[cfg(feature = "inference")]
pub use backend::Backend;
#[cfg(feature = "inference")]
pub use cache::default_cache_dir;
#[cfg(feature = "inference")]
pub use classifier::Classifier;
#[cfg(feature = "inference")]
pub use error::ModelError;
#[cfg(feature = "inference")]
pub use googlenet::NUM_CLASSES;
#[cfg(feature = "inference")]
pub use googlenet::weights::{WEIGHTS_FILE, WEIGHTS_NAME, WEIGHTS_SHA256_PREFIX, WEIGHTS_URL};
#[cfg(feature = "inference")]
pub use prediction::{Prediction, top_k_softmax};
#[cfg(feature = "inference")]
pub use weights_source::{LoadOptions, WeightsIdentity, WeightsSource};
