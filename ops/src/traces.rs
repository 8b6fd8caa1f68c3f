//! `--otlp-endpoint`: OpenTelemetry traces exported as OTLP (protobuf over HTTP/1) to a
//! collector. The spans are `tracing` spans (`#[instrument]` on the request path: the
//! front-end's `image`, the node's `node.classify` and the steps inside them), turned into
//! OpenTelemetry spans by `tracing-opentelemetry`'s layer, which [`crate::LogArgs`] installs
//! beside the log writer. Front-end and node are joined by the W3C `traceparent` that travels
//! in the transport's request header ([`continue_trace`], [`traceparent`]).
//!
//! Off by default: then no layer exists and a span costs what any `tracing` span costs. When
//! on, finished spans are queued in memory and sent in batches by the SDK's background
//! thread, over a connection driven by a one-thread runtime of its own; a collector that is
//! down or slow only costs dropped spans and a logged warning, never a failed start or a
//! slower image.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::{OpenTelemetryLayer, OpenTelemetrySpanExt};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::registry::LookupSpan;

/// How long one export may take before it is given up (the spans in it are dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why tracing could not be set up (an unreachable collector is fine: only its spans are lost).
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// The exporter refused its configuration.
    #[error("setting up the OTLP exporter for {endpoint}: {reason}")]
    Exporter {
        /// The collector.
        endpoint: OtlpEndpoint,
        /// What went wrong.
        reason: String,
    },
    /// The export thread could not start.
    #[error("starting the trace export thread")]
    Thread(#[source] std::io::Error),
}

/// `--otlp-endpoint`: a collector's base URL, `http://HOST:PORT` (OTLP over plain HTTP),
/// checked when the flags are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpEndpoint(String);

impl FromStr for OtlpEndpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<OtlpEndpoint, String> {
        let base: hyper::Uri = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
        if base.scheme_str() != Some("http") || base.host().is_none() {
            return Err(format!(
                "{s:?}: expected http://HOST:PORT (OTLP over plain HTTP)"
            ));
        }
        Ok(OtlpEndpoint(s.trim_end_matches('/').to_string()))
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The installed exporter, if any. Call [`Traces::shutdown`] before the process exits, or the
/// spans of the last few seconds are lost.
#[derive(Debug)]
pub struct Traces {
    provider: Option<SdkTracerProvider>,
}

impl Traces {
    /// No export: spans stay in the process (and in its logs).
    pub fn off() -> Traces {
        Traces { provider: None }
    }

    /// An exporter to `endpoint` (spans go to `/v1/traces` under it) as `service`
    /// (`glimpse` or `glimpse-node`); with no endpoint, none. Needs no runtime: exports run
    /// on a thread of their own.
    pub fn start(
        endpoint: Option<&OtlpEndpoint>,
        service: &'static str,
    ) -> Result<Traces, TracesError> {
        let Some(endpoint) = endpoint else {
            return Ok(Traces::off());
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(Export {
                runtime: export_runtime().map_err(TracesError::Thread)?,
            })
            .with_endpoint(format!("{endpoint}/v1/traces"))
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| TracesError::Exporter {
                endpoint: endpoint.clone(),
                reason: e.to_string(),
            })?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        Ok(Traces {
            provider: Some(provider),
        })
    }

    /// Whether spans are exported.
    pub fn on(&self) -> bool {
        self.provider.is_some()
    }

    /// The layer that turns this process's `tracing` spans into OpenTelemetry spans for the
    /// exporter; `None` when export is off. It sees the spans and events of Glimpse's own
    /// crates at INFO and above whatever the log filter says (the dependencies' spans, e.g.
    /// every QUIC packet's, would cost more than the images). OpenTelemetry's context is not
    /// made current on entry: propagation is explicit ([`traceparent`]), and a span whose
    /// parent is set from a header ([`continue_trace`]) is only started when first needed.
    pub fn layer<S>(&self) -> Option<Filtered<OpenTelemetryLayer<S, SdkTracer>, Targets, S>>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let provider = self.provider.as_ref()?;
        Some(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("glimpse"))
                .with_context_activation(false)
                .with_tracked_inactivity(false)
                .with_filter(Targets::new().with_target("glimpse", tracing::Level::INFO)),
        )
    }

    /// Sends the spans still queued and stops the exporter. Waits off the runtime's worker
    /// threads.
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

