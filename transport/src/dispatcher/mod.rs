//! The front-end side: connections to every node, placement, retries and hedging.
//!
//! Built the way quinn splits quinn-proto from quinn: the decisions are a sans-IO core that
//! takes events with the time they happened and returns actions and deadlines, and this
//! module's [`Dispatcher`] is a thin async driver that carries the actions out over QUIC.
//!
//! The core:
//! - [`Cluster`] (`cluster.rs`): every node's state, credit, silence and latency, the pools
//!   placement samples from, the FIFO of requests waiting for a node, and the counters;
//! - [`placement`]: power of two choices over those pools, a pure function, comparing the
//!   image's expected completion time on each node (or, selectable, outstanding attempts);
//! - [`ServiceEstimate`] (`service.rs`): each node's service time, a peak EWMA that drifts
//!   back to the fleet's median while the node is idle;
//! - [`Request`] (`request.rs`): one image's state machine: retries, overdue attempts,
//!   silence, hedging, deadline (its module documents the rules);
//! - [`Heartbeat`] and [`Backoff`] (`heartbeat.rs`): when a node's silence means it is gone,
//!   and when to reconnect;
//! - [`Policy`] and [`LatencyWindow`]: the settings and percentiles they use.
//!
//! The driver: `shared.rs` (the state the tasks share, and [`Credit`](shared::Credit)
//! guards that give a node's credit back when an attempt ends), `node.rs` (one supervision
//! task per node), `attempt.rs` (one attempt on one stream). `glimpse-lab simulate` drives
//! the same core with simulated nodes on a virtual clock.

mod action;
mod attempt;
mod cluster;
mod config;
mod driver;
mod heartbeat;
mod latency;
mod node;
mod outcome;
mod overdue;
pub mod placement;
mod request;
mod service;
mod shared;
mod stats;

pub use action::{Action, Cause, Failure, Open, Won};
pub use cluster::{Cluster, MembershipChange, NodeState, NodeStatus};
pub use config::{DispatcherConfig, NodeEndpoint, Policy};
pub use driver::{Dispatcher, NodeChanges};
pub use heartbeat::{Backoff, Heartbeat, LEGACY_LOAD_INTERVAL};
pub use latency::{LATENCY_WINDOW, LatencyWindow, MIN_SAMPLES};
pub use outcome::{Classified, DispatchError, Progress};
pub use overdue::STARTED_EXPECT_FACTOR;
pub use placement::{Choice, Placement, UnknownPlacement};
pub use request::{RETRY_POLL, Request};
pub use service::{IDLE_DECAY, SAMPLE_DECAY, ServiceEstimate};
pub use stats::DispatchStats;
