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
//!
//! HTTP/2 and HTTP/3 carry many bodies on one connection, and a body can wait behind its
//! siblings: twenty uploads dropped at once on a lossy link share a connection that moves
//! perhaps 100 KB/s, and HTTP/2 clients feed the streams largely in order, so the last ones
//! see no bytes for many seconds. Judged alone they look like a slowloris; they are a person
//! on a bad link (the uplink sweep in EXPERIMENTS.md lost a third of such uploads to 408 at
//! 10% loss). So a body that rides a connection ([`Pace::sharing`]) is credited with its
//! share of what the connection received since it began — the connection's bytes divided
//! by the requests in flight on it — and a body whose connection is receiving is not
//! stalled. The cost for a sender stays the same: to keep N bodies open on one connection it
//! must send N times the minimum rate.

use std::sync::Arc;
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

/// What a body can see of the connection it arrives on (implemented by the connection
/// registry's [`crate::http::conn::ConnState`]).
pub trait ConnProgress: Send + Sync + std::fmt::Debug {
    /// Bytes received on the connection so far, every request's together.
    fn bytes_received(&self) -> u64;
    /// Requests in flight on it now (this body's included).
    fn in_flight(&self) -> u32;
}

/// The connection a body shares, and what had arrived on it when the body began.
#[derive(Debug, Clone)]
struct Shared {
    conn: Arc<dyn ConnProgress>,
    at_start: u64,
}

/// One body's progress against its [`PaceLimits`].
#[derive(Debug, Clone)]
pub struct Pace {
    limits: PaceLimits,
    started: Instant,
    last: Instant,
    bytes: u64,
    /// Bytes credited from the connection's progress (see the module doc); the body is
    /// judged by the larger of this and `bytes`.
    credited: u64,
    shared: Option<Shared>,
}

impl Pace {
    /// A body beginning at `now`.
    pub fn new(limits: PaceLimits, now: Instant) -> Pace {
        Pace {
            limits,
            started: now,
            last: now,
            bytes: 0,
            credited: 0,
            shared: None,
        }
    }

    /// The body rides `conn` with other requests: credit it with its share of the
    /// connection's progress (see the module doc). `None` changes nothing.
    pub fn sharing(mut self, conn: Option<Arc<dyn ConnProgress>>) -> Pace {
        self.shared = conn.map(|conn| Shared {
            at_start: conn.bytes_received(),
            conn,
        });
        self
    }

    /// Bytes the body is judged by: its own, or its share of its connection's if larger.
    fn judged_bytes(&self) -> u64 {
        self.bytes.max(self.credited)
    }

    /// Looks at the connection: the body's share of what it received since the body began
    /// (its bytes over the requests in flight). A share that grew since the last look is
    /// progress: the body is waiting behind siblings, not stalled (its last activity becomes
    /// `now`), and it is judged by that share from now on. A connection that receives less
    /// than a byte per request in flight shares nothing, so one trickle cannot keep many
    /// bodies alive.
    fn look_at_connection(&mut self, now: Instant) {
        let Some(shared) = &self.shared else {
            return;
        };
        let received = shared.conn.bytes_received().saturating_sub(shared.at_start);
        let share = received / u64::from(shared.conn.in_flight().max(1));
        if share > self.credited {
            self.credited = share;
            self.last = self.last.max(now);
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
            let covered = Duration::from_secs_f64(self.judged_bytes() as f64 / min as f64);
            self.started + covered.max(self.limits.grace)
        })
    }

    /// Whether the body is still within its limits at `now`. Without a shared connection it
    /// fails exactly from the moment [`Pace::next_check`] names; with one, the connection's
    /// progress since then may have moved that moment later (call `next_check` again).
    pub fn check(&mut self, now: Instant) -> Result<(), TooSlow> {
        self.look_at_connection(now);
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
                rate: (self.judged_bytes() as f64 / age.as_secs_f64().max(1e-3)) as u64,
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

    /// A connection whose counters the test sets.
    #[derive(Debug, Default)]
    struct Conn {
        bytes: std::sync::atomic::AtomicU64,
        in_flight: std::sync::atomic::AtomicU32,
    }

    impl ConnProgress for Conn {
        fn bytes_received(&self) -> u64 {
            self.bytes.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn in_flight(&self) -> u32 {
            self.in_flight.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    fn conn(bytes: u64, in_flight: u32) -> Arc<Conn> {
        let c = Conn::default();
        c.bytes.store(bytes, std::sync::atomic::Ordering::SeqCst);
        c.in_flight
            .store(in_flight, std::sync::atomic::Ordering::SeqCst);
        Arc::new(c)
    }

    #[test]
    fn a_body_queued_behind_its_siblings_is_credited_with_its_share() {
        let t0 = Instant::now();
        let c = conn(5_000, 20);
        let mut p = Pace::new(LIMITS, t0).sharing(Some(c.clone() as Arc<dyn ConnProgress>));
        // Alone it would be cut when the grace ends; its connection received 240 KB for
        // the 20 requests on it meanwhile: 12 KB of share, 12 s at 1 KB/s.
        c.bytes.store(245_000, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(p.next_check(), t0 + s(10));
        assert_eq!(p.check(t0 + s(10)), Ok(()));
        assert_eq!(p.next_check(), t0 + s(12), "its credit covers 12 s");
        c.bytes.store(405_000, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(p.check(t0 + s(12)), Ok(()));
        assert_eq!(p.next_check(), t0 + s(20));
        // 35 s without a byte of its own, but the connection kept receiving: not stalled.
        c.bytes
            .store(1_405_000, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(p.check(t0 + s(35)), Ok(()));
        // The connection falls silent too: stalled 30 s after the last look that saw bytes.
        assert_eq!(p.check(t0 + s(64)), Ok(()));
        assert_eq!(p.check(t0 + s(65)), Err(TooSlow::Stalled(s(30))));
    }

    #[test]
    fn a_share_below_the_rate_is_cut_as_a_trickle_is() {
        let t0 = Instant::now();
        let c = conn(0, 100);
        let mut p = Pace::new(LIMITS, t0).sharing(Some(c.clone() as Arc<dyn ConnProgress>));
        // 100 bodies on one connection that moves 50 KB/s: 500 bytes/s each.
        c.bytes.store(500_000, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(
            p.check(t0 + s(10)),
            Err(TooSlow::Rate { rate: 500, .. })
        ));
        // Without a connection to share, the same body is judged by its own bytes alone.
        let mut alone = Pace::new(LIMITS, t0).sharing(None);
        alone.received(20_000, t0 + s(1));
        assert_eq!(alone.check(t0 + s(19)), Ok(()));
        assert!(matches!(alone.check(t0 + s(20)), Err(TooSlow::Rate { .. })));
    }

    #[test]
    fn one_trickle_does_not_keep_its_siblings_alive() {
        let t0 = Instant::now();
        let c = conn(0, 100);
        let silent = PaceLimits {
            min_rate: 0,
            ..LIMITS
        };
        let mut p = Pace::new(silent, t0).sharing(Some(c.clone() as Arc<dyn ConnProgress>));
        // One of 100 requests sends a byte every 20 s: 2 bytes in 40 s, no share for this one.
        c.bytes.store(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(p.check(t0 + s(20)), Ok(()));
        c.bytes.store(2, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(p.check(t0 + s(30)), Err(TooSlow::Stalled(s(30))));
    }

    #[test]
    fn no_minimum_rate_when_it_is_zero() {
        let t0 = Instant::now();
        let mut p = Pace::new(
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
