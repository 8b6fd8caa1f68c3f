//! The names and shapes of the one model, as KServe v2 metadata and configuration give them on
//! every protocol (HTTP JSON, HTTP binary, gRPC), and as clients (the load generator, the
//! tests) address it.

/// The one model this server exposes.
pub const MODEL_NAME: &str = "googlenet";
/// Its one version.
pub const MODEL_VERSION: &str = "1";
/// The model's one input: encoded image files, one per BYTES element.
pub use crate::shape::INPUT_NAME;
/// The platform name in metadata and configuration.
pub const PLATFORM: &str = "glimpse";
/// The server's name in server metadata.
pub const SERVER_NAME: &str = "glimpse";
/// The protocol extensions server metadata lists, the same for every protocol (Triton lists
/// one set for HTTP and gRPC alike).
pub const EXTENSIONS: [&str; 3] = ["classification", "statistics", "binary_tensor_data"];
/// The input's datatype: one encoded image file per element.
pub const INPUT_DATATYPE: &str = "BYTES";
/// The input's shape in model metadata: any number of images.
pub const INPUT_SHAPE: [i64; 1] = [-1];
/// Each output's shape in model metadata: `[batch, k]`.
pub const OUTPUT_SHAPE: [i64; 2] = [-1, -1];
/// The input's data type in the model configuration.
pub const INPUT_CONFIG_TYPE: &str = "TYPE_STRING";
/// The input's dims in the configuration: one file per image (the batch dimension is
/// implicit, as in Triton).
pub const CONFIG_INPUT_DIMS: [i64; 1] = [1];
/// Each output's dims in the configuration: `k` classes per image.
pub const CONFIG_OUTPUT_DIMS: [i64; 1] = [-1];
