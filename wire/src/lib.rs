//! The KServe v2 wire format, as Glimpse's front-end serves it and its clients (the load
//! generator, the tests, the fuzz targets) speak it. Nothing here knows about HTTP servers,
//! nodes or the model: each module turns bytes into typed values under limits, or back.
//!
//! - [`names`]: the model's name, version, input and outputs as metadata gives them.
//! - [`shape`]: the caps on a request's tensors that every protocol checks, and their errors.
//! - [`budget`]: the byte budget every decoded image is paid from before it is kept.
//! - [`answer`]: the typed v2 response (the outputs asked for, output tensors' values).
//! - [`parse`]: the typed v2 request ([`parse::InferRequest`]) read from JSON under those
//!   limits, without ever building a JSON tree.
//! - [`binary`]: the binary tensor data extension (a JSON header, then raw tensors), both ways.
//! - [`proto`]: the gRPC messages and service stubs generated from `proto/` at build time;
//!   [`codec`]: the codec every method uses, which checks a message's cost on the wire
//!   ([`scan`]) before prost decodes it.
//! - [`text`]: bounded text for error messages.

#![forbid(unsafe_code)]

pub mod answer;
pub mod binary;
pub mod budget;
pub mod codec;
pub mod names;
pub mod parse;
pub mod proto;
pub mod scan;
pub mod shape;
pub mod text;
