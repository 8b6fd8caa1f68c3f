//! The node's span for each attempt (with `--otlp-endpoint`): a child of the front-end's span
//! for the image, whose W3C trace context came in the request header, so a trace shows where
//! an image's time went on both sides. Without a collector the tracer is a no-op.

use std::sync::Arc;

use glimpse_ops::traces::opentelemetry::trace::{SpanKind, Status, TraceContextExt};
use glimpse_ops::traces::opentelemetry::{Context, KeyValue};
use glimpse_transport::{
    Handler, InferenceAnswer, InferenceError, InferenceRequest, LoadReport, WorkStarted,
};

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
    async fn handle(
        &self,
        req: InferenceRequest,
        started: WorkStarted,
    ) -> Result<InferenceAnswer, InferenceError> {
        let cx = glimpse_ops::traces::start_span(
            "glimpse-node",
            "node.classify",
            SpanKind::Server,
            req.traceparent.as_deref(),
            vec![
                KeyValue::new("glimpse.request_id", req.request_id as i64),
                KeyValue::new("glimpse.attempt", i64::from(req.attempt)),
                KeyValue::new("glimpse.node", self.node_id.clone()),
                KeyValue::new("glimpse.image_bytes", req.image.len() as i64),
            ],
        );
        let result = self.inner.handle(req, started).await;
        record(&cx, &result);
        result
    }

    fn load(&self) -> LoadReport {
        self.inner.load()
    }
}

/// The attempt's outcome and where its time went, then the end of its span.
fn record(cx: &Context, result: &Result<InferenceAnswer, InferenceError>) {
    let span = cx.span();
    match result {
        Ok(answer) => {
            let t = &answer.timings;
            span.set_attribute(KeyValue::new("glimpse.outcome", "ok"));
            span.set_attribute(KeyValue::new("glimpse.queue_ms", f64::from(t.queue_ms)));
            span.set_attribute(KeyValue::new(
                "glimpse.decode_preprocess_ms",
                f64::from(t.decode_ms + t.preprocess_ms),
            ));
            span.set_attribute(KeyValue::new("glimpse.infer_ms", f64::from(t.infer_ms)));
            if let Some(n) = t.batch_size {
                span.set_attribute(KeyValue::new("glimpse.batch_size", i64::from(n)));
            }
        }
        Err(e) => {
            span.set_attribute(KeyValue::new("glimpse.outcome", e.to_string()));
            span.set_status(Status::error(e.to_string()));
        }
    }
    span.end();
}
