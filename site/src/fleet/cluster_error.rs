//! Why the front-end could not set up its cluster: configuration, certificates, the
//! dispatcher, name resolution, or the in-process workers.
//!
//! A variant that wraps another error names it as its `source` and does not repeat it in its
//! own message: `anyhow`'s report prints the chain, and repeating it there showed every cause
//! twice.

/// Errors while assembling the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Config(String),
    #[error("certificates")]
    Certs(#[from] glimpse_certs::CertError),
    #[cfg(feature = "local-workers")]
    #[error("starting a local worker")]
    Node(#[from] glimpse_node::NodeError),
    #[cfg(feature = "local-workers")]
    #[error("loading the model")]
    Model(#[from] glimpse_model::ModelError),
    #[error("dispatcher")]
    Transport(#[from] glimpse_transport::TransportError),
    #[error("node discovery: {0}")]
    Discovery(String),
    #[error("resolving {target}")]
    Resolve {
        target: String,
        source: std::io::Error,
    },
}

#[cfg(all(test, feature = "local-workers"))]
mod tests {
    use super::*;

    /// The report a user sees at start-up (anyhow's `{:#}` chain) names each cause once, and
    /// an offline start without weights says how to go on without them.
    #[test]
    fn an_offline_weights_error_names_its_cause_once_and_the_way_out() {
        let err = ClusterError::Model(glimpse_model::ModelError::WeightsUnavailable {
            cached: "/home/u/.cache/glimpse/googlenet-1378be20.pth".into(),
            url: "https://example.invalid/googlenet-1378be20.pth".into(),
            reason: "no route to host".into(),
        });
        let report = format!(
            "{:#}",
            anyhow::Error::from(err).context("starting the cluster")
        );
        assert_eq!(report.matches("no route to host").count(), 1, "{report}");
        assert!(
            report.starts_with("starting the cluster: loading the model: "),
            "{report}"
        );
        for way_out in ["--weights PATH", "--weights random", "--model synthetic"] {
            assert!(report.contains(way_out), "{way_out} missing from: {report}");
        }
    }
}
