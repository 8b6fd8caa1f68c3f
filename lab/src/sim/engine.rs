//! The simulation loop and the request driver.
//!
//! The driver carries out the core's contract exactly as the async driver in
//! `transport/src/dispatcher/mod.rs` does, with events instead of tasks: drain
//! `poll_action`; `Wait` goes to `Cluster::wait_or_grant` (queued requests are handed a node
//! by `Cluster::grant`, called until `None` after anything that can free capacity); `Open`
//! sends the attempt (credit already taken) and `Cancel` resets it, giving its credit back at
//! once, as the async driver's credit guard does when it aborts the attempt's task; node
//! events come back as `on_started` / `on_attempt_end`; and a request's timer is re-armed
//! from `next_timeout` after every event that concerns it, as its async loop does on every
//! turn (a node falling silent re-arms the timers of the requests running on it, as the
//! `silences` watch does).
//!
//! Every call into the core is timed ([`core!`]): the sum is the dispatcher's CPU cost.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use glimpse_transport::NodeInfo;
use glimpse_transport::dispatcher::{Action, Cause, Cluster, Failure, NodeEndpoint, Open, Request};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::event::{Agenda, Event, Nanos, nanos};
use super::link::Link;
use super::metrics::{Counts, RunReport};
use super::node::NodeSide;
use super::workload::{Clients, Workload};
use super::{RunConfig, SimError};

/// Times one call into the dispatcher core and adds it to the run's core time (the cost of
/// the timing itself is subtracted in the report, see `metrics::timing_overhead`).
macro_rules! core {
    ($sim:ident, $e:expr) => {{
        let t0 = std::time::Instant::now();
        let r = $e;
        $sim.counts.core += t0.elapsed();
        $sim.counts.core_calls += 1;
        r
    }};
}
pub(super) use core;

/// One front-end: its own dispatcher core and its own view of every node's connection.
/// Front-ends share nothing but the nodes: each sees the others only through the nodes'
/// load reports and Overloaded refusals.
pub(super) struct FrontEnd {
    pub(super) cluster: Cluster<u64>,
    pub(super) links: Vec<Link>,
    /// Serials of the attempts in flight on each node, from this front-end.
    pub(super) on_node: Vec<Vec<u64>>,
}

/// A request in flight, as the driver tracks it.
#[derive(Debug)]
pub(super) struct Live {
    pub(super) req: Request,
    /// The front-end it arrived at.
    pub(super) fe: usize,
    pub(super) image: u32,
    pub(super) client: u32,
    /// It is in the cluster's queue of waiters.
    pub(super) queued: bool,
    /// Its armed timer (instant, generation).
    pub(super) timer: Option<(Nanos, u32)>,
    pub(super) timer_gen: u32,
    /// (instant, count) of timer firings at one instant: a guard against a stuck request.
    pub(super) fired: (Nanos, u32),
    /// Its running attempts: (attempt, serial).
    pub(super) open: Vec<(u32, u64)>,
}

/// An attempt on its way, as the front-end tracks it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Inflight {
    pub(super) request: u64,
    pub(super) fe: u32,
    pub(super) attempt: u32,
    pub(super) node: u32,
    /// The node process it was sent to (a restarted process never heard of it).
    pub(super) node_epoch: u32,
    launched: Nanos,
    pub(super) lost: bool,
}

/// One simulation run.
pub(super) struct Sim {
    pub(super) cfg: RunConfig,
    base: Instant,
    pub(super) now: Nanos,
    pub(super) agenda: Agenda,
    pub(super) rng: SmallRng,
    pub(super) fes: Vec<FrontEnd>,
    pub(super) nodes: Vec<NodeSide>,
    pub(super) reqs: HashMap<u64, Live>,
    pub(super) next_request: u64,
    pub(super) inflight: HashMap<u64, Inflight>,
    next_serial: u64,
    pub(super) clients: Clients,
    /// Capacity may have freed: call `Cluster::grant` until it says `None`.
    pub(super) regrant: bool,
    pub(super) counts: Counts,
    /// Load-report ticks since an image last settled, and how many had settled then.
    pub(super) ticks: (u32, usize),
}

