//! What `classify` reports: progress on the way, and exactly one final answer.

use std::time::Duration;

use serde::Serialize;

use crate::types::{InferenceAnswer, InferenceError};

/// Events reported to `classify`'s progress callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Progress {
    /// An attempt was sent to `node`.
    Sent {
        /// The node's name.
        node: String,
        /// The attempt's number (1 for the first).
        attempt: u32,
    },
    /// An attempt failed and the image will be retried.
    Retrying {
        /// The number of the attempt about to be made.
        attempt: u32,
        /// Why the last one failed, with its node's name.
        reason: String,
    },
    /// A hedge copy was sent to `node`.
    Hedged {
        /// The node the copy went to.
        node: String,
    },
}

/// A successful classification.
#[derive(Debug, Clone, Serialize)]
pub struct Classified {
    /// The node's answer.
    pub answer: InferenceAnswer,
    /// Which node answered.
    pub node: String,
    /// Attempts made (hedges included).
    pub attempts: u32,
    /// Time from `classify` to the answer.
    pub latency: Duration,
}

/// Why `classify` gave up. Exactly one of these, or a `Classified`, per call.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
pub enum DispatchError {
    /// A node rejected the image with a non-retryable error (bad image, too large).
    #[error("rejected: {0}")]
    Rejected(InferenceError),
    /// No node became available within the deadline (or none is configured).
    #[error("no node available")]
    NoNodes,
    /// The request deadline passed.
    #[error("deadline exceeded after {attempts} attempt(s)")]
    DeadlineExceeded {
        /// Attempts made before it.
        attempts: u32,
    },
    /// Every attempt failed.
    #[error("all {attempts} attempt(s) failed; last: {last}")]
    AttemptsExhausted {
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        last: String,
    },
}
