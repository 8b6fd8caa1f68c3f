//! The simulated twin: the same fleet and load in `glimpse-lab simulate`'s engine, which
//! drives the dispatcher's real core on a virtual clock.
//!
//! The node model is the one calibrated in EXPERIMENTS.md §1 (`sim::calibrated_node`: the
//! synthetic 50 ms plus 1.85 ms of each image's own overhead, coefficient of variation
//! 0.023), with the run's capacity and lanes. At capacity 1 that overhead is part of the
//! lane's cycle, as in §1; with images queued on the node it overlaps the lane's work, so it
//! moves to the link's round trip and the lane serves the configured time (the slow node
//! that times its factor). Load is the same Poisson rate; each run offers as many images as
//! the measured run's warm-up and window together.

use glimpse_transport::dispatcher::{Placement, Policy};
use serde::Serialize;

use super::fleet::{Fleet, PlacementOptions};
use crate::harness::LabError;
use crate::sim::{
    Connection, Faults, LAB_IMAGE_BYTES, RunConfig, RunReport, Workload, calibrated_node, run,
};
use crate::stats::{MeanCi, mean_ci};

/// The synthetic service time of the runs `calibrated_node` was calibrated on, ms.
const CALIBRATED_SLEEP_MS: f64 = 50.0;

/// The simulated runs of one placement, summarised.
#[derive(Debug, Clone, Serialize)]
pub struct TwinRow {
    /// The placement simulated.
    pub placement: Placement,
    /// Latency percentiles over the runs, ms.
    pub p50_ms: MeanCi,
    /// See `p50_ms`.
    pub p95_ms: MeanCi,
    /// See `p50_ms`.
    pub p99_ms: MeanCi,
    /// Images per second while load was offered.
    pub images_per_s: MeanCi,
    /// Placements per slow node ÷ per other node.
    pub slow_share: MeanCi,
    /// Attempts beyond one per image, over all runs.
    pub extra_attempts: u64,
    /// Images without an answer, over all runs (must be 0).
    pub lost: usize,
}

/// The run configuration that mirrors the measured runs of `placement` (seed `seed`), or
/// `None` for a fleet the simulator has no calibrated model of (GoogLeNet).
pub fn twin_config(o: &PlacementOptions, placement: Placement, seed: u64) -> Option<RunConfig> {
    let Fleet::Synthetic {
        nodes,
        lanes,
        service_ms,
        slow_factor,
    } = o.fleet
    else {
        return None;
    };
    let mut model = calibrated_node();
    // §1 calibrated 50 ms of sleep plus the image's own overhead (upload, front-end, answer)
    // at capacity 1, where that overhead is serial: the lane waits for the next image.
    let overhead_ms = model.service_ms - CALIBRATED_SLEEP_MS;
    if o.capacity > 1 {
        // With images queued on the node, the next one is uploaded while the lane serves
        // this one: the lane's cycle is the sleep alone, and the overhead is on the path.
        model.service_ms = service_ms;
        model.rtt_ms += overhead_ms;
    } else {
        model.service_ms = service_ms + overhead_ms;
    }
    model.capacity = o.capacity;
    model.workers = lanes;
    let offered_s = (o.warmup + o.duration).as_secs_f64();
    Some(RunConfig {
        nodes,
        model,
        // The last node is the slow one, as in the measured fleet.
        slow_every: nodes,
        slow_factor,
        hetero: false,
        degrade: None,
        frontends: 1,
        workload: Workload::Open { per_s: o.rate },
        images: (o.rate * offered_s).round().max(1.0) as usize,
        image_bytes: LAB_IMAGE_BYTES,
        client_attempts: 3,
        faults: Faults::default(),
        policy: Policy {
            placement,
            ..Policy::default()
        },
        connection: Connection::default(),
        seed,
    })
}

/// Simulates `o.sim_runs` runs of every placement; empty when there is no twin.
pub fn simulate_twin(o: &PlacementOptions) -> Result<Vec<TwinRow>, LabError> {
    let mut rows = Vec::new();
    if o.sim_runs == 0 {
        return Ok(rows);
    }
    for &placement in &o.placements {
        let mut reports: Vec<RunReport> = Vec::new();
        for r in 0..o.sim_runs as u64 {
            let Some(config) = twin_config(o, placement, o.seed.wrapping_add(r)) else {
                return Ok(Vec::new());
            };
            reports.push(run(&config).map_err(|e| LabError::Report(format!("twin: {e}")))?);
        }
        let ci = |f: fn(&RunReport) -> f64| mean_ci(&reports.iter().map(f).collect::<Vec<_>>());
        rows.push(TwinRow {
            placement,
            p50_ms: ci(|r| r.p50_ms),
            p95_ms: ci(|r| r.p95_ms),
            p99_ms: ci(|r| r.p99_ms),
            images_per_s: ci(|r| r.images_per_s),
            slow_share: ci(|r| r.slow_share.unwrap_or(f64::NAN)),
            extra_attempts: reports.iter().map(|r| r.wasted).sum(),
            lost: reports.iter().map(|r| r.lost).sum(),
        });
    }
    Ok(rows)
}