impl Sim {
    pub(super) fn new(cfg: RunConfig) -> Sim {
        let n = cfg.nodes;
        let endpoints: Vec<NodeEndpoint> = (0..n)
            .map(|i| NodeEndpoint {
                name: format!("n{i}"),
                addr: std::net::SocketAddr::from(([10, 0, 0, 1], 7000)),
            })
            .collect();
        let nodes = (0..n)
            .map(|i| NodeSide::new(&cfg.model, cfg.slowdown(i)))
            .collect();
        let base = Instant::now();
        let fes = (0..cfg.frontends.max(1))
            .map(|_| {
                let mut cluster = Cluster::new(endpoints.clone());
                cluster.set_placement(cfg.policy.placement);
                FrontEnd {
                    cluster,
                    links: (0..n).map(|_| Link::new(base, &cfg)).collect(),
                    on_node: vec![Vec::new(); n],
                }
            })
            .collect();
        Sim {
            rng: SmallRng::seed_from_u64(cfg.seed),
            clients: Clients::new(cfg.images),
            base,
            now: 0,
            agenda: Agenda::new(),
            fes,
            nodes,
            reqs: HashMap::new(),
            next_request: 0,
            inflight: HashMap::new(),
            next_serial: 0,
            regrant: false,
            counts: Counts::default(),
            ticks: (0, 0),
            cfg,
        }
    }

    /// The real instant of a virtual time.
    pub(super) fn instant(&self, t: Nanos) -> Instant {
        self.base + Duration::from_nanos(t)
    }

    /// The virtual time of a real instant.
    pub(super) fn virtual_time(&self, at: Instant) -> Nanos {
        nanos(at.saturating_duration_since(self.base))
    }

    /// What each node announces in its Hello.
    pub(super) fn node_info(&self, node: usize) -> NodeInfo {
        let m = &self.cfg.model;
        NodeInfo {
            node_id: format!("n{node}"),
            model: "synthetic".into(),
            weights: "none".into(),
            trained: false,
            synthetic: true,
            backend: "simulated".into(),
            capacity: m.capacity,
            max_batch: 1,
            max_batch_wait_ms: 0,
            version: "sim".into(),
            load_interval_ms: u32::try_from(m.load_interval.as_millis()).ok(),
            acks: true,
        }
    }

    /// Placements per slow node ÷ per other node, slow meaning slower than nominal at the
    /// start or degraded during the run.
    fn slow_share(&self, placements: &[u64]) -> Option<f64> {
        let degraded = |i: usize| {
            self.cfg
                .degrade
                .is_some_and(|d| d.every > 0 && i % d.every == d.every - 1)
        };
        let (mut slow, mut other) = ((0u64, 0u64), (0u64, 0u64));
        for (i, &p) in placements.iter().enumerate() {
            let bucket = if self.cfg.slowdown(i) > 1.0 || degraded(i) {
                &mut slow
            } else {
                &mut other
            };
            *bucket = (bucket.0 + p, bucket.1 + 1);
        }
        if slow.1 == 0 || other.1 == 0 || other.0 == 0 {
            return None;
        }
        Some((slow.0 as f64 / slow.1 as f64) / (other.0 as f64 / other.1 as f64))
    }

    /// Runs to the end and checks the driver contract's invariants.
    pub(super) fn run(mut self) -> Result<RunReport, SimError> {
        let wall = Instant::now();
        let cpu = super::metrics::thread_cpu();
        self.connect_all();
        match self.cfg.workload {
            Workload::Closed { clients } => {
                for c in 0..clients.max(1) {
                    self.agenda.push(0, Event::Arrive { client: c });
                }
            }
            Workload::Open { .. } => self.agenda.push(0, Event::Arrive { client: 0 }),
        }
        self.schedule_faults();
        self.schedule_degrade();
        // Each node reports on its own phase, as real nodes do (their timers start when
        // they do): reports arriving all at once would make every front-end act on the same
        // news at the same instant.
        let interval = nanos(self.cfg.model.load_interval).max(1);
        for node in 0..self.cfg.nodes as u32 {
            let phase = self.rng.random_range(1..=interval);
            self.agenda.push(phase, Event::Reports { node });
        }
        while !self.clients.all_settled() {
            let Some((t, event)) = self.agenda.pop() else {
                let unsettled = self.clients.total - self.clients.answered - self.clients.lost;
                return Err(SimError::OutOfEvents { unsettled });
            };
            self.now = t;
            self.counts.events += 1;
            self.handle(event)?;
            self.grant_waiters()?;
        }
        self.check_end()?;
        self.counts.run_wall = wall.elapsed();
        self.counts.run_cpu = cpu
            .zip(super::metrics::thread_cpu())
            .map(|(a, b)| b.saturating_sub(a));
        let mut stats = glimpse_transport::dispatcher::DispatchStats::default();
        let mut placements = vec![0u64; self.cfg.nodes];
        for fe in &mut self.fes {
            stats.merge(fe.cluster.stats());
            for (i, n) in fe.cluster.status().iter().enumerate() {
                if let Some(p) = placements.get_mut(i) {
                    *p += n.placements;
                }
            }
        }
        let mut report = RunReport::new(
            matches!(self.cfg.workload, Workload::Open { .. }),
            self.cfg.nodes,
            &self.clients,
            &self.counts,
            &stats,
            wall.elapsed(),
        );
        report.slow_share = self.slow_share(&placements);
        Ok(report)
    }

