//! KServe v2 over gRPC: Triton's `inference.GRPCInferenceService`, on a listener of its own
//! (`--grpc-listen`), TLS with the HTTPS certificate.
//!
//! - The messages and service stubs (`glimpse_wire::proto`, generated from `wire/proto/`),
//!   with the codec that checks each message's cost on the wire before it is decoded
//!   (`glimpse_wire::codec`, `glimpse_wire::scan`), come from the wire-format crate.
//! - `server`: the listener (accept, connection slots, TLS, HTTP/2), and per call the
//!   admission of the caller and a metered request body (`body`).
//! - `service`: the methods, answered from [`crate::kserve::model`] like the HTTP
//!   endpoints; `infer` translates `ModelInfer`'s messages.
//! - `status`: the site's errors ([`crate::http::error::ApiError`]) as gRPC statuses.

mod body;
mod infer;
mod server;
mod service;
mod status;

pub(crate) use server::serve;
