//! `--admin-listen`: plain HTTP for operators and orchestrators, apart from the QUIC port.
//!
//! - `GET /healthz`: 200 while the process runs (a liveness probe: restart only if this
//!   stops answering);
//! - `GET /readyz`: 200 when the model is loaded and the node is not draining, else 503 with
//!   the reason (a readiness probe);
//! - `GET /metrics`: the node's Prometheus metrics ([`crate::observe`]).
//!
//! hyper's HTTP/1 server, which the workspace already builds for the front-end. Bind it to
//! a private address: it has no authentication, like Triton's metrics port. Whoever reaches
//! it still holds little: at most [`MAX_CONNECTIONS`] connections at once (more are closed on
//! accept), each closed when its request head takes over [`HEADER_TIMEOUT`].

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

/// Connections served at once. Probes and a scraper need a handful; the cap keeps a peer that
/// opens connections and sends nothing from taking every file descriptor of the node.
pub(crate) const MAX_CONNECTIONS: usize = 64;

/// Serves the admin routes on `listener` until the task is aborted.
pub(crate) fn serve(listener: TcpListener, observed: Arc<Observed>) -> JoinHandle<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
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
            // Over the cap, the connection is closed at once (dropped).
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let observed = observed.clone();
            tokio::spawn(async move {
                let _slot = slot;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn healthz(addr: SocketAddr) -> Option<String> {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    }

    /// The attack: a peer opens more connections than the cap and sends nothing. The ones
    /// past the cap are closed at once, and once the peer's connections are gone, probes are
    /// answered again.
    #[tokio::test]
    async fn idle_connections_past_the_cap_are_closed_and_probes_come_back() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = AbortOnDrop(serve(
            listener,
            Arc::new(Observed::new(4, crate::lanes::Parallelism::default())),
        ));
        assert!(healthz(addr).await.unwrap().starts_with("HTTP/1.1 200"));

        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
        }
        // Let the server accept them all before the next one arrives.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "a connection past the cap is closed at once, got {read:?}"
        );

        drop(held);
        let mut answered = None;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            answered = healthz(addr)
                .await
                .filter(|r| r.starts_with("HTTP/1.1 200"));
            if answered.is_some() {
                break;
            }
        }
        assert!(
            answered.is_some(),
            "/healthz answers once the idle peers are gone"
        );
    }

    struct AbortOnDrop(JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
}
