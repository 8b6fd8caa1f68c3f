//! How long a node takes per image: a *peak EWMA* of its service times, the estimate that
//! expected-finish placement multiplies by the images ahead of a new one.
//!
//! Why peak: a node that turns slow must lose its work at its first slow answer, not after
//! an average has caught up with it (each image placed meanwhile waits behind a slow queue).
//! So a sample above the estimate replaces it at once, and one below pulls it down with a
//! time constant ([`SAMPLE_DECAY`]), as Finagle's and tower's `PeakEwma` do.
//!
//! Why decay when idle: a slow node gets no work, so it sends no samples, and without them
//! its estimate would stay slow forever, even after the node recovered. With no sample for a
//! while the estimate drifts back toward the fleet's median ([`IDLE_DECAY`]), so the node is
//! offered an image now and then, and its next sample says whether it is still slow (the
//! peak jumps back) or recovered (the estimate keeps falling and it wins its share back).
//! A node with no sample at all (cold start) is taken to be the fleet's median.

use std::time::{Duration, Instant};

/// Time constant with which samples below the estimate pull it down: about one second of a
/// busy node's answers (tens of samples) is averaged, so one fast outlier does not undo a
/// slow spell, while a node that recovered is believed within seconds.
pub const SAMPLE_DECAY: Duration = Duration::from_secs(1);

/// Time constant with which an estimate with no new sample drifts back toward the fleet's
/// median. Half Finagle's default decay (10 s): a node 5× slower than the median looks no
/// worse than a full median node (4 images ahead) again after about 1.5 s and is then
/// offered an image, so each slow node costs one slow image every second or two (a small
/// share of a busy fleet's images), and a recovered node is found within seconds.
pub const IDLE_DECAY: Duration = Duration::from_secs(5);

/// One node's service-time estimate, in milliseconds per image on one lane.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ServiceEstimate {
    /// The estimate as of `at`.
    ms: f64,
    /// When the last sample arrived; `None` before the first.
    at: Option<Instant>,
}

impl ServiceEstimate {
    /// No sample yet: the node counts as the fleet's median.
    pub fn new() -> ServiceEstimate {
        ServiceEstimate::default()
    }

    /// Whether a sample was ever recorded.
    pub fn is_known(&self) -> bool {
        self.at.is_some()
    }

    /// The estimate at `now`: the last value, drifted toward `reference` (the fleet's
    /// median) for as long as no sample came; `reference` itself before any sample, and
    /// `None` when neither is known.
    pub fn value(&self, now: Instant, reference: Option<f64>) -> Option<f64> {
        let Some(at) = self.at else {
            return reference;
        };
        let Some(r) = reference else {
            return Some(self.ms);
        };
        let idle = now.saturating_duration_since(at).as_secs_f64();
        let keep = (-idle / IDLE_DECAY.as_secs_f64()).exp();
        Some(r + (self.ms - r) * keep)
    }

    /// A service time of `ms` measured at `now` (an answer's node-side time, or the mean
    /// a load report gives). Non-finite or negative samples are ignored: they come from the
    /// peer and must not poison placement.
    pub fn record(&mut self, now: Instant, ms: f64, reference: Option<f64>) {
        if !(ms.is_finite() && ms >= 0.0) {
            return;
        }
        let Some(current) = self.value(now, reference) else {
            self.ms = ms;
            self.at = Some(now);
            return;
        };
        self.ms = if ms >= current {
            ms
        } else {
            let since = self
                .at
                .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
            let keep = (-since / SAMPLE_DECAY.as_secs_f64()).exp();
            ms + (current - ms) * keep
        };
        self.at = Some(now.max(self.at.unwrap_or(now)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: u64) -> Duration {
        Duration::from_millis(d)
    }

    #[test]
    fn cold_estimate_is_the_reference() {
        let t = Instant::now();
        let e = ServiceEstimate::new();
        assert_eq!(e.value(t, Some(50.0)), Some(50.0));
        assert_eq!(e.value(t, None), None);
        assert!(!e.is_known());
    }

    #[test]
    fn a_slower_sample_is_believed_at_once_a_faster_one_gradually() {
        let t = Instant::now();
        let mut e = ServiceEstimate::new();
        e.record(t, 50.0, Some(50.0));
        e.record(t + ms(10), 250.0, Some(50.0));
        let v = e.value(t + ms(10), Some(50.0)).unwrap();
        assert!((v - 250.0).abs() < 1e-9, "{v}");
        // A fast sample 50 ms later moves it only part of the way down.
        e.record(t + ms(60), 50.0, Some(50.0));
        let v = e.value(t + ms(60), Some(50.0)).unwrap();
        assert!(v > 200.0 && v < 250.0, "{v}");
        // Many fast samples over a few seconds bring it back.
        for i in 1..=100 {
            e.record(t + ms(60 + 50 * i), 50.0, Some(50.0));
        }
        let v = e.value(t + ms(5060), Some(50.0)).unwrap();
        assert!(v < 55.0, "{v}");
    }

    #[test]
    fn an_idle_estimate_drifts_back_to_the_reference() {
        let t = Instant::now();
        let mut e = ServiceEstimate::new();
        e.record(t, 250.0, Some(50.0));
        let after = |s| e.value(t + Duration::from_secs(s), Some(50.0)).unwrap();
        assert!(after(1) > 200.0);
        // Looks no worse than a full median node (4 × 50 ms) within a few seconds...
        assert!(after(2) < 200.0);
        // ...and like the median after a minute.
        assert!(after(60) < 51.0);
    }

    #[test]
    fn bad_samples_are_ignored() {
        let t = Instant::now();
        let mut e = ServiceEstimate::new();
        e.record(t, f64::NAN, None);
        e.record(t, -1.0, None);
        e.record(t, f64::INFINITY, None);
        assert!(!e.is_known());
        e.record(t, 40.0, None);
        assert_eq!(e.value(t, None), Some(40.0));
    }
}