/// Makes `span` a child of the caller's span named by the W3C `traceparent`, if one is given
/// and valid (else the span stays where it is: a new trace, or its `tracing` parent's). Call
/// it before the span has children or its [`traceparent`] is read.
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else {
        return;
    };
    let carrier = HashMap::from([("traceparent".to_string(), tp.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        // Fails only when export is off (no layer keeps OpenTelemetry data) or the span has
        // started already; either way the span keeps its place.
        let _ = span.set_parent(cx);
    }
}

/// The W3C `traceparent` naming `span`, to send to the next hop; `None` when spans are not
/// exported.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// A one-thread runtime for the export client, on a thread of its own: the SDK's batch
/// thread has no runtime, and the export must not depend on the process's (the node's
/// `classify` has none, and a busy runtime would delay the spans that show why).
fn export_runtime() -> std::io::Result<tokio::runtime::Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = runtime.handle().clone();
    std::thread::Builder::new()
        .name("otlp-export".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    Ok(handle)
}

/// The export client: one HTTP/1 connection per batch (a batch leaves every few seconds at
/// most), on the hyper the workspace already builds, driven on the export thread's runtime.
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
    use std::sync::{Arc, Mutex};

    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{SpanData, SpanExporter};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    /// Keeps what it is given.
    #[derive(Debug, Clone, Default)]
    struct Collect(Arc<Mutex<Vec<SpanData>>>);

    impl SpanExporter for Collect {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.0
                .lock()
                .map_err(|e| {
                    opentelemetry_sdk::error::OTelSdkError::InternalFailure(e.to_string())
                })?
                .extend(batch);
            Ok(())
        }
    }

    fn collecting() -> (Traces, Collect) {
        let collect = Collect::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(collect.clone())
            .build();
        (
            Traces {
                provider: Some(provider),
            },
            collect,
        )
    }

    #[test]
    fn a_traceparent_becomes_the_parent_and_travels_on() {
        let (traces, collect) = collecting();
        let subscriber = tracing_subscriber::registry().with(traces.layer());
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sent = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("image", glimpse.attempts = 2_i64);
            continue_trace(&span, Some(tp));
            let sent = traceparent(&span).expect("a traceparent to send on");
            let child = tracing::info_span!(parent: &span, "step");
            drop(child);
            drop(span);
            sent
        });
        let spans = collect.0.lock().unwrap().clone();
        let image = spans.iter().find(|s| s.name == "image").expect("the span");
        let step = spans.iter().find(|s| s.name == "step").expect("its child");
        assert_eq!(
            image.span_context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(image.parent_span_id.to_string(), "00f067aa0ba902b7");
        assert_eq!(step.parent_span_id, image.span_context.span_id());
        assert_eq!(
            sent,
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                image.span_context.span_id()
            )
        );
        assert!(
            image
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "glimpse.attempts"
                    && kv.value == opentelemetry::Value::I64(2))
        );
    }

    #[test]
    fn a_bad_traceparent_starts_a_new_trace_and_no_export_sends_none() {
        let (traces, collect) = collecting();
        let subscriber = tracing_subscriber::registry().with(traces.layer());
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("image");
            continue_trace(&span, Some("garbage"));
            assert!(traceparent(&span).is_some());
        });
        let spans = collect.0.lock().unwrap().clone();
        assert_eq!(spans.len(), 1);
        assert_eq!(
            spans[0].parent_span_id,
            opentelemetry::trace::SpanId::INVALID
        );

        let off = tracing_subscriber::registry().with(Traces::off().layer());
        tracing::subscriber::with_default(off, || {
            let span = tracing::info_span!("image");
            continue_trace(
                &span,
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            );
            assert_eq!(traceparent(&span), None);
        });
    }

    #[test]
    fn only_plain_http_endpoints_are_accepted() {
        assert!("https://x:4318".parse::<OtlpEndpoint>().is_err());
        assert!("x:4318".parse::<OtlpEndpoint>().is_err());
        let e: OtlpEndpoint = "http://collector:4318/".parse().unwrap();
        assert_eq!(e.to_string(), "http://collector:4318");
        assert!(!Traces::start(None, "t").unwrap().on());
    }
}
