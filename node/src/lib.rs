//! Glimpse worker node.
//!
//! A node accepts QUIC connections from front-ends (mutual TLS, see glimpse-transport), takes
//! one image per stream, and answers with the top-k labels and timings. The pieces:
//!
//! - [`handler`]: admission (capacity), a decode budget in bytes across concurrent decodes,
//!   decoding on tokio's blocking pool, "work started" signals to the front-end, fault injection,
//!   load reports;
//! - [`engine`]: the inference lanes, dedicated threads that gather images from one queue into
//!   batches (up to `max_batch`, waiting at most `max_batch_wait`) and run one forward pass
//!   per batch each, on their own share of the compute threads ([`lanes`]: `--threads`,
//!   `--lanes`);
//! - [`synthetic`]: a weight-free stand-in model for small machines and transport tests;
//! - [`faults`]: `--fail-rate`, `--stall-rate`, `--extra-delay-ms`;
//! - [`shutdown`]: the drain signal passed down to every node;
//! - [`classify`]: the `glimpse-node classify` command (local files, no network);
//! - `admin` and `observe`: `--admin-listen` (`/healthz`, `/readyz`, `/metrics`).
//!
//! [`start_node`] runs a node inside any tokio runtime; the `glimpse-node serve` binary and
//! `glimpse --local-workers N` both use it.

mod admin;
mod batches;
pub mod classify;
pub mod config;
mod engine;
mod error;
mod faults;
mod handler;
pub mod lanes;
mod observe;
pub mod shutdown;
pub mod synthetic;
mod traced;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use glimpse_model::Classifier;
use glimpse_transport::{NodeInfo, NodeServer, NodeServerConfig, TransportError};
use tokio::task::JoinHandle;

pub use config::{ModelKind, ModelSpec, NodeConfig, NodeTls, ServeArgs};
pub use error::NodeError;
pub use faults::{FAULT_EXIT_CODE, FaultConfig};
pub use handler::{NodeHandler, NodeStats};
pub use lanes::{Parallelism, ParallelismError, prepare_classifier};
pub use shutdown::{Shutdown, ShutdownTrigger, shutdown_channel};
pub use synthetic::SyntheticModel;

use engine::{BatchPolicy, Engine, ModelRunner};
use faults::Faults;
use handler::NodeCounters;
use observe::Observed;

/// A node started by [`start_node`], serving until its shutdown future completes.
#[derive(Debug)]
pub struct RunningNode {
    addr: SocketAddr,
    info: NodeInfo,
    counters: Arc<NodeCounters>,
    admin_addr: Option<SocketAddr>,
    task: JoinHandle<Result<(), NodeError>>,
}

impl RunningNode {
    /// The UDP address the node is bound to (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound `--admin-listen` address (`/healthz`, `/readyz`, `/metrics`), if any.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// What the node announces to front-ends.
    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    /// Requests answered, failed and refused as overloaded so far; decodes run and the
    /// decode budget in use.
    pub fn stats(&self) -> NodeStats {
        self.counters.snapshot()
    }

    /// Whether the node has stopped serving.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the node has drained and stopped. `Ok` after a clean drain.
    pub async fn wait(self) -> Result<(), NodeError> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(NodeError::Task(e.to_string())),
        }
    }

    /// Stops the node at once, without draining (in-flight streams are dropped).
    pub fn abort(&self) {
        self.task.abort();
    }
}

