//! Projections: what no machine here can run. 10 to 1,000 nodes with the calibrated node,
//! crashes of 0–5% of the nodes per minute, one slow node in ten, silent stalls, lost
//! answers, and hedging on and off.
//!
//! The node is the validated one (`validate::calibrated_node`) with two changes that a real
//! deployment has: a capacity of 4 (the node admits 4 requests and serves one at a time, so
//! it queues up to 3, as `glimpse-node --capacity` allows) and a 1 ms round trip (one data
//! centre). Load is offered open loop at `load` × the fleet's nominal rate (nodes / mean
//! service time), so a slower or smaller fleet shows up as queueing and tail latency rather
//! than as a client that politely slows down. Images scale with the fleet (`images_per_node`)
//! so every run covers the same virtual time, about a minute at the defaults.

use std::time::Duration;

use glimpse_transport::dispatcher::{Placement, Policy};
use serde::Serialize;

use super::validate::{LAB_IMAGE_BYTES, calibrated_node};
use super::{Connection, Degrade, Faults, RunConfig, RunReport, SimError, Workload, run};

/// One combination of faults and policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Scenario {
    /// Short name (CSV, plots).
    pub id: &'static str,
    /// What it is, for the tables.
    pub title: &'static str,
    /// Crashes per node per minute (each restarts after `RESTART_AFTER`).
    pub crash_per_node_min: f64,
    /// One node in ten is `SLOW_FACTOR` times slower.
    pub slow: bool,
    /// Silent stalls per node per minute (each `STALL_FOR` long).
    pub stall_per_node_min: f64,
    /// Probability that an answer is lost.
    pub answer_loss: f64,
    /// Hedging on.
    pub hedge: bool,
    /// GPU-like heterogeneous speeds (see `RunConfig::hetero`).
    pub hetero: bool,
    /// One node in ten turns `SLOW_FACTOR` times slower halfway through, and recovers at
    /// three quarters.
    pub degrade: bool,
    /// Front-ends sharing the fleet.
    pub frontends: usize,
}

/// How much slower a slow node is.
pub(super) const SLOW_FACTOR: f64 = 5.0;
/// A crashed node's process is back after this long (then the front-end reconnects).
pub(super) const RESTART_AFTER: Duration = Duration::from_secs(2);
/// A stall's length: well past the 0.5 s silence timeout, well below the 10 s idle timeout.
pub(super) const STALL_FOR: Duration = Duration::from_secs(2);

const fn scenario(
    id: &'static str,
    title: &'static str,
    crash_per_node_min: f64,
    slow: bool,
    hedge: bool,
) -> Scenario {
    Scenario {
        id,
        title,
        crash_per_node_min,
        slow,
        stall_per_node_min: 0.0,
        answer_loss: 0.0,
        hedge,
        hetero: false,
        degrade: false,
        frontends: 1,
    }
}

/// Every scenario projected.
pub(super) const SCENARIOS: [Scenario; 13] = [
    scenario("healthy", "healthy fleet, hedging off", 0.0, false, false),
    scenario(
        "healthy-hedge",
        "healthy fleet, hedging on",
        0.0,
        false,
        true,
    ),
    scenario("crash1", "1% of nodes crash per minute", 0.01, false, false),
    scenario("crash5", "5% of nodes crash per minute", 0.05, false, false),
    scenario(
        "crash5-hedge",
        "5% crash per minute, hedging on",
        0.05,
        false,
        true,
    ),
    scenario("slow", "one node in ten 5× slower", 0.0, true, false),
    scenario(
        "slow-hedge",
        "one node in ten 5× slower, hedging on",
        0.0,
        true,
        true,
    ),
    Scenario {
        stall_per_node_min: 0.01,
        answer_loss: 0.001,
        ..scenario(
            "mixed",
            "5% crash/min + 1% stall/min + 0.1% lost answers + slow nodes",
            0.05,
            true,
            false,
        )
    },
    Scenario {
        stall_per_node_min: 0.01,
        answer_loss: 0.001,
        ..scenario("mixed-hedge", "mixed faults, hedging on", 0.05, true, true)
    },
    Scenario {
        hetero: true,
        ..scenario(
            "hetero",
            "a third of the nodes 2× faster, one in ten 20× faster (GPU-like)",
            0.0,
            false,
            false,
        )
    },
    Scenario {
        frontends: 4,
        ..scenario(
            "slow-4fe",
            "one node in ten 5× slower, 4 front-ends",
            0.0,
            true,
            false,
        )
    },
    Scenario {
        frontends: 4,
        ..scenario(
            "healthy-4fe",
            "healthy fleet, 4 front-ends",
            0.0,
            false,
            false,
        )
    },
    Scenario {
        degrade: true,
        ..scenario(
            "degrade",
            "one node in ten 5× slower from half to three quarters of the run",
            0.0,
            false,
            false,
        )
    },
];

