//! HTTP/3 on the public port: the page and every API over QUIC (`h3` on `h3-quinn`, on the
//! quinn the transport uses), so a browser's uploads ride one QUIC stream each and a lost
//! packet stalls only the upload it belongs to, as behind the front-end.
//!
//! Only glue lives here. Each request stream becomes an `http::Request` whose body streams
//! from the QUIC stream ([`body::H3Body`]); it goes through the same [`Tracked`] warp service
//! as HTTPS (the same routes, limits, keys and budgets, nothing implemented twice), and the
//! response streams back ([`respond`]). HTTPS advertises it with `Alt-Svc` ([`advertised`]).
//!
//! The defences HTTPS has, and QUIC's own:
//! - every connection takes a slot in the one connection registry as
//!   [`Listener::Http3`], from the public pool and counted per client address, with the
//!   handshake, header and idle timeouts, and is closed when evicted;
//! - while more than [`VALIDATE_ABOVE`] handshakes are in progress, a client must first
//!   prove it owns its address (a Retry), so a spoofed source cannot make the server do
//!   work or send to a victim;
//! - no 0-RTT: nothing is processed before the handshake completes, so nothing can be
//!   replayed;
//! - request streams per connection are capped as HTTP/2's are ([`MAX_STREAMS`]),
//!   unidirectional ones at [`MAX_UNI_STREAMS`], header sections at the HTTPS limit; QPACK's
//!   dynamic table is never offered (h3 advertises a capacity of 0), so it costs nothing;
//! - flow-control windows bound what one connection can make the server buffer;
//! - shutdown: GOAWAY, open requests finish within the grace period, then the endpoint
//!   closes.

pub(crate) mod body;
pub(crate) mod respond;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use h3::server::RequestResolver;
use quinn::crypto::rustls::QuicServerConfig;
use quinn::{IdleTimeout, VarInt};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower_service::Service;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, header};
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::http::conn::{
    ConnLimits, ConnState, Listener, MAX_HEADER_BYTES, Registry, Ticket, Tracked,
};
use crate::http::server::{GRACE, ServerError, run_until_closed};
use body::H3Body;

/// Most request streams a client may have open on one connection: HTTP/2's
/// `max_concurrent_streams` (see [`crate::http::server::h2_settings`]).
pub const MAX_STREAMS: u32 = 128;
/// Unidirectional streams a client may hold open: its control stream, QPACK's two, and room
/// for reserved (grease) stream types, which are read and discarded.
pub const MAX_UNI_STREAMS: u32 = 8;
/// Handshakes in progress above which a new client must prove its address with a Retry
/// first (one more round trip for it, no work for the server until it does).
pub const VALIDATE_ABOVE: usize = 64;
/// Receive window of one request stream: enough for 80 Mbit/s at 100 ms of round trip.
const STREAM_WINDOW: u32 = 1 << 20;
/// Receive window of a connection, over all its streams: what one client can make the
/// server hold before it reads.
const CONNECTION_WINDOW: u32 = 4 << 20;
/// On shutdown, how long a connection whose requests are done waits for its last responses
/// to be delivered before it closes: four round trips, within these bounds.
const CLOSE_LINGER_MIN: std::time::Duration = std::time::Duration::from_millis(200);
const CLOSE_LINGER_MAX: std::time::Duration = std::time::Duration::from_secs(2);
/// HTTP/3's "no error" code, for closing a connection that is done.
const H3_NO_ERROR: u32 = 0x100;

/// Binds the HTTP/3 listener's UDP socket at `addr`. `fallback`: when `addr`'s port is taken
/// and the HTTPS listener was given any port (0), take any free port instead (`Alt-Svc`
/// names whichever it is).
pub fn bind(
    addr: SocketAddr,
    fallback: Option<SocketAddr>,
) -> Result<std::net::UdpSocket, ServerError> {
    let bind = |at: SocketAddr| {
        std::net::UdpSocket::bind(at).map_err(|error| ServerError::Bind {
            flag: "--h3-listen",
            addr: at,
            error,
        })
    };
    match (bind(addr), fallback) {
        (Err(ServerError::Bind { error, .. }), Some(any))
            if error.kind() == std::io::ErrorKind::AddrInUse =>
        {
            bind(any)
        }
        (bound, _) => bound,
    }
}

