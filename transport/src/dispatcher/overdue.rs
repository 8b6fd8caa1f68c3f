//! When an attempt is overdue: its timeout from observed latency, the upload allowance for
//! its image, and the Started frame that moves it (see the rules in `request.rs`).

use std::time::{Duration, Instant};

use super::{Cluster, Policy};

/// Once a node has said it started an attempt, the attempt may take its usual timeout plus
/// this many times the node's own estimate of the work it started. The estimate is an
/// average of the node's recent rate; one image can run well over it when the node's cores
/// are shared with other decodes and inference, or when a codec path is slower per byte
/// than the average (a progressive JPEG). Twice the estimate absorbs that; past it the work
/// is more likely wedged than slow, and a second copy elsewhere is worth its cost.
pub const STARTED_EXPECT_FACTOR: u32 = 2;

#[derive(Debug, Clone)]
pub(super) struct Attempt {
    pub(super) id: u32,
    pub(super) node: usize,
    pub(super) hedge: bool,
    pub(super) launched: Instant,
    /// When the node said it started, and its estimate of the work.
    pub(super) started: Option<(Instant, Duration)>,
    /// Its node sends Started frames.
    pub(super) acks: bool,
    /// The latency-derived timeout at launch (see [`base_timeout`]).
    pub(super) base: Duration,
    /// Overdue at this time if it never starts: launch + base + upload allowance, never past
    /// the request deadline.
    pub(super) unstarted_at: Instant,
}

impl Attempt {
    /// When it counts as timed out: from its Started frame once one arrived, from its launch
    /// before.
    pub(super) fn timeout_at(&self) -> Instant {
        match self.started {
            Some((at, expect)) => at + self.base + expect.saturating_mul(STARTED_EXPECT_FACTOR),
            None => self.unstarted_at,
        }
    }
}

/// The newest (non-hedge) attempt, watched for being overdue.
#[derive(Debug, Clone)]
pub(super) struct Slow {
    pub(super) attempt: u32,
    /// Set once its timeout (or silence) was counted, while waiting for a free node to reopen
    /// the image on: when to look again.
    pub(super) retry_at: Option<Instant>,
    /// It was counted because its node went silent, not because of its timeout.
    pub(super) silenced: bool,
}

/// The latency-derived part of an attempt's timeout: max(floor, factor × p99), or the
/// cold timeout before enough samples exist.
pub(super) fn base_timeout<W>(p: &Policy, cluster: &mut Cluster<W>) -> Duration {
    match cluster.latency().settled_percentile(99.0) {
        Some(p99) => Duration::from_secs_f32((p99 * p.attempt_timeout_factor).max(0.0) / 1000.0)
            .max(p.attempt_timeout_floor),
        None => p.attempt_timeout_cold,
    }
}

/// Time allowed for sending the image at the configured upload rate.
pub(super) fn upload_allowance(p: &Policy, image_len: usize) -> Duration {
    Duration::from_secs_f64(image_len as f64 / p.upload_bytes_per_sec.max(1) as f64)
}
