//! `--otlp-endpoint`: OpenTelemetry traces exported as OTLP (protobuf over HTTP/1) to a
//! collector, one span per image on the front-end and a child span per attempt on the node,
//! joined by the W3C `traceparent` that travels in the transport's request header.
//!
//! Off by default: then no exporter exists, the global tracer is OpenTelemetry's no-op one,
//! and a span costs a few field copies. When on, finished spans are queued in memory and sent
//! in batches by the SDK's background thread; a collector that is down or slow only costs
//! dropped spans and a logged warning, never a failed start or a slower image.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;

pub use opentelemetry;

/// How long one export may take before it is given up (the spans in it are dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why tracing could not be set up (only a malformed endpoint: an unreachable one is fine).
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The endpoint is not an `http://HOST:PORT` URL.
    #[error("--otlp-endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// As given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The installed exporter, if any. Call [`Traces::shutdown`] before the process exits, or the
/// spans of the last few seconds are lost.
#[derive(Debug)]
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Traces {
    /// Installs the global tracer provider exporting to `endpoint` (the collector's base URL,
    /// e.g. `http://collector:4318`; spans go to `/v1/traces` under it) as `service`
    /// (`glimpse` or `glimpse-node`). With no endpoint, installs nothing. Must be called
    /// inside the tokio runtime: exports run on it.
    pub fn init(endpoint: Option<&str>, service: &'static str) -> Result<Traces, TracesError> {
        let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) else {
            return Ok(Traces { provider: None });
        };
        let bad = |reason: String| TracesError::Endpoint {
            endpoint: endpoint.to_string(),
            reason,
        };
        let base: hyper::Uri = endpoint.parse().map_err(|e| bad(format!("{e}")))?;
        if base.scheme_str() != Some("http") || base.host().is_none() {
            return Err(bad(
                "expected http://HOST:PORT (OTLP over plain HTTP)".into()
            ));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| bad("tracing must be set up inside the runtime".into()))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Export { runtime })
            .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| bad(e.to_string()))?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        tracing::info!(endpoint, "exporting traces (OTLP over HTTP)");
        Ok(Traces {
            provider: Some(provider),
        })
    }

    /// Sends the spans still queued and stops the exporter. Waits off the runtime's worker
    /// threads: the flush's own requests run on the runtime.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing traces failed"),
            Err(e) => tracing::warn!(error = %e, "flushing traces failed"),
        }
    }
}

/// Starts a span of this process's tracer (`name` as its scope) whose parent is the W3C
/// `traceparent`, if one is given and valid (else it starts a new trace). The span is in
/// the returned context: add to it with `cx.span()`, and end it with `cx.span().end()` (or
/// by dropping the last clone of the context).
pub fn start_span(
    scope: &'static str,
    name: &'static str,
    kind: SpanKind,
    traceparent: Option<&str>,
    attributes: Vec<KeyValue>,
) -> Context {
    let parent = match traceparent {
        Some(tp) => {
            let carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
            TraceContextPropagator::new().extract(&carrier)
        }
        None => Context::new(),
    };
    let tracer = opentelemetry::global::tracer(scope);
    let span = tracer
        .span_builder(name)
        .with_kind(kind)
        .with_attributes(attributes)
        .start_with_context(&tracer, &parent);
    parent.with_span(span)
}

/// The W3C `traceparent` naming the span in `cx`, to send to the next hop; `None` when the
/// span is not valid (tracing is off and nothing came in).
pub fn traceparent(cx: &Context) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The export client: one HTTP/1 connection per batch (a batch leaves every few seconds at
/// most), on the hyper the workspace already builds, driven on the process's tokio runtime
/// (the SDK's batch thread has none of its own).
#[derive(Debug)]
struct Export {
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for Export {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let sent = self.runtime.spawn(async move {
            match tokio::time::timeout(EXPORT_TIMEOUT, send(request)).await {
                Ok(r) => r,
                Err(_) => Err(HttpError::from("timed out")),
            }
        });
        let result = match sent.await {
            Ok(r) => r,
            Err(e) => Err(HttpError::from(e)),
        };
        match &result {
            Ok(r) if !r.status().is_success() => {
                tracing::warn!(status = %r.status(), "the trace collector refused spans")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "exporting traces failed; spans dropped"),
        }
        result
    }
}

async fn send(request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
    let uri = request.uri();
    let host = uri.host().ok_or("no host")?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    let (mut parts, body) = request.into_parts();
    if !parts.headers.contains_key(hyper::header::HOST) {
        parts
            .headers
            .insert(hyper::header::HOST, format!("{host}:{port}").parse()?);
    }
    let response = sender
        .send_request(Request::from_parts(parts, Full::new(body)))
        .await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    driver.abort();
    Ok(Response::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_becomes_the_parent_and_travels_on() {
        // With no provider installed, the no-op tracer still carries the incoming context.
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = start_span("test", "image", SpanKind::Server, Some(tp), vec![]);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let cx = start_span("test", "image", SpanKind::Server, Some("garbage"), vec![]);
        assert!(!cx.span().span_context().is_valid());
        assert_eq!(traceparent(&cx), None);
    }

    #[test]
    fn only_plain_http_endpoints_are_accepted() {
        assert!(matches!(
            Traces::init(Some("https://x:4318"), "t"),
            Err(TracesError::Endpoint { .. })
        ));
        assert!(Traces::init(None, "t").unwrap().provider.is_none());
    }
}
