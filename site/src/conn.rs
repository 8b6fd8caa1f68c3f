//! Connection admission and lifetimes on the HTTPS listener.
//!
//! Every accepted TCP connection takes a slot in the [`Registry`]: at most
//! `max_per_ip` per client address (the /64 for IPv6) and `max_total` overall, the latter
//! kept below the process's file-descriptor limit so `accept` itself never starts failing.
//! Each connection is watched: it must complete its TLS handshake within
//! `handshake_timeout`, send its first complete request head within `header_timeout`, and
//! is closed after `idle_timeout` without a request in flight. A request is in flight from
//! the moment its head is parsed until its response body is finished or dropped, so a long
//! upload or an open event stream keeps its connection, while a connection trickling header
//! bytes (slowloris) does not.
//!
//! When every slot is taken, a new connection evicts the connection that has been idle the
//! longest, preferring those that never completed a request, so a thousand trickling
//! sockets cannot lock a real client out; only when every connection is busy with a request
//! is the newcomer refused.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use warp::Reply;
use warp::http::{Request, Response, StatusCode};

use crate::caller::{PeerAddr, net_of};
use crate::error::ApiError;

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

/// Limits on connections (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// Connections open at once over all addresses (default: the fd limit minus 128).
    pub max_total: usize,
    /// Connections open at once from one address (an IPv6 /64 counts as one).
    pub max_per_ip: usize,
    /// Time a new connection has to finish its TLS handshake.
    pub handshake_timeout: Duration,
    /// Time a connection has to send its first complete request head.
    pub header_timeout: Duration,
    /// Time a connection may sit with no request in progress.
    pub idle_timeout: Duration,
    /// Most bytes of a refused request's body read and thrown away (see [`Lingering`]);
    /// the largest body the server would otherwise accept.
    pub linger_bytes: u64,
}

impl Default for ConnLimits {
    fn default() -> ConnLimits {
        ConnLimits {
            max_total: 4096,
            max_per_ip: 64,
            handshake_timeout: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            linger_bytes: 128 << 20,
        }
    }
}

/// How long a refused request's body is read and thrown away, at most.
pub const LINGER_TIME: Duration = Duration::from_secs(10);
/// A refused request's body that sends nothing for this long is no longer waited for.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);

/// File descriptors kept out of the connection cap for everything else the process opens
/// (QUIC and admin sockets, files, the accept that comes before a refusal).
pub const FD_RESERVE: u64 = 128;

/// The connection cap a file-descriptor limit allows: the limit minus [`FD_RESERVE`], at
/// least 16.
pub fn max_connections_for(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(FD_RESERVE).max(16)).unwrap_or(usize::MAX)
}

/// Raise the soft file-descriptor limit to the hard one (systemd's default soft limit is
/// 1024) and return the limit now in force.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
    }
    Ok(lim.rlim_cur)
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its address holds `max_per_ip` connections already.
    PerIp,
    /// Every slot is busy with a request.
    Full,
}

/// Counters of the registry, for `/metrics`.
#[derive(Debug, Default)]
pub struct ConnCounters {
    /// Connections admitted.
    pub accepted: AtomicU64,
    /// Connections refused because their address had its share open.
    pub refused_per_ip: AtomicU64,
    /// Connections refused because every slot was taken by active ones.
    pub refused_full: AtomicU64,
    /// Idle connections closed to make room for new ones.
    pub evicted: AtomicU64,
    /// Connections closed by the handshake, header or idle timeout.
    pub timed_out: AtomicU64,
}

/// All open connections of a listener.
#[derive(Debug)]
pub struct Registry {
    limits: ConnLimits,
    inner: Mutex<Slots>,
    next_id: AtomicU64,
    /// What became of connections, for `/metrics`.
    pub counters: ConnCounters,
}

#[derive(Debug, Default)]
struct Slots {
    open: HashMap<u64, Arc<ConnState>>,
    per_ip: HashMap<IpAddr, usize>,
}

/// One connection's live state.
#[derive(Debug)]
pub struct ConnState {
    id: u64,
    net: IpAddr,
    epoch: Instant,
    /// Requests in flight now.
    active: AtomicU32,
    /// Requests started so far.
    started: AtomicU64,
    /// Milliseconds after `epoch` when the connection last became idle.
    idle_since_ms: AtomicU64,
    /// Set once the registry no longer counts it (evicted, or closed).
    released: AtomicBool,
    evicted: AtomicBool,
    wake: Notify,
}

impl ConnState {
    fn idle_since(&self) -> Instant {
        self.epoch + Duration::from_millis(self.idle_since_ms.load(Ordering::SeqCst))
    }

    /// Whether the registry told this connection to close.
    pub fn is_evicted(&self) -> bool {
        self.evicted.load(Ordering::SeqCst)
    }

