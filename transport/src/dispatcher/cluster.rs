//! The front-end's state of the cluster, without I/O: each node's connection state, credit,
//! silence and latency, the pools placement samples from, the queue of requests waiting for a
//! node, and the counters. The async driver keeps one behind a mutex; the simulator drives
//! one on a virtual clock. Every change to a node goes through here, so the pools are always
//! exactly the nodes that can take work.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rand::Rng;
use serde::Serialize;

use super::latency::LatencyWindow;
use super::placement::{self, Avoid, Pool};
use super::{DispatchStats, NodeEndpoint};
use crate::types::{LoadReport, NodeInfo};

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
    /// Why the last connection ended or failed (the site shows it beside a down node).
    pub last_error: Option<String>,
    /// No longer in the membership (discovery stopped listing it): it gets no new work,
    /// finishes what it holds, and disappears from the list once idle.
    pub removed: bool,
}

/// One node's entry.
#[derive(Debug, Clone)]
struct Node {
    endpoint: NodeEndpoint,
    state: NodeState,
    info: Option<NodeInfo>,
    load: Option<LoadReport>,
    last_error: Option<String>,
    silent: bool,
    outstanding: u32,
    served: u64,
    failed: u64,
    latency: LatencyWindow,
    /// In the membership. A node taken out of it keeps its slot until its last attempt
    /// ends, so the indexes its attempts and waiting requests hold stay valid.
    listed: bool,
    /// A free slot, reused by the next node that joins.
    vacant: bool,
}

impl Node {
    fn new(endpoint: NodeEndpoint) -> Node {
        Node {
            endpoint,
            state: NodeState::Connecting,
            info: None,
            load: None,
            last_error: None,
            silent: false,
            outstanding: 0,
            served: 0,
            failed: 0,
            latency: LatencyWindow::new(),
            listed: true,
            vacant: false,
        }
    }

    /// A member (listed, or leaving but not yet gone).
    fn occupied(&self) -> bool {
        !self.vacant
    }

    fn capacity(&self) -> u32 {
        self.info.as_ref().map_or(1, |i| i.capacity).max(1)
    }

    /// Outstanding attempts, if it can take one more.
    fn load_if_usable(&self) -> Option<u32> {
        (self.listed && self.state == NodeState::Ready && self.outstanding < self.capacity())
            .then_some(self.outstanding)
    }
}

/// A request queued for a node, first come first served. `token` is whatever the driver
/// needs to hand the node over (a channel, or a simulated request's index).
#[derive(Debug)]
struct Waiter<W> {
    token: W,
    failed: Vec<usize>,
}

/// What [`Cluster::set_members`] changed, so the driver can act on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipChange {
    /// Slots of nodes that joined (fresh, or a reused free slot): each needs a supervisor.
    pub joined: Vec<usize>,
    /// Slots of nodes that were leaving and are listed again: their supervisor goes on.
    pub rejoined: Vec<usize>,
    /// Slots of nodes no longer listed: they drain, then [`Cluster::reclaim`] frees them.
    pub removed: Vec<usize>,
}

impl MembershipChange {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.rejoined.is_empty() && self.removed.is_empty()
    }
}

/// The cluster as the front-end sees it. `W` is the driver's token for a waiting request.
///
/// Nodes are slots addressed by index, as attempts and waiting requests hold them. The
/// membership can change while requests run ([`Cluster::set_members`]): a node that joins
/// takes a free slot (or a new one); a node that leaves keeps its slot, out of placement,
/// until nothing is outstanding on it and its driver [`reclaim`](Cluster::reclaim)s it. So
/// an index never changes meaning under a running attempt, and the slots never outnumber
/// the most nodes listed and leaving at once.
#[derive(Debug)]
pub struct Cluster<W> {
    nodes: Vec<Node>,
    /// Vacant slots, reused first.
    free: Vec<usize>,
    /// Ready, with credit, not silent.
    fresh: Pool,
    /// Ready, with credit, silent: a last resort.
    silent: Pool,
    waiters: VecDeque<Waiter<W>>,
    latency: LatencyWindow,
    stats: DispatchStats,
}

impl<W> Cluster<W> {
    /// Every node Connecting, nothing known yet.
    pub fn new(endpoints: impl IntoIterator<Item = NodeEndpoint>) -> Cluster<W> {
        let nodes: Vec<Node> = endpoints.into_iter().map(Node::new).collect();
        Cluster {
            fresh: Pool::new(nodes.len()),
            silent: Pool::new(nodes.len()),
            nodes,
            free: Vec::new(),
            waiters: VecDeque::new(),
            latency: LatencyWindow::new(),
            stats: DispatchStats::default(),
        }
    }

    /// Nodes in the membership (not those leaving).
    pub fn len(&self) -> usize {
        self.nodes.iter().filter(|n| n.listed && !n.vacant).count()
    }

