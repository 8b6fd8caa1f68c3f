//! A window of recent answer latencies, for percentiles that drive attempt timeouts, hedging
//! and the per-node figures the site shows.

/// Samples kept: enough for a stable p99, few enough that old conditions age out in seconds
/// at serving rates.
pub const LATENCY_WINDOW: usize = 256;

/// Samples needed before percentiles drive timeouts and hedging: below it one slow cold
/// answer would set the pace.
pub const MIN_SAMPLES: usize = 20;

/// Recent latencies in milliseconds: a ring of the last [`LATENCY_WINDOW`] samples, with the
/// sorted copy kept until the next sample so that asking for several percentiles between
/// answers sorts once.
#[derive(Debug, Clone, Default)]
pub struct LatencyWindow {
    samples: Vec<f32>,
    next: usize,
    sorted: Option<Vec<f32>>,
}

impl LatencyWindow {
    /// An empty window.
    pub fn new() -> Self {
        LatencyWindow {
            samples: Vec::with_capacity(LATENCY_WINDOW),
            next: 0,
            sorted: None,
        }
    }

    /// Adds one sample, replacing the oldest once the window is full.
    pub fn record(&mut self, ms: f32) {
        if self.samples.len() < LATENCY_WINDOW {
            self.samples.push(ms);
        } else {
            self.samples[self.next] = ms;
        }
        self.next = (self.next + 1) % LATENCY_WINDOW;
        self.sorted = None;
    }

    /// Samples held (at most [`LATENCY_WINDOW`]).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample was recorded yet.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `p`th percentile (nearest rank), `None` while empty.
    pub fn percentile(&mut self, p: f32) -> Option<f32> {
        if self.samples.is_empty() {
            return None;
        }
        let samples = &self.samples;
        let v = self.sorted.get_or_insert_with(|| {
            let mut v = samples.clone();
            v.sort_by(f32::total_cmp);
            v
        });
        let idx = ((p / 100.0) * (v.len() - 1) as f32).round() as usize;
        v.get(idx.min(v.len() - 1)).copied()
    }

    /// The `p`th percentile once at least [`MIN_SAMPLES`] samples exist.
    pub fn settled_percentile(&mut self, p: f32) -> Option<f32> {
        if self.len() < MIN_SAMPLES {
            return None;
        }
        self.percentile(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_window_percentiles_follow_recent_samples() {
        let mut w = LatencyWindow::new();
        assert_eq!(w.percentile(50.0), None);
        for i in 1..=100 {
            w.record(i as f32);
        }
        assert_eq!(w.percentile(50.0), Some(51.0));
        assert_eq!(w.percentile(99.0), Some(99.0));
        assert_eq!(w.percentile(100.0), Some(100.0));
        // Old samples age out: after a full window of 1000 ms, the p50 is 1000 ms.
        for _ in 0..LATENCY_WINDOW {
            w.record(1000.0);
        }
        assert_eq!(w.len(), LATENCY_WINDOW);
        assert_eq!(w.percentile(50.0), Some(1000.0));
        assert_eq!(w.percentile(0.0), Some(1000.0));
    }

    #[test]
    fn settled_percentiles_wait_for_enough_samples() {
        let mut w = LatencyWindow::new();
        for _ in 0..MIN_SAMPLES - 1 {
            w.record(5.0);
        }
        assert_eq!(w.settled_percentile(95.0), None);
        w.record(5.0);
        assert_eq!(w.settled_percentile(95.0), Some(5.0));
        // A new sample invalidates the sorted copy.
        for _ in 0..LATENCY_WINDOW {
            w.record(9.0);
        }
        assert_eq!(w.settled_percentile(95.0), Some(9.0));
    }
}