/// What to project.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectOptions {
    /// Fleet sizes.
    pub nodes: Vec<usize>,
    /// Images per node in each run.
    pub images_per_node: usize,
    /// Offered load as a fraction of the fleet's nominal rate.
    pub load: f64,
    /// Scenario ids to run (empty: all).
    pub only: Vec<String>,
    /// Seed of the first run; each run gets its own.
    pub seed: u64,
    /// How the front-ends place images.
    pub placement: Placement,
}

/// One projected point.
#[derive(Debug, Clone, Serialize)]
pub struct Projection {
    pub scenario: &'static str,
    pub title: &'static str,
    pub hedge: bool,
    pub placement: Placement,
    pub offered_per_s: f64,
    #[serde(flatten)]
    pub report: RunReport,
}

/// The run of one scenario at one fleet size.
pub(super) fn projection_run(
    s: &Scenario,
    nodes: usize,
    o: &ProjectOptions,
    seed: u64,
) -> RunConfig {
    let mut model = calibrated_node();
    model.capacity = 4;
    model.rtt_ms = 1.0;
    let images = nodes.saturating_mul(o.images_per_node).max(1);
    let mut config = RunConfig {
        nodes,
        model,
        slow_every: if s.slow { 10 } else { 0 },
        slow_factor: SLOW_FACTOR,
        hetero: s.hetero,
        degrade: None,
        frontends: s.frontends,
        workload: Workload::Open { per_s: 1.0 },
        images,
        image_bytes: LAB_IMAGE_BYTES,
        client_attempts: 3,
        faults: Faults {
            crash_per_node_min: s.crash_per_node_min,
            restart_after: RESTART_AFTER,
            stall_per_node_min: s.stall_per_node_min,
            stall_for: STALL_FOR,
            answer_loss: s.answer_loss,
            kill_first: 0.0,
        },
        policy: Policy {
            hedge: s.hedge,
            placement: o.placement,
            ..Policy::default()
        },
        connection: Connection::default(),
        seed,
    };
    // Offered load is a fraction of the fleet's nominal rate: nodes / mean service time, as
    // the projections always had it (slow nodes do not lower it: the fleet is expected to
    // carry the load it was sized for); a heterogeneous fleet's is its speeds summed.
    let per_s = if s.hetero {
        config.nominal_per_s()
    } else {
        nodes as f64 * 1000.0 / config.model.service_ms
    } * o.load;
    config.workload = Workload::Open { per_s };
    if s.degrade {
        let run_s = images as f64 / per_s;
        config.degrade = Some(Degrade {
            every: 10,
            factor: SLOW_FACTOR,
            from: Duration::from_secs_f64(run_s / 2.0),
            until: Duration::from_secs_f64(run_s * 3.0 / 4.0),
        });
    }
    config
}

/// Runs every selected scenario at every fleet size; `progress` hears of each point.
pub(super) fn project(
    o: &ProjectOptions,
    mut progress: impl FnMut(&Projection),
) -> Result<Vec<Projection>, SimError> {
    if let Some(bad) = o
        .only
        .iter()
        .find(|id| !SCENARIOS.iter().any(|s| s.id == id.as_str()))
    {
        let ids: Vec<&str> = SCENARIOS.iter().map(|s| s.id).collect();
        return Err(SimError::Config(format!(
            "unknown scenario {bad:?}; known: {}",
            ids.join(", ")
        )));
    }
    if !(o.load > 0.0 && o.load.is_finite()) {
        return Err(SimError::Config("load must be positive".into()));
    }
    let mut out = Vec::new();
    let selected = SCENARIOS
        .iter()
        .filter(|s| o.only.is_empty() || o.only.iter().any(|id| id == s.id));
    for (i, s) in selected.enumerate() {
        for (j, &nodes) in o.nodes.iter().enumerate() {
            let seed = o.seed.wrapping_add((i * 1000 + j) as u64);
            let config = projection_run(s, nodes, o, seed);
            let offered = match config.workload {
                Workload::Open { per_s } => per_s,
                Workload::Closed { .. } => 0.0,
            };
            let p = Projection {
                scenario: s.id,
                title: s.title,
                hedge: s.hedge,
                placement: o.placement,
                offered_per_s: offered,
                report: run(&config)?,
            };
            progress(&p);
            out.push(p);
        }
    }
    Ok(out)
}
