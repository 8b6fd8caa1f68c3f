//! [`NodeError`]: why a node could not start, serve or drain.

use std::time::Duration;

use glimpse_transport::TransportError;

/// Errors of a node's life: configuration, model loading, binding, serving, draining.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A setting is out of range or unparsable (capacity or max batch of 0, decode budget
    /// outside its bounds, a fault rate outside [0, 1], bad `--weights`/`--backend`, ...);
    /// the message names it.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The node's certificate, key or CA file could not be read or parsed.
    #[error("{0}")]
    Certs(#[from] glimpse_certs::CertError),
    /// The GoogLeNet weights could not be found, downloaded or loaded.
    #[error("could not load the model: {0}")]
    Model(#[from] glimpse_model::ModelError),
    /// The QUIC endpoint could not be set up (UDP bind, TLS or transport configuration) or
    /// failed while serving.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The `--admin-listen` address could not be bound.
    #[error("could not listen on the admin address: {0}")]
    Admin(#[source] std::io::Error),
    /// A listener's address (`--listen`, `--admin-listen`) could not be bound; the message
    /// names the flag that moves it. Checked before the model loads.
    #[error("{}", listen_failure(flag, *addr, error))]
    Listen {
        /// The flag that chose the address.
        flag: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// What the OS said (in the message, so not a `source`).
        error: std::io::Error,
    },
    /// The OS refused to spawn an inference lane or its threads.
    #[error("could not start the inference lanes: {0}")]
    Thread(#[source] std::io::Error),
    /// After shutdown began, the transport had not stopped within `drain_timeout` plus a 5 s
    /// grace (the duration carried), so the server task was aborted.
    #[error("in-flight work did not finish within the drain timeout of {0:?}")]
    DrainTimeout(Duration),
    /// A task the node runs on (the server, or the blocking model load) panicked or was
    /// cancelled.
    #[error("node task failed: {0}")]
    Task(String),
}

/// `--listen 0.0.0.0:4433: address in use; pick another with --listen`, and the like.
fn listen_failure(flag: &str, addr: std::net::SocketAddr, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let why = match error.kind() {
        ErrorKind::AddrInUse => "address in use".to_string(),
        ErrorKind::AddrNotAvailable => "no interface of this machine has that address".to_string(),
        ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".to_string()
        }
        _ => error.to_string(),
    };
    format!("{flag} {addr}: {why}; pick another with {flag}")
}
