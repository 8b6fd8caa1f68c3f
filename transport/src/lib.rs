//! Glimpse's transport: images to worker nodes over QUIC, one bidirectional stream per image.
//!
//! - [`codec`]: the versioned, length-prefixed CBOR wire format and stream error codes
//!   (sans-IO, unit-tested without sockets).
//! - [`stream`]: reading and writing those frames on quinn streams (thin glue over
//!   [`codec::FrameDecoder`]).
//! - [`config`]: mutual-TLS (rustls + ring) and QUIC transport settings, with reasons.
//! - [`NodeServer`]: the node side; calls a [`Handler`] per image, drains on shutdown.
//! - [`Dispatcher`]: the front-end side; connects to every node, places images by power of two
//!   choices, retries on another node, optionally hedges.
//! - [`client`]: one request on one stream (used by the dispatcher, tests and benchmarks).

#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
pub mod config;
pub mod dispatcher;
mod error;
mod server;
pub mod shutdown;
pub mod stream;
pub mod sync;
mod types;

pub use codec::{ALPN, MAX_FRAME_BYTES, PROTOCOL_VERSION, StreamCode};
pub use config::{CongestionControl, DEFAULT_MAX_IMAGE_BYTES, TransportTuning};
pub use dispatcher::{
    Classified, DispatchError, DispatchStats, Dispatcher, DispatcherConfig, NodeChanges,
    NodeEndpoint, NodeState, NodeStatus, Progress,
};
pub use error::TransportError;
pub use server::{NodeServer, NodeServerConfig};
pub use shutdown::{Shutdown, ShutdownTrigger, shutdown_channel};
pub use types::{
    Handler, InferenceAnswer, InferenceError, InferenceRequest, Label, LoadReport, NodeInfo,
    Timings, WorkStarted,
};

/// Re-exported so callers name the same certificate/key types this crate uses.
pub use rustls::pki_types::{CertificateDer, PrivateKeyDer};
