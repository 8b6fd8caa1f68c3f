//! The front-end side: connections to every node, placement, retries and hedging.
//!
//! One background task per node keeps a connection up (exponential backoff with jitter between
//! tries) and follows the node's control stream (NodeInfo, load, draining). `classify` places
//! each image by *power of two choices* on outstanding requests among Ready nodes with stream
//! credit, and on any retryable failure reopens the image (the same `Bytes`, no copy) on another
//! node, until an answer, a non-retryable error, `max_attempts` or the request deadline.
//!
//! Every request asks its node for a `Started` frame (see [`crate::codec`]): a node that sends
//! them (`NodeInfo::acks`) says when the image leaves its queues and real work (decoding)
//! begins, with an estimate of that work. An attempt is *overdue* at launch + its timeout
//! (max(floor, factor × observed p99), or the cold timeout) + an upload allowance while it
//! has not started, and at started + that timeout + [`STARTED_EXPECT_FACTOR`] × the node's
//! estimate once it has. An overdue attempt that has started, or whose node does not send
//! Started frames, is *not* cancelled: the image is reopened on another node and the first
//! answer wins, so a node that is merely slow (every answer held 10 s, say) still answers,
//! while a stalled one is routed around. An overdue attempt that has *not* started on a node
//! that would have said so is only waiting there: it is reopened elsewhere and cancelled
//! (its stream reset), so no image is ever decoded on two nodes because of a queue (when no
//! other node can take it, it stays and keeps its place). Both cases count in
//! `DispatchStats::timeouts`; the cancelled ones also in `unstarted_cancels`. A node whose
//! control stream goes quiet (its load reports are its heartbeat) is marked *silent*: its
//! in-flight images are reopened elsewhere at once, without waiting for QUIC's idle timeout,
//! and it gets new work only when no other node can take it. With hedging on, a request still
//! unanswered after the observed p95 gets a second copy on another node; the first answer wins
//! and the loser is cancelled by a stream reset. Each call returns exactly once.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::Connection;
use rand::Rng;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{debug, info, warn};

use crate::client::{self, AttemptError, StartedSignal};
use crate::codec::{self, CLOSE_SHUTDOWN, ControlMessage, MAX_FRAME_BYTES, RequestHeader};
use crate::config::{TransportTuning, bind_endpoint, frontend_quinn_config, frontend_tls_config};
use crate::error::TransportError;
use crate::stream::{self, FrameReadError};
use crate::types::{InferenceAnswer, InferenceError, LoadReport, NodeInfo};

/// A node to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeEndpoint {
    /// Expected TLS server name (DNS SAN of the node's certificate).
    pub name: String,
    /// UDP address.
    pub addr: SocketAddr,
}

/// Front-end configuration.
#[derive(Debug)]
pub struct DispatcherConfig {
    /// Nodes to connect to.
    pub nodes: Vec<NodeEndpoint>,
    /// Cluster CA: node certificates must chain to it.
    pub ca: Vec<CertificateDer<'static>>,
    /// Front-end client certificate (signed by the cluster CA).
    pub client_cert_chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub client_key: PrivateKeyDer<'static>,
    /// Most attempts per request, hedges included. Default 4.
    pub max_attempts: u32,
    /// Overall budget per request, retries and waiting for a node included. Default 30 s.
    pub request_deadline: Duration,
    /// Send a second copy of slow requests to another node. Default off: it costs capacity.
    pub hedge: bool,
    /// Never hedge earlier than this. Default 5 ms (below it the hedge costs more than it saves).
    pub hedge_min_delay: Duration,
    /// Lower bound of the per-attempt timeout. Default 500 ms.
    pub attempt_timeout_floor: Duration,
    /// Per-attempt timeout = max(floor, factor × observed p99) once latency is known. Default 4.
    pub attempt_timeout_factor: f32,
    /// Per-attempt timeout before 20 latency samples exist. Default 10 s: the first GoogLeNet
    /// batches on a cold 2-core node are slow, and retrying them would only double the load.
    pub attempt_timeout_cold: Duration,
    /// Upload allowance added to the per-attempt timeout, in bytes per second: large images
    /// take longer to send than small ones. Default 4 MiB/s (a 16 MiB image gets +4 s).
    pub upload_bytes_per_sec: u64,
    /// First reconnect delay. Default 100 ms.
    pub reconnect_min: Duration,
    /// Largest reconnect delay. Default 2 s: a restarted node is back in use within ~2 s.
    pub reconnect_max: Duration,
    /// Handshake + Hello timeout. Default 3 s.
    pub connect_timeout: Duration,
    /// A node is *silent* when nothing arrives on its control stream for
    /// max(this floor, `silence_reports` × its load interval) + 2 × the connection's RTT; its
    /// in-flight images are then reopened on other nodes (the attempts go on and may still
    /// win). Default 500 ms: a killed node's images move on in about half a second instead
    /// of QUIC's 10 s idle timeout, while a node that is only briefly descheduled rarely
    /// trips it (and a false alarm costs a duplicate attempt, never an answer).
    pub silence_floor: Duration,
    /// Load reports a node may miss before it counts as silent (see `silence_floor`).
    /// Default 5.
    pub silence_reports: u32,
    /// QUIC settings (`max_image_bytes` also caps what `classify` accepts).
    pub tuning: TransportTuning,
    /// Local UDP address to bind. Default: unspecified address of the first node's family, port 0.
    pub bind: Option<SocketAddr>,
}

impl Clone for DispatcherConfig {
    fn clone(&self) -> Self {
        DispatcherConfig {
            nodes: self.nodes.clone(),
            ca: self.ca.clone(),
            client_cert_chain: self.client_cert_chain.clone(),
            client_key: self.client_key.clone_key(),
            max_attempts: self.max_attempts,
            request_deadline: self.request_deadline,
            hedge: self.hedge,
            hedge_min_delay: self.hedge_min_delay,
            attempt_timeout_floor: self.attempt_timeout_floor,
            attempt_timeout_factor: self.attempt_timeout_factor,
            attempt_timeout_cold: self.attempt_timeout_cold,
            upload_bytes_per_sec: self.upload_bytes_per_sec,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            connect_timeout: self.connect_timeout,
            silence_floor: self.silence_floor,
            silence_reports: self.silence_reports,
            tuning: self.tuning.clone(),
            bind: self.bind,
        }
    }
}

