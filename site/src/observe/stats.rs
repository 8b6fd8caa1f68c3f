//! Per-model inference statistics, as Triton's statistics extension reports them: how many
//! images were answered, and the cumulative time they spent in each stage.
//!
//! Glimpse classifies every image as its own request to the fleet (a node batches images
//! internally, and that is not visible here), so one image is one inference and one
//! execution. The stages come from two places:
//! - the front-end measures `success`/`fail` (from accepting the image to its answer) and its
//!   own queue (waiting for a dispatch slot);
//! - the node measures its queue (waiting for a batch), decode + preprocess (Triton's
//!   compute-input), and the image's share of its batch's forward pass (compute-infer), and
//!   sends them back with every answer;
//! - compute-output is the front-end's work on the answer: mapping it to the job's labels.
//!
//! Every protocol (JSON API, KServe v2 over HTTP and gRPC) feeds the same counters.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::Serialize;

/// A count and the total time it took, in nanoseconds (Triton's `StatisticDuration`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StageTotal {
    /// How many times the stage ran.
    pub count: u64,
    /// Their total duration.
    pub ns: u64,
}

impl StageTotal {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns = self
            .ns
            .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Where one successfully classified image spent its time.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct StageTimes {
    /// Waiting: for a dispatch slot on the front-end, then for a batch on the node.
    pub queue: Duration,
    /// Decode and preprocess on the node.
    pub compute_input: Duration,
    /// The image's share of its batch's forward pass.
    pub compute_infer: Duration,
    /// Turning the node's answer into the result on the front-end.
    pub compute_output: Duration,
}

/// What the statistics extension reports for the model.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Milliseconds since the Unix epoch of the last answered image (0 before any).
    pub last_inference: u64,
    /// Images answered successfully.
    pub inference_count: u64,
    /// Model executions: one per image (see the module doc).
    pub execution_count: u64,
    /// Images answered, from acceptance to answer.
    pub success: StageTotal,
    /// Images that failed after being accepted, from acceptance to the error.
    pub fail: StageTotal,
    /// Queue time of answered images.
    pub queue: StageTotal,
    /// Decode + preprocess time of answered images.
    pub compute_input: StageTotal,
    /// Forward-pass time of answered images.
    pub compute_infer: StageTotal,
    /// Front-end time spent on answers.
    pub compute_output: StageTotal,
}

/// The counters behind `/v2/models/{m}/stats` and gRPC `ModelStatistics`.
#[derive(Debug, Default)]
pub struct ModelStats {
    inner: Mutex<StatsSnapshot>,
}

impl ModelStats {
    /// Count one answered image that took `total` from acceptance to answer.
    pub fn success(&self, total: Duration, stages: StageTimes) {
        let mut s = self.inner.lock();
        s.success.add(total);
        s.queue.add(stages.queue);
        s.compute_input.add(stages.compute_input);
        s.compute_infer.add(stages.compute_infer);
        s.compute_output.add(stages.compute_output);
        s.inference_count += 1;
        s.execution_count += 1;
        s.last_inference = now_ms();
    }

    /// Count one accepted image that failed after `total`.
    pub fn failure(&self, total: Duration) {
        self.inner.lock().fail.add(total);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        *self.inner.lock()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_accumulate_per_image_and_failures_apart() {
        let stats = ModelStats::default();
        let ms = Duration::from_millis;
        let stages = StageTimes {
            queue: ms(2),
            compute_input: ms(3),
            compute_infer: ms(40),
            compute_output: Duration::from_micros(5),
        };
        stats.success(ms(50), stages);
        stats.success(ms(70), stages);
        stats.failure(ms(9));
        let s = stats.snapshot();
        assert_eq!((s.inference_count, s.execution_count), (2, 2));
        assert_eq!(
            s.success,
            StageTotal {
                count: 2,
                ns: 120_000_000
            }
        );
        assert_eq!(
            s.fail,
            StageTotal {
                count: 1,
                ns: 9_000_000
            }
        );
        assert_eq!(s.queue.ns, 4_000_000);
        assert_eq!(s.compute_input.ns, 6_000_000);
        assert_eq!(
            s.compute_infer,
            StageTotal {
                count: 2,
                ns: 80_000_000
            }
        );
        assert_eq!(s.compute_output.ns, 10_000);
        assert!(s.last_inference > 1_700_000_000_000, "{}", s.last_inference);
    }
}
