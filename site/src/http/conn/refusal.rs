//! Answering a connection the registry refused, instead of dropping it at accept.
//!
//! A client whose connection is closed right after `accept` sees a reset and no reason; a
//! browser behind a busy NAT, or a client library, then retries at once or gives up. So a
//! refused connection gets an answer when there is room for one: on the public HTTPS
//! listener, after the TLS handshake, a JSON 429 (its address is over its cap) or 503 (every
//! slot is busy) with `Retry-After`, then `Connection: close` on HTTP/1.1 or GOAWAY on h2; on
//! the gRPC listener a trailers-only response, `RESOURCE_EXHAUSTED` or `UNAVAILABLE`, with
//! `grpc-retry-pushback-ms`, then GOAWAY; on the plain-HTTP listeners (redirect, admin) the
//! same JSON without TLS. On HTTP/1.1 the rest of the request body is read and thrown away
//! after the answer (a "lingering close"), so a client that sends before it reads sees the
//! answer, not a reset.
//!
//! Each answer holds a descriptor from the reserve ([`super::FD_RESERVE`]), so at most
//! [`super::REFUSALS_AT_ONCE`] are in progress and each has [`REFUSAL_TIME`] from accept to close,
//! handshake included. Past that budget a refused connection is dropped at accept (and
//! counted as `refusal_dropped`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;
use warp::Reply;
use warp::http::{HeaderValue, header};

use super::registry::{Refused, Registry};
use crate::http::error::ApiError;
use crate::http::reply::harden;

/// Time a refused connection has, from accept to close: its TLS handshake, its request
/// head, our answer, and reading what is left of its body.
pub const REFUSAL_TIME: Duration = Duration::from_secs(3);

/// How a listener answers the connections it refuses.
#[derive(Clone)]
pub enum Answer {
    /// The public HTTPS listener: TLS, then HTTP/1.1 or h2 as ALPN chose, with HSTS.
    Https {
        /// The listener's TLS acceptor.
        tls: TlsAcceptor,
        /// `Strict-Transport-Security` max-age (0: none).
        hsts_max_age_s: u64,
    },
    /// The gRPC listener: TLS, h2, a trailers-only gRPC status.
    Grpc {
        /// The listener's TLS acceptor.
        tls: TlsAcceptor,
    },
    /// A plain-HTTP listener (redirect, admin): HTTP/1.1 without TLS.
    Plain,
}

/// Answer the refused connection `tcp` from `peer` in the background, if the refusal budget
/// allows; otherwise close it now.
pub fn refuse(
    registry: &Arc<Registry>,
    tcp: TcpStream,
    peer: SocketAddr,
    why: Refused,
    answer: &Answer,
) {
    let Ok(permit) = registry.refusals.clone().try_acquire_owned() else {
        registry
            .counters
            .refusals_dropped
            .fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%peer, ?why, "connection refused without an answer: the refusal budget is spent");
        return;
    };
    tracing::debug!(%peer, ?why, "connection refused; answering");
    let registry = registry.clone();
    let answer = answer.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let send = answer.send(tcp, why, registry);
        if tokio::time::timeout(REFUSAL_TIME, send).await.is_err() {
            tracing::debug!(%peer, "refusal answer ran out of time");
        }
    });
}

impl Answer {
    async fn send(self, tcp: TcpStream, why: Refused, registry: Arc<Registry>) {
        let retry_after_s = registry.limits().retry_after_s;
        match self {
            Answer::Plain => {
                let answer = move || http_refusal(why, retry_after_s, None, true);
                h1(tcp, answer, registry).await;
            }
            Answer::Https {
                tls,
                hsts_max_age_s,
            } => {
                let Ok(tls) = tls.accept(tcp).await else {
                    return;
                };
                let is_h2 = tls.get_ref().1.alpn_protocol() == Some(&b"h2"[..]);
                let hsts = Some(hsts_max_age_s);
                if is_h2 {
                    h2(
                        tls,
                        move || http_refusal(why, retry_after_s, hsts, false),
                        registry,
                    )
                    .await;
                } else {
                    h1(
                        tls,
                        move || http_refusal(why, retry_after_s, hsts, true),
                        registry,
                    )
                    .await;
                }
            }
            Answer::Grpc { tls } => {
                let Ok(tls) = tls.accept(tcp).await else {
                    return;
                };
                h2(tls, move || grpc_refusal(why, retry_after_s), registry).await;
            }
        }
    }
}