/// Binds the admin listener, checks that the node's UDP address is free, loads the model,
/// binds the node's UDP socket and starts serving on the current tokio runtime (a busy
/// address fails before the model loads). Returns once the node is listening. When `shutdown` completes the node announces
/// draining, refuses new streams, finishes in-flight work (within `config.drain_timeout`) and
/// stops; [`RunningNode::wait`] then returns.
// Over 80 lines on purpose: the node's start-up in order (listeners bound, model loaded, server, admin, drain); one place, so the order is read, not reconstructed.
pub async fn start_node(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<RunningNode, NodeError> {
    config.validate()?;
    let observed = Arc::new(Observed::new(config.capacity, config.parallelism));
    // The admin listener comes first, so probes get answers (alive, not ready) while a
    // large model loads.
    let admin = match config.admin_listen {
        Some(addr) => {
            let listener = admin::bind(addr).await.map_err(|error| NodeError::Listen {
                flag: "--admin-listen",
                addr,
                error,
            })?;
            let bound = listener.local_addr().map_err(NodeError::Admin)?;
            tracing::info!(addr = %bound, "admin listener: /healthz /readyz /metrics");
            Some((AbortOnDrop(admin::serve(listener, observed.clone())), bound))
        }
        None => None,
    };
    // Bind the QUIC port before the model loads, so a busy `--listen` fails at once, not
    // after the weights are read; the server then runs on this very socket.
    let socket = bind_udp(config.listen)?;
    let (runner, info) = load_model(&config).await?;
    let decode = runner.needs_decoding();
    let engine = Engine::start_observed(
        runner,
        BatchPolicy {
            max_batch: config.max_batch as usize,
            max_batch_wait: config.max_batch_wait,
            queue_limit: config.capacity as usize,
        },
        config.parallelism,
        observed.batches.clone(),
    )
    .map_err(NodeError::Thread)?;
    let limits = config.decode_limits();
    let counters = observed.counters.clone();
    let handler = Arc::new(NodeHandler::new(
        engine,
        decode,
        limits.clone(),
        config.decode_budget_bytes,
        Faults::new(config.faults.clone()),
        config.capacity,
        counters.clone(),
    ));
    let mut server_config = NodeServerConfig::new(
        config.listen,
        config.tls.cert_chain.clone(),
        config.tls.key.clone_key(),
        config.tls.client_ca.clone(),
        info.clone(),
    );
    server_config.capacity = config.capacity;
    server_config.max_image_bytes = config.max_image_bytes;
    server_config.drain_timeout = config.drain_timeout;
    server_config.tuning.stateless_reset_key = Some(stateless_reset_key(&config.tls));
    let server = NodeServer::on_socket(server_config, socket)?;
    let addr = server.local_addr();
    tracing::info!(
        node_id = %info.node_id,
        %addr,
        model = %info.model,
        weights = %info.weights,
        trained = info.trained,
        backend = %info.backend,
        capacity = info.capacity,
        max_batch = info.max_batch,
        max_batch_wait_ms = info.max_batch_wait_ms,
        decode_budget_bytes = config.decode_budget_bytes,
        max_pixels = limits.max_pixels,
        threads = config.parallelism.threads(),
        lanes = config.parallelism.lanes(),
        threads_per_lane = ?config.parallelism.threads_per_lane(),
        "node listening"
    );
    if (config.capacity as usize) < config.parallelism.lanes() {
        tracing::warn!(
            capacity = config.capacity,
            lanes = config.parallelism.lanes(),
            "capacity is below the number of lanes: some lanes will never have work"
        );
    }

    observed.serving(&handler);
    let (drain_tx, drain_rx) = shutdown_channel();
    let draining = observed.clone();
    let shutdown = async move {
        shutdown.await;
        draining.drain();
        drain_tx.trigger();
    };
    let traced = Arc::new(traced::Traced::new(
        handler.clone(),
        info.node_id.to_string(),
    ));
    let run = tokio::spawn(server.run(traced, shutdown));
    let task_counters = counters.clone();
    let (admin_task, admin_addr) = admin.unzip();
    // The transport gives up on in-flight work after `drain_timeout` and returns; this backstop
    // only fires if it does not.
    let backstop = config.drain_timeout + Duration::from_secs(5);
    let task = tokio::spawn(async move {
        let result = supervise(run, drain_rx, backstop).await;
        tracing::info!(stats = ?task_counters.snapshot(), ok = result.is_ok(), "node stopped");
        // The last handler reference joins the inference lanes, which may be finishing a
        // batch: do that off the runtime threads.
        let _ = tokio::task::spawn_blocking(move || drop(handler)).await;
        // The admin listener answers until the node has stopped.
        drop(admin_task);
        result
    });
    Ok(RunningNode {
        addr,
        info,
        counters,
        admin_addr,
        task,
    })
}

/// The node's UDP socket at `addr`, bound now; a failure names `--listen`.
fn bind_udp(addr: SocketAddr) -> Result<std::net::UdpSocket, NodeError> {
    std::net::UdpSocket::bind(addr).map_err(|error| NodeError::Listen {
        flag: "--listen",
        addr,
        error,
    })
}

/// Aborts a task when dropped: the admin listener stops with the node, however it ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn supervise(
    mut run: JoinHandle<Result<(), TransportError>>,
    drain: Shutdown,
    drain_timeout: Duration,
) -> Result<(), NodeError> {
    let flatten = |r: Result<Result<(), TransportError>, tokio::task::JoinError>| match r {
        Ok(inner) => inner.map_err(NodeError::from),
        Err(e) => Err(NodeError::Task(e.to_string())),
    };
    // The trigger lives in the shutdown future the server holds: if the server stops on its
    // own, dropping that future fires the signal too, and `run` is already finished below.
    tokio::select! {
        r = &mut run => return flatten(r),
        () = drain.wait() => {}
    };
    tracing::debug!(backstop = ?drain_timeout, "shutdown started; waiting for the transport to drain");
    match tokio::time::timeout(drain_timeout, &mut run).await {
        Ok(r) => flatten(r),
        Err(_) => {
            run.abort();
            Err(NodeError::DrainTimeout(drain_timeout))
        }
    }
}

