//! The node's span for each attempt (`node.classify`): a child of the front-end's span for the
//! image, whose W3C trace context came in the request header, so a trace shows where an
//! image's time went on both sides. Exported with `--otlp-endpoint`; otherwise a plain
//! `tracing` span, which the node's log lines inside it name.

use std::sync::Arc;

use glimpse_transport::{
    Handler, InferenceAnswer, InferenceError, InferenceRequest, LoadReport, WorkStarted,
};
use tracing::Span;
use tracing::field::Empty;

/// The node's handler with a span around every request it handles.
pub(crate) struct Traced<H> {
    inner: Arc<H>,
    node_id: String,
}

impl<H: Handler> Traced<H> {
    pub(crate) fn new(inner: Arc<H>, node_id: String) -> Traced<H> {
        Traced { inner, node_id }
    }
}

impl<H: Handler> Handler for Traced<H> {
    #[tracing::instrument(
        name = "node.classify",
        skip_all,
        fields(
            otel.kind = "server",
            glimpse.request_id = req.request_id as i64,
            glimpse.attempt = i64::from(req.attempt),
            glimpse.node = %self.node_id,
            glimpse.image_bytes = req.image.len() as i64,
            glimpse.outcome = Empty,
            glimpse.queue_ms = Empty,
            glimpse.decode_preprocess_ms = Empty,
            glimpse.infer_ms = Empty,
            glimpse.batch_size = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        )
    )]
    async fn handle(
        &self,
        req: InferenceRequest,
        started: WorkStarted,
    ) -> Result<InferenceAnswer, InferenceError> {
        glimpse_ops::traces::continue_trace(&Span::current(), req.traceparent.as_deref());
        let result = self.inner.handle(req, started).await;
        record(&Span::current(), &result);
        result
    }

    fn load(&self) -> LoadReport {
        self.inner.load()
    }
}

/// The attempt's outcome and where its time went.
fn record(span: &Span, result: &Result<InferenceAnswer, InferenceError>) {
    match result {
        Ok(answer) => {
            let t = &answer.timings;
            span.record("glimpse.outcome", "ok");
            span.record("glimpse.queue_ms", f64::from(t.queue_ms));
            span.record(
                "glimpse.decode_preprocess_ms",
                f64::from(t.decode_ms + t.preprocess_ms),
            );
            span.record("glimpse.infer_ms", f64::from(t.infer_ms));
            if let Some(n) = t.batch_size {
                span.record("glimpse.batch_size", i64::from(n));
            }
        }
        Err(e) => {
            let e = e.to_string();
            span.record("glimpse.outcome", e.as_str());
            span.record("otel.status_code", "error");
            span.record("otel.status_description", e.as_str());
        }
    }
}
