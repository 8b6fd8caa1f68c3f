//! Open-loop arrivals: a Poisson process of a given rate, i.e. independent exponential
//! inter-arrival times, drawn from a seeded RNG so that a run can be repeated exactly.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The arrival times (offsets from the start of a step) of a Poisson process with `rate`
/// arrivals per second. An endless iterator; the same `(rate, seed)` gives the same times.
#[derive(Debug, Clone)]
pub struct PoissonSchedule {
    rng: StdRng,
    rate: f64,
    now_s: f64,
}

impl PoissonSchedule {
    /// A schedule of `rate` arrivals per second (must be finite and > 0), seeded by `seed`.
    pub fn new(rate: f64, seed: u64) -> PoissonSchedule {
        PoissonSchedule {
            rng: StdRng::seed_from_u64(seed),
            rate,
            now_s: 0.0,
        }
    }

    /// One exponential inter-arrival time in seconds: −ln(U)/rate with U uniform in (0, 1].
    fn gap_s(&mut self) -> f64 {
        // `random::<f64>()` is in [0, 1); 1 − that is in (0, 1], so the log is finite.
        let u = 1.0 - self.rng.random::<f64>();
        -u.ln() / self.rate
    }
}

impl Iterator for PoissonSchedule {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.now_s += self.gap_s();
        Some(Duration::from_secs_f64(self.now_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_rate_is_the_asked_rate() {
        // 20,000 arrivals: the relative standard error of the mean gap is 1/sqrt(n) ≈ 0.7%,
        // so 3% is over four standard errors (and the seed is fixed anyway).
        for (rate, seed) in [(50.0, 1), (1000.0, 7), (3.5, 42)] {
            let n = 20_000;
            let last = PoissonSchedule::new(rate, seed).nth(n - 1).unwrap();
            let measured = n as f64 / last.as_secs_f64();
            assert!(
                (measured / rate - 1.0).abs() < 0.03,
                "rate {rate}: measured {measured}"
            );
        }
    }

    #[test]
    fn gaps_are_exponential_not_regular() {
        // Exponential gaps have a coefficient of variation of 1 (a fixed period has 0), and
        // about e^-1 ≈ 36.8% of them are longer than the mean.
        let rate = 100.0;
        let times: Vec<f64> = PoissonSchedule::new(rate, 3)
            .take(20_000)
            .map(|d| d.as_secs_f64())
            .collect();
        let gaps: Vec<f64> = std::iter::once(times[0])
            .chain(times.windows(2).map(|w| w[1] - w[0]))
            .collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!((sd / mean - 1.0).abs() < 0.05, "cv {}", sd / mean);
        let longer = gaps.iter().filter(|&&g| g > 1.0 / rate).count() as f64 / gaps.len() as f64;
        assert!((longer - (-1.0f64).exp()).abs() < 0.02, "{longer}");
        assert!(
            gaps.iter().all(|&g| g >= 0.0),
            "arrival times never go back"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_times() {
        let a: Vec<Duration> = PoissonSchedule::new(20.0, 9).take(500).collect();
        let b: Vec<Duration> = PoissonSchedule::new(20.0, 9).take(500).collect();
        let c: Vec<Duration> = PoissonSchedule::new(20.0, 10).take(500).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
