//! The front-end's view of one simulated node's connection: the state the fleet's events
//! (`fleet.rs`) drive through the real [`Heartbeat`] and [`Backoff`].

use std::time::Instant;

use glimpse_transport::dispatcher::{Backoff, Heartbeat};

use super::RunConfig;
use super::event::Nanos;

/// The front-end's side of one node: its connection and heartbeat.
#[derive(Debug, Clone)]
pub(super) struct Link {
    /// Connection epoch: bumped when a connection is made or lost.
    pub(super) conn: u32,
    pub(super) up: bool,
    pub(super) heartbeat: Heartbeat,
    /// Arrival of the latest report fed to the heartbeat.
    pub(super) fed: Nanos,
    /// A heartbeat check is scheduled.
    pub(super) check_pending: bool,
    pub(super) backoff: Backoff,
    /// Generation of the connection attempt under way, if any.
    pub(super) connecting: Option<u32>,
    pub(super) connect_gen: u32,
}

impl Link {
    /// Not connected yet.
    pub(super) fn new(base: Instant, cfg: &RunConfig) -> Link {
        Link {
            conn: 0,
            up: false,
            heartbeat: Heartbeat::new(base, &cfg.policy, Some(cfg.model.load_interval)),
            fed: 0,
            check_pending: false,
            backoff: Backoff::new(cfg.connection.reconnect_min, cfg.connection.reconnect_max),
            connecting: None,
            connect_gen: 0,
        }
    }
}
