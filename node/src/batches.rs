//! [`BatchHistograms`]: what every forward pass carried and took, recorded by the inference
//! lanes and exported by [`crate::observe`].

use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

/// Upper bounds of the batch size buckets: powers of two up to the largest useful
/// `--max-batch` on a CPU.
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
/// Upper bounds (seconds) of the forward-pass buckets: the synthetic model takes a few
/// milliseconds, a GoogLeNet batch on a small CPU seconds.
const PASS_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every forward pass: how many images it carried and how long it took. Shared with the
/// inference lanes.
#[derive(Debug)]
pub(crate) struct BatchHistograms {
    pub(crate) sizes: Histogram,
    pub(crate) seconds: Histogram,
}

impl Default for BatchHistograms {
    fn default() -> Self {
        BatchHistograms {
            sizes: Histogram::new(BATCH_BUCKETS),
            seconds: Histogram::new(PASS_BUCKETS),
        }
    }
}

impl BatchHistograms {
    /// One forward pass of `size` images that took `took`.
    pub(crate) fn observe(&self, size: usize, took: Duration) {
        self.sizes.observe(size as f64);
        self.seconds.observe(took.as_secs_f64());
    }
}