    /// Whether no node is in the membership.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots, vacant ones included: every node index is below this.
    pub fn slots(&self) -> usize {
        self.nodes.len()
    }

    /// A node's configured name.
    pub fn name(&self, node: usize) -> &str {
        &self.nodes[node].endpoint.name
    }

    /// A node's endpoint.
    pub fn endpoint(&self, node: usize) -> &NodeEndpoint {
        &self.nodes[node].endpoint
    }

    /// Whether a node is in the membership (false while it leaves, and once its slot is free).
    pub fn is_listed(&self, node: usize) -> bool {
        let n = &self.nodes[node];
        n.listed && !n.vacant
    }

    /// Makes the membership exactly `endpoints` (duplicates count once). A new endpoint
    /// joins Connecting, in a free slot if there is one; one that is leaving is listed
    /// again where it is, connection and all; a listed node not in `endpoints` leaves: it
    /// gets no new work from now on, and its attempts run to their end.
    pub fn set_members(&mut self, endpoints: &[NodeEndpoint]) -> MembershipChange {
        let mut change = MembershipChange::default();
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.listed && n.occupied() && !endpoints.contains(&n.endpoint) {
                self.update(i, |n| n.listed = false);
                change.removed.push(i);
            }
        }
        for (k, endpoint) in endpoints.iter().enumerate() {
            if endpoints[..k].contains(endpoint) {
                continue;
            }
            let existing = self
                .nodes
                .iter()
                .position(|n| n.occupied() && n.endpoint == *endpoint);
            match existing {
                Some(i) if self.nodes[i].listed => {}
                Some(i) => {
                    self.update(i, |n| n.listed = true);
                    change.rejoined.push(i);
                }
                None => change.joined.push(self.add(endpoint.clone())),
            }
        }
        change
    }

    /// Adds a node, Connecting, in a free slot or a new one; returns its index.
    fn add(&mut self, endpoint: NodeEndpoint) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.nodes[i] = Node::new(endpoint);
                i
            }
            None => {
                self.nodes.push(Node::new(endpoint));
                self.nodes.len() - 1
            }
        }
    }

    /// Frees the slot of a node that left, once nothing is outstanding on it: true when
    /// freed (its index may then name another node), false while it still holds credit or
    /// when it was listed again.
    pub fn reclaim(&mut self, node: usize) -> bool {
        let n = &self.nodes[node];
        if n.listed || n.vacant || n.outstanding > 0 {
            return false;
        }
        self.update(node, |n| {
            n.vacant = true;
            n.state = NodeState::Down;
            n.silent = false;
            n.info = None;
            n.load = None;
        });
        self.free.push(node);
        true
    }

    /// A node's connection state.
    pub fn state(&self, node: usize) -> NodeState {
        self.nodes[node].state
    }

    /// Whether a node is silent.
    pub fn is_silent(&self, node: usize) -> bool {
        self.nodes[node].silent
    }

    /// Whether a node announced that it sends Started frames.
    pub fn acks(&self, node: usize) -> bool {
        self.nodes[node].info.as_ref().is_some_and(|i| i.acks)
    }

    /// A node's outstanding attempts.
    pub fn outstanding(&self, node: usize) -> u32 {
        self.nodes[node].outstanding
    }

    /// Nodes in state Ready.
    pub fn ready_count(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.listed && !n.vacant && n.state == NodeState::Ready)
            .count()
    }

    /// Nodes that can take an attempt now, fresh or silent.
    pub fn usable_count(&self) -> usize {
        self.fresh.len() + self.silent.len()
    }

    /// The counters (`bytes_sent` is the driver's).
    pub fn stats(&self) -> &DispatchStats {
        &self.stats
    }

    /// The counters, to count.
    pub fn stats_mut(&mut self) -> &mut DispatchStats {
        &mut self.stats
    }

    /// Front-end-wide latency window (every node's answers).
    pub fn latency(&mut self) -> &mut LatencyWindow {
        &mut self.latency
    }

    /// Connecting (again).
    pub fn set_connecting(&mut self, node: usize) {
        self.update(node, |n| n.state = NodeState::Connecting);
    }

    /// Connected: announced `info`, takes work, heard from.
    pub fn set_ready(&mut self, node: usize, info: NodeInfo) {
        self.update(node, |n| {
            n.state = NodeState::Ready;
            n.info = Some(info);
            n.last_error = None;
            n.silent = false;
        });
    }

    /// A newer Hello on the control stream.
    pub fn set_info(&mut self, node: usize, info: NodeInfo) {
        self.update(node, |n| n.info = Some(info));
    }

    /// A load report.
    pub fn set_load(&mut self, node: usize, load: LoadReport) {
        self.nodes[node].load = Some(load);
    }

    /// Announced shutdown: no new work.
    pub fn set_draining(&mut self, node: usize) {
        self.update(node, |n| n.state = NodeState::Draining);
    }

    /// Not connected, with why (if known).
    pub fn set_down(&mut self, node: usize, reason: Option<String>) {
        self.update(node, |n| {
            n.state = NodeState::Down;
            n.silent = false;
            if reason.is_some() {
                n.last_error = reason;
            }
        });
    }

    /// Marks a node silent or heard again; counts each silence.
    pub fn set_silent(&mut self, node: usize, silent: bool) {
        if silent && !self.nodes[node].silent {
            self.stats.silences += 1;
        }
        self.update(node, |n| n.silent = silent);
    }

    /// Takes one unit of a node's credit for an attempt.
    pub fn acquire(&mut self, node: usize) {
        self.update(node, |n| n.outstanding += 1);
    }

    /// Gives a unit of credit back (the attempt ended or was cancelled).
    pub fn release(&mut self, node: usize) {
        self.update(node, |n| n.outstanding = n.outstanding.saturating_sub(1));
    }

    /// An attempt on `node` answered after `ms`.
    pub fn record_answer(&mut self, node: usize, ms: f32) {
        let n = &mut self.nodes[node];
        n.served += 1;
        n.latency.record(ms);
        self.latency.record(ms);
    }

    /// An attempt on `node` failed (or was given up on).
    pub fn record_failure(&mut self, node: usize) {
        self.nodes[node].failed += 1;
    }

    /// Picks a node for an attempt (see [`placement::pick`]) without taking credit.
    pub fn pick(&self, avoid: Avoid<'_>, rng: &mut impl Rng) -> Option<usize> {
        placement::pick(
            &self.fresh,
            &self.silent,
            avoid,
            |n| self.nodes[n].load_if_usable(),
            rng,
        )
    }

    /// A request with nothing running needs a node: it gets one now (credit taken) if no
    /// earlier request is waiting and one is usable; otherwise it joins the queue and
    /// [`Cluster::grant`] hands it one later, in arrival order.
    pub fn wait_or_grant(
        &mut self,
        token: W,
        failed: &[usize],
        rng: &mut impl Rng,
    ) -> Option<usize> {
        if self.waiters.is_empty() {
            let avoid = Avoid {
                running: &[],
                failed,
                fresh_only: false,
            };
            if let Some(node) = self.pick(avoid, rng) {
                self.acquire(node);
                return Some(node);
            }
        }
        self.waiters.push_back(Waiter {
            token,
            failed: failed.to_vec(),
        });
        None
    }

    /// Hands a usable node (credit taken) to the request that has waited longest. Call
    /// until `None` after anything that can free capacity. A waiter with nothing running
    /// avoids no node, so the longest waiter is served whenever any node is usable.
    pub fn grant(&mut self, rng: &mut impl Rng) -> Option<(W, usize)> {
        let head = self.waiters.front()?;
        let avoid = Avoid {
            running: &[],
            failed: &head.failed,
            fresh_only: false,
        };
        let node = self.pick(avoid, rng)?;
        self.acquire(node);
        let waiter = self.waiters.pop_front()?;
        Some((waiter.token, node))
    }

    /// Drops the waiters `gone` says have given up (their deadline passed).
    pub fn forget_waiters(&mut self, mut gone: impl FnMut(&W) -> bool) {
        self.waiters.retain(|w| !gone(&w.token));
    }

    /// Requests waiting for a node.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Every node with its state and statistics, those leaving included, free slots not.
    pub fn status(&mut self) -> Vec<NodeStatus> {
        self.nodes
            .iter_mut()
            .filter(|n| n.occupied())
            .map(|n| NodeStatus {
                name: n.endpoint.name.clone(),
                addr: n.endpoint.addr,
                state: n.state,
                info: n.info.clone(),
                load: n.load.clone(),
                silent: n.silent,
                in_flight: n.outstanding,
                served: n.served,
                failed: n.failed,
                p50_ms: n.latency.percentile(50.0),
                p95_ms: n.latency.percentile(95.0),
                last_error: n.last_error.clone(),
                removed: !n.listed,
            })
            .collect()
    }

    /// Applies a change to one node, then files it in the pool it now belongs to.
    fn update(&mut self, node: usize, change: impl FnOnce(&mut Node)) {
        let n = &mut self.nodes[node];
        change(n);
        let usable = n.load_if_usable().is_some();
        let (into, out_of) = if n.silent {
            (&mut self.silent, &mut self.fresh)
        } else {
            (&mut self.fresh, &mut self.silent)
        };
        out_of.remove(node);
        if usable {
            into.insert(node);
        } else {
            into.remove(node);
        }
    }
}
