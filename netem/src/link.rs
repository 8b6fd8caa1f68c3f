//! The control surface every impaired link offers, whatever carries its packets.
//!
//! Two kinds of link implement it: the UDP relay ([`crate::relay::RelayHandle`], unprivileged,
//! UDP only) and the IP-level TUN link (`crate::tun::TunLink`, Linux and root, any protocol).
//! The control port ([`crate::control`]) and the lab's link flapping are written against this
//! trait, so an experiment can switch the kind of link without touching how it is driven.
//!
//! The vocabulary of that trait — [`Direction`] and [`LinkStats`] — lives here too, below
//! both kinds of link: the relay, the TUN link and the scheduler they share import it from
//! here, and this module imports nothing from them, so the modules form no cycle.

use std::sync::Arc;

use serde::Serialize;
use thiserror::Error;

use crate::impair::{Counters, DirectionConfig, SpecError};

/// Which way a packet travels: `Up` is client → upstream (front-end → worker), `Down` is
/// upstream → client. `Both` addresses the two at once when configuring a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client → upstream (front-end → worker).
    Up,
    /// Upstream → client (worker → front-end).
    Down,
    /// Both directions; only meaningful when configuring, reading it reads `Up`.
    Both,
}

/// A direction name that is not `up`, `down` or `both` (e.g. in a control command).
#[derive(Debug, Error)]
#[error("unknown direction {0:?} (expected up, down or both)")]
pub struct UnknownDirection(pub String);

impl std::str::FromStr for Direction {
    type Err = UnknownDirection;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "up" => Ok(Direction::Up),
            "down" => Ok(Direction::Down),
            "both" => Ok(Direction::Both),
            other => Err(UnknownDirection(other.to_string())),
        }
    }
}

/// A snapshot of both directions' counters, as the control port's `stats` and `json`
/// commands report them.
#[derive(Debug, Clone, Serialize)]
pub struct LinkStats {
    /// Counters of the client → upstream direction.
    pub up: Counters,
    /// Counters of the upstream → client direction.
    pub down: Counters,
    /// Client sessions of a UDP relay; always 0 for links without sessions (TUN).
    pub sessions: usize,
}

/// Reconfigure, observe and stop one impaired link (two directions, one
/// [`Impairment`](crate::impair::Impairment) each).
pub trait LinkControl: Send + Sync {
    /// Current configuration of one direction (`Both` reads `Up`).
    fn config(&self, dir: Direction) -> DirectionConfig;

    /// Replaces a direction's configuration at run time, keeping counters and RNG streams.
    fn set_config(&self, dir: Direction, config: DirectionConfig);

    /// Counters of both directions (`sessions` is 0 for links without sessions).
    fn stats(&self) -> LinkStats;

    /// Counters back to zero.
    fn reset_counters(&self);

    /// Stops forwarding now; packets still scheduled are discarded.
    fn shutdown(&self);

    /// Applies `key=value` settings (see [`DirectionConfig::apply_spec`]) on top of the current
    /// configuration; on error nothing changes, in either direction.
    fn apply_spec(&self, dir: Direction, spec: &str) -> Result<(), SpecError> {
        let dirs: &[Direction] = match dir {
            Direction::Both => &[Direction::Up, Direction::Down],
            Direction::Up => &[Direction::Up],
            Direction::Down => &[Direction::Down],
        };
        // Validate against every direction first so that `both` is all-or-nothing.
        let mut next = Vec::new();
        for d in dirs {
            let mut c = self.config(*d);
            c.apply_spec(spec)?;
            next.push((*d, c));
        }
        for (d, c) in next {
            self.set_config(d, c);
        }
        Ok(())
    }
}

/// A shared link is controlled like the link itself (the control port and the lab hold
/// `Arc<TunLink>`s, since a TUN link owns devices and must not be duplicated).
impl<L: LinkControl + ?Sized> LinkControl for Arc<L> {
    fn config(&self, dir: Direction) -> DirectionConfig {
        (**self).config(dir)
    }
    fn set_config(&self, dir: Direction, config: DirectionConfig) {
        (**self).set_config(dir, config);
    }
    fn stats(&self) -> LinkStats {
        (**self).stats()
    }
    fn reset_counters(&self) {
        (**self).reset_counters();
    }
    fn shutdown(&self) {
        (**self).shutdown();
    }
    fn apply_spec(&self, dir: Direction, spec: &str) -> Result<(), SpecError> {
        (**self).apply_spec(dir, spec)
    }
}
