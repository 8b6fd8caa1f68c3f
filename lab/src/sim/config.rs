//! What one simulation run is: the fleet, its faults, its connections, the workload and the
//! dispatcher's policy.

use std::time::Duration;

use glimpse_transport::dispatcher::Policy;

use super::error::SimError;
use super::node::NodeModel;
use super::workload::Workload;

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

/// Some nodes turn slower partway through a run, then recover.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Degrade {
    /// Every `every`-th node is affected.
    pub every: usize,
    /// How much slower it turns.
    pub factor: f64,
    /// When it turns slower (virtual time since the start).
    pub from: Duration,
    /// When it recovers.
    pub until: Duration,
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
    /// GPU-like heterogeneous fleet: one node in ten 20× faster, a third of the others 2×
    /// faster (on top of `slow_every`).
    pub hetero: bool,
    /// Nodes that turn slower partway through, then recover.
    pub degrade: Option<Degrade>,
    /// Front-ends, each running its own dispatcher core, sharing the fleet (1 = one).
    pub frontends: usize,
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
    /// How much slower than nominal node `i` is at the start (below 1: faster).
    pub fn slowdown(&self, i: usize) -> f64 {
        let mut f = 1.0;
        if self.slow_every > 0 && i % self.slow_every == self.slow_every - 1 {
            f *= self.slow_factor;
        }
        if self.hetero {
            if i % 10 == 9 {
                f /= 20.0;
            } else if i.is_multiple_of(3) {
                f /= 2.0;
            }
        }
        f
    }

    /// The fleet's nominal rate at the start, images per second: every node's speed summed.
    pub fn nominal_per_s(&self) -> f64 {
        (0..self.nodes)
            .map(|i| 1000.0 / (self.model.service_ms * self.slowdown(i)))
            .sum()
    }

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
        if self.frontends == 0 || self.frontends > 64 {
            return bad("front-ends must be within 1..=64");
        }
        if let Some(d) = self.degrade
            && (d.factor <= 0.0 || !d.factor.is_finite() || d.until < d.from)
        {
            return bad("degradation must have a positive factor and end after it starts");
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
