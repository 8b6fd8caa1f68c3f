//! What the async driver's tasks share: the cluster state behind one mutex, each node's
//! connection, and the wake-ups. [`Credit`] gives a unit of a node's credit back when the
//! attempt holding it ends, however it ends.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};
use quinn::Connection;
use tokio::sync::{Notify, oneshot, watch};

use super::{Cluster, DispatcherConfig, Policy};

/// A waiting request's channel: the node it is granted, as a [`Credit`] so that a grant
/// never read (the request gave up at that moment) still gives the credit back.
pub(super) type GrantTx = oneshot::Sender<Credit>;

pub(super) struct Shared {
    pub(super) config: DispatcherConfig,
    pub(super) policy: Policy,
    pub(super) endpoint: quinn::Endpoint,
    pub(super) client_config: quinn::ClientConfig,
    cluster: Mutex<Cluster<GrantTx>>,
    /// Each node slot's connection while it has one. Locked on its own, or inside the
    /// cluster lock (never the other way round).
    conns: Mutex<Vec<Option<Connection>>>,
    /// Woken when a node's state changes (for `wait_ready`).
    pub(super) changed: Notify,
    /// Bumped whenever a node goes silent, so running requests look at their attempts again.
    pub(super) silences: watch::Sender<u64>,
    /// Bumped whenever the membership changes, so supervisors see whether their node left
    /// or came back.
    pub(super) membership: watch::Sender<u64>,
    /// Written by the attempts' streams (see `DispatchStats::bytes_sent`).
    pub(super) bytes_sent: AtomicU64,
    pub(super) next_request: AtomicU64,
}

impl Shared {
    pub(super) fn new(
        config: DispatcherConfig,
        endpoint: quinn::Endpoint,
        client_config: quinn::ClientConfig,
    ) -> Shared {
        let conns = Mutex::new(config.nodes.iter().map(|_| None).collect());
        let (silences, _) = watch::channel(0);
        let (membership, _) = watch::channel(0);
        Shared {
            policy: config.policy,
            cluster: Mutex::new({
                let mut c = Cluster::new(config.nodes.iter().cloned());
                c.set_placement(config.policy.placement);
                c
            }),
            config,
            endpoint,
            client_config,
            conns,
            changed: Notify::new(),
            silences,
            membership,
            bytes_sent: AtomicU64::new(0),
            next_request: AtomicU64::new(1),
        }
    }

    /// The cluster state. Never held across an await, nor while dropping a [`Credit`].
    pub(super) fn cluster(&self) -> MutexGuard<'_, Cluster<GrantTx>> {
        self.cluster.lock()
    }

    /// Runs `f` on the cluster state, then hands freed capacity to waiting requests.
    pub(super) fn with_cluster<T>(
        self: &Arc<Self>,
        f: impl FnOnce(&mut Cluster<GrantTx>) -> T,
    ) -> T {
        let mut c = self.cluster();
        let out = f(&mut c);
        self.grant_waiters(&mut c);
        out
    }

    /// Grants nodes to waiting requests, oldest first, while any node is usable. A waiter
    /// that gave up (its receiver is gone) gives its grant straight back.
    fn grant_waiters(self: &Arc<Self>, c: &mut Cluster<GrantTx>) {
        let mut rng = rand::rng();
        while let Some((tx, node)) = c.grant(Instant::now(), &mut rng) {
            let credit = Credit {
                shared: self.clone(),
                node,
                armed: true,
            };
            if let Err(back) = tx.send(credit) {
                back.disarm();
                c.release(node);
            }
        }
    }

    /// A node's connection, if it has one.
    pub(super) fn conn(&self, node: usize) -> Option<Connection> {
        self.conns.lock().get(node).cloned().flatten()
    }

    /// Sets (or clears) a node slot's connection.
    pub(super) fn set_conn(&self, node: usize, conn: Option<Connection>) {
        let mut conns = self.conns.lock();
        if conns.len() <= node {
            conns.resize(node + 1, None);
        }
        conns[node] = conn;
    }
}

/// One unit of a node's credit, taken in the cluster state; given back on drop unless
/// disarmed (its ownership then passed to a [`super::Request`]).
pub(super) struct Credit {
    shared: Arc<Shared>,
    node: usize,
    armed: bool,
}

impl Credit {
    /// Credit the cluster state already counts as taken for `node`.
    pub(super) fn taken(shared: Arc<Shared>, node: usize) -> Credit {
        Credit {
            shared,
            node,
            armed: true,
        }
    }

    /// Hands the credit over without giving it back: returns its node.
    pub(super) fn disarm(mut self) -> usize {
        self.armed = false;
        self.node
    }

    /// Where the attempt holding it counts the bytes it writes.
    pub(super) fn bytes_sent(&self) -> &AtomicU64 {
        &self.shared.bytes_sent
    }
}

impl Drop for Credit {
    fn drop(&mut self) {
        if self.armed {
            let node = self.node;
            self.shared.with_cluster(|c| c.release(node));
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for (a `select!` branch
/// that never fires).
pub(super) async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
