//! Why the front-end could not set up its cluster: configuration, certificates, the
//! dispatcher, name resolution, or the in-process workers.

/// Errors while assembling the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Config(String),
    #[error("certificates: {0}")]
    Certs(#[from] glimpse_certs::CertError),
    #[cfg(feature = "local-workers")]
    #[error("starting a local worker: {0}")]
    Node(#[from] glimpse_node::NodeError),
    #[cfg(feature = "local-workers")]
    #[error("loading the model: {0}")]
    Model(#[from] glimpse_model::ModelError),
    #[error("dispatcher: {0}")]
    Transport(#[from] glimpse_transport::TransportError),
    #[error("node discovery: {0}")]
    Discovery(String),
    #[error("resolving {target}: {source}")]
    Resolve {
        target: String,
        source: std::io::Error,
    },
}
