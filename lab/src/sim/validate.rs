//! Validation: the lab's measured sweeps, simulated, point by point.
//!
//! Measured values are the Glimpse rows of `lab/results/workers/workers.csv` (EXPERIMENTS.md
//! §1) and `lab/results/failure/failure-seed.csv` (§4a): 5 runs of 48 images, 8 closed-loop
//! clients, nodes of capacity 1 with a 50 ms synthetic service time, loopback links.
//!
//! **Calibration uses the 1-worker point only.** With one worker of capacity 1, the worker's
//! cycle is one service plus one round trip (the next image is sent when the answer is back),
//! so the mean service time is 1 / throughput − RTT = 1 / 19.248 s − 0.1 ms = 51.85 ms (the
//! synthetic model's 50 ms plus the node's own per-image overhead). Each image then waits for
//! the 7 ahead of it and its own service, so its latency is a sum of 8 services: the spread of
//! the measured latencies, p99 − p50 = 8.0 ms = 2.326 × √8 × σ, gives σ = 1.22 ms, a
//! coefficient of variation of 0.023. Every other point uses these two numbers unchanged.

use std::time::Duration;

use glimpse_transport::dispatcher::Policy;
use serde::Serialize;

use super::{Connection, Faults, NodeModel, RunConfig, RunReport, SimError, Workload, run};
use crate::stats::mean_ci;

/// One measured point (Glimpse, mean over 5 runs).
#[derive(Debug, Clone, Copy)]
pub(super) struct Measured {
    pub x: f64,
    pub images_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

const fn m(x: f64, images_per_s: f64, p50_ms: f64, p99_ms: f64) -> Measured {
    Measured {
        x,
        images_per_s,
        p50_ms,
        p99_ms,
    }
}

/// §1, Glimpse: workers → images/s, p50, p99.
pub(super) const WORKERS: [Measured; 8] = [
    m(1.0, 19.248, 413.9, 421.9),
    m(2.0, 38.490, 207.1, 211.0),
    m(3.0, 57.575, 152.8, 160.7),
    m(4.0, 76.237, 104.0, 109.7),
    m(5.0, 91.202, 101.6, 109.1),
    m(6.0, 113.520, 54.2, 109.5),
    m(7.0, 128.905, 53.4, 103.7),
    m(8.0, 148.207, 52.9, 58.6),
];

/// §4a, Glimpse: probability that a request kills worker 1 → images/s, p50, p99.
pub(super) const FAILURE_SEED: [Measured; 3] = [
    m(0.0, 57.592, 153.9, 158.8),
    m(0.4, 37.910, 157.1, 769.8),
    m(0.8, 37.599, 157.6, 775.2),
];

/// The lab's setup: images per run, clients, runs per point.
pub(super) const LAB_IMAGES: usize = 48;
/// Clients the lab runs, each with one image outstanding.
pub(super) const LAB_CLIENTS: u32 = 8;
/// Loopback round trip assumed for the lab's links.
pub(super) const LAB_RTT_MS: f64 = 0.1;
/// The lab's synthetic JPEGs (~80 KB).
pub const LAB_IMAGE_BYTES: usize = 80_000;

/// The node model calibrated on the 1-worker point (see the module doc).
pub fn calibrated_node() -> NodeModel {
    let one = WORKERS[0];
    let service_ms = 1000.0 / one.images_per_s - LAB_RTT_MS;
    // Latency of an image at one worker = a sum of LAB_CLIENTS services.
    let sigma = (one.p99_ms - one.p50_ms) / (2.326 * f64::from(LAB_CLIENTS).sqrt());
    NodeModel {
        capacity: 1,
        workers: 1,
        service_ms,
        service_cv: sigma / service_ms,
        rtt_ms: LAB_RTT_MS,
        load_interval: Duration::from_millis(100),
        started_on_admission: true,
    }
}

/// A run as the lab made it, with `workers` nodes.
pub(super) fn lab_run(workers: usize, seed: u64) -> RunConfig {
    RunConfig {
        nodes: workers,
        model: calibrated_node(),
        slow_every: 0,
        slow_factor: 1.0,
        hetero: false,
        degrade: None,
        frontends: 1,
        workload: Workload::Closed {
            clients: LAB_CLIENTS,
        },
        images: LAB_IMAGES,
        image_bytes: LAB_IMAGE_BYTES,
        client_attempts: 3,
        faults: Faults::default(),
        policy: Policy::default(),
        connection: Connection::default(),
        seed,
    }
}

/// One validated point: simulated (mean over the runs) against measured.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub experiment: &'static str,
    pub x: f64,
    pub measured_images_per_s: f64,
    pub simulated_images_per_s: f64,
    pub images_per_s_error_pct: f64,
    pub measured_p50_ms: f64,
    pub simulated_p50_ms: f64,
    pub p50_error_pct: f64,
    pub measured_p99_ms: f64,
    pub simulated_p99_ms: f64,
    /// Images lost over the runs (must be 0).
    pub lost: usize,
    /// The point is within the 10% target on both images/s and p50.
    pub within_target: bool,
}

/// The target the validation aims for, in percent.
pub(super) const TARGET_PCT: f64 = 10.0;

fn error_pct(sim: f64, measured: f64) -> f64 {
    (sim - measured) / measured * 100.0
}

fn check(experiment: &'static str, measured: &Measured, runs: &[RunReport]) -> Check {
    let mean = |f: fn(&RunReport) -> f64| mean_ci(&runs.iter().map(f).collect::<Vec<_>>()).mean;
    let ips = mean(|r| r.images_per_s);
    let p50 = mean(|r| r.p50_ms);
    let (e_ips, e_p50) = (
        error_pct(ips, measured.images_per_s),
        error_pct(p50, measured.p50_ms),
    );
    Check {
        experiment,
        x: measured.x,
        measured_images_per_s: measured.images_per_s,
        simulated_images_per_s: ips,
        images_per_s_error_pct: e_ips,
        measured_p50_ms: measured.p50_ms,
        simulated_p50_ms: p50,
        p50_error_pct: e_p50,
        measured_p99_ms: measured.p99_ms,
        simulated_p99_ms: mean(|r| r.p99_ms),
        lost: runs.iter().map(|r| r.lost).sum(),
        within_target: e_ips.abs() <= TARGET_PCT && e_p50.abs() <= TARGET_PCT,
    }
}

/// Simulates §1 and §4a, `runs` runs per point (seeds `seed`, `seed + 1`, ...).
pub(super) fn validate(seed: u64, runs: usize) -> Result<Vec<Check>, SimError> {
    let mut out = Vec::new();
    for point in &WORKERS {
        let reports = (0..runs.max(1) as u64)
            .map(|r| run(&lab_run(point.x as usize, seed + r)))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(check("workers", point, &reports));
    }
    for point in &FAILURE_SEED {
        let reports = (0..runs.max(1) as u64)
            .map(|r| {
                let mut c = lab_run(3, seed + r);
                c.faults.kill_first = point.x;
                run(&c)
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.push(check("failure-seed", point, &reports));
    }
    Ok(out)
}