/// The QUIC server configuration: the HTTPS certificate and key (`tls`) with ALPN `h3`,
/// TLS 1.3 (QUIC has no other), no 0-RTT, the stream and window limits above, and the idle
/// timeout of `limits`.
pub fn server_config(
    tls: &rustls::ServerConfig,
    limits: &ConnLimits,
) -> Result<quinn::ServerConfig, ServerError> {
    let mut tls = tls.clone();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls)
        .map_err(|e| ServerError::Config(format!("HTTP/3 needs TLS 1.3: {e}")))?;
    let idle = IdleTimeout::try_from(limits.idle_timeout)
        .map_err(|e| ServerError::Config(format!("HTTP/3 idle timeout: {e}")))?;
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(MAX_STREAMS))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .stream_receive_window(VarInt::from_u32(STREAM_WINDOW))
        .receive_window(VarInt::from_u32(CONNECTION_WINDOW))
        .max_idle_timeout(Some(idle));
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// `routes` with `Alt-Svc: h3=":PORT"; ma=86400` on every response, so a browser that
/// reached HTTPS switches to HTTP/3 on `port` by itself (and remembers it for a day).
pub fn advertised(routes: BoxedFilter<(Response,)>, port: u16) -> BoxedFilter<(Response,)> {
    let Ok(value) = HeaderValue::try_from(format!("h3=\":{port}\"; ma=86400")) else {
        return routes;
    };
    routes
        .map(move |mut response: Response| {
            response
                .headers_mut()
                .insert(header::ALT_SVC, value.clone());
            response
        })
        .boxed()
}

/// What every request of the listener is served with.
#[derive(Clone)]
struct Routes {
    routes: BoxedFilter<(Response,)>,
    hsts_max_age_s: u64,
    linger_bytes: u64,
}

/// Serves `routes` over HTTP/3 on `endpoint` until `shutdown` completes, every connection
/// in a slot of `registry` (see the module doc), then lets open requests finish within
/// [`GRACE`] and closes.
pub async fn serve(
    endpoint: quinn::Endpoint,
    registry: Arc<Registry>,
    routes: BoxedFilter<(Response,)>,
    hsts_max_age_s: u64,
    shutdown: impl Future<Output = ()> + Send,
) {
    let routes = Routes {
        routes,
        hsts_max_age_s,
        linger_bytes: registry.limits().linger_bytes,
    };
    let handshaking = Arc::new(AtomicUsize::new(0));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => match incoming {
                Some(incoming) => incoming,
                None => break,
            },
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let peer = incoming.remote_address();
        if !incoming.remote_address_validated()
            && incoming.may_retry()
            && handshaking.load(Ordering::Relaxed) >= VALIDATE_ABOVE
        {
            // Costs the server one stateless packet, smaller than the client's Initial; the
            // client comes back with a token. Counted before it leaves (`may_retry` said it
            // can), so whoever sees the packet sees the count.
            registry
                .counters
                .retries_sent
                .fetch_add(1, Ordering::Relaxed);
            let _ = incoming.retry();
            continue;
        }
        let ticket = match registry.admit(peer.ip(), Listener::Http3) {
            Ok(ticket) => ticket,
            Err(why) => {
                tracing::debug!(%peer, ?why, "HTTP/3 connection refused");
                incoming.refuse();
                continue;
            }
        };
        let connecting = match incoming.accept() {
            Ok(connecting) => connecting,
            Err(e) => {
                tracing::debug!(%peer, "HTTP/3 connection failed at once: {e}");
                continue;
            }
        };
        connections.spawn(connection(
            connecting,
            ticket,
            peer,
            registry.clone(),
            routes.clone(),
            stopping.clone(),
            Handshaking::enter(&handshaking),
        ));
    }
    let _ = stop.send(true);
    let drained = tokio::time::timeout(GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            "{} HTTP/3 connections still open after {GRACE:?}; closing them",
            connections.len()
        );
    }
    connections.shutdown().await;
    endpoint.close(VarInt::from_u32(H3_NO_ERROR), b"shutting down");
}

/// One handshake in progress, counted while it lives.
struct Handshaking(Arc<AtomicUsize>);

impl Handshaking {
    fn enter(count: &Arc<AtomicUsize>) -> Handshaking {
        count.fetch_add(1, Ordering::Relaxed);
        Handshaking(count.clone())
    }
}

