//! The cluster behind the site: the real QUIC `Dispatcher`, connected either to remote
//! nodes (`--node NAME=HOST:PORT` with the cluster's PEM files) or to N in-process nodes
//! (`--local-workers N`) that get throwaway certificates from an in-memory CA. Both paths
//! end in the same `Dispatcher::start`, so local runs exercise exactly what production
//! runs: mutual TLS, QUIC streams, retries and failover.

use std::sync::Arc;

use bytes::Bytes;
use glimpse_transport::{
    DispatchError, Dispatcher, DispatcherConfig, InferenceError, NodeEndpoint, NodeState,
    NodeStatus,
};

use crate::fleet::cluster_error::ClusterError;
use crate::fleet::config::{ClusterConfig, Fleet, RemoteFleet};
use crate::fleet::inference::{
    ClassifyFuture, Failure, Inference, NodeView, Outcome, Progress, ProgressFn, TopLabel,
};
use crate::fleet::local::Workers;

/// The real dispatcher seen through the site's [`Inference`] seam.
#[derive(Clone)]
pub struct DispatchInference {
    dispatcher: Dispatcher,
}

impl DispatchInference {
    /// Serves inference through `dispatcher`.
    pub fn new(dispatcher: Dispatcher) -> DispatchInference {
        DispatchInference { dispatcher }
    }

    /// The dispatcher behind it (for its nodes and counters).
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }
}

impl Inference for DispatchInference {
    fn classify(&self, image: Bytes, top_k: u32, progress: ProgressFn) -> ClassifyFuture {
        self.classify_traced(image, top_k, None, progress)
    }

    fn classify_traced(
        &self,
        image: Bytes,
        top_k: u32,
        traceparent: Option<String>,
        progress: ProgressFn,
    ) -> ClassifyFuture {
        let dispatcher = self.dispatcher.clone();
        Box::pin(async move {
            let callback = move |p: glimpse_transport::Progress| progress(map_progress(p));
            match dispatcher
                .classify_traced(image, top_k, traceparent, callback)
                .await
            {
                Ok(c) => Ok(Outcome {
                    warning: untrained_warning(&dispatcher, &c),
                    timings: c.answer.timings,
                    top: c
                        .answer
                        .top
                        .into_iter()
                        .map(|l| TopLabel {
                            index: l.index,
                            label: l.label,
                            probability: l.probability,
                        })
                        .collect(),
                    node: c.node,
                    attempts: c.attempts,
                    latency: c.latency,
                }),
                Err(e) => Err(map_error(e)),
            }
        })
    }

    fn nodes(&self) -> Vec<NodeView> {
        self.dispatcher.nodes().into_iter().map(node_view).collect()
    }

    fn register_metrics(&self, live: &mut prometheus_client::registry::Registry) {
        let s = self.dispatcher.stats();
        let rows: [(&str, &str, u64); 12] = [
            (
                "attempts",
                "Attempts sent to nodes (first tries, retries, hedges).",
                s.attempts,
            ),
            ("retries", "Retries after a failed attempt.", s.retries),
            ("hedges", "Hedge copies sent.", s.hedges),
            (
                "hedge_wins",
                "Requests won by the hedge copy.",
                s.hedge_wins,
            ),
            (
                "resets",
                "Attempts ended by a stream reset from a node.",
                s.resets,
            ),
            (
                "timeouts",
                "Attempts that outlived the per-attempt timeout (reopened elsewhere).",
                s.timeouts,
            ),
            (
                "unstarted_cancels",
                "Overdue attempts that had not started at their node: moved to another node and cancelled where they waited (also counted in timeouts).",
                s.unstarted_cancels,
            ),
            (
                "connection_losses",
                "Attempts ended by a lost connection.",
                s.connection_losses,
            ),
            (
                "silences",
                "Times a connected node went silent (no heartbeat within the silence timeout).",
                s.silences,
            ),
            (
                "silence_reopens",
                "Attempts on a silent node whose image was reopened on another node.",
                s.silence_reopens,
            ),
            (
                "retryable_errors",
                "Attempts ended by a retryable node error.",
                s.retryable_errors,
            ),
            (
                "bytes_sent",
                "Request bytes written to nodes (retries included).",
                s.bytes_sent,
            ),
        ];
        let rows = rows.map(|(name, help, v)| (format!("glimpse_dispatch_{name}"), help, v));
        let rows: Vec<(&str, &str, u64)> = rows
            .iter()
            .map(|(name, help, v)| (name.as_str(), *help, *v))
            .collect();
        crate::observe::metrics::register_counters(live, &rows);
    }
}

