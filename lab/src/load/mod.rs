//! `glimpse-lab load`: a load generator for a running deployment, in the spirit of Triton's
//! `perf_analyzer`.
//!
//! Each step applies one load for `warmup + duration`: a closed loop of N clients (each sends
//! its next request when the previous one answered) or an open loop of Poisson arrivals at a
//! rate (requests go out on schedule whether or not earlier ones have answered, up to
//! `max_outstanding` waiting at once). Every request is recorded; the step's report
//! ([`report::summarize`]) counts the requests sent during the window after the warm-up and
//! computes latency percentiles from all of them.
//!
//! * [`protocol`] — building the `json`, `v2` (binary tensor extension) and `grpc` requests
//!   and checking their answers.
//! * [`schedule`] — seeded Poisson arrival times.
//! * [`report`] — per-step counts, errors by kind, throughput, percentiles; table and JSON.
//! * `h3` — the HTTP/3 connection of `--http 3` (`h3` on quinn).
//! * [`tls`] — one rustls configuration (`--ca`, `--insecure` or public roots) for HTTPS and
//!   gRPC alike.

mod error;
mod h3;
pub mod protocol;
pub mod report;
pub mod schedule;
pub mod tls;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::task::JoinSet;

pub use error::LoadError;
use protocol::{Target, TargetOptions};
use report::{LoadReport, Record, StepLoad, StepReport, Window};
use schedule::PoissonSchedule;

/// The loads of a run, one step each.
#[derive(Debug, Clone, PartialEq)]
pub enum LoadPlan {
    /// Closed loop at each of these concurrencies.
    Concurrency(Vec<usize>),
    /// Open loop (Poisson arrivals) at each of these rates, requests per second.
    Rate(Vec<f64>),
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where and how to send.
    pub target: TargetOptions,
    /// The images, sent round-robin.
    pub images: Vec<Bytes>,
    /// Images per request.
    pub batch: usize,
    /// The steps.
    pub plan: LoadPlan,
    /// Open loop: most requests waiting for an answer at once; arrivals beyond it are
    /// skipped (and counted).
    pub max_outstanding: usize,
    /// Load applied before each step's measurement window, not measured.
    pub warmup: Duration,
    /// Each step's measurement window.
    pub duration: Duration,
    /// Seed of the open-loop arrival times (step `i` uses `seed + i`).
    pub seed: u64,
}

impl LoadOptions {
    fn validate(&self) -> Result<(), LoadError> {
        let usage = |m: &str| Err(LoadError::Usage(m.to_string()));
        if self.images.is_empty() {
            return usage("no images to send");
        }
        if self.batch == 0 {
            return usage("--batch must be at least 1");
        }
        if self.duration.is_zero() {
            return usage("--duration must be more than 0");
        }
        match &self.plan {
            LoadPlan::Concurrency(c) if c.is_empty() => usage("no --concurrency given"),
            LoadPlan::Concurrency(c) if c.contains(&0) => usage("--concurrency must be ≥ 1"),
            LoadPlan::Rate(r) if r.is_empty() => usage("no --rate given"),
            LoadPlan::Rate(r) if r.iter().any(|r| !r.is_finite() || *r <= 0.0) => {
                usage("--rate must be a positive number of requests per second")
            }
            LoadPlan::Rate(_) if self.max_outstanding == 0 => {
                usage("--max-outstanding must be at least 1")
            }
            _ => Ok(()),
        }
    }
}

/// The images round-robin, `batch` per request.
struct Images {
    all: Vec<Bytes>,
    next: AtomicUsize,
    batch: usize,
}

impl Images {
    fn next_batch(&self) -> Vec<Bytes> {
        let first = self.next.fetch_add(self.batch, Ordering::Relaxed);
        (0..self.batch)
            .map(|k| self.all[(first + k) % self.all.len()].clone())
            .collect()
    }
}

