//! What the front-end's span for one image (`image`, opened by `Site::answer`'s
//! `#[instrument]`) records when the image has its final answer: the node that answered, the
//! attempts and the outcome. With `--otlp-endpoint` the span is exported; its W3C trace
//! context goes to the nodes in every attempt's header, so their spans are its children, and
//! an incoming `traceparent` header makes it a child of the caller's span.

use tracing::Span;

use crate::api::job::{JobStatus, JobView};

/// Records the final answer `view` on `span` (the image's, still open).
pub(crate) fn answered(span: &Span, view: &JobView) {
    if let Some(node) = &view.node {
        span.record("glimpse.node", node.as_str());
    }
    span.record("glimpse.attempts", i64::from(view.attempts));
    span.record(
        "glimpse.outcome",
        match view.status {
            JobStatus::Ok => "ok",
            _ => "error",
        },
    );
    if let Some(code) = view.code {
        span.record("http.response.status_code", i64::from(code));
    }
    if let Some(error) = &view.error {
        span.record("otel.status_code", "error");
        span.record("otel.status_description", error.as_str());
    }
}
