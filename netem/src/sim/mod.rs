//! `glimpse-lab simulate`: the dispatcher's real decision code at a scale no machine here can
//! run.
//!
//! The front-end's dispatcher is a sans-IO core (`glimpse_transport::dispatcher`: `Cluster`,
//! `Request`, `Heartbeat`, `Backoff`) that takes events with the time they happened and
//! answers with actions and deadlines. The production driver feeds it from QUIC; this module
//! feeds the *same code* from a discrete-event simulation (`event.rs`): simulated nodes
//! (`node.rs`) with service times, queues, link delay, crashes, stalls and lost answers, and
//! simulated clients (`workload.rs`), on a virtual clock. Only the nodes and the network are
//! models; every placement, retry, hedge, timeout and silence decision is production code.
//!
//! - `engine.rs`: the simulation loop and the request driver (the async driver's contract,
//!   carried out on events); `clients.rs`: submissions, final answers, the end-of-run check;
//! - `fleet.rs`: node processes and the front-end's supervision of them (connections,
//!   heartbeat, reconnect backoff, crashes, stalls);
//! - `validate.rs`: the lab's measured sweeps, simulated, with the error of each point;
//! - `project.rs`: 10 to 1,000 nodes, failures, slow nodes, hedging;
//! - `report.rs`: CSV, Markdown and SVG/PNG plots.

mod clients;
mod engine;
mod event;
mod fleet;
mod link;
mod metrics;
mod node;
mod project;
mod report;
mod validate;
mod workload;

#[cfg(test)]
mod tests;

use std::time::Duration;

use glimpse_transport::dispatcher::Policy;

pub use metrics::RunReport;
pub use node::NodeModel;
pub use project::ProjectOptions;
pub use workload::Workload;

/// Why a simulation could not run or broke an invariant of the dispatcher.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A setting is out of range.
    #[error("invalid setting: {0}")]
    Config(String),
    /// Nothing left to happen while images still wait for an answer.
    #[error("the simulation ran out of events with {unsettled} image(s) unsettled")]
    OutOfEvents {
        /// Images still without an answer.
        unsettled: usize,
    },
    /// A request kept asking to be woken at the same instant without progress.
    #[error("request {0} is stuck: its timer fires again and again at one instant")]
    Stuck(u64),
    /// An invariant of the driver contract was broken (a second Done, credit not returned).
    #[error("invariant broken: {0}")]
    Invariant(String),
    /// Writing results failed.
    #[error("writing {path}: {message}")]
    Output {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// Faults injected into a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// Node crashes per node per minute (a Poisson process over the fleet).
    pub crash_per_node_min: f64,
    /// A crashed node process starts again after this long.
    pub restart_after: Duration,
    /// Silent stalls per node per minute.
    pub stall_per_node_min: f64,
    /// How long a stall lasts (kept below the QUIC idle timeout: the connection survives).
    pub stall_for: Duration,
    /// Probability that an attempt's answer never arrives.
    pub answer_loss: f64,
    /// Seed semantics (§4a): each request to node 0 kills it for good with this probability.
    pub kill_first: f64,
}

impl Default for Faults {
    /// No faults.
    fn default() -> Faults {
        Faults {
            crash_per_node_min: 0.0,
            restart_after: Duration::from_secs(2),
            stall_per_node_min: 0.0,
            stall_for: Duration::from_secs(2),
            answer_loss: 0.0,
            kill_first: 0.0,
        }
    }
}

/// The front-end's connection settings the core does not see (the async driver's defaults in
/// `DispatcherConfig` and `TransportTuning`).
#[derive(Debug, Clone, PartialEq)]
pub struct Connection {
    /// QUIC idle timeout: a dead node's connection ends this long after it was last heard.
    pub idle_timeout: Duration,
    /// QUIC keep-alive: a restarted node answers the next one with a stateless reset.
    pub keep_alive: Duration,
    /// Handshake + Hello timeout.
    pub connect_timeout: Duration,
    /// Reconnect backoff bounds.
    pub reconnect_min: Duration,
    /// See `reconnect_min`.
    pub reconnect_max: Duration,
}

