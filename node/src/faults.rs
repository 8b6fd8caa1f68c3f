//! Fault injection for experiments and failover tests. Everything is off by default.
//!
//! Each request draws from one seeded RNG, so a run with `--seed N` makes the same sequence
//! of decisions (the order in which concurrent requests draw still depends on arrival order).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Exit status of a node killed by `--fail-rate`, so experiment scripts can tell an injected
/// death from a crash.
pub const FAULT_EXIT_CODE: i32 = 86;

/// Fault settings. Probabilities are per request, in [0, 1].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultConfig {
    /// With this probability a request makes the whole process die at once (`_exit`): no
    /// answer, no QUIC close, no flushing, like a machine losing power or `kill -9`.
    pub fail_rate: f64,
    /// With this probability the node stops answering: that request and every later one hang
    /// forever while connections, keep-alives and load reports carry on, like a wedged process.
    /// A stalled request first tells the front-end it started work (a `Started` frame): it
    /// models a request wedged mid-work, which the front-end reopens elsewhere without
    /// cancelling (as it would a slow one), not one merely waiting in a queue.
    pub stall_rate: f64,
    /// Every answer is held this long before it is sent.
    pub extra_delay: Duration,
    /// RNG seed; `None` draws one from the OS (it is logged so a run can be repeated).
    pub seed: Option<u64>,
}

impl FaultConfig {
    /// Whether any fault is switched on.
    pub fn any(&self) -> bool {
        self.fail_rate > 0.0 || self.stall_rate > 0.0 || !self.extra_delay.is_zero()
    }

    /// Checks that every probability is a number in [0, 1].
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("fail-rate", self.fail_rate),
            ("stall-rate", self.stall_rate),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("--{name} must be between 0 and 1, got {p}"));
            }
        }
        Ok(())
    }
}

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultDecision {
    Proceed,
    Die,
    Stall,
}

/// The live fault injector of one node.
#[derive(Debug)]
pub(crate) struct Faults {
    config: FaultConfig,
    rng: Mutex<StdRng>,
    stalled: AtomicBool,
}

impl Faults {
    pub(crate) fn new(config: FaultConfig) -> Self {
        let seed = config.seed.unwrap_or_else(rand::random);
        if config.any() {
            tracing::warn!(
                fail_rate = config.fail_rate,
                stall_rate = config.stall_rate,
                extra_delay_ms = config.extra_delay.as_millis() as u64,
                seed,
                "fault injection is ON"
            );
        }
        Self {
            config,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            stalled: AtomicBool::new(false),
        }
    }

    /// The delay added to every answer.
    pub(crate) fn extra_delay(&self) -> Duration {
        self.config.extra_delay
    }

    /// Draws the fate of one request. Once a stall has been drawn, every later request stalls.
    pub(crate) fn decide(&self) -> FaultDecision {
        if self.stalled.load(Ordering::SeqCst) {
            return FaultDecision::Stall;
        }
        let c = &self.config;
        if c.fail_rate <= 0.0 && c.stall_rate <= 0.0 {
            return FaultDecision::Proceed;
        }
        // Two independent draws, always both, so one knob does not shift the other's
        // sequence for a given seed.
        let (die, stall) = {
            let mut rng = self.rng.lock();
            (rng.random_bool(c.fail_rate), rng.random_bool(c.stall_rate))
        };
        if die {
            FaultDecision::Die
        } else if stall {
            self.stalled.store(true, Ordering::SeqCst);
            FaultDecision::Stall
        } else {
            FaultDecision::Proceed
        }
    }

    /// Whether the node has stalled (only the unit tests ask).
    #[cfg(test)]
    pub(crate) fn is_stalled(&self) -> bool {
        self.stalled.load(Ordering::SeqCst)
    }
}

/// Ends the process at once, as `--fail-rate` promises: `_exit(2)` skips atexit handlers,
/// destructors and buffered output, so peers see the node vanish exactly as after `kill -9`.
pub(crate) fn die_abruptly() -> ! {
    eprintln!("glimpse-node: injected failure (--fail-rate): exiting abruptly");
    // SAFETY: `_exit` takes a plain integer, touches no Rust state and never returns.
    unsafe { libc::_exit(FAULT_EXIT_CODE) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_by_default() {
        let f = Faults::new(FaultConfig::default());
        for _ in 0..1000 {
            assert_eq!(f.decide(), FaultDecision::Proceed);
        }
        assert!(!FaultConfig::default().any());
    }

    #[test]
    fn same_seed_same_decisions() {
        let cfg = FaultConfig {
            fail_rate: 0.3,
            seed: Some(7),
            ..FaultConfig::default()
        };
        let a = Faults::new(cfg.clone());
        let b = Faults::new(cfg);
        let da: Vec<_> = (0..200).map(|_| a.decide()).collect();
        let db: Vec<_> = (0..200).map(|_| b.decide()).collect();
        assert_eq!(da, db);
        let deaths = da.iter().filter(|d| **d == FaultDecision::Die).count();
        // 200 draws at p = 0.3: expected 60; this bound fails with negligible probability.
        assert!((25..=100).contains(&deaths), "{deaths}");
    }

    #[test]
    fn stall_is_sticky() {
        let f = Faults::new(FaultConfig {
            stall_rate: 1.0,
            seed: Some(1),
            ..FaultConfig::default()
        });
        assert_eq!(f.decide(), FaultDecision::Stall);
        assert!(f.is_stalled());
        assert_eq!(f.decide(), FaultDecision::Stall);
    }

    #[test]
    fn rates_outside_zero_one_are_rejected() {
        let bad = FaultConfig {
            fail_rate: 1.5,
            ..FaultConfig::default()
        };
        assert!(bad.validate().is_err());
        let nan = FaultConfig {
            stall_rate: f64::NAN,
            ..FaultConfig::default()
        };
        assert!(nan.validate().is_err());
        assert!(FaultConfig::default().validate().is_ok());
    }
}
