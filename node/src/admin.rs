//! `--admin-listen`: plain HTTP for operators and orchestrators, apart from the QUIC port.
//!
//! - `GET /healthz`: 200 while the process runs (a liveness probe: restart only if this
//!   stops answering);
//! - `GET /readyz`: 200 when the model is loaded and the node is not draining, else 503 with
//!   the reason (a readiness probe);
//! - `GET /metrics`: the node's Prometheus metrics ([`crate::observe`]).
//!
//! hyper's HTTP/1 server, which the workspace already builds for the front-end. Bind it to
//! a private address: it has no authentication, like Triton's metrics port.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::observe::Observed;

/// How long a client may take to send its request headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the admin routes on `listener` until the task is aborted.
pub(crate) fn serve(listener: TcpListener, observed: Arc<Observed>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "admin listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let observed = observed.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let observed = observed.clone();
                    async move { Ok::<_, Infallible>(respond(&req, &observed)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// Binds the admin address (before the model loads, so `/healthz` answers during a long
/// load).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

fn respond(req: &Request<Incoming>, observed: &Observed) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match observed.not_ready() {
            None => text(StatusCode::OK, "ready\n"),
            Some(why) => text(StatusCode::SERVICE_UNAVAILABLE, &format!("{why}\n")),
        },
        "/metrics" => {
            let mut resp = Response::new(Full::new(Bytes::from(observed.metrics_page())));
            resp.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(glimpse_ops::exposition::CONTENT_TYPE),
            );
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: /healthz, /readyz and /metrics are served here\n",
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
