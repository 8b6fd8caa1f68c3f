//! `glimpse-lab placement`: one slow node in a real fleet, placed around by today's rule and
//! by the old one, measured with real processes and simulated beside them.
//!
//! Power of two choices on outstanding attempts cannot see speed: a node 5× slower with a
//! full queue looks like any other, so every image placed there waits 5× longer and sets the
//! fleet's p99. Expected-finish placement (`transport/src/dispatcher/placement.rs`) compares
//! (images ahead + 1) × each node's measured service time instead. This experiment starts
//! the fleet as an operator would (`glimpse-certs init`, one `glimpse-node serve` per node,
//! the `glimpse` front-end with `--placement`), offers open-loop Poisson load through the
//! public JSON API (`glimpse-lab load`'s client), and reads what the front-end placed where
//! from `/api/v1/nodes`. Runs alternate the placements and each pair of runs replays the same
//! arrival times, so drift on the machine and the draw of arrivals affect both alike.
//!
//! Beside it, the same fleet and load are simulated (`lab/src/sim/`, the dispatcher's real
//! core on a virtual clock, with the node model calibrated in EXPERIMENTS.md §1), and the
//! report says how far the simulated p99 is from the measured one. A fleet of real GoogLeNet
//! nodes with different `--threads` runs the same way, without a simulated twin (its service
//! times are measured, not configured).
//!
//! - `fleet.rs`: what the fleet is (synthetic nodes with one slow, or GoogLeNet nodes) and
//!   what the experiment is asked to do;
//! - `measure.rs`: the runs with real processes;
//! - `twin.rs`: the simulated twin;
//! - `report.rs`: summaries, CSV, Markdown and the plot.

mod fleet;
mod measure;
mod report;
mod twin;

pub use fleet::{Fleet, NodeSeen, PlacementOptions, Run};
pub use measure::run_placement;
pub use report::{Summary, TARGET_PCT, Validation, summarize, validate};
pub use twin::{TwinRow, simulate_twin, twin_config};
