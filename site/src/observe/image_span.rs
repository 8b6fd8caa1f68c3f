//! The front-end's span for one image (with `--otlp-endpoint`): from admission to the final
//! answer, with the job id, the node that answered, the attempts and the outcome. Its W3C
//! trace context goes to the nodes in every attempt's header, so their spans are its
//! children; an incoming `traceparent` header makes it a child of the caller's span.

use glimpse_ops::traces::opentelemetry::trace::{SpanKind, Status, TraceContextExt};
use glimpse_ops::traces::opentelemetry::{Context, KeyValue};

use crate::api::job::{JobStatus, JobView};

/// The span of an admitted image; ends when [`ImageSpan::answered`] is called or it is
/// dropped (a job task that died).
pub(crate) struct ImageSpan(Context);

impl ImageSpan {
    /// Starts the span of image `job` (`bytes` long), admitted for a caller whose request
    /// carried `traceparent`.
    pub(crate) fn admitted(job: &str, bytes: usize, traceparent: Option<&str>) -> ImageSpan {
        ImageSpan(glimpse_ops::traces::start_span(
            "glimpse",
            "image",
            SpanKind::Server,
            traceparent,
            vec![
                KeyValue::new("glimpse.job_id", job.to_string()),
                KeyValue::new("glimpse.image_bytes", bytes as i64),
            ],
        ))
    }

    /// The trace context to send to the nodes, if tracing is on or the caller traces.
    pub(crate) fn traceparent(&self) -> Option<String> {
        glimpse_ops::traces::traceparent(&self.0)
    }

    /// Records the final answer and ends the span.
    pub(crate) fn answered(self, view: &JobView) {
        let span = self.0.span();
        if let Some(node) = &view.node {
            span.set_attribute(KeyValue::new("glimpse.node", node.clone()));
        }
        span.set_attribute(KeyValue::new("glimpse.attempts", i64::from(view.attempts)));
        let outcome = match view.status {
            JobStatus::Ok => "ok",
            _ => "error",
        };
        span.set_attribute(KeyValue::new("glimpse.outcome", outcome));
        if let Some(code) = view.code {
            span.set_attribute(KeyValue::new("http.response.status_code", i64::from(code)));
        }
        if let Some(error) = &view.error {
            span.set_status(Status::error(error.clone()));
        }
        span.end();
    }
}
