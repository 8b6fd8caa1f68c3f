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
//! - `config.rs`: what a run is (fleet, faults, connections, workload, policy); `error.rs`;
//! - `engine.rs`: the simulation loop and the request driver (the async driver's contract,
//!   carried out on events); `clients.rs`: submissions, final answers, the end-of-run check;
//! - `fleet.rs`: node processes and the front-end's supervision of them (connections,
//!   heartbeat, reconnect backoff, crashes, stalls); `link.rs`: one node's connection state;
//! - `validate.rs`: the lab's measured sweeps, simulated, with the error of each point;
//! - `project.rs`: 10 to 1,000 nodes, failures, slow nodes, hedging;
//! - `report.rs`: CSV, Markdown and SVG/PNG plots; `simulate.rs`: the command, end to end.

mod clients;
mod config;
mod engine;
mod error;
mod event;
mod fleet;
mod link;
mod metrics;
mod node;
mod project;
mod report;
mod simulate;
mod validate;
mod workload;

#[cfg(test)]
mod tests;

pub use config::{Connection, Degrade, Faults, RunConfig};
pub use engine::run;
pub use error::SimError;
pub use metrics::RunReport;
pub use node::NodeModel;
pub use project::ProjectOptions;
pub use simulate::{Outcome, SimulateOptions, simulate};
pub use validate::{LAB_IMAGE_BYTES, calibrated_node};
pub use workload::Workload;
