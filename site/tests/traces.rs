//! `--otlp-endpoint` with real processes: a real `glimpse-node` and the real `glimpse` both
//! export to a small OTLP/HTTP receiver started here, one image is classified over HTTPS with
//! a W3C `traceparent` header, and after both processes drain (which flushes their batch
//! exporters) the receiver holds the front-end's image span, a child of the header's span,
//! the node's span, a child of the front-end's, and the node's step inside it, all in the
//! header's trace.
//! And a collector that is down costs nothing but dropped spans.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Spawned, client, part, png};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::Value;

use crate::common;

const NODE: &str = "node-a";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// A child process, SIGTERMed (so it flushes its spans) and reaped on drop.
struct Proc(Child);

impl Proc {
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(status)) = self.0.try_wait() {
                assert!(status.success(), "glimpse-node exited with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("glimpse-node did not exit within 60 s of SIGTERM");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A span as received, with the service that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    span: Span,
}

impl Received {
    fn attr(&self, key: &str) -> Option<any_value::Value> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv: &KeyValue| kv.value.clone())
            .and_then(|v: AnyValue| v.value)
    }

    fn text(&self, key: &str) -> Option<String> {
        match self.attr(key) {
            Some(any_value::Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key) {
            Some(any_value::Value::IntValue(i)) => Some(i),
            _ => None,
        }
    }
}