/// The JSON answer: 429 over the address's cap, 503 when full, both with `Retry-After`;
/// HSTS and `nosniff` on HTTPS (`hsts`), `Connection: close` on HTTP/1.1 (`close`).
pub(crate) fn http_refusal(
    why: Refused,
    retry_after_s: u64,
    hsts: Option<u64>,
    close: bool,
) -> warp::reply::Response {
    let err = match why {
        Refused::PerIp => ApiError::too_many(
            "too many connections from your address; close some, or retry later",
            retry_after_s,
        ),
        Refused::Full => {
            ApiError::unavailable("every connection slot is busy; retry later", retry_after_s)
        }
    };
    let mut resp = err.into_response();
    if let Some(max_age) = hsts {
        resp = harden(resp, max_age);
    }
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The gRPC answer: a trailers-only response, `RESOURCE_EXHAUSTED` over the address's cap,
/// `UNAVAILABLE` when full (the code gRPC clients retry), with the retry delay as gRPC's
/// `grpc-retry-pushback-ms`.
pub(crate) fn grpc_refusal(why: Refused, retry_after_s: u64) -> Response<tonic::body::Body> {
    let status = match why {
        Refused::PerIp => tonic::Status::resource_exhausted(
            "too many connections from your address; close some, or retry later",
        ),
        Refused::Full => tonic::Status::unavailable("every connection slot is busy; retry later"),
    };
    let mut resp = status.into_http::<tonic::body::Body>();
    if let Ok(v) = HeaderValue::from_str(&retry_after_s.max(1).saturating_mul(1000).to_string()) {
        resp.headers_mut().insert("grpc-retry-pushback-ms", v);
    }
    resp
}

/// Serves `answer` to the one request of an HTTP/1.1 connection, closes our side, and reads
/// what the client still sends until it closes too (bounded by the caller's deadline).
async fn h1<I, B>(
    io: I,
    answer: impl Fn() -> Response<B> + Send + Sync + 'static,
    registry: Arc<Registry>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
        registry
            .counters
            .refusals_answered
            .fetch_add(1, Ordering::Relaxed);
        std::future::ready(Ok::<_, Infallible>(answer()))
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REFUSAL_TIME)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service)
        .without_shutdown();
    let Ok(parts) = conn.await else {
        return;
    };
    let mut io = parts.io.into_inner();
    if io.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 8192];
    while let Ok(n) = io.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// Serves `answer` to the first stream of an h2 connection (others are refused by the
/// one-stream cap), then sends GOAWAY and lets the answer finish.
async fn h2<I, B>(
    io: I,
    answer: impl Fn() -> Response<B> + Send + Sync + 'static,
    registry: Arc<Registry>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let answered = Arc::new(Notify::new());
    let notify = answered.clone();
    let service = hyper::service::service_fn(move |_req: Request<Incoming>| {
        registry
            .counters
            .refusals_answered
            .fetch_add(1, Ordering::Relaxed);
        notify.notify_one();
        std::future::ready(Ok::<_, Infallible>(answer()))
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).max_concurrent_streams(1);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = answered.notified() => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_why_and_when_to_come_back() {
        let r = http_refusal(Refused::PerIp, 3, Some(60), true);
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "3");
        assert_eq!(r.headers()[header::CONNECTION], "close");
        assert!(r.headers().contains_key(header::STRICT_TRANSPORT_SECURITY));
        let r = http_refusal(Refused::Full, 2, None, false);
        assert_eq!(r.status(), 503);
        assert!(!r.headers().contains_key(header::CONNECTION));
        let g = grpc_refusal(Refused::PerIp, 2);
        assert_eq!(g.status(), 200);
        assert_eq!(g.headers()["grpc-status"], "8");
        assert_eq!(g.headers()["grpc-retry-pushback-ms"], "2000");
        assert_eq!(
            grpc_refusal(Refused::Full, 2).headers()["grpc-status"],
            "14"
        );
    }
}