    /// Completes when the connection should close: evicted, or over its handshake/header/
    /// idle deadline with no request in flight. Returns whether it timed out (not evicted).
    pub async fn closing(&self, limits: &ConnLimits) -> bool {
        loop {
            if self.is_evicted() {
                return false;
            }
            let now = Instant::now();
            let deadline = if self.active.load(Ordering::SeqCst) > 0 {
                now + limits.idle_timeout
            } else if self.started.load(Ordering::SeqCst) == 0 {
                self.idle_since() + limits.header_timeout
            } else {
                self.idle_since() + limits.idle_timeout
            };
            if deadline <= now {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline.into()) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Completes once the connection is evicted.
    pub async fn evicted(&self) {
        while !self.is_evicted() {
            self.wake.notified().await;
        }
    }

    /// Marks a request in flight until the returned guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.active.fetch_add(1, Ordering::SeqCst);
        self.started.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// One request in flight on a connection; the connection is idle again when the last of
/// these drops (with the response body).
#[derive(Debug)]
pub struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let s = &self.0;
        let ms = u64::try_from(s.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        if s.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            s.idle_since_ms.store(ms, Ordering::SeqCst);
            s.wake.notify_one();
        }
    }
}

/// A connection's slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Ticket {
    registry: Arc<Registry>,
    state: Arc<ConnState>,
}

impl Ticket {
    /// The connection's state, for its watchdog and its requests.
    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.registry.release(&self.state);
    }
}

impl Registry {
    /// An empty registry enforcing `limits`.
    pub fn new(limits: ConnLimits) -> Arc<Registry> {
        Arc::new(Registry {
            limits,
            inner: Mutex::new(Slots::default()),
            next_id: AtomicU64::new(1),
            counters: ConnCounters::default(),
        })
    }

    /// The limits it enforces.
    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Take a slot for a connection from `peer`, evicting the longest-idle connection when
    /// all are taken.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, Refused> {
        let net = net_of(peer);
        let mut slots = self.lock();
        if slots.per_ip.get(&net).copied().unwrap_or(0) >= self.limits.max_per_ip {
            self.counters.refused_per_ip.fetch_add(1, Ordering::Relaxed);
            return Err(Refused::PerIp);
        }
        if slots.open.len() >= self.limits.max_total {
            let victim = slots
                .open
                .values()
                .filter(|c| c.active.load(Ordering::SeqCst) == 0)
                .min_by_key(|c| (c.started.load(Ordering::SeqCst) > 0, c.idle_since()))
                .cloned();
            let Some(victim) = victim else {
                self.counters.refused_full.fetch_add(1, Ordering::Relaxed);
                return Err(Refused::Full);
            };
            Self::forget(&mut slots, &victim);
            victim.evicted.store(true, Ordering::SeqCst);
            victim.wake.notify_one();
            self.counters.evicted.fetch_add(1, Ordering::Relaxed);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let epoch = Instant::now();
        let state = Arc::new(ConnState {
            id,
            net,
            epoch,
            active: AtomicU32::new(0),
            started: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            released: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            wake: Notify::new(),
        });
        slots.open.insert(id, state.clone());
        *slots.per_ip.entry(net).or_default() += 1;
        self.counters.accepted.fetch_add(1, Ordering::Relaxed);
        Ok(Ticket {
            registry: self.clone(),
            state,
        })
    }

    fn release(&self, state: &Arc<ConnState>) {
        let mut slots = self.lock();
        Self::forget(&mut slots, state);
    }

    /// Stop counting `state` (once, whoever gets there first: eviction or close).
    fn forget(slots: &mut Slots, state: &Arc<ConnState>) {
        if state.released.swap(true, Ordering::SeqCst) {
            return;
        }
        slots.open.remove(&state.id);
        if let Some(n) = slots.per_ip.get_mut(&state.net) {
            *n -= 1;
            if *n == 0 {
                slots.per_ip.remove(&state.net);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

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
            let resp = crate::reply::harden(err.into_response(), self.hsts_max_age_s);
            return Box::pin(std::future::ready(Ok(resp.map(track))));
        }
        req.extensions_mut().insert(PeerAddr(self.peer));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await?;
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

/// A request body that, if dropped before its end (the request was refused, or answered,
/// without reading all of it), is read to its end and thrown away in the background, within
/// `max_bytes`, [`LINGER_TIME`] and [`LINGER_IDLE`]. This is HTTP's "lingering close": many
/// clients (curl among them) send the whole body before they read the response, and would
/// otherwise see a broken pipe or a reset stream instead of the 401, 413 or 503 that explains
/// it. Nothing read is kept.
pub struct Lingering<B: Body + Send + Unpin + 'static> {
    inner: Option<B>,
    max_bytes: u64,
    ended: bool,
}

impl<B: Body + Send + Unpin + 'static> Lingering<B> {
    /// Wraps a refused request's body: reads and drops at most `max_bytes` of it.
    pub fn new(inner: B, max_bytes: u64) -> Lingering<B> {
        Lingering {
            inner: Some(inner),
            max_bytes,
            ended: false,
        }
    }
}

impl<B: Body + Send + Unpin + 'static> Body for Lingering<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl<B: Body + Send + Unpin + 'static> Drop for Lingering<B> {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.ended || inner.is_end_stream() {
            return;
        }
        // A body that says it is bigger than anything we would read is not waited for.
        if inner.size_hint().lower() > self.max_bytes {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(inner, self.max_bytes));
        }
    }
}

async fn drain<B: Body + Unpin>(mut body: B, max_bytes: u64) {
    use http_body_util::BodyExt;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut read = 0u64;
    while read <= max_bytes {
        let next = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + LINGER_IDLE),
            body.frame(),
        );
        match next.await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    read += bytes::Buf::remaining(data) as u64;
                }
            }
            Ok(Some(Err(_)) | None) | Err(_) => return,
        }
    }
}
