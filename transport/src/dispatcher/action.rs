//! What a [`super::Request`] tells its driver to do, and what the driver tells it about an
//! attempt that failed: the vocabulary between the sans-IO core and whatever carries it out
//! (the async dispatcher over QUIC, or the simulator).

use std::time::Duration;

use super::{DispatchError, Progress};
use crate::types::InferenceError;

/// Open an attempt: send the image to `node`. Its credit is already taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The attempt's number within the request (1, 2, ...): its id in later events.
    pub attempt: u32,
    /// The node, an index into the cluster.
    pub node: usize,
    /// A hedge copy (the first attempt is still running).
    pub hedge: bool,
    /// Time left until the request's deadline: the attempt ends by then.
    pub remaining: Duration,
}

/// How a request was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Won {
    /// The attempt that answered.
    pub attempt: u32,
    /// Its node.
    pub node: usize,
    /// Its node's name, taken when it answered: once the node has left the membership and
    /// gone idle, its index may name another node.
    pub node_name: String,
    /// Attempts made in all (hedges included).
    pub attempts: u32,
    /// The answer came from a hedge copy.
    pub hedge: bool,
    /// From the request's start to the answer.
    pub latency: Duration,
}

/// What the driver must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing runs: get a node with [`super::Cluster::wait_or_grant`] (passing
    /// [`super::Request::failed`]), then report it with [`super::Request::on_granted`].
    Wait,
    /// Start an attempt.
    Open(Open),
    /// Stop an attempt (reset its stream); give its credit back once it is stopped.
    Cancel {
        /// The attempt.
        attempt: u32,
        /// Its node.
        node: usize,
    },
    /// Tell the caller.
    Progress(Progress),
    /// The request's one final answer. Running attempts were cancelled just before.
    Done(Result<Won, DispatchError>),
}

/// Why an attempt failed, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The node reset or stopped the stream.
    Reset,
    /// The attempt ran out of time.
    Timeout,
    /// The connection to the node was lost.
    ConnectionLost,
    /// The node answered with a retryable typed error (draining, internal).
    NodeError,
    /// The node was full (its capacity taken, by other front-ends' work too) and refused the
    /// image before doing anything with it. This does not use up one of the request's
    /// `max_attempts`: with several front-ends on one node, each keeps only its own count
    /// of what it has there, so a full node is expected and not a fault of the image or the
    /// node. The request waits for a node again (a pause before the same one), within its
    /// deadline.
    Overloaded,
    /// Anything else (a garbled reply, a stream error, a non-retryable rejection).
    Other,
}

/// A failed attempt, as the state machine needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// For the counters.
    pub cause: Cause,
    /// Set when the failure is about the image, not the node: the request ends with it.
    pub fatal: Option<InferenceError>,
    /// What went wrong, for the caller's "retrying" progress and the final error.
    pub message: String,
}