impl Drop for Handshaking {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connection: the handshake (bounded by the handshake timeout, abandoned if evicted),
/// then its requests until it ends, idles out, is evicted or the listener stops.
async fn connection(
    connecting: quinn::Connecting,
    ticket: Ticket,
    peer: SocketAddr,
    registry: Arc<Registry>,
    routes: Routes,
    mut stopping: watch::Receiver<bool>,
    handshaking: Handshaking,
) {
    let state = ticket.state().clone();
    let handshake = tokio::time::timeout(registry.limits().handshake_timeout, connecting);
    let connected = tokio::select! {
        r = handshake => r,
        () = state.evicted() => return,
    };
    drop(handshaking);
    let conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%peer, "HTTP/3 handshake failed: {e}");
            return;
        }
        Err(_) => {
            registry.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "HTTP/3 handshake timed out");
            return;
        }
    };
    let quic = conn.clone();
    let header_timeout = registry.limits().header_timeout;
    let served = requests(conn, &state, peer, &routes, header_timeout, &mut stopping);
    run_until_closed(served, &state, &registry, peer, Listener::Http3).await;
    quic.close(VarInt::from_u32(H3_NO_ERROR), b"");
    drop(ticket);
}

/// Accepts the connection's request streams and serves each on a task of its own; on
/// shutdown sends GOAWAY and waits for the open ones.
async fn requests(
    conn: quinn::Connection,
    state: &Arc<ConnState>,
    peer: SocketAddr,
    routes: &Routes,
    header_timeout: std::time::Duration,
    stopping: &mut watch::Receiver<bool>,
) -> Result<(), h3::error::ConnectionError> {
    let quic = conn.clone();
    let mut h3 = h3::server::builder()
        .max_field_section_size(MAX_HEADER_BYTES as u64)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await?;
    let mut open = JoinSet::new();
    loop {
        tokio::select! {
            accepted = h3.accept() => match accepted? {
                Some(resolver) => {
                    let service = Tracked::new(
                        warp::service(routes.routes.clone()),
                        state.clone(),
                        peer,
                        routes.hsts_max_age_s,
                        routes.linger_bytes,
                    );
                    open.spawn(request(
                        resolver,
                        service,
                        state.clone(),
                        header_timeout,
                        routes.hsts_max_age_s,
                    ));
                }
                None => break,
            },
            changed = stopping.changed() => {
                if changed.is_err() || *stopping.borrow() {
                    h3.shutdown(0).await?;
                    break;
                }
            }
            Some(_) = open.join_next(), if !open.is_empty() => {}
        }
    }
    while open.join_next().await.is_some() {}
    if *stopping.borrow() {
        // The last responses may still be on their way, and closing a QUIC connection (as
        // dropping `h3` does) discards stream data the peer has not acknowledged. Give them a
        // few round trips, or until the client, which saw GOAWAY, closes first.
        let linger = (quic.rtt() * 4).clamp(CLOSE_LINGER_MIN, CLOSE_LINGER_MAX);
        let _ = tokio::time::timeout(linger, quic.closed()).await;
    }
    Ok(())
}

/// One request: its head (within the header timeout), the routes, the response.
async fn request<S>(
    resolver: RequestResolver<h3_quinn::Connection, Bytes>,
    mut service: Tracked<S>,
    state: Arc<ConnState>,
    header_timeout: std::time::Duration,
    hsts_max_age_s: u64,
) where
    Tracked<S>: Service<
            warp::http::Request<H3Body>,
            Response = warp::http::Response<
                crate::http::conn::TrackedBody<crate::http::conn::WarpBody>,
            >,
            Error = std::convert::Infallible,
        >,
{
    let (request, stream) =
        match tokio::time::timeout(header_timeout, resolver.resolve_request()).await {
            Ok(Ok(resolved)) => resolved,
            Ok(Err(e)) => {
                tracing::debug!("HTTP/3 request refused: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("HTTP/3 request head timed out");
                return;
            }
        };
    let (mut send, recv) = stream.split();
    let head_only = request.method() == warp::http::Method::HEAD;
    let response = match body::declared_length(request.headers()) {
        Ok(declared) => {
            let request = request.map(|()| H3Body::new(recv, state, declared));
            match service.call(request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
        Err(bad) => crate::http::reply::harden(bad.into_response(), hsts_max_age_s)
            .map(|body| crate::http::conn::TrackedBody::new(body, state.begin())),
    };
    if let Err(e) = respond::send(&mut send, response, head_only).await {
        tracing::debug!("HTTP/3 response not sent: {e}");
    }
}
