//! Supervision decisions about one node, without a clock or a socket: when its silence means
//! it is gone ([`Heartbeat`]), and how long to wait before connecting again ([`Backoff`]).

use std::time::{Duration, Instant};

use rand::Rng;

use super::Policy;

/// Load interval assumed for nodes whose Hello does not say (they report every 250 ms).
pub const LEGACY_LOAD_INTERVAL: Duration = Duration::from_millis(250);

/// A node's load reports are its heartbeat. It is *silent* when nothing arrived on its
/// control stream for max(`silence_floor`, `silence_reports` × its load interval) plus two
/// round trips; the next frame clears it.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    quiet_base: Duration,
    last_heard: Instant,
    silent: bool,
}

impl Heartbeat {
    /// Starts watching at `now` (the node was just heard from: its Hello).
    pub fn new(now: Instant, policy: &Policy, load_interval: Option<Duration>) -> Heartbeat {
        let interval = load_interval.unwrap_or(LEGACY_LOAD_INTERVAL);
        Heartbeat {
            quiet_base: policy
                .silence_floor
                .max(interval.saturating_mul(policy.silence_reports)),
            last_heard: now,
            silent: false,
        }
    }

    /// A control frame arrived. True when the node was silent and is heard from again.
    pub fn on_frame(&mut self, now: Instant) -> bool {
        self.last_heard = now;
        std::mem::replace(&mut self.silent, false)
    }

    /// When the node turns silent if nothing arrives first; `None` while it is silent.
    pub fn quiet_at(&self, rtt: Duration) -> Option<Instant> {
        (!self.silent).then(|| self.last_heard + self.quiet_base + rtt * 2)
    }

    /// The timer from [`Heartbeat::quiet_at`] fired. True when the node turned silent now.
    pub fn on_timeout(&mut self, now: Instant, rtt: Duration) -> bool {
        match self.quiet_at(rtt) {
            Some(at) if now >= at => {
                self.silent = true;
                true
            }
            _ => false,
        }
    }

    /// Whether the node is silent.
    pub fn is_silent(&self) -> bool {
        self.silent
    }

    /// How long ago the node was last heard from.
    pub fn quiet_for(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.last_heard)
    }
}

/// Exponential reconnect backoff with jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    /// Starts at `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            current: min,
        }
    }

    /// A connection succeeded: the next failure waits `min` again.
    pub fn reset(&mut self) {
        self.current = self.min;
    }

    /// The wait before the next try, in [current/2, current]: front-ends restarted together
    /// do not reconnect in lockstep. Doubles the next one.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let jittered = self.current.mul_f64(rng.random_range(0.5..=1.0));
        self.current = (self.current * 2).min(self.max);
        jittered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn silence_after_the_quiet_time_and_heard_again_on_the_next_frame() {
        let t0 = Instant::now();
        let policy = Policy::default();
        let ms = Duration::from_millis;
        // 5 reports of 100 ms = 500 ms; 10 ms RTT adds 20 ms.
        let mut hb = Heartbeat::new(t0, &policy, Some(ms(100)));
        assert_eq!(hb.quiet_at(ms(10)), Some(t0 + ms(520)));
        assert!(!hb.on_timeout(t0 + ms(519), ms(10)));
        assert!(!hb.on_frame(t0 + ms(300)));
        assert!(!hb.on_timeout(t0 + ms(600), ms(10)));
        assert!(hb.on_timeout(t0 + ms(820), ms(10)));
        assert!(hb.is_silent());
        assert_eq!(hb.quiet_at(ms(10)), None);
        assert!(hb.on_frame(t0 + ms(900)));
        // A slow reporter's silence is judged on its own interval.
        let slow = Heartbeat::new(t0, &policy, Some(ms(1000)));
        assert_eq!(slow.quiet_at(ms(0)), Some(t0 + ms(5000)));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_resets() {
        let mut rng = SmallRng::seed_from_u64(5);
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(400));
        let d: Vec<Duration> = (0..4).map(|_| b.next_delay(&mut rng)).collect();
        assert!(d[0] >= ms(50) && d[0] <= ms(100));
        assert!(d[1] >= ms(100) && d[1] <= ms(200));
        assert!(d[2] >= ms(200) && d[2] <= ms(400));
        assert!(d[3] >= ms(200) && d[3] <= ms(400));
        b.reset();
        assert!(b.next_delay(&mut rng) <= ms(100));
    }
}
