//! Types shared by the node side and the front-end side: what a node announces, what a
//! request and an answer carry, and the [`Handler`] a node implements.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// What a node announces on connect (first message on its control stream). The front-end shows
/// it on its nodes page and uses `capacity` as the node's stream credit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    /// Node name (normally the name in its certificate).
    pub node_id: String,
    /// Model family, e.g. "googlenet" or "synthetic".
    pub model: String,
    /// Weights identity, e.g. "googlenet-1378be20" or "random-seed-42".
    pub weights: String,
    /// Whether the weights are trained (labels mean something).
    pub trained: bool,
    /// Whether answers come from the synthetic stand-in model.
    pub synthetic: bool,
    /// Compute backend name.
    pub backend: String,
    /// Maximum concurrent requests (= the node's QUIC max concurrent bidi streams).
    pub capacity: u32,
    /// Largest batch per forward pass.
    pub max_batch: u32,
    /// How long the batcher waits to fill a batch.
    pub max_batch_wait_ms: u32,
    /// Software version of the node.
    pub version: String,
    /// How often the node sends a load report (ms). The node server fills this in from its
    /// config when it sends Hello; the front-end takes a long silence on the control stream
    /// as a sign the node is gone. Absent from nodes that predate it (they report every
    /// 250 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_interval_ms: Option<u32>,
    /// The node sends a `Reply::Started` frame when it starts real work on a request whose
    /// header asked for one (see [`crate::codec`]). `NodeServer` sets it in the Hello it
    /// sends. A front-end cancels an overdue request that has not started on such a node
    /// (it is only waiting there) instead of letting it run on beside a copy elsewhere.
    /// Absent (false) from nodes that predate it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub acks: bool,
}

/// Periodic load report from a node (every `load_interval_ms`, 100 ms by default, on the
/// control stream). It doubles as the node's heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Requests being worked on.
    pub in_flight: u32,
    /// Requests waiting for a batch slot.
    pub queued: u32,
    /// Recent per-request service latency.
    pub recent_latency_ms: f32,
    /// Mean service time of the images the node finished since its previous report, ms
    /// per image on one lane (decode, preprocessing and the image's share of its forward
    /// pass; queueing excluded); absent when it finished none. Expected-finish placement
    /// takes it as a sample of the node's speed, so every front-end learns that a node
    /// slowed down, even one that sends it nothing. Absent from nodes that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_ms: Option<f32>,
    /// Inference lanes serving at once (`glimpse-node --lanes`): the service time is
    /// divided by it. Absent from nodes that predate it (taken as 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lanes: Option<u32>,
}

/// One image to classify, as the node's [`Handler`] receives it.
#[derive(Debug, Clone)]
pub struct InferenceRequest {
    /// Front-end-assigned request id (same across attempts of one request).
    pub request_id: u64,
    /// Attempt number, 1 for the first try.
    pub attempt: u32,
    /// When the front-end will give up on this attempt's request (computed on arrival from the
    /// remaining budget the header carries, so clocks need not agree). Work past it is wasted.
    pub deadline: Option<Instant>,
    /// How many labels to return.
    pub top_k: u32,
    /// The encoded image (JPEG/PNG/...), exactly as uploaded.
    pub image: Bytes,
    /// The W3C `traceparent` of the front-end's span for this image, when it traces (see
    /// [`crate::codec::RequestHeader::traceparent`]); unchecked, as the peer sent it.
    pub traceparent: Option<String>,
}

/// One predicted class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Label {
    /// ImageNet class index.
    pub index: u32,
    /// Human-readable class name.
    pub label: String,
    /// Softmax probability.
    pub probability: f32,
}

/// Where a node spent its time on one image.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    /// Waiting for a batch / worker.
    pub queue_ms: f32,
    /// Image decoding.
    pub decode_ms: f32,
    /// Resize/normalise.
    pub preprocess_ms: f32,
    /// Forward pass (the image's share of its batch).
    pub infer_ms: f32,
    /// Images in the forward pass that answered this one. Absent from nodes that predate it
    /// (older peers ignore it, and it decodes as `None` from them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
}