impl Default for Connection {
    /// The production defaults.
    fn default() -> Connection {
        Connection {
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_millis(300),
            connect_timeout: Duration::from_secs(3),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
        }
    }
}

/// One simulated run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Nodes in the fleet.
    pub nodes: usize,
    /// How each node behaves.
    pub model: NodeModel,
    /// Every `slow_every`-th node (0 = none) is `slow_factor` times slower.
    pub slow_every: usize,
    /// See `slow_every`.
    pub slow_factor: f64,
    /// How images are offered.
    pub workload: Workload,
    /// Images in the run.
    pub images: usize,
    /// Bytes per image (the core's upload allowance depends on it).
    pub image_bytes: usize,
    /// Submissions per image before the client gives up on it (the lab's 3).
    pub client_attempts: u32,
    /// Faults injected.
    pub faults: Faults,
    /// The dispatcher's policy (hedging on or off lives here).
    pub policy: Policy,
    /// Connection settings.
    pub connection: Connection,
    /// Seed of every random draw of the run.
    pub seed: u64,
}

impl RunConfig {
    /// Checks the settings a user can set.
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: &str| Err(SimError::Config(m.into()));
        if self.nodes == 0 || u32::try_from(self.nodes).is_err() {
            return bad("nodes must be within 1..=4294967295");
        }
        let f = &self.faults;
        for (name, p) in [("answer loss", f.answer_loss), ("kill", f.kill_first)] {
            if !(0.0..=1.0).contains(&p) {
                return bad(&format!("{name} probability must be within 0..=1"));
            }
        }
        if f.crash_per_node_min < 0.0 || f.stall_per_node_min < 0.0 {
            return bad("fault rates must not be negative");
        }
        if !(self.model.service_ms > 0.0 && self.model.service_ms.is_finite()) {
            return bad("service time must be positive");
        }
        if self.slow_factor <= 0.0 || !self.slow_factor.is_finite() {
            return bad("slow factor must be positive");
        }
        if let Workload::Open { per_s } = self.workload
            && !(per_s > 0.0 && per_s.is_finite())
        {
            return bad("offered load must be positive");
        }
        if f.stall_for >= self.connection.idle_timeout {
            return bad("stalls must be shorter than the idle timeout");
        }
        Ok(())
    }
}

/// Runs one simulation to the end: every image answered or given up on.
pub fn run(config: &RunConfig) -> Result<RunReport, SimError> {
    config.validate()?;
    engine::Sim::new(config.clone()).run()
}

/// Everything `glimpse-lab simulate` does.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Where results go.
    pub out: std::path::PathBuf,
    /// Runs per validation point (the lab made 5).
    pub validation_runs: usize,
    /// What to project.
    pub project: project::ProjectOptions,
}

/// What `simulate` found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Validation points.
    pub checks: Vec<validate::Check>,
    /// Projected points.
    pub projections: Vec<project::Projection>,
    /// Images lost over every run (validation and projections): must be 0.
    pub lost: usize,
    /// The Markdown written, for the terminal.
    pub markdown: String,
}

/// Validates against the lab's measurements, projects, and writes CSV, Markdown and plots to
/// `o.out`. `progress` hears of each projected point as it finishes.
pub fn simulate(
    o: &SimulateOptions,
    progress: impl FnMut(&project::Projection),
) -> Result<Outcome, SimError> {
    let checks = validate::validate(o.project.seed, o.validation_runs)?;
    report::write(&o.out, "validation.csv", &report::validation_csv(&checks))?;
    let validation_md = report::validation_markdown(&checks);
    report::write(&o.out, "validation.md", &validation_md)?;
    let projections = project::project(&o.project, progress)?;
    report::write(
        &o.out,
        "projections.csv",
        &report::projections_csv(&projections),
    )?;
    let projections_md = report::projections_markdown(&projections);
    report::write(&o.out, "projections.md", &projections_md)?;
    report::projection_plots(&o.out, &projections)?;
    let lost = checks.iter().map(|c| c.lost).sum::<usize>()
        + projections.iter().map(|p| p.report.lost).sum::<usize>();
    Ok(Outcome {
        checks,
        projections,
        lost,
        markdown: format!("## Validation\n\n{validation_md}\n## Projections\n\n{projections_md}"),
    })
}