/// A stateless-reset key that survives restarts: derived from the node's private key, so a
/// node restarted on the same address answers packets of its old connections with a stateless
/// reset and front-ends drop them at once instead of waiting for the idle timeout. Hashing with
/// a domain-separation prefix keeps the TLS key itself out of reach.
fn stateless_reset_key(tls: &NodeTls) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"glimpse-node stateless reset key v1\0");
    h.update(tls.key.secret_der());
    h.finalize().into()
}

/// Builds the model runner and the identity the node announces.
async fn load_model(config: &NodeConfig) -> Result<(ModelRunner, NodeInfo), NodeError> {
    let version = env!("CARGO_PKG_VERSION").to_string();
    let base = |model: String, weights: String, trained: bool, synthetic: bool, backend: String| {
        NodeInfo {
            node_id: config.node_id.clone(),
            model,
            weights,
            trained,
            synthetic,
            backend,
            capacity: config.capacity,
            max_batch: config.max_batch,
            max_batch_wait_ms: u32::try_from(config.max_batch_wait.as_millis()).unwrap_or(u32::MAX),
            version: version.clone(),
            load_interval_ms: None,
            // The transport's NodeServer announces that it sends Started frames.
            acks: false,
        }
    };
    let classifier: Arc<Classifier> = match &config.model {
        ModelSpec::Synthetic { service } => {
            let info = base(
                format!("synthetic({} ms/image)", service.as_secs_f64() * 1000.0),
                "none (synthetic: labels are a hash of the image bytes)".into(),
                false,
                true,
                "synthetic".into(),
            );
            return Ok((ModelRunner::Synthetic(SyntheticModel::new(*service)), info));
        }
        ModelSpec::Loaded(classifier) => classifier.clone(),
        ModelSpec::GoogLeNet { weights, backend } => {
            let (weights, backend) = (weights.clone(), *backend);
            let lanes = config.parallelism.lanes();
            // Loading reads (maybe downloads) and converts weights: blocking work.
            let loaded = tokio::task::spawn_blocking(move || {
                Classifier::load(&weights, backend).map(|c| prepare_classifier(c, lanes))
            })
            .await
            .map_err(|e| NodeError::Task(e.to_string()))??;
            Arc::new(loaded)
        }
    };
    let identity = classifier.identity().clone();
    let info = base(
        "googlenet".into(),
        identity.name.clone(),
        identity.trained,
        false,
        classifier.backend().to_string(),
    );
    Ok((ModelRunner::GoogLeNet(classifier), info))
}