impl DispatcherConfig {
    /// A config with the documented defaults.
    pub fn new(
        nodes: Vec<NodeEndpoint>,
        ca: Vec<CertificateDer<'static>>,
        client_cert_chain: Vec<CertificateDer<'static>>,
        client_key: PrivateKeyDer<'static>,
    ) -> Self {
        DispatcherConfig {
            nodes,
            ca,
            client_cert_chain,
            client_key,
            max_attempts: 4,
            request_deadline: Duration::from_secs(30),
            hedge: false,
            hedge_min_delay: Duration::from_millis(5),
            attempt_timeout_floor: Duration::from_millis(500),
            attempt_timeout_factor: 4.0,
            attempt_timeout_cold: Duration::from_secs(10),
            upload_bytes_per_sec: 4 * 1024 * 1024,
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            silence_floor: Duration::from_millis(500),
            silence_reports: 5,
            tuning: TransportTuning::default(),
            bind: None,
        }
    }
}

/// Events reported to `classify`'s progress callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Progress {
    /// An attempt was sent to `node`.
    Sent { node: String, attempt: u32 },
    /// An attempt failed and the image will be retried.
    Retrying { attempt: u32, reason: String },
    /// A hedge copy was sent to `node`.
    Hedged { node: String },
}

/// A successful classification.
#[derive(Debug, Clone, Serialize)]
pub struct Classified {
    /// The node's answer.
    pub answer: InferenceAnswer,
    /// Which node answered.
    pub node: String,
    /// Attempts made (hedges included).
    pub attempts: u32,
    /// Time from `classify` to the answer.
    pub latency: Duration,
}

/// Why `classify` gave up. Exactly one of these, or a `Classified`, per call.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
pub enum DispatchError {
    /// A node rejected the image with a non-retryable error (bad image, too large).
    #[error("rejected: {0}")]
    Rejected(InferenceError),
    /// No node became available within the deadline (or none is configured).
    #[error("no node available")]
    NoNodes,
    /// The request deadline passed.
    #[error("deadline exceeded after {attempts} attempt(s)")]
    DeadlineExceeded { attempts: u32 },
    /// Every attempt failed.
    #[error("all {attempts} attempt(s) failed; last: {last}")]
    AttemptsExhausted { attempts: u32, last: String },
}

/// Connection state of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NodeState {
    /// Handshake in progress (or waiting to retry).
    Connecting,
    /// Connected and announced: takes work.
    Ready,
    /// Announced shutdown: takes no new work.
    Draining,
    /// Not connected; reconnecting with backoff.
    Down,
}

/// A node as the site shows it.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// Configured name.
    pub name: String,
    /// Configured address.
    pub addr: SocketAddr,
    /// Connection state.
    pub state: NodeState,
    /// What the node announced (last connection).
    pub info: Option<NodeInfo>,
    /// Last load report.
    pub load: Option<LoadReport>,
    /// Connected, but nothing heard on its control stream for longer than the silence
    /// timeout: its images were reopened elsewhere and it gets work only as a last resort.
    pub silent: bool,
    /// Attempts outstanding on it from this front-end.
    pub in_flight: u32,
    /// Attempts it answered successfully.
    pub served: u64,
    /// Attempts on it that failed.
    pub failed: u64,
    /// Median round trip of its recent answers.
    pub p50_ms: Option<f32>,
    /// 95th percentile round trip of its recent answers.
    pub p95_ms: Option<f32>,
    /// Why the last connection ended or failed. (Addition to the contract.)
    pub last_error: Option<String>,
}

/// Front-end totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DispatchStats {
    /// `classify` calls.
    pub requests: u64,
    /// Calls answered.
    pub succeeded: u64,
    /// Calls ended by a non-retryable rejection.
    pub rejected: u64,
    /// Calls ended by the deadline.
    pub deadline_exceeded: u64,
    /// Calls ended after `max_attempts`.
    pub attempts_exhausted: u64,
    /// Calls ended with no node available.
    pub no_nodes: u64,
    /// Attempts sent (first tries, retries and hedges).
    pub attempts: u64,
    /// Retries after a failed attempt.
    pub retries: u64,
    /// Hedge copies sent.
    pub hedges: u64,
    /// Requests won by the hedge copy.
    pub hedge_wins: u64,
    /// Attempts ended by a stream reset/stop from a node.
    pub resets: u64,
    /// Attempts that outlived the per-attempt timeout: the image was reopened on another node
    /// while the slow attempt went on (it may still win), or, when it had not started, was
    /// cancelled (counted again in `unstarted_cancels`).
    pub timeouts: u64,
    /// Overdue attempts that had not started on a node that sends Started frames: the image
    /// was still waiting in that node's queue, so it was reopened elsewhere and the waiting
    /// attempt cancelled, instead of letting both nodes work on it.
    pub unstarted_cancels: u64,
    /// Attempts ended by a lost connection.
    pub connection_losses: u64,
    /// Times a connected node went silent (no control frame within the silence timeout).
    pub silences: u64,
    /// Attempts on a silent node whose image was reopened on another node because of it.
    pub silence_reopens: u64,
    /// Attempts ended by a retryable typed error (overloaded, draining, internal).
    pub retryable_errors: u64,
    /// Request bytes written (headers + images, retries included).
    pub bytes_sent: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    succeeded: AtomicU64,
    rejected: AtomicU64,
    deadline_exceeded: AtomicU64,
    attempts_exhausted: AtomicU64,
    no_nodes: AtomicU64,
    attempts: AtomicU64,
    retries: AtomicU64,
    hedges: AtomicU64,
    hedge_wins: AtomicU64,
    resets: AtomicU64,
    timeouts: AtomicU64,
    unstarted_cancels: AtomicU64,
    connection_losses: AtomicU64,
    silences: AtomicU64,
    silence_reopens: AtomicU64,
    retryable_errors: AtomicU64,
    bytes_sent: AtomicU64,
}

fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Recent latencies (a ring of the last `LATENCY_WINDOW` samples).
struct LatencyWindow {
    samples: Vec<f32>,
    next: usize,
}

const LATENCY_WINDOW: usize = 256;
/// Samples needed before percentiles drive timeouts and hedging.
const MIN_SAMPLES: usize = 20;

/// How often a timed-out request looks again for a free node to reopen on.
const RETRY_POLL: Duration = Duration::from_millis(50);

/// Once a node has said it started an attempt, the attempt may take its usual timeout plus
/// this many times the node's own estimate of the work it started. The estimate is an
/// average of the node's recent rate; one image can run well over it when the node's cores
/// are shared with other decodes and inference, or when a codec path is slower per byte
/// than the average (a progressive JPEG). Twice the estimate absorbs that; past it the work
/// is more likely wedged than slow, and a second copy elsewhere is worth its cost.
pub const STARTED_EXPECT_FACTOR: u32 = 2;

impl LatencyWindow {
    fn new() -> Self {
        LatencyWindow {
            samples: Vec::with_capacity(LATENCY_WINDOW),
            next: 0,
        }
    }

    fn record(&mut self, ms: f32) {
        if self.samples.len() < LATENCY_WINDOW {
            self.samples.push(ms);
        } else {
            self.samples[self.next] = ms;
        }
        self.next = (self.next + 1) % LATENCY_WINDOW;
    }

    fn len(&self) -> usize {
        self.samples.len()
    }

    fn percentile(&self, p: f32) -> Option<f32> {
        if self.samples.is_empty() {
            return None;
        }
        let mut v = self.samples.clone();
        v.sort_by(f32::total_cmp);
        let idx = ((p / 100.0) * (v.len() - 1) as f32).round() as usize;
        v.get(idx.min(v.len() - 1)).copied()
    }
}

struct SlotState {
    state: NodeState,
    conn: Option<Connection>,
    info: Option<NodeInfo>,
    load: Option<LoadReport>,
    last_error: Option<String>,
}

struct NodeSlot {
    endpoint: NodeEndpoint,
    state: Mutex<SlotState>,
    /// See [`NodeStatus::silent`].
    silent: AtomicBool,
    outstanding: AtomicU32,
    served: AtomicU64,
    failed: AtomicU64,
    latency: Mutex<LatencyWindow>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a few assignments: a poisoned lock holds consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Inner {
    config: DispatcherConfig,
    endpoint: quinn::Endpoint,
    client_config: quinn::ClientConfig,
    slots: Vec<Arc<NodeSlot>>,
    /// Woken whenever a node's state changes or credit is freed.
    changed: Notify,
    /// Requests waiting for a node queue here (tokio's mutex is FIFO), so freed credit goes
    /// to the one that has waited longest. Without it every waiter woke and raced for the
    /// credit, and the scheduler's LIFO slot let late arrivals win: at saturation some images
    /// waited twice as long as the rest.
    turnstile: tokio::sync::Mutex<()>,
    counters: Counters,
    latency: Mutex<LatencyWindow>,
    next_request: AtomicU64,
    /// Bumped whenever a node goes silent, so running requests look at their attempts again.
    silences: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
}

/// Stops the background tasks when the last `Dispatcher` clone is dropped.
struct ShutdownOnDrop(Arc<Inner>);

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        let _ = self.0.shutdown.send(true);
        self.0.endpoint.close(
            quinn::VarInt::from_u32(CLOSE_SHUTDOWN),
            b"front-end shutdown",
        );
    }
}

/// The front-end's view of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
    _shutdown: Arc<ShutdownOnDrop>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("nodes", &self.inner.config.nodes)
            .finish_non_exhaustive()
    }
}

/// Outstanding-attempt accounting for a node; frees credit (and wakes waiters) on drop.
struct Outstanding {
    slot: Arc<NodeSlot>,
    inner: Arc<Inner>,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.slot.outstanding.fetch_sub(1, Ordering::SeqCst);
        self.inner.changed.notify_waiters();
    }
}

struct AttemptOutcome {
    node: usize,
    hedge: bool,
    elapsed: Duration,
    result: Result<InferenceAnswer, AttemptError>,
}

impl Dispatcher {
    /// Bind the front-end's UDP endpoint and start one connect/reconnect task per node.
    /// Must be called inside a tokio runtime.
    pub fn start(config: DispatcherConfig) -> Result<Dispatcher, TransportError> {
        if config.max_attempts == 0 {
            return Err(TransportError::Config(
                "max_attempts must be at least 1".into(),
            ));
        }
        let tls = frontend_tls_config(
            &config.ca,
            config.client_cert_chain.clone(),
            config.client_key.clone_key(),
        )?;
        let client_config = frontend_quinn_config(tls, &config.tuning)?;
        let bind = config.bind.unwrap_or_else(|| {
            let ip = match config.nodes.first().map(|n| n.addr) {
                Some(SocketAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            };
            SocketAddr::new(ip, 0)
        });
        let endpoint = bind_endpoint(bind, None, &config.tuning)?;
        let slots = config
            .nodes
            .iter()
            .map(|n| {
                Arc::new(NodeSlot {
                    endpoint: n.clone(),
                    state: Mutex::new(SlotState {
                        state: NodeState::Connecting,
                        conn: None,
                        info: None,
                        load: None,
                        last_error: None,
                    }),
                    silent: AtomicBool::new(false),
                    outstanding: AtomicU32::new(0),
                    served: AtomicU64::new(0),
                    failed: AtomicU64::new(0),
                    latency: Mutex::new(LatencyWindow::new()),
                })
            })
            .collect();
        let (shutdown, _) = watch::channel(false);
        let (silences, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            config,
            endpoint,
            client_config,
            slots,
            changed: Notify::new(),
            turnstile: tokio::sync::Mutex::new(()),
            counters: Counters::default(),
            latency: Mutex::new(LatencyWindow::new()),
            next_request: AtomicU64::new(1),
            silences,
            shutdown,
        });
        for i in 0..inner.slots.len() {
            tokio::spawn(node_task(inner.clone(), i));
        }
        Ok(Dispatcher {
            _shutdown: Arc::new(ShutdownOnDrop(inner.clone())),
            inner,
        })
    }

