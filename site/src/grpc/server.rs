//! The gRPC listener: our own TCP accept loop, a rustls handshake (the HTTPS certificate,
//! ALPN `h2` only) and hyper's HTTP/2 server running tonic's generated service as a tower
//! service, as [`crate::http::server`] runs warp's routes. tonic's own transport is not used: it
//! would bring a second server stack, and this way gRPC connections take slots in the same
//! [`Registry`] as every other listener (one budget below the file-descriptor limit, the
//! handshake, first-request and idle timeouts, reclaiming the longest-idle or the slowest
//! sender, refusals answered with a gRPC status), and shut down with the site.
//!
//! A request flows: accept → connection slot → TLS → HTTP/2 → [`Admitted`] (in flight for
//! the idle timer; caller identified and rate limited from the metadata and the peer
//! address, before the message is read; body wrapped in [`Paid`], paid for and paced) →
//! tonic decodes the message with the bounded codec (`codec`, `scan`) →
//! [`Inference`](super::service::Inference).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::Status;

use super::body::{Paid, limit_for, message_limit};
use super::service::Inference;
use crate::access::caller::PeerAddr;
use crate::http::conn::{Answer, ConnState, Listener, Registry, TrackedBody};
use crate::http::server::{Accepted, h2_settings, serve_listener};
use crate::site::Site;
use glimpse_wire::proto::grpc_inference_service_server::GrpcInferenceServiceServer;

/// The generated server over our service.
type Grpc = GrpcInferenceServiceServer<Inference>;

/// The TLS configuration of the gRPC listener: the HTTPS one (same certificate and key)
/// offering only `h2`, since gRPC is HTTP/2 only.
fn h2_only(https: &rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    let mut config = https.clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// Serve KServe v2 gRPC for `site` on `listener` until `shutdown` completes, with `tls`'s
/// certificate. Connections take slots in `registry` (shared with the other listeners); a
/// refused one gets a trailers-only `RESOURCE_EXHAUSTED` or `UNAVAILABLE`. On shutdown: stop accepting, let
/// open calls finish (bounded by [`GRACE`]), then close.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    registry: Arc<Registry>,
    site: Arc<Site>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = TlsAcceptor::from(h2_only(&tls));
    let refusal = Answer::Grpc {
        tls: acceptor.clone(),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new()).http2_only();
    h2_settings(builder.http2());
    let grpc = GrpcInferenceServiceServer::new(Inference::new(site.clone()))
        .max_decoding_message_size(message_limit(&site));
    let serve_connection = move |c: Accepted| {
        let service = Admitted {
            inner: grpc.clone(),
            site: site.clone(),
            peer: c.peer,
            state: c.state,
        };
        builder
            .serve_connection(c.io, TowerToHyperService::new(service))
            .into_owned()
    };
    serve_listener(
        listener,
        Some(acceptor),
        registry,
        Listener::Grpc,
        refusal,
        shutdown,
        serve_connection,
    )
    .await;
}

/// The service of one gRPC connection: marks each call in flight until its response ends
/// (the connection's idle timer waits meanwhile), admits the caller from the call's
/// metadata and the peer address before its message is read (a caller without a valid key,
/// or over its rate, is refused without the server buffering what it sends), and meters the
/// body (see [`Paid`]). The [`Caller`](crate::access::caller::Caller) and the peer address go to
/// the method in the request's extensions.
#[derive(Clone)]
pub(crate) struct Admitted {
    inner: Grpc,
    site: Arc<Site>,
    peer: SocketAddr,
    state: Arc<ConnState>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower_service::Service<Request<Incoming>> for Admitted {
    type Response = Response<TrackedBody<tonic::body::Body>>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<Request<Paid<Incoming>>>::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let in_flight = self.state.begin();
        let track = move |body| TrackedBody::new(body, in_flight);
        let (mut parts, body) = req.into_parts();
        match self.site.admit(&parts.headers, Some(self.peer)) {
            Ok(caller) => {
                parts.extensions.insert(caller);
            }
            Err(refused) => {
                let status = Status::from(refused);
                let code = u16::try_from(status.code() as i32).unwrap_or(u16::MAX);
                self.site
                    .metrics
                    .grpc_call(parts.uri.path(), code, std::time::Duration::ZERO);
                let resp = status.into_http::<tonic::body::Body>();
                return Box::pin(std::future::ready(Ok(resp.map(track))));
            }
        }
        parts.extensions.insert(PeerAddr(self.peer));
        let path = parts.uri.path().to_string();
        let (body, paid) = Paid::new(
            body,
            self.site.clone(),
            limit_for(&path, &self.site),
            self.state.clone(),
        );
        parts.extensions.insert(paid);
        let req = Request::from_parts(parts, body);
        let fut = tower_service::Service::call(&mut self.inner, req);
        let site = self.site.clone();
        let started = std::time::Instant::now();
        Box::pin(async move {
            let resp = fut.await?;
            // Every method is unary: an error comes as a trailers-only response, its
            // grpc-status in the headers; a success carries it in the trailers (0).
            let code = resp
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            site.metrics.grpc_call(&path, code, started.elapsed());
            Ok(resp.map(track))
        })
    }
}