fn map_progress(p: glimpse_transport::Progress) -> Progress {
    match p {
        glimpse_transport::Progress::Sent { node, attempt } => Progress::Sent { node, attempt },
        glimpse_transport::Progress::Retrying { attempt, reason } => {
            Progress::Retrying { attempt, reason }
        }
        glimpse_transport::Progress::Hedged { node } => Progress::Hedged { node },
    }
}

fn map_error(e: DispatchError) -> Failure {
    match e {
        DispatchError::Rejected(InferenceError::BadImage(m)) => Failure::BadImage(m),
        DispatchError::Rejected(InferenceError::TooLarge(m)) => Failure::TooLarge(m),
        DispatchError::Rejected(InferenceError::Overloaded) => Failure::Overloaded,
        DispatchError::Rejected(InferenceError::Draining) => Failure::NoNodes,
        DispatchError::Rejected(InferenceError::Internal(m)) => Failure::Internal(m),
        DispatchError::Rejected(InferenceError::Protocol(m)) => {
            Failure::Internal(format!("protocol: {m}"))
        }
        DispatchError::NoNodes => Failure::NoNodes,
        DispatchError::DeadlineExceeded { attempts } => Failure::Deadline { attempts },
        DispatchError::AttemptsExhausted { attempts, last } => {
            Failure::Exhausted { attempts, last }
        }
    }
}

fn node_view(n: NodeStatus) -> NodeView {
    let state = match n.state {
        NodeState::Connecting => "connecting",
        // Out of the membership: finishing its images, no new work; gone once idle.
        _ if n.removed => "removed",
        NodeState::Ready if n.silent => "silent",
        NodeState::Ready => "ready",
        NodeState::Draining => "draining",
        NodeState::Down => "down",
    };
    NodeView {
        name: n.name,
        addr: n.addr.to_string(),
        state: state.to_string(),
        in_flight: n.in_flight,
        served: n.served,
        failed: n.failed,
        p50_ms: n.p50_ms,
        p95_ms: n.p95_ms,
        service_ms: n.service_ms,
        expected_ms: n.expected_ms,
        placement_share: Some(n.placement_share),
        model: n.info.as_ref().map(|i| i.model.clone()),
        weights: n.info.as_ref().map(|i| i.weights.clone()),
        trained: n.info.as_ref().map(|i| i.trained),
        synthetic: n.info.as_ref().map(|i| i.synthetic),
        backend: n.info.as_ref().map(|i| i.backend.clone()),
        capacity: n.info.as_ref().map(|i| i.capacity),
    }
}

/// The dispatcher plus whatever local workers this process runs.
pub struct Cluster {
    /// Inference through the dispatcher, for the site.
    pub inference: Arc<DispatchInference>,
    workers: Workers,
    /// The task following --node-dns / --nodes-file, if any.
    discovery: Option<tokio::task::JoinHandle<()>>,
}

impl Cluster {
    /// Number of nodes configured.
    pub fn node_count(&self) -> usize {
        self.inference.dispatcher.nodes().len()
    }

    /// Close the dispatcher's connections, then drain and stop the local workers.
    pub async fn shutdown(self) {
        if let Some(d) = &self.discovery {
            d.abort();
        }
        self.inference.dispatcher.shutdown();
        self.workers.stop().await;
    }
}

/// The dispatcher's configuration: where the nodes are and the credentials to reach them,
/// with the policy and congestion controller `config` says.
fn dispatcher_config(config: &ClusterConfig, mut dispatcher: DispatcherConfig) -> DispatcherConfig {
    dispatcher.policy = config.policy;
    dispatcher.tuning.congestion = config.congestion;
    dispatcher
}

