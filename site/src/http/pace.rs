//! How fast a request body must arrive, whatever the protocol (HTTP/1.1, HTTP/2, gRPC).
//!
//! An inactivity timeout alone lets a sender hold a connection, a parse slot and its bytes
//! for ever by sending one byte just before each timeout (the attack run held every KServe
//! parse slot with one byte every 8 s). So a body is also held to a minimum average rate once
//! a grace period is over, like Apache's `mod_reqtimeout` `MinRate` (nginx's
//! `client_body_timeout` is the inactivity part), and to a total deadline however fast it
//! comes. [`Pace`] is the arithmetic; the body readers ([`crate::api::upload::Metered`] and the
//! gRPC body) keep one timer set to [`Pace::next_check`], the first moment a limit could
//! be missed, so nothing is polled in between.

use std::time::Duration;

use tokio::time::Instant;

/// What a body must keep up (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaceLimits {
    /// A body that sends nothing for this long is abandoned.
    pub inactivity: Duration,
    /// From this long after it began, a body must have averaged `min_rate`.
    pub grace: Duration,
    /// Bytes per second, averaged over the body's whole life so far; 0 turns it off.
    pub min_rate: u64,
    /// A body must end within this, however fast it comes.
    pub deadline: Duration,
}

/// Why a body was abandoned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooSlow {
    /// Nothing arrived for the inactivity timeout.
    #[error("no request body data arrived for {} s; the upload was abandoned", .0.as_secs())]
    Stalled(Duration),
    /// Less than the minimum average rate after the grace period.
    #[error(
        "the request body arrived at {rate} bytes/s on average over {} s; the minimum is {min} bytes/s, so the upload was abandoned",
        .after.as_secs()
    )]
    Rate {
        /// Its average rate, bytes/s.
        rate: u64,
        /// The minimum.
        min: u64,
        /// How long it had been arriving.
        after: Duration,
    },
    /// Not finished by the total deadline.
    #[error("the request body was not complete after {} s (the limit); the upload was abandoned", .0.as_secs())]
    Deadline(Duration),
}

impl TooSlow {
    /// The reason label in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            TooSlow::Stalled(_) => "body_timeout",
            TooSlow::Rate { .. } => "body_too_slow",
            TooSlow::Deadline(_) => "body_deadline",
        }
    }
}

/// One body's progress against its [`PaceLimits`].
#[derive(Debug, Clone)]
pub struct Pace {
    limits: PaceLimits,
    started: Instant,
    last: Instant,
    bytes: u64,
}

impl Pace {
    /// A body beginning at `now`.
    pub fn new(limits: PaceLimits, now: Instant) -> Pace {
        Pace {
            limits,
            started: now,
            last: now,
            bytes: 0,
        }
    }

    /// `n` more bytes arrived at `now`.
    pub fn received(&mut self, n: usize, now: Instant) {
        self.bytes = self.bytes.saturating_add(n as u64);
        self.last = now;
    }

    /// The first moment [`Pace::check`] fails if nothing more arrives.
    pub fn next_check(&self) -> Instant {
        let stalled = self.last + self.limits.inactivity;
        let deadline = self.started + self.limits.deadline;
        let next = stalled.min(deadline);
        match self.rate_deadline() {
            Some(at) => next.min(at),
            None => next,
        }
    }

    /// When the bytes so far stop covering the minimum rate: `bytes / min_rate` seconds after
    /// the start, but not before the grace ends. `None` without a minimum rate.
    fn rate_deadline(&self) -> Option<Instant> {
        let min = self.limits.min_rate;
        (min > 0).then(|| {
            let covered = Duration::from_secs_f64(self.bytes as f64 / min as f64);
            self.started + covered.max(self.limits.grace)
        })
    }

    /// Whether the body is still within its limits at `now`. Fails exactly from the moment
    /// [`Pace::next_check`] names, so a timer set to it never finds the body still fine.
    pub fn check(&self, now: Instant) -> Result<(), TooSlow> {
        let age = now.saturating_duration_since(self.started);
        if age >= self.limits.deadline {
            return Err(TooSlow::Deadline(self.limits.deadline));
        }
        if now.saturating_duration_since(self.last) >= self.limits.inactivity {
            return Err(TooSlow::Stalled(self.limits.inactivity));
        }
        if let Some(at) = self.rate_deadline()
            && now >= at
        {
            return Err(TooSlow::Rate {
                rate: (self.bytes as f64 / age.as_secs_f64().max(1e-3)) as u64,
                min: self.limits.min_rate,
                after: age,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PaceLimits = PaceLimits {
        inactivity: Duration::from_secs(30),
        grace: Duration::from_secs(10),
        min_rate: 1000,
        deadline: Duration::from_secs(300),
    };

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn a_trickle_is_caught_when_the_grace_ends() {
        let t0 = Instant::now();
        let mut p = Pace::new(LIMITS, t0);
        // One byte every 8 s: never stalled, always far below the rate.
        p.received(1, t0 + s(8));
        assert_eq!(p.check(t0 + s(9)), Ok(()), "within the grace");
        assert_eq!(p.next_check(), t0 + s(10));
        assert!(matches!(
            p.check(t0 + s(10)),
            Err(TooSlow::Rate {
                rate: 0,
                min: 1000,
                ..
            })
        ));
    }

    #[test]
    fn a_body_at_the_rate_lasts_as_long_as_its_bytes_cover() {
        let t0 = Instant::now();
        let mut p = Pace::new(LIMITS, t0);
        p.received(20_000, t0 + s(1));
        // 20,000 bytes cover 20 s at 1,000 bytes/s.
        assert_eq!(p.next_check(), t0 + s(20));
        assert_eq!(p.check(t0 + s(19)), Ok(()));
        assert!(matches!(p.check(t0 + s(20)), Err(TooSlow::Rate { .. })));
    }

    #[test]
    fn silence_and_the_deadline_end_a_fast_body_too() {
        let t0 = Instant::now();
        let mut p = Pace::new(LIMITS, t0);
        p.received(100_000_000, t0 + s(1));
        assert_eq!(p.next_check(), t0 + s(31));
        assert_eq!(p.check(t0 + s(31)), Err(TooSlow::Stalled(s(30))));
        for at in (30..300).step_by(29) {
            p.received(1, t0 + s(at));
        }
        assert_eq!(p.next_check(), t0 + s(300));
        assert_eq!(p.check(t0 + s(300)), Err(TooSlow::Deadline(s(300))));
    }

    #[test]
    fn no_minimum_rate_when_it_is_zero() {
        let t0 = Instant::now();
        let p = Pace::new(
            PaceLimits {
                min_rate: 0,
                ..LIMITS
            },
            t0,
        );
        assert_eq!(p.next_check(), t0 + s(30));
        assert_eq!(p.check(t0 + s(29)), Ok(()));
    }
}
