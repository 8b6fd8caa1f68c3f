//! KServe v2 over gRPC: Triton's `inference.GRPCInferenceService`, on a listener of its own
//! (`--grpc-listen`), TLS with the HTTPS certificate.
//!
//! - [`proto`]: the messages and service stubs generated from `proto/` at build time, with
//!   [`codec`]'s codec, which checks each message's cost on the wire ([`scan`]) before it is
//!   decoded.
//! - `server`: the listener (accept, connection slots, TLS, HTTP/2), and per call the
//!   admission of the caller and a metered request body (`body`).
//! - `service`: the methods, answered from [`crate::kserve::model`] like the HTTP
//!   endpoints; `infer` translates `ModelInfer`'s messages.
//! - `status`: the site's errors ([`crate::error::ApiError`]) as gRPC statuses.

mod body;
// The generated messages and stubs, and the codec that checks a message before decoding it,
// live in the wire-format crate (the load generator and the fuzz targets speak them too).
pub use glimpse_wire::{codec, proto, scan};
mod infer;
mod server;
mod service;
mod status;

pub(crate) use server::serve;