    fn handle(&mut self, event: Event) -> Result<(), SimError> {
        match event {
            Event::Arrive { client } => self.arrive(client),
            Event::Resubmit { image, client } => self.submit(image, client),
            Event::Deliver { serial } => {
                self.deliver(serial);
                Ok(())
            }
            Event::ServiceDone {
                node,
                epoch,
                worker,
            } => {
                self.service_done(node, epoch, worker);
                Ok(())
            }
            Event::NodeCancel {
                node,
                epoch,
                serial,
            } => {
                self.node_cancel(node, epoch, serial);
                Ok(())
            }
            Event::Answer {
                serial,
                ok,
                service_us,
            } => {
                if ok && let Some(f) = self.inflight.get(&serial).copied() {
                    let now = self.instant(self.now);
                    let ms = f64::from(service_us) / 1000.0;
                    let cluster = &mut self.fes[f.fe as usize].cluster;
                    core!(self, cluster.record_service(f.node as usize, ms, now));
                }
                let result = if ok {
                    Ok(())
                } else {
                    Err(failure(Cause::Overloaded, "node overloaded"))
                };
                self.end_attempt(serial, result)
            }
            Event::Started { serial } => self.started(serial),
            Event::Expire { serial } => {
                self.end_attempt(serial, Err(failure(Cause::Timeout, "attempt timed out")))
            }
            Event::Timer {
                request,
                generation,
            } => self.on_timer(request, generation),
            other => self.handle_fleet(other),
        }
    }

    /// Carries out a request's actions until it has none, then re-arms its timer.
    pub(super) fn drive(&mut self, id: u64) -> Result<(), SimError> {
        let now = self.instant(self.now);
        loop {
            let Some(live) = self.reqs.get_mut(&id) else {
                return Ok(());
            };
            let Some(action) = core!(self, live.req.poll_action()) else {
                break;
            };
            let cluster = &mut self.fes[live.fe].cluster;
            match action {
                Action::Wait => {
                    let granted = core!(
                        self,
                        cluster.wait_or_grant(now, id, live.req.failed(), &mut self.rng)
                    );
                    match granted {
                        Some(node) => {
                            core!(self, live.req.on_granted(now, node, cluster))
                        }
                        None => live.queued = true,
                    }
                }
                Action::Open(open) => {
                    let fe = live.fe;
                    self.open(id, fe, open)
                }
                Action::Cancel { attempt, .. } => self.cancel(id, attempt),
                Action::Progress(_) => {}
                Action::Done(result) => return self.done(id, result),
            }
        }
        self.rearm(id);
        Ok(())
    }

    /// Sends an attempt to its node (the credit was taken by the core).
    fn open(&mut self, id: u64, fe: usize, open: Open) {
        let serial = self.next_serial;
        self.next_serial += 1;
        let p = self.cfg.faults.answer_loss;
        let lost = p > 0.0 && self.rng.random_bool(p);
        let node = open.node;
        self.inflight.insert(
            serial,
            Inflight {
                request: id,
                fe: fe as u32,
                attempt: open.attempt,
                node: node as u32,
                node_epoch: self.nodes[node].epoch,
                launched: self.now,
                lost,
            },
        );
        self.fes[fe].on_node[node].push(serial);
        if let Some(live) = self.reqs.get_mut(&id) {
            live.open.push((open.attempt, serial));
        }
        let at = self.now + self.cfg.model.one_way();
        self.agenda.push(at, Event::Deliver { serial });
        if lost {
            // Nothing will come back: only the attempt's own time limit ends it.
            let expire = self.now + nanos(open.remaining);
            self.agenda.push(expire, Event::Expire { serial });
        }
    }

    /// Forgets an attempt front-end side and gives its node's credit back.
    fn close_attempt(&mut self, serial: u64) -> Option<Inflight> {
        let f = self.inflight.remove(&serial)?;
        let fe = &mut self.fes[f.fe as usize];
        fe.on_node[f.node as usize].retain(|&s| s != serial);
        if let Some(live) = self.reqs.get_mut(&f.request) {
            live.open.retain(|&(_, s)| s != serial);
        }
        core!(self, fe.cluster.release(f.node as usize));
        self.regrant = true;
        Some(f)
    }