    /// Classify one image somewhere in the cluster. Returns exactly once: the first answer, a
    /// non-retryable rejection, or the reason it gave up. Dropping the future cancels every
    /// attempt still running (their streams are reset).
    pub async fn classify(
        &self,
        image: Bytes,
        top_k: u32,
        progress: impl Fn(Progress) + Send + Sync + 'static,
    ) -> Result<Classified, DispatchError> {
        let inner = &self.inner;
        inc(&inner.counters.requests);
        let result = self.classify_inner(image, top_k, &progress).await;
        let c = &inner.counters;
        match &result {
            Ok(_) => inc(&c.succeeded),
            Err(DispatchError::Rejected(_)) => inc(&c.rejected),
            Err(DispatchError::NoNodes) => inc(&c.no_nodes),
            Err(DispatchError::DeadlineExceeded { .. }) => inc(&c.deadline_exceeded),
            Err(DispatchError::AttemptsExhausted { .. }) => inc(&c.attempts_exhausted),
        }
        result
    }

    async fn classify_inner(
        &self,
        image: Bytes,
        top_k: u32,
        progress: &(impl Fn(Progress) + Send + Sync + 'static),
    ) -> Result<Classified, DispatchError> {
        let inner = &self.inner;
        let cfg = &inner.config;
        let start = Instant::now();
        let deadline = start + cfg.request_deadline;
        if inner.slots.is_empty() {
            return Err(DispatchError::NoNodes);
        }
        if image.len() > cfg.tuning.max_image_bytes {
            return Err(DispatchError::Rejected(InferenceError::TooLarge(format!(
                "{} bytes exceeds the limit of {} bytes",
                image.len(),
                cfg.tuning.max_image_bytes
            ))));
        }
        let request_id = inner.next_request.fetch_add(1, Ordering::Relaxed);
        let mut running: JoinSet<AttemptOutcome> = JoinSet::new();
        let mut running_nodes: Vec<usize> = Vec::new();
        let mut failed_nodes: HashSet<usize> = HashSet::new();
        let mut attempts: u32 = 0;
        let mut hedged = false;
        let mut last_error: Option<String> = None;
        let mut first_sent: Option<Instant> = None;
        // The newest attempt and when it counts as timed out. Timing out does not cancel it:
        // it keeps running (and may still win) while the image is reopened elsewhere.
        let mut slow_at: Option<Overdue> = None;
        // Wakes this request when some node goes silent: if it is the node of the newest
        // attempt, the image is reopened elsewhere at once.
        let mut silences = inner.silences.subscribe();
        // Wakes this request when a node says it started one of its attempts: the newest
        // attempt's overdue time moves.
        let started_notify = Arc::new(Notify::new());

        loop {
            // Launch an attempt when nothing is running and attempts remain.
            if running.is_empty() {
                if attempts >= cfg.max_attempts {
                    return Err(DispatchError::AttemptsExhausted {
                        attempts,
                        last: last_error.unwrap_or_default(),
                    });
                }
                let Some(node) = self
                    .wait_for_node(&running_nodes, &failed_nodes, deadline)
                    .await
                else {
                    return Err(if attempts == 0 {
                        DispatchError::NoNodes
                    } else {
                        DispatchError::DeadlineExceeded { attempts }
                    });
                };
                if failed_nodes.contains(&node) {
                    // Retrying on a node that just failed this request (no other choice): give
                    // it a moment rather than spinning on an overloaded node.
                    let pause = Duration::from_millis(25 * u64::from(attempts.min(8)));
                    if Instant::now() + pause >= deadline {
                        return Err(DispatchError::DeadlineExceeded { attempts });
                    }
                    tokio::time::sleep(pause).await;
                }
                attempts += 1;
                if attempts > 1 {
                    inc(&inner.counters.retries);
                }
                let watch = self.launch(
                    &mut running,
                    node,
                    request_id,
                    attempts,
                    deadline,
                    top_k,
                    &image,
                    false,
                    &started_notify,
                    progress,
                );
                running_nodes.push(node);
                slow_at = Some(watch);
                first_sent.get_or_insert_with(Instant::now);
            }

            let hedge_at = self.hedge_at(first_sent, hedged, running.len(), attempts);
            let overdue_at = slow_at
                .as_ref()
                .map(|o| o.due(&inner.slots, Instant::now()));
            tokio::select! {
                joined = running.join_next() => {
                    let Some(joined) = joined else { continue };
                    let outcome = match joined {
                        Ok(o) => o,
                        // An attempt this request cancelled itself (overdue, not started).
                        Err(e) if e.is_cancelled() => continue,
                        Err(e) => {
                            // A panicking attempt task: treat as a failed attempt.
                            last_error = Some(format!("attempt task failed: {e}"));
                            continue;
                        }
                    };
                    running_nodes.retain(|n| *n != outcome.node);
                    if slow_at.as_ref().is_some_and(|o| o.node == outcome.node) {
                        slow_at = None;
                    }
                    let slot = &inner.slots[outcome.node];
                    match outcome.result {
                        Ok(answer) => {
                            let ms = outcome.elapsed.as_secs_f32() * 1000.0;
                            slot.served.fetch_add(1, Ordering::Relaxed);
                            lock(&slot.latency).record(ms);
                            lock(&inner.latency).record(ms);
                            if outcome.hedge {
                                inc(&inner.counters.hedge_wins);
                            }
                            // Returning drops `running`: other attempts are aborted, their
                            // stream guards reset the streams on the other nodes.
                            return Ok(Classified {
                                answer,
                                node: slot.endpoint.name.clone(),
                                attempts,
                                latency: start.elapsed(),
                            });
                        }
                        Err(e) => {
                            slot.failed.fetch_add(1, Ordering::Relaxed);
                            let c = &inner.counters;
                            match &e {
                                AttemptError::Reset(_) => inc(&c.resets),
                                AttemptError::Timeout => inc(&c.timeouts),
                                AttemptError::ConnectionLost(_) => inc(&c.connection_losses),
                                AttemptError::Rejected(r) if r.is_retryable() => inc(&c.retryable_errors),
                                _ => {}
                            }
                            if !e.is_retryable() {
                                return Err(DispatchError::Rejected(match e {
                                    AttemptError::Rejected(r) => r,
                                    AttemptError::Reset(code) => code.to_error(),
                                    other => InferenceError::Protocol(other.to_string()),
                                }));
                            }
                            debug!(request_id, node = %slot.endpoint.name, error = %e, "attempt failed");
                            failed_nodes.insert(outcome.node);
                            let reason = format!("{}: {e}", slot.endpoint.name);
                            if running.is_empty() && attempts < cfg.max_attempts {
                                progress(Progress::Retrying { attempt: attempts + 1, reason: reason.clone() });
                            }
                            last_error = Some(reason);
                        }
                    }
                }
                () = sleep_until_opt(overdue_at) => {
                    // The newest attempt has outlived its timeout, or its node went silent:
                    // count it once, and reopen the image on another node. The slow attempt
                    // goes on, unless it never started on a node that would have said so.
                    let Some(mut slow) = slow_at.take() else { continue };
                    let now = Instant::now();
                    if now < slow.due(&inner.slots, now) {
                        // A Started frame moved its timeout while this branch was waking.
                        slow_at = Some(slow);
                        continue;
                    }
                    let slot = &inner.slots[slow.node];
                    let silent = slot.silent.load(Ordering::SeqCst);
                    if slow.retry_at.is_none() {
                        slow.silenced = silent;
                        inc(if silent { &inner.counters.silence_reopens } else { &inner.counters.timeouts });
                        slot.failed.fetch_add(1, Ordering::Relaxed);
                        failed_nodes.insert(slow.node);
                        let why = if silent { "node went silent (no heartbeat)" } else { "no answer within the attempt timeout" };
                        debug!(request_id, node = %slot.endpoint.name, why, "reopening elsewhere");
                        last_error = Some(format!("{}: {why}", slot.endpoint.name));
                    }
                    if attempts >= cfg.max_attempts {
                        continue;
                    }
                    // Waiting at a node that sends Started frames, and not started: nothing
                    // was done there yet, so it moves instead of being duplicated. A silent
                    // node cannot be trusted to have said so: it keeps its attempt.
                    let cancel = !silent && !slow.silenced && slow.acks && slow.started.get().is_none();
                    match self.pick(&running_nodes, &failed_nodes, true) {
                        Some(node) => {
                            attempts += 1;
                            inc(&inner.counters.retries);
                            progress(Progress::Retrying { attempt: attempts, reason: last_error.clone().unwrap_or_default() });
                            let next = self.launch(&mut running, node, request_id, attempts, deadline, top_k, &image, false, &started_notify, progress);
                            running_nodes.push(node);
                            if cancel {
                                // Its stream guard resets the stream: the node drops the work.
                                slow.abort.abort();
                                running_nodes.retain(|n| *n != slow.node);
                                inc(&inner.counters.unstarted_cancels);
                                debug!(request_id, node = %slot.endpoint.name, "not started: cancelled there");
                            }
                            slow_at = Some(next);
                        }
                        // No other node free right now: look again shortly.
                        None => {
                            slow.retry_at = Some(Instant::now() + RETRY_POLL);
                            slow_at = Some(slow);
                        }
                    }
                }
                () = started_notify.notified() => {
                    // A node said it started an attempt: the next turn of the loop computes
                    // the newest attempt's overdue time from it.
                }
                _ = silences.changed() => {
                    // Some node went silent: the next turn of the loop looks at the newest
                    // attempt's node again.
                }
                () = sleep_until_opt(hedge_at) => {
                    hedged = true;
                    if let Some(node) = self.pick(&running_nodes, &failed_nodes, true) {
                        attempts += 1;
                        inc(&inner.counters.hedges);
                        progress(Progress::Hedged { node: inner.slots[node].endpoint.name.clone() });
                        let _ = self.launch(&mut running, node, request_id, attempts, deadline, top_k, &image, true, &started_notify, progress);
                        running_nodes.push(node);
                    }
                }
                () = tokio::time::sleep_until(deadline.into()) => {
                    return Err(DispatchError::DeadlineExceeded { attempts });
                }
            }
        }
    }

    /// When to send a hedge copy, if at all.
    fn hedge_at(
        &self,
        first_sent: Option<Instant>,
        hedged: bool,
        running: usize,
        attempts: u32,
    ) -> Option<Instant> {
        let cfg = &self.inner.config;
        if !cfg.hedge
            || hedged
            || running != 1
            || attempts >= cfg.max_attempts
            || self.inner.slots.len() < 2
        {
            return None;
        }
        let first = first_sent?;
        let window = lock(&self.inner.latency);
        if window.len() < MIN_SAMPLES {
            return None;
        }
        let p95 = window.percentile(95.0)?;
        let delay = Duration::from_secs_f32(p95.max(0.0) / 1000.0).max(cfg.hedge_min_delay);
        Some(first + delay)
    }

    /// The latency-derived part of an attempt's timeout: max(floor, factor × p99), or the
    /// cold timeout before enough samples exist.
    fn base_timeout(&self) -> Duration {
        let cfg = &self.inner.config;
        let window = lock(&self.inner.latency);
        match window.percentile(99.0) {
            Some(p99) if window.len() >= MIN_SAMPLES => {
                Duration::from_secs_f32((p99 * cfg.attempt_timeout_factor).max(0.0) / 1000.0)
                    .max(cfg.attempt_timeout_floor)
            }
            _ => cfg.attempt_timeout_cold,
        }
    }

    /// Time allowed for sending `image_len` bytes at the configured upload rate.
    fn upload_allowance(&self, image_len: usize) -> Duration {
        let cfg = &self.inner.config;
        Duration::from_secs_f64(image_len as f64 / cfg.upload_bytes_per_sec.max(1) as f64)
    }

    /// Starts one attempt and returns what watches it for being overdue (see [`Overdue`]).
    /// The attempt itself runs until it ends, the request ends, the request deadline passes,
    /// or the request cancels it through the returned abort handle.
    #[allow(clippy::too_many_arguments)]
    fn launch(
        &self,
        running: &mut JoinSet<AttemptOutcome>,
        node: usize,
        request_id: u64,
        attempt: u32,
        deadline: Instant,
        top_k: u32,
        image: &Bytes,
        hedge: bool,
        started_notify: &Arc<Notify>,
        progress: &(impl Fn(Progress) + Send + Sync + 'static),
    ) -> Overdue {
        let inner = self.inner.clone();
        let slot = inner.slots[node].clone();
        inc(&inner.counters.attempts);
        slot.outstanding.fetch_add(1, Ordering::SeqCst);
        let outstanding = Outstanding {
            slot: slot.clone(),
            inner: inner.clone(),
        };
        let (conn, acks) = {
            let st = lock(&slot.state);
            (st.conn.clone(), st.info.as_ref().is_some_and(|i| i.acks))
        };
        let base = self.base_timeout();
        let launched = Instant::now();
        let remaining = deadline.saturating_duration_since(launched);
        let unstarted_at = launched + (base + self.upload_allowance(image.len())).min(remaining);
        let remaining_ms = remaining.as_millis() as u64;
        // Every request asks for a Started frame; nodes that predate it ignore the flag.
        let header = RequestHeader::new(
            request_id,
            attempt,
            Some(remaining_ms),
            top_k,
            image.len() as u64,
        )
        .with_ack(true);
        let image = image.clone();
        if !hedge {
            progress(Progress::Sent {
                node: slot.endpoint.name.clone(),
                attempt,
            });
        }
        let started = Arc::new(StartedSignal::new(started_notify.clone()));
        let signal = started.clone();
        let abort = running.spawn(async move {
            let _outstanding = outstanding;
            let t0 = Instant::now();
            let result = match conn {
                None => Err(AttemptError::ConnectionLost("not connected".into())),
                Some(conn) => {
                    match tokio::time::timeout(
                        remaining,
                        client::request_observed(
                            &conn,
                            &header,
                            image,
                            &inner.counters.bytes_sent,
                            Some(&signal),
                        ),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(AttemptError::Timeout),
                    }
                }
            };
            AttemptOutcome {
                node,
                hedge,
                elapsed: t0.elapsed(),
                result,
            }
        });
        Overdue {
            node,
            abort,
            started,
            acks,
            base,
            unstarted_at,
            retry_at: None,
            silenced: false,
        }
    }

    /// Power of two choices among Ready nodes with credit, avoiding nodes already running this
    /// request; silent nodes and nodes that failed it are used only when nothing else is
    /// available (or never, for hedges).
    fn pick(&self, running: &[usize], failed: &HashSet<usize>, hedge: bool) -> Option<usize> {
        let mut fresh = Vec::new();
        let mut retried = Vec::new();
        for (i, slot) in self.inner.slots.iter().enumerate() {
            if running.contains(&i) {
                continue;
            }
            let st = lock(&slot.state);
            if st.state != NodeState::Ready || st.conn.is_none() {
                continue;
            }
            let capacity = st.info.as_ref().map(|i| i.capacity).unwrap_or(1).max(1);
            drop(st);
            let outstanding = slot.outstanding.load(Ordering::SeqCst);
            if outstanding >= capacity {
                continue;
            }
            // A silent node (or one that failed this request) is a last resort.
            if failed.contains(&i) || slot.silent.load(Ordering::SeqCst) {
                retried.push((i, outstanding));
            } else {
                fresh.push((i, outstanding));
            }
        }
        let pool = if !fresh.is_empty() {
            fresh
        } else if hedge {
            return None;
        } else {
            retried
        };
        match pool.len() {
            0 => None,
            1 => Some(pool[0].0),
            n => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let mut b = rng.random_range(0..n - 1);
                if b >= a {
                    b += 1;
                }
                let (pa, pb) = (pool[a], pool[b]);
                Some(if pb.1 < pa.1 { pb.0 } else { pa.0 })
            }
        }
    }

    /// Wait (within the deadline) until some node can take the request; first come, first
    /// served among waiting requests.
    async fn wait_for_node(
        &self,
        running: &[usize],
        failed: &HashSet<usize>,
        deadline: Instant,
    ) -> Option<usize> {
        let _turn = tokio::time::timeout_at(deadline.into(), self.inner.turnstile.lock())
            .await
            .ok()?;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(n) = self.pick(running, failed, false) {
                return Some(n);
            }
            // The periodic wake-up is a safety net; state changes notify directly.
            let nap = Instant::now() + Duration::from_millis(100);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(nap.min(deadline).into()) => {}
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// Every configured node with its state and statistics.
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.inner
            .slots
            .iter()
            .map(|slot| {
                let st = lock(&slot.state);
                let lat = lock(&slot.latency);
                NodeStatus {
                    name: slot.endpoint.name.clone(),
                    addr: slot.endpoint.addr,
                    state: st.state,
                    info: st.info.clone(),
                    load: st.load.clone(),
                    silent: slot.silent.load(Ordering::SeqCst),
                    in_flight: slot.outstanding.load(Ordering::SeqCst),
                    served: slot.served.load(Ordering::Relaxed),
                    failed: slot.failed.load(Ordering::Relaxed),
                    p50_ms: lat.percentile(50.0),
                    p95_ms: lat.percentile(95.0),
                    last_error: st.last_error.clone(),
                }
            })
            .collect()
    }

    /// Totals since start.
    pub fn stats(&self) -> DispatchStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DispatchStats {
            requests: l(&c.requests),
            succeeded: l(&c.succeeded),
            rejected: l(&c.rejected),
            deadline_exceeded: l(&c.deadline_exceeded),
            attempts_exhausted: l(&c.attempts_exhausted),
            no_nodes: l(&c.no_nodes),
            attempts: l(&c.attempts),
            retries: l(&c.retries),
            hedges: l(&c.hedges),
            hedge_wins: l(&c.hedge_wins),
            resets: l(&c.resets),
            timeouts: l(&c.timeouts),
            unstarted_cancels: l(&c.unstarted_cancels),
            connection_losses: l(&c.connection_losses),
            silences: l(&c.silences),
            silence_reopens: l(&c.silence_reopens),
            retryable_errors: l(&c.retryable_errors),
            bytes_sent: l(&c.bytes_sent),
        }
    }

