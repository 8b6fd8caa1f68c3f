//! What the placement experiment is asked to measure, and what one run measured.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use glimpse_transport::dispatcher::Placement;
use serde::Serialize;

use crate::harness::procs::Bins;

/// The fleet under test.
#[derive(Debug, Clone, PartialEq)]
pub enum Fleet {
    /// `nodes` synthetic nodes of `service_ms` per image, the last one `slow_factor` times
    /// slower (`glimpse-node --service-ms`); a factor of 1 makes them all alike.
    Synthetic {
        /// Nodes in the fleet.
        nodes: usize,
        /// Images each node serves at once (`glimpse-node --lanes`; the synthetic model
        /// sleeps, so lanes are not limited by the cores).
        lanes: u32,
        /// Service time of a normal node, ms per image.
        service_ms: f64,
        /// How much slower the last node is.
        slow_factor: f64,
    },
    /// One GoogLeNet node (`--weights random`, one lane) per entry, with that many
    /// `--threads` for its forward pass.
    GoogLeNet {
        /// Each node's `--threads`.
        threads: Vec<u32>,
    },
}

impl Fleet {
    /// Nodes in the fleet.
    pub fn len(&self) -> usize {
        match self {
            Fleet::Synthetic { nodes, .. } => *nodes,
            Fleet::GoogLeNet { threads } => threads.len(),
        }
    }

    /// True for a fleet without nodes (which no run accepts).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How much slower node `i` is meant to be than the fleet's fastest: the synthetic slow
    /// factor, or the most threads of any node ÷ its threads (what the reports call "slow").
    pub fn slowdown(&self, i: usize) -> f64 {
        match self {
            Fleet::Synthetic {
                nodes, slow_factor, ..
            } => {
                if i + 1 == *nodes {
                    *slow_factor
                } else {
                    1.0
                }
            }
            Fleet::GoogLeNet { threads } => {
                let most = threads.iter().copied().max().unwrap_or(1).max(1);
                f64::from(most) / f64::from(threads.get(i).copied().unwrap_or(1).max(1))
            }
        }
    }

    /// The fleet's nominal rate, images per second: every node's speed summed. Known only for
    /// synthetic nodes, whose service time is configured.
    pub fn nominal_per_s(&self) -> Option<f64> {
        match self {
            Fleet::Synthetic {
                nodes,
                lanes,
                service_ms,
                ..
            } => Some(
                (0..*nodes)
                    .map(|i| f64::from(*lanes) * 1000.0 / (service_ms * self.slowdown(i)))
                    .sum(),
            ),
            Fleet::GoogLeNet { .. } => None,
        }
    }

    /// The `glimpse-node serve` flags that make node `i` what it is (model, speed).
    pub fn node_args(&self, i: usize) -> (String, u64, Vec<String>) {
        match self {
            Fleet::Synthetic {
                service_ms, lanes, ..
            } => (
                "synthetic".into(),
                (service_ms * self.slowdown(i)).round() as u64,
                // Lanes default to the cores; a sleeping model needs them set.
                vec![
                    "--threads".into(),
                    lanes.to_string(),
                    "--lanes".into(),
                    lanes.to_string(),
                ],
            ),
            Fleet::GoogLeNet { threads } => (
                "googlenet".into(),
                0,
                // One lane, so that --threads is how fast a pass is rather than how many
                // passes run at once (the node's default is a lane per thread).
                vec![
                    "--weights".into(),
                    "random".into(),
                    "--threads".into(),
                    threads.get(i).copied().unwrap_or(1).to_string(),
                    "--lanes".into(),
                    "1".into(),
                ],
            ),
        }
    }

