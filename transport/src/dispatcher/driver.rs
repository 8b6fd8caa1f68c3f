//! The async driver: carries the core's actions out over QUIC, the way `quinn` drives
//! `quinn-proto`. [`Dispatcher`] starts one supervision task per node; each `classify` call
//! is a [`Run`] that feeds its [`Request`] the events of its attempts, grants and timers.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Notify, oneshot};
use tokio::task::{AbortHandle, JoinSet};
use tracing::debug;

use super::action::{Action, Cause, Failure, Open};
use super::attempt::{self, AttemptOutcome};
use super::outcome::{Classified, DispatchError, Progress};
use super::shared::{Credit, Shared, sleep_until_opt};
use super::{DispatchStats, DispatcherConfig, NodeEndpoint, NodeStatus, Request, node};
use crate::client::StartedSignal;
use crate::codec::{CLOSE_SHUTDOWN, RequestHeader};
use crate::config::{bind_endpoint, frontend_quinn_config, frontend_tls_config};
use crate::error::TransportError;
use crate::shutdown::{ShutdownTrigger, shutdown_channel};
use crate::types::InferenceAnswer;

/// Stops the background tasks when the last `Dispatcher` clone is dropped.
struct ShutdownOnDrop {
    shared: Arc<Shared>,
    shutdown: ShutdownTrigger,
    /// Serialises membership changes, so two `set_nodes` calls cannot interleave their
    /// cluster update and the supervisors they start.
    membership: parking_lot::Mutex<()>,
}

impl ShutdownOnDrop {
    fn shutdown(&self) {
        self.shutdown.trigger();
        self.shared.endpoint.close(
            quinn::VarInt::from_u32(CLOSE_SHUTDOWN),
            b"front-end shutdown",
        );
    }
}

impl Drop for ShutdownOnDrop {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// What [`Dispatcher::set_nodes`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeChanges {
    /// Endpoints that joined (or came back while still leaving).
    pub joined: Vec<NodeEndpoint>,
    /// Endpoints that left: they drain, then disappear.
    pub removed: Vec<NodeEndpoint>,
}

/// The front-end's view of the cluster. Cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
    lifetime: Arc<ShutdownOnDrop>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("nodes", &self.shared.config.nodes)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Bind the front-end's UDP endpoint and start one connect/reconnect task per node.
    /// Must be called inside a tokio runtime.
    pub fn start(mut config: DispatcherConfig) -> Result<Dispatcher, TransportError> {
        config.tuning.max_image_bytes = config.policy.max_image_bytes;
        if config.policy.max_attempts == 0 {
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
        let shared = Arc::new(Shared::new(config, endpoint, client_config));
        let (shutdown, signal) = shutdown_channel();
        for i in 0..shared.config.nodes.len() {
            tokio::spawn(node::supervise(shared.clone(), i, signal.clone()));
        }
        Ok(Dispatcher {
            lifetime: Arc::new(ShutdownOnDrop {
                shared: shared.clone(),
                shutdown,
                membership: parking_lot::Mutex::new(()),
            }),
            shared,
        })
    }

    /// Makes the membership exactly `nodes` (live: discovery calls this whenever its answer
    /// changes). New endpoints start connecting at once and take work when ready; endpoints
    /// no longer listed get no new work, finish what they run (or, if they die, it moves to
    /// other nodes as usual), and their connection closes once idle or after
    /// [`DispatcherConfig::drain_timeout`]; an endpoint listed again rejoins. An endpoint is
    /// its name *and* address: the same address under another name is another node. Nodes
    /// use the UDP socket bound at start, so they must be of its address family (see
    /// [`DispatcherConfig::bind`]). Returns what changed. Must be called inside a tokio
    /// runtime (it starts a supervision task per new node).
    pub fn set_nodes(&self, nodes: &[NodeEndpoint]) -> NodeChanges {
        let _serial = self.lifetime.membership.lock();
        let (change, endpoints) = {
            let mut c = self.shared.cluster();
            let change = c.set_members(nodes);
            let name = |i: &usize| c.endpoint(*i).clone();
            let endpoints = NodeChanges {
                joined: change
                    .joined
                    .iter()
                    .chain(&change.rejoined)
                    .map(name)
                    .collect(),
                removed: change.removed.iter().map(name).collect(),
            };
            (change, endpoints)
        };
        if change.is_empty() {
            return endpoints;
        }
        let signal = self.lifetime.shutdown.subscribe();
        for &i in &change.joined {
            tokio::spawn(node::supervise(self.shared.clone(), i, signal.clone()));
        }
        self.shared
            .membership
            .send_modify(|n| *n = n.wrapping_add(1));
        self.shared.changed.notify_waiters();
        endpoints
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
        self.classify_traced(image, top_k, None, progress).await
    }

    /// [`Dispatcher::classify`], sending `traceparent` (the W3C trace context of the
    /// caller's span for this image) in every attempt's header, so the node's span joins the
    /// caller's trace.
    pub async fn classify_traced(
        &self,
        image: Bytes,
        top_k: u32,
        traceparent: Option<String>,
        progress: impl Fn(Progress) + Send + Sync + 'static,
    ) -> Result<Classified, DispatchError> {
        let shared = &self.shared;
        let id = shared.next_request.fetch_add(1, Ordering::Relaxed);
        let mut run = Run {
            shared: shared.clone(),
            req: Request::new(Instant::now(), shared.policy, image.len()),
            id,
            image,
            top_k,
            traceparent,
            tasks: JoinSet::new(),
            attempts: HashMap::new(),
            started_notify: Arc::new(Notify::new()),
            grant: None,
            answer: None,
        };
        shared.with_cluster(|c| run.req.start(c));
        run.drive(&progress).await
    }

    /// Every node with its state and statistics: the membership, and the nodes that left it
    /// but still finish work (`removed`).
    pub fn nodes(&self) -> Vec<NodeStatus> {
        self.shared.cluster().status()
    }

    /// Totals since start.
    pub fn stats(&self) -> DispatchStats {
        let mut stats = self.shared.cluster().stats().clone();
        stats.bytes_sent = self.shared.bytes_sent.load(Ordering::Relaxed);
        stats
    }

    /// Wait until at least `min_nodes` nodes are Ready; false on timeout.
    pub async fn wait_ready(&self, min_nodes: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
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
        self.shared.cluster().ready_count()
    }

    /// Close every connection and stop reconnecting (also happens when the last clone drops).
    pub fn shutdown(&self) {
        self.lifetime.shutdown();
    }
}