    /// Wait until at least `min_nodes` nodes are Ready; false on timeout.
    pub async fn wait_ready(&self, min_nodes: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.ready_count() >= min_nodes {
                return true;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline.into()) => return self.ready_count() >= min_nodes,
            }
        }
    }

    fn ready_count(&self) -> usize {
        self.inner
            .slots
            .iter()
            .filter(|s| lock(&s.state).state == NodeState::Ready)
            .count()
    }

    /// Close every connection and stop reconnecting (also happens when the last clone drops).
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
        self.inner.endpoint.close(
            quinn::VarInt::from_u32(CLOSE_SHUTDOWN),
            b"front-end shutdown",
        );
    }
}

/// The newest attempt of a request, watched for being overdue.
struct Overdue {
    node: usize,
    /// Cancels the attempt: its task is dropped, and its stream guard resets the stream, so
    /// the node drops the work.
    abort: AbortHandle,
    /// Set when the node's Started frame arrives.
    started: Arc<StartedSignal>,
    /// Whether the node announced that it sends Started frames (`NodeInfo::acks`).
    acks: bool,
    /// The latency-derived timeout when the attempt was launched (see
    /// [`Dispatcher::base_timeout`]).
    base: Duration,
    /// When the attempt is overdue if it never starts: launch + base + upload allowance,
    /// never past the request deadline.
    unstarted_at: Instant,
    /// Set once its timeout (or silence) was counted, while waiting for a free node to
    /// reopen the image on: when to look again.
    retry_at: Option<Instant>,
    /// It was counted because its node went silent (not because of its timeout).
    silenced: bool,
}

