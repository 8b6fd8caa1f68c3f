//! A simulated node: the worker side of one Glimpse node, as `glimpse-node` behaves with the
//! synthetic model.
//!
//! What it copies from the real node (`node/src/handler.rs`, `engine.rs`, `synthetic.rs`):
//! - admission: at most `capacity` requests at once (the QUIC stream limit); one more is
//!   refused as Overloaded (a retryable node error);
//! - `workers` requests served at a time (one inference thread for the synthetic model), the
//!   others queued FIFO. The synthetic model charges n × service for a batch of n, so its
//!   dynamic batching changes nothing and a FIFO of single images is exact;
//! - Started sent on admission with a zero estimate (the synthetic model "starts on
//!   admission"), or, with `started_on_admission` off, when a worker takes the image (the
//!   GoogLeNet path says Started once it holds a decode permit);
//! - a cancelled request leaves the queue at once; one already being served keeps its worker
//!   until the service ends (the inference thread finishes its batch), but frees its
//!   admission slot.

use std::collections::VecDeque;
use std::time::Duration;

use rand::Rng;

use super::event::{Nanos, ms_f};

/// How every node of a run behaves (per-node speed aside).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeModel {
    /// Requests admitted at once (`glimpse-node --capacity`; also what the node announces).
    pub capacity: u32,
    /// Requests served at once; the rest of the admitted ones wait in its queue.
    pub workers: u32,
    /// Mean service time of one image on a node of speed 1, ms.
    pub service_ms: f64,
    /// Coefficient of variation of the service time (lognormal); 0 = fixed.
    pub service_cv: f64,
    /// Round-trip time between front-end and node, ms (each direction takes half).
    pub rtt_ms: f64,
    /// Load report interval (the node's Hello says 100 ms).
    pub load_interval: Duration,
    /// Started sent on admission (synthetic model) rather than when a worker takes it.
    pub started_on_admission: bool,
}

impl NodeModel {
    /// One way of the link.
    pub fn one_way(&self) -> Nanos {
        ms_f(self.rtt_ms / 2.0)
    }

    /// One service time on a node `slowdown` times slower than nominal.
    pub fn service(&self, slowdown: f64, rng: &mut impl Rng) -> Nanos {
        ms_f(self.service_ms * slowdown * lognormal_unit(self.service_cv, rng))
    }
}

/// A draw of a lognormal with mean 1 and coefficient of variation `cv` (Box–Muller; no
/// distribution crate needed for one shape).
pub(super) fn lognormal_unit(cv: f64, rng: &mut impl Rng) -> f64 {
    if cv <= 0.0 {
        return 1.0;
    }
    let sigma2 = (1.0 + cv * cv).ln();
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    (z * sigma2.sqrt() - sigma2 / 2.0).exp()
}

/// An exponential draw with mean `mean` (inter-arrival times of Poisson processes).
pub(super) fn exponential(mean: f64, rng: &mut impl Rng) -> f64 {
    let u: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    -mean * u.ln()
}

/// One admitted request on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Job {
    /// The attempt's serial number (its identity across the simulation).
    pub serial: u64,
    /// The front-end cancelled it while it was being served: the answer is dropped.
    pub cancelled: bool,
    /// Its answer will be lost on the way back.
    pub lost: bool,
}

/// What admitting a request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admit {
    /// Queued (and maybe already started by a worker).
    Queued,
    /// Refused: `capacity` requests are already admitted.
    Overloaded,
}

/// The worker side of a node: process state, admission, queue and workers.
#[derive(Debug, Clone)]
pub(super) struct NodeSide {
    /// Slowdown factor of this node's service (1 = nominal, 5 = five times slower).
    pub slowdown: f64,
    /// Whether the process runs.
    pub alive: bool,
    /// Process epoch: bumped on every crash, so a dead process's timers are stale.
    pub epoch: u32,
    /// Stalled (descheduled: no answers, no reports) from .0 until .1.
    pub stall: Option<(Nanos, Nanos)>,
    /// Load reports are sent every interval from .0 until .1 (a crash or a stall stops them).
    pub reporting: Option<(Nanos, Option<Nanos>)>,
    admitted: u32,
    queue: VecDeque<Job>,
    busy: Vec<Option<Job>>,
    /// The service time of the job each worker serves.
    service: Vec<Nanos>,
    /// Service time and count of the jobs finished since the last load report.
    recent: (Nanos, u32),
}

impl NodeSide {
    /// A running node with idle workers, reporting from `now`.
    pub(super) fn new(model: &NodeModel, slowdown: f64) -> NodeSide {
        NodeSide {
            slowdown,
            alive: true,
            epoch: 0,
            stall: None,
            reporting: Some((0, None)),
            admitted: 0,
            queue: VecDeque::new(),
            busy: vec![None; model.workers.max(1) as usize],
            service: vec![0; model.workers.max(1) as usize],
            recent: (0, 0),
        }
    }

    /// When something the node sends at `now` really leaves it: at once, or when its stall
    /// ends.
    pub(super) fn send_at(&self, now: Nanos) -> Nanos {
        match self.stall {
            Some((from, until)) if now >= from && now < until => until,
            _ => now,
        }
    }

    /// Admits a request, or refuses it when full.
    pub(super) fn admit(&mut self, model: &NodeModel, job: Job) -> Admit {
        if self.admitted >= model.capacity.max(1) {
            return Admit::Overloaded;
        }
        self.admitted += 1;
        self.queue.push_back(job);
        Admit::Queued
    }