/// An OTLP/HTTP receiver on 127.0.0.1: takes protobuf `POST /v1/traces` and keeps the spans.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let sink = spans.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let sink = sink.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<_>| {
                        let sink = sink.clone();
                        async move { receive(req, &sink).await }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Collector { addr, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

async fn receive(
    req: Request<hyper::body::Incoming>,
    sink: &Mutex<Vec<Received>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    assert_eq!(req.method(), hyper::Method::POST);
    assert_eq!(req.uri().path(), "/v1/traces");
    assert_eq!(
        req.headers()["content-type"],
        "application/x-protobuf",
        "OTLP/HTTP protobuf"
    );
    let body = req.into_body().collect().await?.to_bytes();
    let export = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
    let mut got = sink.lock().unwrap();
    for rs in export.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.clone())
            .and_then(|v| match v.value {
                Some(any_value::Value::StringValue(s)) => Some(s),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                got.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    Ok(Response::new(Full::new(Bytes::new())))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// CA, a node certificate for [`NODE`] and the front-end's client certificate, as files.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn new() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        let ca = glimpse_certs::ClusterCa::generate("traces test").unwrap();
        let node = ca.issue_node(NODE, &[]).unwrap();
        let fe = ca.issue_client("glimpse-frontend").unwrap();
        for (name, text) in [
            ("ca.pem", ca.cert_pem()),
            ("node.pem", node.cert_pem),
            ("node.key", node.key_pem),
            ("fe.pem", fe.cert_pem),
            ("fe.key", fe.key_pem),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A synthetic `glimpse-node` on 127.0.0.1:`port` exporting traces to `otlp`.
fn start_node(certs: &Certs, port: u16, otlp: &str) -> Proc {
    let bin = Path::new(env!("CARGO_BIN_EXE_glimpse")).with_file_name("glimpse-node");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (cargo build --workspace), not only glimpse-site",
        bin.display()
    );
    let child = Command::new(bin)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--node-id", NODE])
        .args(["--cert", &certs.path("node.pem")])
        .args(["--key", &certs.path("node.key")])
        .args(["--ca", &certs.path("ca.pem")])
        .args(["--model", "synthetic", "--service-ms", "5"])
        .args(["--otlp-endpoint", otlp])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start glimpse-node");
    Proc(child)
}

/// `glimpse` on that node, exporting traces to `otlp`.
async fn start_site(certs: &Certs, port: u16, otlp: &str) -> Spawned {
    let node = format!("{NODE}=127.0.0.1:{port}");
    let (ca, cert, key) = (
        certs.path("ca.pem"),
        certs.path("fe.pem"),
        certs.path("fe.key"),
    );
    let args = [
        "--node",
        &node,
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--otlp-endpoint",
        otlp,
    ];
    let site = Spawned::start(&args, None);
    site.wait_ready().await;
    site
}

async fn classify(site: &Spawned, traceparent: Option<&str>) -> Value {
    let form = reqwest::multipart::Form::new().part("file", part(png(3), "x.png", "image/png"));
    let mut req = client()
        .post(site.url("/api/v1/classify?wait=true"))
        .multipart(form);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let r = req.send().await.expect("POST");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("JSON");
    body["results"][0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_the_caller_the_front_end_and_the_node() {
    let collector = Collector::start().await;
    let certs = Certs::new();
    let port = free_udp_port();
    let mut node = start_node(&certs, port, &collector.endpoint());
    let mut site = start_site(&certs, port, &collector.endpoint()).await;

    let traceparent = format!("00-{TRACE_ID}-{CALLER_SPAN}-01");
    let result = classify(&site, Some(&traceparent)).await;
    assert_eq!(result["status"], "ok", "{result}");
    let job_id = result["id"].as_str().expect("a job id").to_string();

    // Draining flushes the exporters: no waiting for the batch interval.
    assert!(site.terminate().success());
    node.terminate();
    let spans = collector.spans();

    let front: Vec<_> = spans.iter().filter(|s| s.span.name == "image").collect();
    assert_eq!(front.len(), 1, "one front-end span per image: {spans:#?}");
    let front = front[0];
    assert_eq!(front.service, "glimpse");
    assert_eq!(hex(&front.span.trace_id), TRACE_ID, "the header's trace");
    assert_eq!(
        hex(&front.span.parent_span_id),
        CALLER_SPAN,
        "the caller's span"
    );
    assert_eq!(
        front.text("glimpse.job_id").as_deref(),
        Some(job_id.as_str())
    );
    assert_eq!(front.text("glimpse.node").as_deref(), Some(NODE));
    assert_eq!(front.int("glimpse.attempts"), Some(1));
    assert_eq!(front.text("glimpse.outcome").as_deref(), Some("ok"));
    assert!(front.span.end_time_unix_nano >= front.span.start_time_unix_nano);

    let on_node: Vec<_> = spans
        .iter()
        .filter(|s| s.span.name == "node.classify")
        .collect();
    assert_eq!(on_node.len(), 1, "one attempt, one node span: {spans:#?}");
    let on_node = on_node[0];
    assert_eq!(on_node.service, "glimpse-node");
    assert_eq!(hex(&on_node.span.trace_id), TRACE_ID, "the same trace");
    assert_eq!(
        on_node.span.parent_span_id, front.span.span_id,
        "the node's span is a child of the front-end's"
    );
    assert_eq!(on_node.text("glimpse.node").as_deref(), Some(NODE));
    assert_eq!(on_node.int("glimpse.attempt"), Some(1));
    assert_eq!(on_node.text("glimpse.outcome").as_deref(), Some("ok"));
    assert!(on_node.int("glimpse.batch_size").is_some_and(|n| n >= 1));
    assert!(on_node.attr("glimpse.infer_ms").is_some());
    assert!(on_node.attr("glimpse.decode_preprocess_ms").is_some());

    // The steps inside the attempt are `#[instrument]`ed functions, children of its span.
    let infer: Vec<_> = spans
        .iter()
        .filter(|s| s.span.name == "node.infer")
        .collect();
    assert_eq!(
        infer.len(),
        1,
        "one queue-and-forward-pass span: {spans:#?}"
    );
    assert_eq!(infer[0].span.parent_span_id, on_node.span.span_id);
    assert_eq!(hex(&infer[0].span.trace_id), TRACE_ID);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_only_the_spans() {
    // A port nothing listens on: bound, then closed.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let certs = Certs::new();
    let port = free_udp_port();
    let mut node = start_node(&certs, port, &down);
    let mut site = start_site(&certs, port, &down).await;
    for _ in 0..3 {
        let result = classify(&site, None).await;
        assert_eq!(result["status"], "ok", "{result}");
    }
    assert!(site.terminate().success());
    node.terminate();
}