impl Overdue {
    /// When the attempt counts as timed out: from its Started frame once one arrived
    /// (started + base + [`STARTED_EXPECT_FACTOR`] × the node's estimate), from its launch
    /// before.
    fn timeout_at(&self) -> Instant {
        match self.started.get() {
            Some((at, expect)) => at + self.base + expect.saturating_mul(STARTED_EXPECT_FACTOR),
            None => self.unstarted_at,
        }
    }

    /// When to act: at the timeout, or now if the attempt's node has gone silent. While
    /// waiting for a free node, at the next poll; after a timeout (not a silence), not
    /// before the attempt's timeout as it stands now: a Started frame that arrived since
    /// pushed it further, the work is under way and may finish.
    fn due(&self, slots: &[Arc<NodeSlot>], now: Instant) -> Instant {
        match self.retry_at {
            None if slots[self.node].silent.load(Ordering::SeqCst) => now,
            None => self.timeout_at(),
            Some(poll) if self.silenced => poll,
            Some(poll) => poll.max(self.timeout_at()),
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn set_state(inner: &Inner, slot: &NodeSlot, f: impl FnOnce(&mut SlotState)) {
    f(&mut lock(&slot.state));
    inner.changed.notify_waiters();
}

/// Keep one node connected for the dispatcher's lifetime.
async fn node_task(inner: Arc<Inner>, idx: usize) {
    let slot = inner.slots[idx].clone();
    let mut shutdown = inner.shutdown.subscribe();
    let mut backoff = inner.config.reconnect_min;
    loop {
        if *shutdown.borrow() {
            break;
        }
        set_state(&inner, &slot, |s| s.state = NodeState::Connecting);
        let session = tokio::select! {
            r = connect(&inner, &slot) => r,
            _ = shutdown.changed() => break,
        };
        match session {
            Ok((conn, control, hello)) => {
                info!(node = %slot.endpoint.name, addr = %slot.endpoint.addr, "node ready");
                backoff = inner.config.reconnect_min;
                slot.silent.store(false, Ordering::SeqCst);
                set_state(&inner, &slot, |s| {
                    s.state = NodeState::Ready;
                    s.conn = Some(conn.clone());
                    s.info = Some(hello);
                    s.last_error = None;
                });
                let reason = tokio::select! {
                    r = follow_control(&inner, &slot, &conn, control) => r,
                    _ = shutdown.changed() => {
                        conn.close(quinn::VarInt::from_u32(CLOSE_SHUTDOWN), b"front-end shutdown");
                        break;
                    }
                };
                warn!(node = %slot.endpoint.name, %reason, "node connection lost");
                slot.silent.store(false, Ordering::SeqCst);
                set_state(&inner, &slot, |s| {
                    s.state = NodeState::Down;
                    s.conn = None;
                    s.last_error = Some(reason);
                });
            }
            Err(e) => {
                debug!(node = %slot.endpoint.name, error = %e, "connect failed");
                set_state(&inner, &slot, |s| {
                    s.state = NodeState::Down;
                    s.conn = None;
                    s.last_error = Some(e);
                });
            }
        }
        // Jitter in [backoff/2, backoff]: front-ends restarted together do not reconnect in
        // lockstep.
        let jittered = backoff.mul_f64(rand::rng().random_range(0.5..=1.0));
        tokio::select! {
            () = tokio::time::sleep(jittered) => {}
            _ = shutdown.changed() => break,
        }
        backoff = (backoff * 2).min(inner.config.reconnect_max);
    }
    set_state(&inner, &slot, |s| {
        s.state = NodeState::Down;
        s.conn = None;
    });
}

/// Handshake (verifying the node's certificate against the CA *and* its configured name) and
/// read the node's Hello.
async fn connect(
    inner: &Inner,
    slot: &NodeSlot,
) -> Result<(Connection, quinn::RecvStream, NodeInfo), String> {
    let ep = &slot.endpoint;
    let attempt = async {
        let connecting = inner
            .endpoint
            .connect_with(inner.client_config.clone(), ep.addr, &ep.name)
            .map_err(|e| format!("connect: {e}"))?;
        let conn = connecting.await.map_err(|e| format!("handshake: {e}"))?;
        let mut control = conn
            .accept_uni()
            .await
            .map_err(|e| format!("control stream: {e}"))?;
        let body = stream::read_frame(&mut control, MAX_FRAME_BYTES)
            .await
            .map_err(|e| format!("hello: {e}"))?
            .ok_or_else(|| "control stream ended before hello".to_string())?;
        match codec::decode_control(&body) {
            Ok(ControlMessage::Hello(info)) => Ok((conn, control, info)),
            Ok(other) => {
                conn.close(quinn::VarInt::from_u32(0), b"protocol error");
                Err(format!("expected hello, got {other:?}"))
            }
            Err(e) => {
                conn.close(quinn::VarInt::from_u32(0), b"protocol error");
                Err(format!("hello: {e}"))
            }
        }
    };
    tokio::time::timeout(inner.config.connect_timeout, attempt)
        .await
        .map_err(|_| "connect timed out".to_string())?
}

/// Load interval assumed for nodes whose Hello does not say (they report every 250 ms).
const LEGACY_LOAD_INTERVAL: Duration = Duration::from_millis(250);

/// Reads the next control frame, handing the stream back so the read can live across turns
/// of a `select!` loop: a frame read must never be cancelled half-way.
async fn next_control_frame(
    mut control: quinn::RecvStream,
) -> (quinn::RecvStream, Result<Option<Vec<u8>>, FrameReadError>) {
    let frame = stream::read_frame(&mut control, MAX_FRAME_BYTES).await;
    (control, frame)
}

/// Follow the control stream until the connection ends; returns why it ended. Every frame is
/// also a heartbeat: when none arrives for the silence timeout (see
/// [`DispatcherConfig::silence_floor`]) the node is marked silent and running requests are
/// told, so they reopen its images elsewhere; the next frame clears it.
async fn follow_control(
    inner: &Inner,
    slot: &NodeSlot,
    conn: &Connection,
    control: quinn::RecvStream,
) -> String {
    let interval = lock(&slot.state)
        .info
        .as_ref()
        .and_then(|i| i.load_interval_ms)
        .map_or(LEGACY_LOAD_INTERVAL, |ms| {
            Duration::from_millis(u64::from(ms))
        });
    let quiet_base = inner
        .config
        .silence_floor
        .max(interval.saturating_mul(inner.config.silence_reports));
    let mut last_heard = Instant::now();
    let mut pending = Box::pin(next_control_frame(control));
    loop {
        let silent = slot.silent.load(Ordering::SeqCst);
        let quiet_at = last_heard + quiet_base + conn.rtt() * 2;
        tokio::select! {
            (control, frame) = &mut pending => {
                match frame {
                    Ok(Some(body)) => {
                        last_heard = Instant::now();
                        if slot.silent.swap(false, Ordering::SeqCst) {
                            info!(node = %slot.endpoint.name, "node heard from again");
                            inner.changed.notify_waiters();
                        }
                        match codec::decode_control(&body) {
                            Ok(ControlMessage::Load(load)) => {
                                lock(&slot.state).load = Some(load);
                            }
                            Ok(ControlMessage::Draining) => {
                                info!(node = %slot.endpoint.name, "node draining");
                                set_state(inner, slot, |s| s.state = NodeState::Draining);
                            }
                            Ok(ControlMessage::Hello(info)) => {
                                lock(&slot.state).info = Some(info);
                            }
                            Err(e) => {
                                // One bad control frame must not kill working request streams:
                                // note it and wait for the connection's fate.
                                warn!(node = %slot.endpoint.name, error = %e, "bad control frame");
                                return conn.closed().await.to_string();
                            }
                        }
                    }
                    Ok(None) | Err(FrameReadError::Reset(_)) | Err(FrameReadError::Stream(_)) | Err(FrameReadError::Codec(_)) => {
                        return conn.closed().await.to_string();
                    }
                    Err(FrameReadError::ConnectionLost(m)) => return m,
                }
                pending = Box::pin(next_control_frame(control));
            }
            () = tokio::time::sleep_until(quiet_at.into()), if !silent => {
                slot.silent.store(true, Ordering::SeqCst);
                inc(&inner.counters.silences);
                warn!(
                    node = %slot.endpoint.name,
                    quiet_ms = last_heard.elapsed().as_millis() as u64,
                    "node silent: reopening its in-flight images elsewhere"
                );
                inner.silences.send_modify(|n| *n = n.wrapping_add(1));
                inner.changed.notify_waiters();
            }
            reason = conn.closed() => return reason.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_window_percentiles_follow_recent_samples() {
        let mut w = LatencyWindow::new();
        assert_eq!(w.percentile(50.0), None);
        for i in 1..=100 {
            w.record(i as f32);
        }
        assert_eq!(w.percentile(50.0), Some(51.0));
        assert_eq!(w.percentile(99.0), Some(99.0));
        assert_eq!(w.percentile(100.0), Some(100.0));
        // Old samples age out: after a full window of 1000 ms, the p50 is 1000 ms.
        for _ in 0..LATENCY_WINDOW {
            w.record(1000.0);
        }
        assert_eq!(w.len(), LATENCY_WINDOW);
        assert_eq!(w.percentile(50.0), Some(1000.0));
        assert_eq!(w.percentile(0.0), Some(1000.0));
    }
}