impl Timings {
    /// The node's work on the image, queueing excluded: decode, preprocessing and its share
    /// of the forward pass, ms (what expected-finish placement learns a node's speed from).
    pub fn service_ms(&self) -> f64 {
        f64::from(self.decode_ms) + f64::from(self.preprocess_ms) + f64::from(self.infer_ms)
    }
}

/// A node's answer for one image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceAnswer {
    /// Top-k labels, most probable first.
    pub top: Vec<Label>,
    /// Node-side timings.
    pub timings: Timings,
    /// True when produced by the synthetic stand-in model.
    pub synthetic: bool,
}

/// Why a node did not answer an image. Travels on the wire as a typed error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InferenceError {
    /// The bytes are not a decodable image. Not retryable: every node would say the same.
    #[error("bad image: {0}")]
    BadImage(String),
    /// The image exceeds a size limit. Not retryable.
    #[error("image too large: {0}")]
    TooLarge(String),
    /// The node is at capacity. Retryable elsewhere.
    #[error("node overloaded")]
    Overloaded,
    /// The node is shutting down and took no new work. Retryable elsewhere.
    #[error("node draining")]
    Draining,
    /// The node failed internally (its fault, not the image's). Retryable elsewhere.
    #[error("internal node error: {0}")]
    Internal(String),
    /// The request broke the protocol (malformed frame, unknown version, truncated image).
    /// Not retryable: it says the sender is broken, not the node. (Addition to the contract.)
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl InferenceError {
    /// Whether another node could plausibly succeed where this one failed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            InferenceError::Overloaded | InferenceError::Draining | InferenceError::Internal(_)
        )
    }
}

/// How a [`Handler`] tells the front-end that it has started real work on a request: the
/// request left the node's queues (a decode budget, a free core) and the expensive part
/// begins. The transport then sends a `Reply::Started` frame ahead of the answer, without
/// waiting on that write.
///
/// Why it matters: a front-end moves a request that is overdue to another node. If the
/// request was only waiting, the front-end cancels it here so the image is never worked on
/// twice; if it had started, the front-end leaves it running (it may still answer first).
/// A handler that never calls [`WorkStarted::send`] leaves its requests looking queued, so
/// an overdue one is cancelled and moved.
///
/// `send` consumes the handle: at most one Started per request. It does nothing when the
/// front-end did not ask for Started frames (older front-ends) or the stream is gone.
#[derive(Debug)]
pub struct WorkStarted {
    tx: Option<tokio::sync::oneshot::Sender<Duration>>,
}

impl WorkStarted {
    /// A handle whose `send` goes nowhere: the front-end did not ask, or a test calls a
    /// handler directly.
    pub fn ignored() -> WorkStarted {
        WorkStarted { tx: None }
    }

    /// A handle and the receiver its `send` reaches (what the node server uses).
    pub fn channel() -> (WorkStarted, tokio::sync::oneshot::Receiver<Duration>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (WorkStarted { tx: Some(tx) }, rx)
    }

    /// Whether a Started frame would reach the front-end (it asked for one).
    pub fn is_wanted(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }

    /// Work has started; `expect` is the handler's estimate of how long it will take
    /// (`Duration::ZERO`: no estimate). Rounded up to whole milliseconds on the wire.
    pub fn send(mut self, expect: Duration) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(expect);
        }
    }
}

/// What a node does with each image. Implemented by glimpse-node (and by tests).
///
/// `handle` runs on the async runtime: CPU-bound work must go to `spawn_blocking` or a worker
/// thread, or keep-alives stall and the front-end declares the node dead (quinn #1509).
/// If the front-end cancels the stream (a hedge lost, an overdue request that had not
/// started moved to another node, the client went away), the future is dropped.
pub trait Handler: Send + Sync + 'static {
    /// Classify one image. Call `started.send(expected duration)` when the request stops
    /// waiting and real work begins (see [`WorkStarted`]).
    fn handle(
        &self,
        req: InferenceRequest,
        started: WorkStarted,
    ) -> impl Future<Output = Result<InferenceAnswer, InferenceError>> + Send;

    /// Current load, sent to the front-end every report interval.
    fn load(&self) -> LoadReport;
}