    /// The core cancelled an attempt: reset its stream (the node hears one way later).
    fn cancel(&mut self, id: u64, attempt: u32) {
        let serial = self
            .reqs
            .get(&id)
            .and_then(|l| l.open.iter().find(|&&(a, _)| a == attempt).map(|&(_, s)| s));
        let Some(f) = serial.and_then(|s| self.close_attempt(s)) else {
            return;
        };
        self.counts.cancels += 1;
        let node = f.node;
        let epoch = self.nodes[node as usize].epoch;
        let at = self.now + self.cfg.model.one_way();
        self.agenda.push(
            at,
            Event::NodeCancel {
                node,
                epoch,
                serial: serial.unwrap_or_default(),
            },
        );
    }

    /// An attempt ended front-end side: its answer, an error, or its connection lost.
    pub(super) fn end_attempt(
        &mut self,
        serial: u64,
        result: Result<(), Failure>,
    ) -> Result<(), SimError> {
        let Some(f) = self.close_attempt(serial) else {
            return Ok(());
        };
        let now = self.instant(self.now);
        let elapsed = Duration::from_nanos(self.now.saturating_sub(f.launched));
        let Some(live) = self.reqs.get_mut(&f.request) else {
            return Err(SimError::Invariant(format!(
                "attempt {serial} outlived its request"
            )));
        };
        let cluster = &mut self.fes[live.fe].cluster;
        core!(
            self,
            live.req
                .on_attempt_end(now, f.attempt, elapsed, result, cluster)
        );
        self.drive(f.request)
    }

    /// A Started frame arrived.
    fn started(&mut self, serial: u64) -> Result<(), SimError> {
        let Some(f) = self.inflight.get(&serial).copied() else {
            return Ok(());
        };
        let now = self.instant(self.now);
        if let Some(live) = self.reqs.get_mut(&f.request) {
            core!(self, live.req.on_started(now, f.attempt, Duration::ZERO));
            self.rearm(f.request);
        }
        Ok(())
    }

    /// Arms the request's timer at `next_timeout` if that moved.
    pub(super) fn rearm(&mut self, id: u64) {
        let Some(live) = self.reqs.get_mut(&id) else {
            return;
        };
        let cluster = &mut self.fes[live.fe].cluster;
        let Some(at) = core!(self, live.req.next_timeout(cluster)) else {
            live.timer = None;
            return;
        };
        let t = nanos(at.saturating_duration_since(self.base)).max(self.now);
        if live.timer.map(|(armed, _)| armed) != Some(t) {
            live.timer_gen += 1;
            live.timer = Some((t, live.timer_gen));
            let generation = live.timer_gen;
            self.agenda.push(
                t,
                Event::Timer {
                    request: id,
                    generation,
                },
            );
        }
    }

    fn on_timer(&mut self, id: u64, generation: u32) -> Result<(), SimError> {
        let now = self.instant(self.now);
        let Some(live) = self.reqs.get_mut(&id) else {
            return Ok(());
        };
        if live.timer.map(|(_, g)| g) != Some(generation) {
            return Ok(());
        }
        live.timer = None;
        live.fired = match live.fired {
            (t, n) if t == self.now => (t, n + 1),
            _ => (self.now, 1),
        };
        if live.fired.1 > 1000 {
            return Err(SimError::Stuck(id));
        }
        let cluster = &mut self.fes[live.fe].cluster;
        core!(self, live.req.handle_timeout(now, cluster, &mut self.rng));
        self.drive(id)
    }

    /// Hands freed capacity to queued requests, first come first served.
    fn grant_waiters(&mut self) -> Result<(), SimError> {
        while std::mem::take(&mut self.regrant) {
            let now = self.instant(self.now);
            for fe in 0..self.fes.len() {
                loop {
                    let cluster = &mut self.fes[fe].cluster;
                    let Some((id, node)) = core!(self, cluster.grant(now, &mut self.rng)) else {
                        break;
                    };
                    match self.reqs.get_mut(&id) {
                        Some(live) if live.req.is_waiting() => {
                            live.queued = false;
                            let cluster = &mut self.fes[fe].cluster;
                            core!(self, live.req.on_granted(now, node, cluster));
                            self.drive(id)?;
                        }
                        _ => core!(self, self.fes[fe].cluster.release(node)),
                    }
                }
            }
        }
        Ok(())
    }
}

/// A retryable failure.
pub(super) fn failure(cause: Cause, message: &str) -> Failure {
    Failure {
        cause,
        fatal: None,
        message: message.into(),
    }
}

/// Runs one simulation to the end: every image answered or given up on.
pub fn run(config: &RunConfig) -> Result<RunReport, SimError> {
    config.validate()?;
    Sim::new(config.clone()).run()
}