    /// Hands queued jobs to free workers (not while stalled). Returns (worker, job) for each.
    pub(super) fn start_work(&mut self, now: Nanos) -> Vec<(u32, Job)> {
        let mut started = Vec::new();
        if self
            .stall
            .is_some_and(|(from, until)| now >= from && now < until)
        {
            return started;
        }
        for (w, slot) in self.busy.iter_mut().enumerate() {
            if slot.is_some() {
                continue;
            }
            let Some(job) = self.queue.pop_front() else {
                break;
            };
            *slot = Some(job);
            started.push((w as u32, job));
        }
        started
    }

    /// A worker took a job that will take `service`.
    pub(super) fn begin(&mut self, worker: u32, service: Nanos) {
        if let Some(s) = self.service.get_mut(worker as usize) {
            *s = service;
        }
    }

    /// A worker finished: the job it served and how long it took (its admission slot freed
    /// unless it was cancelled, which freed it already).
    pub(super) fn finish(&mut self, worker: u32) -> Option<(Job, Nanos)> {
        let job = self.busy.get_mut(worker as usize)?.take()?;
        if !job.cancelled {
            self.admitted = self.admitted.saturating_sub(1);
        }
        let service = self.service.get(worker as usize).copied().unwrap_or(0);
        self.recent = (self.recent.0 + service, self.recent.1 + 1);
        Some((job, service))
    }

    /// What its load report says: requests admitted (in service or queued), and queued.
    pub(super) fn load(&self) -> (u32, u32) {
        (self.admitted, self.queue.len() as u32)
    }

    /// The mean service time of the jobs finished since the last call, ms (the load
    /// report's `service_ms`); `None` if none finished.
    pub(super) fn take_recent_service_ms(&mut self) -> Option<f64> {
        let (sum, count) = std::mem::take(&mut self.recent);
        (count > 0).then(|| sum as f64 / f64::from(count) / 1e6)
    }

    /// The front-end reset an attempt's stream: out of the queue, or marked in service.
    pub(super) fn cancel(&mut self, serial: u64) {
        if let Some(i) = self.queue.iter().position(|j| j.serial == serial) {
            self.queue.remove(i);
            self.admitted = self.admitted.saturating_sub(1);
            return;
        }
        if let Some(job) = self
            .busy
            .iter_mut()
            .flatten()
            .find(|j| j.serial == serial && !j.cancelled)
        {
            job.cancelled = true;
            self.admitted = self.admitted.saturating_sub(1);
        }
    }

    /// The process dies: everything it held is gone, its timers are stale.
    pub(super) fn crash(&mut self, now: Nanos) {
        self.alive = false;
        self.epoch += 1;
        self.stall = None;
        self.admitted = 0;
        self.queue.clear();
        self.busy.iter_mut().for_each(|b| *b = None);
        self.recent = (0, 0);
        if let Some((from, None)) = self.reporting {
            self.reporting = Some((from, Some(now)));
        }
    }

    /// The process starts again (it reports once a front-end connects).
    pub(super) fn restart(&mut self) {
        self.alive = true;
        self.reporting = None;
    }

    /// The latest load report sent at or before `t` (the front-end sees it one way later).
    pub(super) fn last_report(&self, t: Nanos, interval: Nanos) -> Option<Nanos> {
        let (from, until) = self.reporting?;
        let end = until.map_or(t, |u| u.min(t));
        (end >= from).then(|| from + (end - from) / interval.max(1) * interval.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn model() -> NodeModel {
        NodeModel {
            capacity: 2,
            workers: 1,
            service_ms: 50.0,
            service_cv: 0.1,
            rtt_ms: 1.0,
            load_interval: Duration::from_millis(100),
            started_on_admission: true,
        }
    }

    #[test]
    fn admission_queue_and_cancel() {
        let m = model();
        let mut n = NodeSide::new(&m, 1.0);
        let job = |serial| Job {
            serial,
            cancelled: false,
            lost: false,
        };
        assert_eq!(n.admit(&m, job(1)), Admit::Queued);
        assert_eq!(n.admit(&m, job(2)), Admit::Queued);
        assert_eq!(n.admit(&m, job(3)), Admit::Overloaded);
        assert_eq!(n.start_work(0), vec![(0, job(1))]);
        n.cancel(2);
        assert_eq!(
            n.admit(&m, job(4)),
            Admit::Queued,
            "the cancel freed a slot"
        );
        n.cancel(1);
        assert!(n.finish(0).is_some_and(|(j, _)| j.cancelled));
        assert_eq!(n.start_work(0), vec![(0, job(4))]);
    }

    #[test]
    fn lognormal_has_the_asked_mean() {
        let mut rng = SmallRng::seed_from_u64(1);
        let n = 20_000;
        let mean = (0..n).map(|_| lognormal_unit(0.5, &mut rng)).sum::<f64>() / n as f64;
        assert!((mean - 1.0).abs() < 0.02, "{mean}");
    }

    #[test]
    fn reports_stop_at_a_crash() {
        let m = model();
        let mut n = NodeSide::new(&m, 1.0);
        assert_eq!(n.last_report(250, 100), Some(200));
        n.crash(330);
        assert_eq!(n.last_report(1000, 100), Some(300));
    }
}
