//! The per-connection tower service of the warp listeners: in-flight tracking, the peer
//! address for handlers, and JSON answers to oversized request heads.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use warp::Reply;
use warp::http::{Request, Response, StatusCode};

use super::lingering::Lingering;
use super::registry::{ConnState, InFlight};
use crate::access::caller::PeerAddr;
use crate::http::error::ApiError;

/// Longest request target (path and query) accepted, in bytes; longer ones get a JSON 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header bytes (names, values and separators) accepted; more get a JSON 431. hyper's
/// own limits sit above these, so this answer, not hyper's empty one, is what clients see.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields accepted; more get a JSON 431 (hyper's own cap is set above it, see
/// [`HYPER_MAX_HEADERS`]).
pub const MAX_HEADER_COUNT: usize = 128;
/// hyper's HTTP/1 header-count cap (its default is 100, answered with an empty 431): above
/// [`MAX_HEADER_COUNT`], so our JSON answer comes first.
pub const HYPER_MAX_HEADERS: usize = 4 * MAX_HEADER_COUNT;

/// Wraps the routes as a tower service for one connection: marks each request in flight
/// until its response body ends, gives handlers the peer address, and answers an oversized
/// request target or header section with JSON itself. Request bodies linger (see
/// [`Lingering`]).
#[derive(Clone)]
pub struct Tracked<S> {
    inner: S,
    state: Arc<ConnState>,
    peer: SocketAddr,
    hsts_max_age_s: u64,
    linger_bytes: u64,
}

impl<S> Tracked<S> {
    /// Wraps the service of one connection (`state`) from `peer`.
    pub fn new(
        inner: S,
        state: Arc<ConnState>,
        peer: SocketAddr,
        hsts_max_age_s: u64,
        linger_bytes: u64,
    ) -> Tracked<S> {
        Tracked {
            inner,
            state,
            peer,
            hsts_max_age_s,
            linger_bytes,
        }
    }
}

/// The connection a request arrived on, in its extensions, so that its body can be paced
/// among the other requests on it (see [`crate::http::pace`]).
#[derive(Debug, Clone)]
pub struct OnConnection(pub Arc<ConnState>);

/// Names the body type of a response (warp's is not exported by name).
pub trait ResponseBody {
    /// The body type.
    type Body;
}

impl<B> ResponseBody for Response<B> {
    type Body = B;
}

/// warp's response body.
pub type WarpBody = <warp::reply::Response as ResponseBody>::Body;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<Request<B>> for Tracked<S>
where
    S: tower_service::Service<
            Request<Lingering<B>>,
            Response = warp::reply::Response,
            Error = std::convert::Infallible,
        >,
    S::Future: Send + 'static,
    B: Body + Send + Unpin + 'static,
{
    type Response = Response<TrackedBody<WarpBody>>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let linger_bytes = self.linger_bytes;
        let mut req = req.map(|body| Lingering::new(body, linger_bytes));
        let in_flight = self.state.begin();
        let track = move |body| TrackedBody {
            inner: body,
            _in_flight: in_flight,
        };
        if let Some(err) = oversized(&req) {
            let resp = crate::http::reply::harden(err.into_response(), self.hsts_max_age_s);
            return Box::pin(std::future::ready(Ok(resp.map(track))));
        }
        req.extensions_mut().insert(PeerAddr(self.peer));
        req.extensions_mut()
            .insert(OnConnection(self.state.clone()));
        // A HEAD response has no content (RFC 9110, 9.3.2); over HTTP/2 a body after it is a
        // protocol error the client resets the stream for. The head (Content-Length
        // included) stays.
        let head_only = req.method() == warp::http::Method::HEAD;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
            let resp = if head_only {
                resp.map(|_| WarpBody::default())
            } else {
                resp
            };
            Ok(resp.map(track))
        })
    }
}

/// A 414 or 431 for a request whose target or headers are over the limits.
fn oversized<B>(req: &Request<B>) -> Option<ApiError> {
    let target = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_URI_BYTES {
        return Some(ApiError::new(
            StatusCode::URI_TOO_LONG,
            format!("the request target is {target} bytes; the limit is {MAX_URI_BYTES}"),
        ));
    }
    let count = req.headers().len();
    if count > MAX_HEADER_COUNT {
        return Some(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request has {count} header fields; the limit is {MAX_HEADER_COUNT}"),
        ));
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if headers > MAX_HEADER_BYTES {
        return Some(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("the request headers are {headers} bytes; the limit is {MAX_HEADER_BYTES}"),
        ));
    }
    None
}

/// A response body that keeps its request in flight until it ends or is dropped.
pub struct TrackedBody<B> {
    inner: B,
    _in_flight: InFlight,
}

impl<B> TrackedBody<B> {
    /// `inner`, keeping `in_flight` until it ends (for listeners that wrap their own
    /// services, as gRPC's does).
    pub(crate) fn new(inner: B, in_flight: InFlight) -> TrackedBody<B> {
        TrackedBody {
            inner,
            _in_flight: in_flight,
        }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
