//! Shared test fixtures: an in-memory cluster CA, nodes on 127.0.0.1 with a scriptable handler,
//! dispatchers and raw QUIC clients.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use glimpse_certs::{CertifiedKey, ClusterCa};
use glimpse_transport::config::{
    TransportTuning, bind_endpoint, frontend_quinn_config, frontend_tls_config, node_quinn_config,
    node_tls_config,
};
use glimpse_transport::{
    Dispatcher, DispatcherConfig, Handler, InferenceAnswer, InferenceError, InferenceRequest,
    Label, LoadReport, NodeEndpoint, NodeInfo, NodeServer, NodeServerConfig, Timings, WorkStarted,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Generous: a loaded 2-core machine may stall for seconds.
pub(crate) const LONG: Duration = Duration::from_secs(30);

pub(crate) fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

pub(crate) struct Pki {
    pub ca: ClusterCa,
    pub frontend: CertifiedKey,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let ca = ClusterCa::generate("test CA").unwrap();
        let frontend = ca.issue_client("frontend").unwrap();
        Pki { ca, frontend }
    }

    pub(crate) fn node_config(&self, name: &str, capacity: u32) -> NodeServerConfig {
        let ck = self
            .ca
            .issue_node(name, &["127.0.0.1".parse().unwrap()])
            .unwrap();
        NodeServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            ck.cert_chain().unwrap(),
            ck.private_key().unwrap(),
            vec![self.ca.cert_der()],
            info(name, capacity),
        )
    }

    pub(crate) fn dispatcher_config(&self, nodes: &[(&str, SocketAddr)]) -> DispatcherConfig {
        let mut cfg = DispatcherConfig::new(
            nodes
                .iter()
                .map(|(n, a)| NodeEndpoint {
                    name: n.to_string(),
                    addr: *a,
                })
                .collect(),
            vec![self.ca.cert_der()],
            self.frontend.cert_chain().unwrap(),
            self.frontend.private_key().unwrap(),
        );
        cfg.policy.request_deadline = LONG;
        cfg.reconnect_max = Duration::from_millis(500);
        cfg
    }

    /// A raw QUIC client endpoint with the front-end's certificate (for protocol-level tests).
    pub(crate) fn raw_client(&self) -> (quinn::Endpoint, quinn::ClientConfig) {
        client_with(&self.ca, &self.frontend)
    }

    /// A QUIC endpoint with node `name`'s certificate, on a free loopback port: for
    /// hand-written nodes that speak the protocol frame by frame.
    pub(crate) fn raw_node_endpoint(&self, name: &str) -> (quinn::Endpoint, SocketAddr) {
        let ck = self
            .ca
            .issue_node(name, &["127.0.0.1".parse().unwrap()])
            .unwrap();
        let tuning = TransportTuning::default();
        let tls = node_tls_config(
            ck.cert_chain().unwrap(),
            ck.private_key().unwrap(),
            &[self.ca.cert_der()],
        )
        .unwrap();
        let ep = bind_endpoint(
            "127.0.0.1:0".parse().unwrap(),
            Some(node_quinn_config(tls, &tuning, 8).unwrap()),
            &tuning,
        )
        .unwrap();
        let addr = ep.local_addr().unwrap();
        (ep, addr)
    }
}

pub(crate) fn client_with(
    trust: &ClusterCa,
    identity: &CertifiedKey,
) -> (quinn::Endpoint, quinn::ClientConfig) {
    let tuning = TransportTuning::default();
    let tls = frontend_tls_config(
        &[trust.cert_der()],
        identity.cert_chain().unwrap(),
        identity.private_key().unwrap(),
    )
    .unwrap();
    let cfg = frontend_quinn_config(tls, &tuning).unwrap();
    let ep = bind_endpoint("127.0.0.1:0".parse().unwrap(), None, &tuning).unwrap();
    (ep, cfg)
}

pub(crate) async fn raw_connect(
    ep: &quinn::Endpoint,
    cfg: &quinn::ClientConfig,
    addr: SocketAddr,
    name: &str,
) -> Result<quinn::Connection, String> {
    let connecting = ep
        .connect_with(cfg.clone(), addr, name)
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(LONG, connecting)
        .await
        .map_err(|_| "timeout".to_string())?
        .map_err(|e| e.to_string())
}

pub(crate) fn info(name: &str, capacity: u32) -> NodeInfo {
    NodeInfo {
        node_id: name.to_string(),
        model: "test".into(),
        weights: "none".into(),
        trained: false,
        synthetic: true,
        backend: "test".into(),
        capacity,
        max_batch: 1,
        max_batch_wait_ms: 0,
        version: "test".into(),
        load_interval_ms: None,
        acks: false,
    }
}

/// Checksum the answer carries, so tests can see the node got the right bytes.
pub(crate) fn checksum(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .fold(0u32, |a, b| a.wrapping_mul(31).wrapping_add(u32::from(*b)))
        % 1000
}

/// A scriptable handler: optional delay, optional error, counts calls, completions and
/// cancellations (future dropped before completion).
///
/// Like a real node it says it started work (a Started frame, `started_expect_ms` as its
/// estimate) as soon as it is called, unless `hold_unstarted` is set: then it waits, not
/// started, until the flag is cleared (a request queued at a node).
pub(crate) struct TestHandler {
    pub name: String,
    pub delay_ms: AtomicU64,
    pub fail: Mutex<Option<InferenceError>>,
    pub calls: AtomicU64,
    pub completed: AtomicU64,
    pub cancelled: Arc<AtomicU64>,
    pub seen: Mutex<Vec<(u64, u32)>>,
    pub stall: AtomicBool,
    pub hold_unstarted: AtomicBool,
    pub started_expect_ms: AtomicU64,
    /// Requests it said it started.
    pub started: AtomicU64,
}

