//! The cluster behind the site: the real QUIC `Dispatcher`, connected either to remote
//! nodes (`--node NAME=HOST:PORT` with the cluster's PEM files) or to N in-process nodes
//! (`--local-workers N`) that get throwaway certificates from an in-memory CA. Both paths
//! end in the same `Dispatcher::start`, so local runs exercise exactly what production
//! runs: mutual TLS, QUIC streams, retries and failover.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use glimpse_certs::ClusterCa;
use glimpse_node::{ModelSpec, NodeConfig, NodeTls, RunningNode, start_node};
use glimpse_transport::{
    DispatchError, Dispatcher, DispatcherConfig, InferenceError, NodeEndpoint, NodeState,
    NodeStatus,
};
use tokio::sync::watch;

use crate::cli::{Cli, ModelChoice};
use crate::inference::{
    ClassifyFuture, Failure, Inference, NodeView, Outcome, Progress, ProgressFn, TopLabel,
};

/// Errors while assembling the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Config(String),
    #[error("certificates: {0}")]
    Certs(#[from] glimpse_certs::CertError),
    #[error("starting a local worker: {0}")]
    Node(#[from] glimpse_node::NodeError),
    #[error("loading the model: {0}")]
    Model(#[from] glimpse_model::ModelError),
    #[error("dispatcher: {0}")]
    Transport(#[from] glimpse_transport::TransportError),
    #[error("resolving {target}: {source}")]
    Resolve {
        target: String,
        source: std::io::Error,
    },
}

/// The real dispatcher seen through the site's [`Inference`] seam.
#[derive(Clone)]
pub struct DispatchInference {
    dispatcher: Dispatcher,
}

impl DispatchInference {
    pub fn new(dispatcher: Dispatcher) -> DispatchInference {
        DispatchInference { dispatcher }
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }
}

impl Inference for DispatchInference {
    fn classify(&self, image: Bytes, top_k: u32, progress: ProgressFn) -> ClassifyFuture {
        let dispatcher = self.dispatcher.clone();
        Box::pin(async move {
            let callback = move |p: glimpse_transport::Progress| progress(map_progress(p));
            match dispatcher.classify(image, top_k, callback).await {
                Ok(c) => Ok(Outcome {
                    warning: untrained_warning(&dispatcher, &c),
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

    fn metrics_text(&self) -> String {
        let s = self.dispatcher.stats();
        let mut out = String::new();
        let rows: [(&str, &str, u64); 11] = [
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
        for (name, help, v) in rows {
            out.push_str(&format!(
                "# HELP glimpse_dispatch_{name}_total {help}\n# TYPE glimpse_dispatch_{name}_total counter\nglimpse_dispatch_{name}_total {v}\n"
            ));
        }
        out
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
    pub inference: Arc<DispatchInference>,
    workers: Vec<RunningNode>,
    stop_workers: watch::Sender<bool>,
}

impl Cluster {
    /// Number of nodes configured.
    pub fn node_count(&self) -> usize {
        self.inference.dispatcher.nodes().len()
    }

    /// Close the dispatcher's connections, then drain and stop the local workers.
    pub async fn shutdown(self) {
        self.inference.dispatcher.shutdown();
        let _ = self.stop_workers.send(true);
        for w in self.workers {
            if let Err(e) = w.wait().await {
                tracing::warn!("local worker stopped with: {e}");
            }
        }
    }
}

fn dispatcher_config(cli: &Cli, mut config: DispatcherConfig) -> DispatcherConfig {
    config.max_attempts = cli.max_attempts.max(1);
    config.request_deadline = cli.request_timeout();
    config.hedge = cli.hedge;
    config.silence_floor = Duration::from_millis(cli.silence_ms);
    config.tuning.congestion = cli.congestion;
    config
}

/// Build the cluster the flags describe.
pub async fn build(cli: &Cli) -> Result<Cluster, ClusterError> {
    let (tx, rx) = watch::channel(false);
    if cli.local_workers > 0 {
        local(cli, tx, rx).await
    } else if !cli.nodes.is_empty() {
        remote(cli, tx).await
    } else {
        Err(ClusterError::Config(
            "no nodes: pass --local-workers N, or --node NAME=HOST:PORT with --ca, --cert and --key".to_string(),
        ))
    }
}

async fn remote(cli: &Cli, stop: watch::Sender<bool>) -> Result<Cluster, ClusterError> {
    let (Some(ca), Some(cert), Some(key)) = (&cli.ca, &cli.cert, &cli.key) else {
        return Err(ClusterError::Config(
            "--node needs --ca, --cert and --key".to_string(),
        ));
    };
    let ca = glimpse_certs::load_certs_file(ca)?;
    let chain = glimpse_certs::load_certs_file(cert)?;
    let key = glimpse_certs::load_key_file(key)?;
    let mut endpoints = Vec::with_capacity(cli.nodes.len());
    for node in &cli.nodes {
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
    let config = dispatcher_config(cli, DispatcherConfig::new(endpoints, ca, chain, key));
    let dispatcher = Dispatcher::start(config)?;
    Ok(Cluster {
        inference: Arc::new(DispatchInference::new(dispatcher)),
        workers: Vec::new(),
        stop_workers: stop,
    })
}

async fn local(
    cli: &Cli,
    stop: watch::Sender<bool>,
    rx: watch::Receiver<bool>,
) -> Result<Cluster, ClusterError> {
    let model = match cli.model {
        ModelChoice::Synthetic => {
            if !cli.service_ms.is_finite() || cli.service_ms < 0.0 {
                return Err(ClusterError::Config(format!(
                    "--service-ms must be a non-negative number, got {}",
                    cli.service_ms
                )));
            }
            ModelSpec::Synthetic {
                service: Duration::from_secs_f64(cli.service_ms / 1000.0),
            }
        }
        ModelChoice::Googlenet => {
            let weights: glimpse_model::WeightsSource = cli
                .weights
                .parse()
                .map_err(|e| ClusterError::Config(format!("--weights: {e}")))?;
            let backend: glimpse_model::Backend = match &cli.backend {
                Some(b) => b
                    .parse()
                    .map_err(|e| ClusterError::Config(format!("--backend: {e}")))?,
                None => glimpse_model::Backend::default(),
            };
            // Load once and share: N workers in one process need one copy of the weights.
            let classifier = tokio::task::spawn_blocking(move || {
                glimpse_model::Classifier::load(&weights, backend)
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
    for i in 1..=cli.local_workers {
        let name = format!("local-{i}");
        let issued = ca.issue_node(&name, &[loopback])?;
        let tls = NodeTls {
            cert_chain: issued.cert_chain()?,
            key: issued.private_key()?,
            client_ca: vec![ca.cert_der()],
        };
        let mut config = NodeConfig::new(SocketAddr::new(loopback, 0), tls, name.clone());
        config.model = model.clone();
        if let Some(c) = cli.worker_capacity {
            config.capacity = c;
        }
        let node = start_node(config, stopped(rx.clone())).await?;
        endpoints.push(NodeEndpoint {
            name,
            addr: node.addr(),
        });
        workers.push(node);
    }
    let client = ca.issue_client("glimpse-frontend")?;
    let config = dispatcher_config(
        cli,
        DispatcherConfig::new(
            endpoints,
            vec![ca.cert_der()],
            client.cert_chain()?,
            client.private_key()?,
        ),
    );
    let dispatcher = Dispatcher::start(config)?;
    Ok(Cluster {
        inference: Arc::new(DispatchInference::new(dispatcher)),
        workers,
        stop_workers: stop,
    })
}

/// Completes when the workers' stop flag flips to true (or its sender is gone).
async fn stopped(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
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
    use clap::Parser;
    use glimpse_transport::{CongestionControl, DispatcherConfig, PrivateKeyDer};
    use rustls::pki_types::PrivatePkcs8KeyDer;

    use super::*;

    fn config_from(args: &[&str]) -> DispatcherConfig {
        let cli = Cli::try_parse_from(args).expect("flags parse");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![0u8; 4]));
        dispatcher_config(&cli, DispatcherConfig::new(vec![], vec![], vec![], key))
    }

    #[test]
    fn dispatch_flags_reach_the_dispatcher() {
        let c = config_from(&["glimpse"]);
        assert_eq!(c.tuning.congestion, CongestionControl::Cubic);
        assert_eq!(c.silence_floor, Duration::from_millis(500));
        let c = config_from(&[
            "glimpse",
            "--congestion",
            "bbr",
            "--silence-ms",
            "750",
            "--max-attempts",
            "5",
            "--hedge",
        ]);
        assert_eq!(c.tuning.congestion, CongestionControl::Bbr);
        assert_eq!(c.silence_floor, Duration::from_millis(750));
        assert_eq!(c.max_attempts, 5);
        assert!(c.hedge);
        assert!(Cli::try_parse_from(["glimpse", "--congestion", "reno"]).is_err());
    }
}
