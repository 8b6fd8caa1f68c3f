//! The front-end's state of the cluster, without I/O: each node's connection state, credit,
//! silence and latency, the pools placement samples from, the queue of requests waiting for a
//! node, and the counters. The async driver keeps one behind a mutex; the simulator drives
//! one on a virtual clock. Every change to a node goes through here, so the pools are always
//! exactly the nodes that can take work.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use serde::Serialize;

use super::latency::LatencyWindow;
use super::placement::{self, Avoid, Choice, Placement, Pool};
use super::service::ServiceEstimate;
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
    /// Attempts placed on it by this front-end since it joined.
    pub placements: u64,
    /// Its share of this front-end's placements over the nodes listed here, 0 to 1.
    pub placement_share: f32,
    /// Its service-time estimate, ms per image on one lane (peak EWMA of its answers' and
    /// load reports' service times, drifting to the fleet's median while idle); `None`
    /// before any node answered.
    pub service_ms: Option<f32>,
    /// The expected completion time of one more image there, ms: what expected-finish
    /// placement compares.
    pub expected_ms: Option<f32>,
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
    /// Images other front-ends have on it, as of its last load report (what it reported
    /// in flight, less what this front-end had outstanding then).
    others: u32,
    /// Its inference lanes (from its load reports; 1 until one says).
    lanes: u32,
    service: ServiceEstimate,
    placements: u64,
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
            others: 0,
            lanes: 1,
            service: ServiceEstimate::new(),
            placements: 0,
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

    /// The images ahead of a new one: the other front-ends' as of the last report, plus this
    /// front-end's outstanding attempts weighted by `crowd`, the number of front-ends
    /// sharing the fleet as this one estimates it (C3's concurrency compensation). The
    /// others read the same reports and make the same choices, so for every attempt this
    /// front-end sent since, expect about as many from each of them: without the weight,
    /// every front-end herds onto the node that last reported itself idle and is refused.
    fn ahead(&self, crowd: f64) -> f64 {
        f64::from(self.others) + f64::from(self.outstanding) * crowd
    }

    /// Whether one more attempt would fill the node past its capacity, counting the images
    /// ahead as [`Node::ahead`] does: it would only be refused as Overloaded. Alone on the
    /// fleet (`crowd` 1, nobody else's load reported) this is plain credit.
    fn full(&self, crowd: f64) -> bool {
        self.ahead(crowd) + 1.0 > f64::from(self.capacity())
    }

    /// The expected completion time of one more image, ms: (images ahead + 1) × service
    /// time ÷ lanes. `None` while no service time is known anywhere.
    fn expected_ms(&self, now: Instant, reference: Option<f64>, crowd: f64) -> Option<f64> {
        let service = self.service.value(now, reference)?;
        Some((self.ahead(crowd) + 1.0) * service / f64::from(self.lanes.max(1)))
    }
}

/// How often the fleet's reference figures are recomputed (one pass over the nodes): as
/// often as nodes report their load, so the cost stays O(1) per pick.
const REFERENCE_EVERY: Duration = Duration::from_millis(100);

/// Half an image: the slack a candidate may exceed a full median node's expected finish by
/// and still be taken. Estimates are noisy (the peak EWMA sits a little above the mean), so
/// without it a median node with its last slot free could be declined; half an image still
/// declines a node 5× slower than the median of capacity 4 (5 > 4.5).
const ACCEPT_SLACK: f64 = 0.5;

/// The fleet as a typical node sees it, recomputed every [`REFERENCE_EVERY`]: what a node
/// with no sample is taken to be, and what waiting for a node is expected to cost.
#[derive(Debug, Clone, Copy)]
struct Reference {
    /// Median service-time estimate of the Ready nodes that have one.
    service_ms: Option<f64>,
    /// Median announced capacity of the Ready nodes.
    capacity: u32,
    /// Median lanes of the Ready nodes.
    lanes: u32,
    /// Ready nodes.
    ready: usize,
    /// Front-ends sharing the fleet, as estimated from the load reports: everyone's images
    /// on the nodes ÷ this front-end's (1 when alone), smoothed. See [`Node::ahead`].
    crowd: f64,
    /// When computed.
    at: Option<Instant>,
}

impl Default for Reference {
    fn default() -> Reference {
        Reference {
            service_ms: None,
            capacity: 1,
            lanes: 1,
            ready: 0,
            crowd: 1.0,
            at: None,
        }
    }
}

/// Weight of a new estimate of the crowd (front-ends sharing the fleet) at each refresh:
/// about a second of refreshes is averaged, since one instant's ratio of loads is noisy.
const CROWD_WEIGHT: f64 = 0.1;