/// Runs every step of `o.plan` in order against the deployment and returns their reports;
/// `on_step` sees each report as soon as its step ends (for progress output).
pub async fn run_load(
    o: &LoadOptions,
    mut on_step: impl FnMut(&StepReport),
) -> Result<LoadReport, LoadError> {
    o.validate()?;
    let target = Arc::new(Target::connect(&o.target).await?);
    let images = Arc::new(Images {
        all: o.images.clone(),
        next: AtomicUsize::new(0),
        batch: o.batch,
    });
    let loads: Vec<StepLoad> = match &o.plan {
        LoadPlan::Concurrency(c) => c.iter().map(|&c| StepLoad::Concurrency(c)).collect(),
        LoadPlan::Rate(r) => r.iter().map(|&r| StepLoad::Rate(r)).collect(),
    };
    let window = Window {
        start: o.warmup,
        end: o.warmup + o.duration,
    };
    let mut steps = Vec::with_capacity(loads.len());
    for (i, load) in loads.into_iter().enumerate() {
        let (records, skipped) = match load {
            StepLoad::Concurrency(c) => (closed_loop(&target, &images, c, window.end).await?, 0),
            StepLoad::Rate(rate) => {
                let schedule = PoissonSchedule::new(rate, o.seed.wrapping_add(i as u64));
                open_loop(&target, &images, schedule, o.max_outstanding, window).await?
            }
        };
        let step = report::summarize(load, &records, window, o.batch, skipped);
        on_step(&step);
        steps.push(step);
    }
    Ok(LoadReport {
        url: o.target.url.clone(),
        protocol: o.target.protocol,
        http: o.target.http,
        batch: o.batch,
        warmup_s: o.warmup.as_secs_f64(),
        seed: o.seed,
        steps,
    })
}

/// `concurrency` clients, each sending a request as soon as its previous one answered, until
/// `end` (from now); requests still waiting then are awaited (each is bounded by the
/// client's timeout) and recorded.
async fn closed_loop(
    target: &Arc<Target>,
    images: &Arc<Images>,
    concurrency: usize,
    end: Duration,
) -> Result<Vec<Record>, LoadError> {
    let start = Instant::now();
    let mut clients = JoinSet::new();
    for _ in 0..concurrency {
        let (target, images) = (target.clone(), images.clone());
        clients.spawn(async move {
            let mut records = Vec::new();
            loop {
                let sent = start.elapsed();
                if sent >= end {
                    return records;
                }
                let batch = images.next_batch();
                let result = target.send(&batch).await;
                records.push(Record {
                    sent,
                    done: start.elapsed(),
                    result,
                });
            }
        });
    }
    let mut all = Vec::new();
    while let Some(done) = clients.join_next().await {
        all.extend(done.map_err(|e| LoadError::Task(e.to_string()))?);
    }
    Ok(all)
}

/// Sends a request at every arrival of `schedule` before `window.end`, each in its own task,
/// unless `max_outstanding` are already waiting (then the arrival is skipped, and counted if
/// it fell in the window). Returns every request's record and the skipped count.
async fn open_loop(
    target: &Arc<Target>,
    images: &Arc<Images>,
    schedule: PoissonSchedule,
    max_outstanding: usize,
    window: Window,
) -> Result<(Vec<Record>, u64), LoadError> {
    let start = Instant::now();
    let outstanding = Arc::new(AtomicUsize::new(0));
    let mut requests = JoinSet::new();
    let mut records = Vec::new();
    let mut skipped = 0u64;
    for at in schedule.take_while(|at| *at < window.end) {
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + at)).await;
        // Collect what has finished, so the set does not grow with the whole step.
        while let Some(done) = requests.try_join_next() {
            records.push(done.map_err(|e| LoadError::Task(e.to_string()))?);
        }
        if outstanding.load(Ordering::Acquire) >= max_outstanding {
            if at >= window.start {
                skipped += 1;
            }
            continue;
        }
        outstanding.fetch_add(1, Ordering::AcqRel);
        let (target, images, outstanding) = (target.clone(), images.clone(), outstanding.clone());
        requests.spawn(async move {
            let sent = start.elapsed();
            let batch = images.next_batch();
            let result = target.send(&batch).await;
            let done = start.elapsed();
            outstanding.fetch_sub(1, Ordering::AcqRel);
            Record { sent, done, result }
        });
    }
    while let Some(done) = requests.join_next().await {
        records.push(done.map_err(|e| LoadError::Task(e.to_string()))?);
    }
    Ok((records, skipped))
}
