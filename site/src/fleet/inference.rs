//! The seam between the HTTP side of the site and the QUIC dispatcher.
//!
//! The HTTP handlers only need four things from the cluster: classify one image (with
//! progress callbacks for the live page), list the nodes, and know whether any node can
//! serve. Keeping those behind this small trait means the handlers, the job store and the
//! KServe mapping never see QUIC or TLS types, and the JSON the page reads is defined here,
//! once, instead of leaking whatever shape the transport happens to have. The only
//! production implementation is [`crate::fleet::cluster::DispatchInference`], which wraps the real
//! `glimpse_transport::Dispatcher`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

/// One of the top-k labels for an image.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TopLabel {
    /// ImageNet class index (0..1000).
    pub index: u32,
    /// Human readable class name.
    pub label: String,
    /// Softmax probability in 0..=1.
    pub probability: f32,
}

#[cfg(test)]
impl TopLabel {
    /// A label for tests: `probability`, `index`, `label`.
    pub(crate) fn of(probability: f32, index: u32, label: &str) -> TopLabel {
        TopLabel {
            index,
            label: label.to_string(),
            probability,
        }
    }
}

/// A successful classification and who produced it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub top: Vec<TopLabel>,
    /// Name of the node whose answer was used.
    pub node: String,
    /// How many attempts the dispatcher needed (1 = first try).
    pub attempts: u32,
    /// Dispatch latency as measured by the dispatcher (send to answer, retries included).
    pub latency: Duration,
    /// Where the answering node spent the image's time (queue, decode, preprocess, infer).
    pub timings: glimpse_transport::Timings,
    /// Set when the labels do not come from trained GoogLeNet weights (random weights or the
    /// synthetic model), so that no result is ever shown without saying so.
    pub warning: Option<String>,
}

/// Why an image could not be classified. Each kind maps to the HTTP status a client sees.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Failure {
    /// The file is not a decodable image (node said so, or the site's sniffer did).
    #[error("not a usable image: {0}")]
    BadImage(String),
    /// The file type is not an image at all (magic bytes); 415.
    #[error("unsupported media type: {0}")]
    Unsupported(String),
    /// Too large for a node's decode limits.
    #[error("image too large: {0}")]
    TooLarge(String),
    /// No node is connected and ready.
    #[error("no inference node is available")]
    NoNodes,
    /// Every node refused for lack of capacity.
    #[error("all nodes are overloaded")]
    Overloaded,
    /// The request deadline passed.
    #[error("deadline exceeded after {attempts} attempt(s)")]
    Deadline { attempts: u32 },
    /// All retries failed.
    #[error("all {attempts} attempt(s) failed; last error: {last}")]
    Exhausted { attempts: u32, last: String },
    /// Anything else (a bug or a node's internal error).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Failure {
    /// The HTTP status that best describes this failure.
    pub fn status(&self) -> u16 {
        match self {
            Failure::BadImage(_) => 422,
            Failure::Unsupported(_) => 415,
            Failure::TooLarge(_) => 413,
            Failure::NoNodes | Failure::Overloaded => 503,
            Failure::Deadline { .. } => 504,
            Failure::Exhausted { .. } => 502,
            Failure::Internal(_) => 500,
        }
    }

    /// Attempts made before giving up (0 when the site rejected the file itself).
    pub fn attempts(&self) -> u32 {
        match self {
            Failure::Deadline { attempts } | Failure::Exhausted { attempts, .. } => *attempts,
            _ => 0,
        }
    }

    /// Stable label used as the `outcome` in metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Failure::BadImage(_) => "bad_image",
            Failure::Unsupported(_) => "unsupported",
            Failure::TooLarge(_) => "too_large",
            Failure::NoNodes => "no_nodes",
            Failure::Overloaded => "overloaded",
            Failure::Deadline { .. } => "deadline",
            Failure::Exhausted { .. } => "exhausted",
            Failure::Internal(_) => "internal",
        }
    }
}

/// Live progress of one image, reported by the dispatcher while it works.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Attempt `attempt` was sent to `node`.
    Sent { node: String, attempt: u32 },
    /// The previous attempt failed and another one is coming.
    Retrying { attempt: u32, reason: String },
    /// A hedged duplicate went to `node` because the first was slow.
    Hedged { node: String },
}

/// Callback type for [`Progress`]; shared so the dispatcher may call it from any task.
pub(crate) type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// A boxed classification future (the trait must be object safe for `Arc<dyn Inference>`).
pub(crate) type ClassifyFuture = Pin<Box<dyn Future<Output = Result<Outcome, Failure>> + Send>>;

/// What the nodes panel, `/api/v1/nodes` and `/metrics` show about one node.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeView {
    pub name: String,
    pub addr: String,
    /// `connecting`, `ready`, `silent` (connected but no heartbeat lately: used only when no
    /// ready node can take work), `draining` or `down`.
    pub state: String,
    pub in_flight: u32,
    pub served: u64,
    pub failed: u64,
    pub p50_ms: Option<f32>,
    pub p95_ms: Option<f32>,
    /// Placement's estimate of the node's service time per image on one lane, ms (absent
    /// until some node answered).
    pub service_ms: Option<f32>,
    /// When one more image placed there is expected to be done, ms: what placement compares.
    pub expected_ms: Option<f32>,
    /// The node's share of this front-end's placements, 0 to 1 (absent on local workers).
    pub placement_share: Option<f32>,
    /// Model name, e.g. `googlenet` or `synthetic`; absent until the node said hello.
    pub model: Option<String>,
    /// Weights identity, e.g. `googlenet-1378be20` or `random-seed-42`.
    pub weights: Option<String>,
    /// False for random weights: the page then shows a loud warning.
    pub trained: Option<bool>,
    /// True when the node fakes answers (load testing): the page warns too.
    pub synthetic: Option<bool>,
    pub backend: Option<String>,
    pub capacity: Option<u32>,
}

impl NodeView {
    /// A node can serve when it is connected, ready (or silent, which still takes work as a
    /// last resort) and has told us which model it runs.
    pub fn can_serve(&self) -> bool {
        matches!(self.state.as_str(), "ready" | "silent") && self.model.is_some()
    }
}

/// The cluster as the HTTP side sees it.
pub trait Inference: Send + Sync + 'static {
    /// Classify one encoded image, returning the top `top_k` labels.
    fn classify(&self, image: Bytes, top_k: u32, progress: ProgressFn) -> ClassifyFuture;
    /// [`Inference::classify`] within the trace `traceparent` (W3C) names, when the
    /// cluster can carry it to the nodes; by default the trace context is dropped.
    fn classify_traced(
        &self,
        image: Bytes,
        top_k: u32,
        traceparent: Option<String>,
        progress: ProgressFn,
    ) -> ClassifyFuture {
        let _ = traceparent;
        self.classify(image, top_k, progress)
    }
    /// Snapshot of all configured nodes.
    fn nodes(&self) -> Vec<NodeView>;
    /// Registers metrics about the cluster sampled now (dispatcher totals) into `live`;
    /// nothing by default.
    fn register_metrics(&self, live: &mut prometheus_client::registry::Registry) {
        let _ = live;
    }
}

/// True while at least one node with a loaded model is connected (what `/readyz` reports).
pub(crate) fn is_ready(inference: &dyn Inference) -> bool {
    inference.nodes().iter().any(NodeView::can_serve)
}

pub(crate) use glimpse_wire::shape::{DEFAULT_TOP_K, MAX_TOP_K, parse_top_k};