/// One running attempt, as the driver tracks it.
struct Running {
    /// The node it runs on (its answer's service time is that node's sample).
    node: usize,
    abort: AbortHandle,
    started: Arc<StartedSignal>,
    reported: bool,
}

/// One `classify` call being driven: the request's state machine and the I/O that carries
/// out its actions. Dropping it (the caller gave up) aborts the attempts, whose credit comes
/// back through their guards, and gives back what the request held itself.
struct Run {
    shared: Arc<Shared>,
    req: Request,
    id: u64,
    image: Bytes,
    top_k: u32,
    /// Sent in every attempt's header (see [`RequestHeader::traceparent`]).
    traceparent: Option<String>,
    tasks: JoinSet<AttemptOutcome>,
    attempts: HashMap<u32, Running>,
    /// Shared by the request's attempts: wakes the loop when a node says it started one.
    started_notify: Arc<Notify>,
    /// The node this request is queued for, when it waits.
    grant: Option<oneshot::Receiver<Credit>>,
    /// The answer of the attempt that just ended well, for the `Done` that follows.
    answer: Option<(u32, InferenceAnswer)>,
}

impl Run {
    /// Carries out actions and feeds events back until the request's one final answer.
    async fn drive(
        &mut self,
        progress: &(impl Fn(Progress) + Send + Sync + 'static),
    ) -> Result<Classified, DispatchError> {
        let mut silences = self.shared.silences.subscribe();
        loop {
            while let Some(action) = self.req.poll_action() {
                if let Some(done) = self.carry_out(action, progress) {
                    return done;
                }
            }
            let timeout = self.req.next_timeout(&mut self.shared.cluster());
            let grant = async {
                match self.grant.as_mut() {
                    Some(rx) => rx.await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(joined) = self.tasks.join_next(), if !self.tasks.is_empty() => self.on_joined(joined),
                credit = grant => {
                    self.grant = None;
                    if let Some(credit) = credit {
                        let node = credit.disarm();
                        let req = &mut self.req;
                        self.shared.with_cluster(|c| req.on_granted(Instant::now(), node, c));
                    }
                }
                () = self.started_notify.notified() => self.report_started(),
                _ = silences.changed() => {
                    // Some node went silent: the next turn looks at the newest attempt's node.
                }
                () = sleep_until_opt(timeout) => {
                    let req = &mut self.req;
                    self.shared.with_cluster(|c| req.handle_timeout(Instant::now(), c, &mut rand::rng()));
                }
            }
        }
    }

    /// Carries out one action; `Some` with the final answer on `Done`.
    fn carry_out(
        &mut self,
        action: Action,
        progress: &(impl Fn(Progress) + Send + Sync + 'static),
    ) -> Option<Result<Classified, DispatchError>> {
        match action {
            Action::Wait => {
                let (tx, rx) = oneshot::channel();
                let req = &mut self.req;
                let granted = self.shared.with_cluster(|c| {
                    let node = c.wait_or_grant(Instant::now(), tx, req.failed(), &mut rand::rng());
                    if let Some(node) = node {
                        req.on_granted(Instant::now(), node, c);
                    }
                    node
                });
                if granted.is_none() {
                    self.grant = Some(rx);
                }
            }
            Action::Open(open) => self.open(open),
            Action::Cancel { attempt, .. } => {
                if let Some(r) = self.attempts.remove(&attempt) {
                    // Its stream guard resets the stream: the node drops the work.
                    r.abort.abort();
                    debug!(request_id = self.id, attempt, "attempt cancelled");
                }
            }
            Action::Progress(p) => progress(p),
            Action::Done(result) => {
                if self.grant.take().is_some() {
                    // It gave up while queued: clear its place (and any others gone).
                    self.shared
                        .with_cluster(|c| c.forget_waiters(|tx| tx.is_closed()));
                }
                return Some(result.map(|won| Classified {
                    answer: match self.answer.take() {
                        Some((a, answer)) if a == won.attempt => answer,
                        // The state machine answers only right after an answer arrived.
                        _ => unreachable!("a won request always has the winning answer"),
                    },
                    node: won.node_name,
                    attempts: won.attempts,
                    latency: won.latency,
                }));
            }
        }
        None
    }

    /// Starts an attempt's task; it ends by itself, when the request cancels it, or when the
    /// request ends (the `JoinSet` aborts what is left).
    fn open(&mut self, open: Open) {
        let credit = Credit::taken(self.shared.clone(), open.node);
        let remaining_ms = open.remaining.as_millis() as u64;
        // Every request asks for a Started frame; nodes that predate it ignore the flag.
        let header = RequestHeader::new(
            self.id,
            open.attempt,
            Some(remaining_ms),
            self.top_k,
            self.image.len() as u64,
        )
        .with_ack(true)
        .with_traceparent(self.traceparent.clone());
        let started = Arc::new(StartedSignal::new(self.started_notify.clone()));
        let task = attempt::run(
            self.shared.conn(open.node),
            header,
            self.image.clone(),
            open.remaining,
            credit,
            started.clone(),
        );
        let abort = self.tasks.spawn(task);
        self.attempts.insert(
            open.attempt,
            Running {
                node: open.node,
                abort,
                started,
                reported: false,
            },
        );
    }

    fn on_joined(&mut self, joined: Result<AttemptOutcome, tokio::task::JoinError>) {
        let outcome = match joined {
            Ok(o) => o,
            // An attempt this request cancelled itself.
            Err(e) if e.is_cancelled() => return,
            Err(e) => {
                // A panicking attempt task: which attempt is unknown, so fail the one this
                // request still tracks with a finished task.
                let Some((&attempt, _)) = self.attempts.iter().find(|(_, r)| r.abort.is_finished())
                else {
                    return;
                };
                self.attempts.remove(&attempt);
                let failure = Failure {
                    cause: Cause::Other,
                    fatal: None,
                    message: format!("attempt task failed: {e}"),
                };
                let req = &mut self.req;
                self.shared.with_cluster(|c| {
                    req.on_attempt_end(Instant::now(), attempt, Duration::ZERO, Err(failure), c)
                });
                return;
            }
        };
        let node = self.attempts.remove(&outcome.attempt).map(|r| r.node);
        let mut service_ms = None;
        let result = match outcome.result {
            Ok(answer) => {
                service_ms = node.map(|n| (n, answer.timings.service_ms()));
                self.answer = Some((outcome.attempt, answer));
                Ok(())
            }
            Err(e) => {
                debug!(request_id = self.id, attempt = outcome.attempt, error = %e, "attempt failed");
                Err(Failure::from(&e))
            }
        };
        let req = &mut self.req;
        self.shared.with_cluster(|c| {
            let now = Instant::now();
            if let Some((node, ms)) = service_ms {
                c.record_service(node, ms, now);
            }
            req.on_attempt_end(now, outcome.attempt, outcome.elapsed, result, c)
        });
    }

    /// Feeds Started frames that arrived to the state machine (each once).
    fn report_started(&mut self) {
        for (&attempt, r) in self.attempts.iter_mut() {
            if !r.reported
                && let Some((at, expect)) = r.started.get()
            {
                r.reported = true;
                self.req.on_started(at, attempt, expect);
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if !self.req.is_done() {
            let req = &mut self.req;
            let waiting = self.grant.take().is_some();
            self.shared.with_cluster(|c| {
                req.abandon(c);
                if waiting {
                    c.forget_waiters(|tx| tx.is_closed());
                }
            });
        }
    }
}