    /// One line for the report's header.
    pub fn describe(&self) -> String {
        match self {
            Fleet::Synthetic {
                nodes,
                lanes,
                service_ms,
                slow_factor,
            } => format!(
                "{nodes} synthetic nodes of {service_ms} ms per image and {lanes} lane(s), the last one {slow_factor}× slower ({} ms)",
                (service_ms * slow_factor).round()
            ),
            Fleet::GoogLeNet { threads } => format!(
                "{} GoogLeNet nodes (random weights, one lane each) with --threads {}",
                threads.len(),
                threads
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct PlacementOptions {
    /// Where the binaries are (`glimpse-certs`, `glimpse-node`, `glimpse`).
    pub bins: Bins,
    /// Output directory: report, CSV, plot, certificates, logs.
    pub out: PathBuf,
    /// The fleet.
    pub fleet: Fleet,
    /// Images each node admits at once (`glimpse-node --capacity`): one served, the rest
    /// queued there.
    pub capacity: u32,
    /// The placements compared, alternating run by run.
    pub placements: Vec<Placement>,
    /// Offered load, images per second (Poisson arrivals).
    pub rate: f64,
    /// Load before each run's measurement window, not measured.
    pub warmup: Duration,
    /// Each run's measurement window.
    pub duration: Duration,
    /// Runs per placement.
    pub runs: usize,
    /// The images, sent round-robin.
    pub images: Vec<Bytes>,
    /// Simulated runs per placement for the twin (0: no twin).
    pub sim_runs: usize,
    /// Seed of the arrival times (run `r` of every placement uses `seed + r`) and of the
    /// simulation.
    pub seed: u64,
    /// Longest wait for one answer.
    pub timeout: Duration,
}

/// What the front-end showed about one node at the end of a run (`/api/v1/nodes`).
#[derive(Debug, Clone, Serialize)]
pub struct NodeSeen {
    /// Node id.
    pub name: String,
    /// How much slower it was meant to be ([`Fleet::slowdown`]).
    pub slowdown: f64,
    /// Images it served during the run (warm-up included).
    pub served: u64,
    /// Its share of the front-end's placements, 0 to 1.
    pub placement_share: f64,
    /// Placement's estimate of its service time per image, ms.
    pub service_ms: Option<f64>,
}

#[cfg(test)]
impl NodeSeen {
    /// A node `slowdown` times slower that served `served` images (the reports' tests).
    pub(super) fn served(slowdown: f64, served: u64) -> NodeSeen {
        NodeSeen {
            name: String::new(),
            slowdown,
            served,
            placement_share: 0.0,
            service_ms: None,
        }
    }
}

/// One run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// The front-end's `--placement`.
    pub placement: Placement,
    /// Index of the run for this placement.
    pub run: usize,
    /// Requests sent in the measurement window.
    pub sent: u64,
    /// Of those, answered with a result.
    pub ok: u64,
    /// Of those, failed (any error, timeout included).
    pub failed: u64,
    /// Arrivals not sent because too many requests were waiting.
    pub skipped: u64,
    /// Answers per second during the window.
    pub images_per_s: f64,
    /// Latency percentiles of the window's successful requests, ms.
    pub p50_ms: f64,
    /// See `p50_ms`.
    pub p95_ms: f64,
    /// See `p50_ms`.
    pub p99_ms: f64,
    /// Slowest successful request, ms.
    pub max_ms: f64,
    /// What the front-end showed about each node at the end.
    pub nodes: Vec<NodeSeen>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

impl Run {
    /// Images served per slow node ÷ per full-speed node (NaN without both kinds).
    pub fn slow_share(&self) -> f64 {
        let per_node = |slow: bool| {
            let picked: Vec<f64> = self
                .nodes
                .iter()
                .filter(|n| (n.slowdown > 1.0 + 1e-9) == slow)
                .map(|n| n.served as f64)
                .collect();
            picked.iter().sum::<f64>() / picked.len() as f64
        };
        per_node(true) / per_node(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_synthetic_fleet_has_its_last_node_slow() {
        let f = Fleet::Synthetic {
            nodes: 8,
            lanes: 1,
            service_ms: 50.0,
            slow_factor: 5.0,
        };
        assert_eq!(f.len(), 8);
        assert_eq!(
            (f.slowdown(0), f.slowdown(6), f.slowdown(7)),
            (1.0, 1.0, 5.0)
        );
        // 7 nodes of 20 images/s and one of 4.
        assert!((f.nominal_per_s().unwrap() - 144.0).abs() < 1e-9);
        let (model, service_ms, args) = f.node_args(7);
        assert_eq!((model.as_str(), service_ms), ("synthetic", 250));
        assert_eq!(args, ["--threads", "1", "--lanes", "1"]);
        assert_eq!(f.node_args(0).1, 50);
        let two = Fleet::Synthetic {
            nodes: 2,
            lanes: 2,
            service_ms: 50.0,
            slow_factor: 1.0,
        };
        assert!((two.nominal_per_s().unwrap() - 80.0).abs() < 1e-9);
    }

    #[test]
    fn a_googlenet_fleet_is_slow_where_it_has_fewer_threads() {
        let f = Fleet::GoogLeNet {
            threads: vec![2, 1],
        };
        assert_eq!((f.slowdown(0), f.slowdown(1)), (1.0, 2.0));
        assert_eq!(f.nominal_per_s(), None);
        let (model, _, args) = f.node_args(1);
        assert_eq!(model, "googlenet");
        assert_eq!(
            args,
            ["--weights", "random", "--threads", "1", "--lanes", "1"]
        );
    }

    #[test]
    fn the_slow_share_compares_images_per_node() {
        let node = NodeSeen::served;
        let run = Run {
            placement: Placement::ExpectedFinish,
            run: 0,
            sent: 0,
            ok: 0,
            failed: 0,
            skipped: 0,
            images_per_s: 0.0,
            p50_ms: 0.0,
            p95_ms: 0.0,
            p99_ms: 0.0,
            max_ms: 0.0,
            nodes: vec![node(1.0, 100), node(1.0, 300), node(5.0, 20)],
            first_error: None,
        };
        assert!((run.slow_share() - 0.1).abs() < 1e-12);
    }
}
