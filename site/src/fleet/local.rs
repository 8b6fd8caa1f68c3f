//! In-process worker nodes for `--local-workers N`: real `glimpse-node` nodes on loopback
//! QUIC, with throwaway certificates from an in-memory CA, so a local run goes through exactly
//! the dispatch path a cluster does (mutual TLS, one stream per image, failover).
//!
//! They need the node and the model in this binary, which the `local-workers` feature (on by
//! default) brings; a build without it (the fuzz targets) refuses `--local-workers`.

use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use glimpse_transport::NodeEndpoint;

/// What the dispatcher needs to reach the local workers, and the workers themselves.
pub(crate) struct Started {
    pub workers: Workers,
    pub endpoints: Vec<NodeEndpoint>,
    /// The in-memory CA that signed the workers.
    pub ca: Vec<CertificateDer<'static>>,
    /// The front-end's client certificate from that CA, and its key.
    pub client_chain: Vec<CertificateDer<'static>>,
    pub client_key: PrivateKeyDer<'static>,
}

#[cfg(feature = "local-workers")]
pub(crate) use imp::{Workers, start};

#[cfg(not(feature = "local-workers"))]
pub(crate) use none::{Workers, start};

#[cfg(feature = "local-workers")]
mod imp {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::sync::Arc;

    use glimpse_certs::ClusterCa;
    use glimpse_node::{ModelSpec, NodeConfig, NodeTls, RunningNode, start_node};
    use glimpse_transport::NodeEndpoint;
    use glimpse_transport::{ShutdownTrigger, shutdown_channel};

    use super::Started;
    use crate::fleet::cluster_error::ClusterError;
    use crate::fleet::config::{LocalModel, LocalWorkers};

    /// The running local workers.
    pub(crate) struct Workers {
        nodes: Vec<RunningNode>,
        stop: Option<ShutdownTrigger>,
    }

    impl Workers {
        /// No local workers (remote nodes only).
        pub(crate) fn none() -> Workers {
            Workers {
                nodes: Vec::new(),
                stop: None,
            }
        }

        /// Drain and stop them.
        pub(crate) async fn stop(self) {
            if let Some(stop) = self.stop {
                stop.trigger();
            }
            for w in self.nodes {
                if let Err(e) = w.wait().await {
                    tracing::warn!("local worker stopped with: {e}");
                }
            }
        }
    }

    /// Start the local workers `local` describes.
    pub(crate) async fn start(local: &LocalWorkers) -> Result<Started, ClusterError> {
        let (stop, rx) = shutdown_channel();
        let count = local.count.get();
        let model = match &local.model {
            LocalModel::Synthetic { service } => ModelSpec::Synthetic { service: *service },
            LocalModel::Googlenet { weights, backend } => {
                // Load once and share: N workers in one process need one copy of the weights,
                // readied for the N forward passes they may run at once (one lane each).
                let lanes = usize::try_from(count).unwrap_or(1).max(1);
                let (weights, backend) = (weights.clone(), *backend);
                let classifier = tokio::task::spawn_blocking(move || {
                    glimpse_model::Classifier::load(&weights, backend)
                        .map(|c| glimpse_node::prepare_classifier(c, lanes))
                })
                .await
                .map_err(|e| ClusterError::Config(format!("model loading task failed: {e}")))??;
                ModelSpec::Loaded(Arc::new(classifier))
            }
        };

        let ca = ClusterCa::generate("glimpse local workers")?;
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let mut workers = Vec::new();
        let mut endpoints = Vec::new();
        for i in 1..=count {
            let name = format!("local-{i}");
            let issued = ca.issue_node(&name, &[loopback])?;
            let tls = NodeTls {
                cert_chain: issued.cert_chain()?,
                key: issued.private_key()?,
                client_ca: vec![ca.cert_der()],
            };
            let mut config = NodeConfig::new(SocketAddr::new(loopback, 0), tls, name.clone());
            config.model = model.clone();
            // The workers share this process's cores: one lane each, on an equal share of the
            // threads, so N workers never run N times the cores' worth of threads.
            config.parallelism = super::worker_parallelism(count)?;
            if let Some(c) = local.capacity {
                config.capacity = c;
            }
            let node = start_node(config, rx.clone().wait()).await?;
            endpoints.push(NodeEndpoint {
                name,
                addr: node.addr(),
            });
            workers.push(node);
        }
        let client = ca.issue_client("glimpse-frontend")?;
        Ok(Started {
            workers: Workers {
                nodes: workers,
                stop: Some(stop),
            },
            endpoints,
            ca: vec![ca.cert_der()],
            client_chain: client.cert_chain()?,
            client_key: client.private_key()?,
        })
    }
}

/// One lane per local worker, on an equal share of the available cores (at least one thread).
#[cfg(feature = "local-workers")]
fn worker_parallelism(
    workers: u32,
) -> Result<glimpse_node::Parallelism, crate::fleet::cluster_error::ClusterError> {
    let workers = usize::try_from(workers).unwrap_or(usize::MAX).max(1);
    let threads = (glimpse_node::lanes::default_threads() / workers).max(1);
    glimpse_node::Parallelism::new(Some(threads), Some(1))
        .map_err(|e| crate::fleet::cluster_error::ClusterError::Config(e.to_string()))
}

#[cfg(not(feature = "local-workers"))]
mod none {
    use super::Started;
    use crate::fleet::cluster_error::ClusterError;
    use crate::fleet::config::LocalWorkers;

    /// No local workers: this build has none.
    pub(crate) struct Workers;

    impl Workers {
        pub(crate) fn none() -> Workers {
            Workers
        }

        pub(crate) async fn stop(self) {}
    }

    /// Refuses: this build has no node or model in it.
    pub(crate) async fn start(_local: &LocalWorkers) -> Result<Started, ClusterError> {
        Err(ClusterError::Config(
            "this glimpse was built without local workers (the `local-workers` feature); use --node".into(),
        ))
    }
}