/// Build the cluster `config` describes.
pub async fn build(config: &ClusterConfig) -> Result<Cluster, ClusterError> {
    match &config.fleet {
        Fleet::Local(workers) => {
            let local = crate::fleet::local::start(workers).await?;
            let dispatcher = Dispatcher::start(dispatcher_config(
                config,
                DispatcherConfig::new(
                    local.endpoints,
                    local.ca,
                    local.client_chain,
                    local.client_key,
                ),
            ))?;
            Ok(Cluster {
                inference: Arc::new(DispatchInference::new(dispatcher)),
                workers: local.workers,
                discovery: None,
            })
        }
        Fleet::Remote(remote_fleet) => remote(config, remote_fleet).await,
    }
}

async fn remote(config: &ClusterConfig, fleet: &RemoteFleet) -> Result<Cluster, ClusterError> {
    let ca = glimpse_certs::load_certs_file(&fleet.ca)?;
    let chain = glimpse_certs::load_certs_file(&fleet.cert)?;
    let key = glimpse_certs::load_key_file(&fleet.key)?;
    let mut endpoints = Vec::with_capacity(fleet.nodes.len());
    for node in &fleet.nodes {
        let addr = tokio::net::lookup_host(node.target.as_str())
            .await
            .map_err(|source| ClusterError::Resolve {
                target: node.target.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| ClusterError::Resolve {
                target: node.target.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        endpoints.push(NodeEndpoint {
            name: node.name.clone(),
            addr,
        });
    }
    let (endpoints, discovery) = match &fleet.discovery {
        Some(sources) => {
            let d = crate::fleet::discovery::Discovery::start(sources, endpoints)
                .await
                .map_err(ClusterError::Discovery)?;
            (d.endpoints(), Some(d))
        }
        None => (endpoints, None),
    };
    let dispatcher = Dispatcher::start(dispatcher_config(
        config,
        DispatcherConfig::new(endpoints, ca, chain, key),
    ))?;
    Ok(Cluster {
        discovery: discovery.map(|d| d.spawn(dispatcher.clone())),
        inference: Arc::new(DispatchInference::new(dispatcher)),
        workers: Workers::none(),
    })
}

/// The warning a result carries when its labels are not trained GoogLeNet's: the answer says
/// whether it is synthetic, the answering node's announcement whether its weights are trained.
fn untrained_warning(dispatcher: &Dispatcher, c: &glimpse_transport::Classified) -> Option<String> {
    if c.answer.synthetic {
        return Some(
            "synthetic model: labels are derived from the image bytes, not recognised".into(),
        );
    }
    let info = dispatcher
        .nodes()
        .into_iter()
        .find(|n| n.name == c.node)
        .and_then(|n| n.info)?;
    (!info.trained).then(|| {
        format!(
            "untrained weights ({}): labels are meaningless",
            info.weights
        )
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use glimpse_transport::{CongestionControl, PrivateKeyDer, dispatcher::Policy};
    use rustls::pki_types::PrivatePkcs8KeyDer;

    use super::*;
    use crate::fleet::config::{LocalModel, LocalWorkers};

    #[test]
    fn the_policy_and_congestion_controller_reach_the_dispatcher() {
        let policy = Policy {
            max_attempts: 5,
            hedge: true,
            silence_floor: Duration::from_millis(750),
            ..Policy::default()
        };
        let config = ClusterConfig {
            fleet: Fleet::Local(LocalWorkers {
                count: std::num::NonZeroU32::MIN,
                model: LocalModel::Synthetic {
                    service: Duration::ZERO,
                },
                capacity: None,
            }),
            policy,
            congestion: CongestionControl::Bbr,
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![0u8; 4]));
        let c = dispatcher_config(&config, DispatcherConfig::new(vec![], vec![], vec![], key));
        assert_eq!(c.tuning.congestion, CongestionControl::Bbr);
        assert_eq!(c.policy.silence_floor, policy.silence_floor);
        assert_eq!(c.policy.max_attempts, 5);
        assert!(c.policy.hedge);
    }
}
