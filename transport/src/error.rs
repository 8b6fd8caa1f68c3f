//! Errors of setting up or running the transport (per-request failures are
//! [`crate::DispatchError`] and [`crate::InferenceError`]).

use std::net::SocketAddr;

/// Failure to configure, bind or run an endpoint.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The UDP socket could not be bound.
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Certificates, keys or the TLS configuration were rejected.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Other invalid configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
}