/// The median of `v` (upper median), `None` when empty.
fn median<T: Copy + PartialOrd>(v: &mut [T]) -> Option<T> {
    if v.is_empty() {
        return None;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, |a, b| {
        a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal)
    });
    Some(*m)
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
    placement: Placement,
    reference: Reference,
    /// Attempts outstanding on all nodes from this front-end: while there are none, nothing
    /// will free capacity, so a pick is never declined.
    outstanding_total: u64,
    /// The latest time a caller told it (for [`Cluster::status`], which takes none).
    clock: Option<Instant>,
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
            placement: Placement::default(),
            reference: Reference::default(),
            outstanding_total: 0,
            clock: None,
        }
    }

    /// Chooses how nodes are compared (default [`Placement::ExpectedFinish`]).
    pub fn set_placement(&mut self, placement: Placement) {
        self.placement = placement;
    }

    /// How nodes are compared.
    pub fn placement(&self) -> Placement {
        self.placement
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

    /// A load report, received at `now`: the node's load from other front-ends (what it
    /// reports in flight beyond this front-end's outstanding attempts), its lanes, and its
    /// recent service time as a sample. Call [`Cluster::grant`] after it: the node may now
    /// look worth waiting for, or no longer.
    pub fn set_load(&mut self, node: usize, load: LoadReport, now: Instant) {
        self.tick(now);
        let reference = self.reference.service_ms;
        let n = &mut self.nodes[node];
        n.others = load.in_flight.saturating_sub(n.outstanding);
        n.lanes = load.lanes.unwrap_or(1).max(1);
        if let Some(ms) = load.service_ms {
            n.service.record(now, f64::from(ms), reference);
        }
        n.load = Some(load);
        self.refresh(now);
    }

    /// One image's service time on `node` (its answer's node-side time: decode,
    /// preprocessing and its share of the forward pass), measured at `now`.
    pub fn record_service(&mut self, node: usize, ms: f64, now: Instant) {
        self.tick(now);
        let reference = self.reference.service_ms;
        self.nodes[node].service.record(now, ms, reference);
        self.refresh(now);
    }

    /// Notes the time for [`Cluster::status`].
    fn tick(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
    }

    /// Recomputes the fleet's reference figures if they are older than
    /// [`REFERENCE_EVERY`] (or missing while some node has a sample).
    fn refresh(&mut self, now: Instant) {
        let r = &self.reference;
        let due =
            r.at.is_none_or(|at| now.saturating_duration_since(at) >= REFERENCE_EVERY);
        let cold = r.service_ms.is_none() && self.nodes.iter().any(|n| n.service.is_known());
        if !(due || cold) {
            return;
        }
        let reference = self.reference.service_ms;
        let ready = || {
            self.nodes
                .iter()
                .filter(|n| n.listed && !n.vacant && n.state == NodeState::Ready)
        };
        let mut service: Vec<f64> = ready()
            .filter(|n| n.service.is_known())
            .filter_map(|n| n.service.value(now, reference))
            .collect();
        let mut capacity: Vec<u32> = ready().map(|n| n.capacity()).collect();
        let mut lanes: Vec<u32> = ready().map(|n| n.lanes.max(1)).collect();
        let (own, others) = ready().fold((0u64, 0u64), |(o, x), n| {
            (o + u64::from(n.outstanding), x + u64::from(n.others))
        });
        let mut crowd = self.reference.crowd;
        if own > 0 {
            let sample = (own + others) as f64 / own as f64;
            crowd += CROWD_WEIGHT * (sample - crowd);
        }
        self.reference = Reference {
            service_ms: median(&mut service).or(reference),
            capacity: median(&mut capacity).unwrap_or(1),
            lanes: median(&mut lanes).unwrap_or(1),
            ready: capacity.len(),
            crowd: crowd.max(1.0),
            at: Some(now),
        };
    }

    /// The fleet's median service-time estimate, ms, once any node answered.
    pub fn reference_service_ms(&self) -> Option<f64> {
        self.reference.service_ms
    }

    /// What a pick compares for `node` at `now`, if it can take an attempt. With
    /// expected-finish placement a node that other front-ends filled (by its last report)
    /// cannot: it would only refuse the image as Overloaded.
    fn cost(&self, node: usize, now: Instant) -> Option<f64> {
        let n = &self.nodes[node];
        let outstanding = n.load_if_usable()?;
        match (self.placement, self.reference.service_ms) {
            (Placement::ExpectedFinish, _) if n.full(self.reference.crowd) => None,
            (Placement::ExpectedFinish, Some(r)) => {
                n.expected_ms(now, Some(r), self.reference.crowd)
            }
            // Least outstanding, or no service time known anywhere yet.
            _ => Some(f64::from(outstanding)),
        }
    }

    /// The most a pick may cost before the image rather waits: the expected finish of an
    /// image that waits for a typical node, i.e. a full median node's queue (its capacity,
    /// plus [`ACCEPT_SLACK`]) and the wait for a slot to free, which grows with the requests
    /// already waiting. `None` (take any usable node) for least-outstanding placement, before
    /// any service time is known, and while nothing of this front-end is outstanding (no
    /// slot will free to end the wait).
    fn accept(&self) -> Option<f64> {
        let r = &self.reference;
        let service = r.service_ms?;
        if self.placement != Placement::ExpectedFinish || self.outstanding_total == 0 {
            return None;
        }
        let lanes = f64::from(r.lanes.max(1));
        let slots = (r.ready.max(1) as f64) * lanes;
        let queue = self.waiters.len() as f64 / slots;
        Some(service / lanes * (f64::from(r.capacity) + ACCEPT_SLACK + queue))
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
        self.outstanding_total += 1;
        self.update(node, |n| {
            n.outstanding += 1;
            n.placements += 1;
        });
    }

    /// Gives a unit of credit back (the attempt ended or was cancelled).
    pub fn release(&mut self, node: usize) {
        if self.nodes[node].outstanding > 0 {
            self.outstanding_total = self.outstanding_total.saturating_sub(1);
        }
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

    /// `node` refused an attempt because it is full (other front-ends fill it): until its
    /// next load report, count all but one of its free slots as theirs, so it is the last
    /// node placement turns to, yet still one it can turn to (no report may come soon).
    pub fn record_full(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let taken = n.capacity().saturating_sub(1).saturating_sub(n.outstanding);
        n.others = n.others.max(taken);
    }

    /// Picks a node for an attempt at `now` (see [`placement::pick`]) without taking
    /// credit. `None`: no node can take it, or (expected-finish placement) none is worth
    /// starting on before a better one frees up.
    pub fn pick(&self, now: Instant, avoid: Avoid<'_>, rng: &mut impl Rng) -> Option<usize> {
        placement::pick(
            &self.fresh,
            &self.silent,
            avoid,
            |n| self.cost(n, now),
            Choice {
                accept: self.accept(),
                cheapest_gathered: self.placement == Placement::ExpectedFinish,
            },
            rng,
        )
    }

    /// A request with nothing running needs a node: it gets one now (credit taken) if no
    /// earlier request is waiting and one is usable; otherwise it joins the queue and
    /// [`Cluster::grant`] hands it one later, in arrival order.
    pub fn wait_or_grant(
        &mut self,
        now: Instant,
        token: W,
        failed: &[usize],
        rng: &mut impl Rng,
    ) -> Option<usize> {
        self.tick(now);
        self.refresh(now);
        if self.waiters.is_empty() {
            let avoid = Avoid {
                running: &[],
                failed,
                fresh_only: false,
            };
            if let Some(node) = self.pick(now, avoid, rng) {
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

    /// Hands a usable node (credit taken) to the request that has waited longest, at `now`.
    /// Call until `None` after anything that can free capacity or change a node's cost (an
    /// attempt's end, a load report). A waiter with nothing running avoids no node, so the
    /// longest waiter is served whenever a node is usable and (expected-finish placement)
    /// worth starting on.
    pub fn grant(&mut self, now: Instant, rng: &mut impl Rng) -> Option<(W, usize)> {
        self.waiters.front()?;
        self.tick(now);
        self.refresh(now);
        let head = self.waiters.front()?;
        let avoid = Avoid {
            running: &[],
            failed: &head.failed,
            fresh_only: false,
        };
        let node = self.pick(now, avoid, rng)?;
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
    /// The estimates are as of the latest time the cluster was told.
    pub fn status(&mut self) -> Vec<NodeStatus> {
        let reference = self.reference.service_ms;
        let crowd = self.reference.crowd;
        let now = self.clock;
        let total: u64 = self
            .nodes
            .iter()
            .filter(|n| n.occupied())
            .map(|n| n.placements)
            .sum();
        self.nodes
            .iter_mut()
            .filter(|n| n.occupied())
            .map(|n| NodeStatus {
                placements: n.placements,
                placement_share: if total == 0 {
                    0.0
                } else {
                    (n.placements as f64 / total as f64) as f32
                },
                service_ms: now
                    .and_then(|t| n.service.value(t, reference))
                    .map(|v| v as f32),
                expected_ms: now
                    .and_then(|t| n.expected_ms(t, reference, crowd))
                    .map(|v| v as f32),
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