impl TestHandler {
    pub(crate) fn new(name: &str) -> Arc<TestHandler> {
        Arc::new(TestHandler {
            name: name.to_string(),
            delay_ms: AtomicU64::new(0),
            fail: Mutex::new(None),
            calls: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            cancelled: Arc::new(AtomicU64::new(0)),
            seen: Mutex::new(Vec::new()),
            stall: AtomicBool::new(false),
            hold_unstarted: AtomicBool::new(false),
            started_expect_ms: AtomicU64::new(0),
            started: AtomicU64::new(0),
        })
    }

    pub(crate) fn with_delay(name: &str, ms: u64) -> Arc<TestHandler> {
        let h = TestHandler::new(name);
        h.delay_ms.store(ms, Ordering::SeqCst);
        h
    }

    pub(crate) fn failing(name: &str, e: InferenceError) -> Arc<TestHandler> {
        let h = TestHandler::new(name);
        *h.fail.lock().unwrap() = Some(e);
        h
    }
}

struct CancelGuard {
    done: bool,
    counter: Arc<AtomicU64>,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.done {
            self.counter.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Handler for TestHandler {
    async fn handle(
        &self,
        req: InferenceRequest,
        started: WorkStarted,
    ) -> Result<InferenceAnswer, InferenceError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen
            .lock()
            .unwrap()
            .push((req.request_id, req.attempt));
        let mut guard = CancelGuard {
            done: false,
            counter: self.cancelled.clone(),
        };
        while self.hold_unstarted.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.started.fetch_add(1, Ordering::SeqCst);
        started.send(Duration::from_millis(
            self.started_expect_ms.load(Ordering::SeqCst),
        ));
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        while self.stall.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        guard.done = true;
        self.completed.fetch_add(1, Ordering::SeqCst);
        if let Some(e) = self.fail.lock().unwrap().clone() {
            return Err(e);
        }
        Ok(InferenceAnswer {
            top: vec![Label {
                index: checksum(&req.image),
                label: self.name.clone(),
                probability: 1.0,
            }],
            timings: Timings::default(),
            synthetic: true,
        })
    }

    fn load(&self) -> LoadReport {
        LoadReport {
            in_flight: (self.calls.load(Ordering::SeqCst) - self.completed.load(Ordering::SeqCst))
                as u32,
            queued: 0,
            recent_latency_ms: self.delay_ms.load(Ordering::SeqCst) as f32,
            ..LoadReport::default()
        }
    }
}

pub(crate) struct RunningNode {
    pub addr: SocketAddr,
    pub shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<Result<(), glimpse_transport::TransportError>>,
}

impl RunningNode {
    /// Graceful drain; returns the server's result.
    pub(crate) async fn drain(mut self) -> Result<(), glimpse_transport::TransportError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(LONG, self.task)
            .await
            .unwrap()
            .unwrap()
    }
}

pub(crate) fn start_node<H: Handler>(config: NodeServerConfig, handler: Arc<H>) -> RunningNode {
    let server = NodeServer::bind(config).unwrap();
    run_server(server, handler)
}

/// Bind, retrying while the address is still held by a previous server on it (a closed quinn
/// endpoint keeps its socket until its connections finish draining).
pub(crate) async fn start_node_on_same_addr<H: Handler>(
    config: NodeServerConfig,
    handler: Arc<H>,
) -> RunningNode {
    let deadline = std::time::Instant::now() + LONG;
    loop {
        match NodeServer::bind(config.clone()) {
            Ok(server) => return run_server(server, handler),
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "cannot rebind: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn run_server<H: Handler>(server: NodeServer, handler: Arc<H>) -> RunningNode {
    let addr = server.local_addr();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(server.run(handler, async move {
        let _ = rx.await;
    }));
    RunningNode {
        addr,
        shutdown: Some(tx),
        task,
    }
}

/// A node on its own runtime and thread, so it can be killed abruptly: shutting the runtime
/// down drops every task and the socket without a CONNECTION_CLOSE, like SIGKILL.
pub(crate) struct KillableNode {
    pub addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

impl KillableNode {
    pub(crate) fn start<H: Handler>(config: NodeServerConfig, handler: Arc<H>) -> KillableNode {
        // Built on another thread: a runtime cannot be started from inside the test's runtime.
        let (runtime, addr) = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let server = runtime
                .block_on(async { NodeServer::bind(config) })
                .unwrap();
            let addr = server.local_addr();
            runtime.spawn(server.run(handler, std::future::pending::<()>()));
            (runtime, addr)
        })
        .join()
        .unwrap();
        KillableNode {
            addr,
            runtime: Some(runtime),
        }
    }

    pub(crate) fn kill(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for KillableNode {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) async fn ready(d: &Dispatcher, n: usize) {
    assert!(
        d.wait_ready(n, LONG).await,
        "nodes not ready: {:?}",
        d.nodes()
    );
}

pub(crate) fn image(seed: u8, len: usize) -> bytes::Bytes {
    bytes::Bytes::from(
        (0..len)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect::<Vec<_>>(),
    )
}
