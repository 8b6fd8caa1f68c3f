//! HTTPS serving: our own TCP accept loop, a rustls handshake with ALPN `h2` and
//! `http/1.1`, and hyper-util's auto connection builder running warp's routes as a tower
//! service. warp 0.4 cannot do TLS itself and does not let a custom listener be plugged
//! in, so this is the supported way; it also lets every connection be admitted, watched
//! and closed by [`crate::http::conn`]. Shutdown is graceful: stop accepting, let open requests
//! finish (bounded by a grace period), then close.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulConnection, GracefulShutdown};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use warp::filters::BoxedFilter;
use warp::reply::Response;

use crate::http::conn::{Answer, ConnState, Listener, Metered, Registry, Ticket, Tracked, refuse};

/// Errors of the serving layer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("HTTPS certificate: {0}")]
    /// The certificate or key file is missing, unreadable or holds no usable PEM.
    Certificate(#[from] glimpse_certs::CertError),
    #[error("TLS configuration: {0}")]
    /// rustls refused the certificate and key.
    Tls(#[from] rustls::Error),
    #[error("generating a self-signed certificate: {0}")]
    /// The self-signed development certificate could not be made.
    Generate(#[from] rcgen::Error),
    #[error("socket: {0}")]
    /// Binding or serving failed.
    Io(#[from] std::io::Error),
    #[error("API keys: {0}")]
    /// The API key file is unusable.
    Keys(#[from] crate::access::auth::KeyFileError),
    #[error("{0}")]
    /// An inconsistent configuration.
    Config(String),
    /// A listener's address could not be bound; the message names the flag that sets it
    /// (`--listen 127.0.0.1:8443: address in use; pick another with --listen`).
    #[error("{}", bind_failure(flag, *addr, error))]
    Bind {
        /// The flag that chose the address.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What the OS said (already in the message, so not a `source`).
        error: std::io::Error,
    },
}

/// The server's TLS identity and how a user can check it.
pub struct TlsIdentity {
    /// The rustls configuration the listener serves with.
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), colon separated hex, as browsers show it.
    pub fingerprint: String,
    /// True when the certificate was generated at start (self-signed for localhost).
    pub self_signed: bool,
}

/// Load a PEM certificate chain and key, or generate a self-signed certificate for
/// `localhost`, 127.0.0.1 and ::1 when no files are given.
pub fn tls_identity(cert: Option<&Path>, key: Option<&Path>) -> Result<TlsIdentity, ServerError> {
    let (chain, key, self_signed) = match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = glimpse_certs::load_certs_file(cert)?;
            let key = glimpse_certs::load_key_file(key)?;
            (chain, key, false)
        }
        _ => {
            let names = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "::1".to_string(),
            ];
            let signed = rcgen::generate_simple_self_signed(names)?;
            let der = signed.cert.der().clone();
            let key = PrivateKeyDer::Pkcs8(signed.signing_key.serialize_der().into());
            (vec![der], key, true)
        }
    };
    let fingerprint = chain.first().map(|c| fingerprint(c)).unwrap_or_default();
    let config = server_config(chain, key)?;
    Ok(TlsIdentity {
        config,
        fingerprint,
        self_signed,
    })
}

/// rustls server config with the ring provider and ALPN for HTTP/2 and HTTP/1.1.
pub fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// SHA-256 fingerprint of a DER certificate, `AB:CD:...`.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// How long open connections get to finish after shutdown starts.
pub(crate) const GRACE: Duration = Duration::from_secs(10);

/// Serve `routes` on `listener` until `shutdown` completes: over TLS when `tls` is given
/// (the public listener), plain HTTP/1.1 or h2c otherwise (the admin listener). Every
/// connection takes a slot in `registry` as `kind`, which bounds how many there are over all
/// listeners and how long each may sit without a request (see [`crate::http::conn`]); a refused
/// one is answered (see [`crate::http::conn::refusal`]).
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    registry: Arc<Registry>,
    kind: Listener,
    routes: BoxedFilter<(Response,)>,
    hsts_max_age_s: u64,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let refusal = match &acceptor {
        Some(tls) => Answer::Https {
            tls: tls.clone(),
            hsts_max_age_s,
        },
        None => Answer::Plain,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_headers(crate::http::conn::HYPER_MAX_HEADERS);
    h2_settings(builder.http2());
    let linger_bytes = registry.limits().linger_bytes;
    let serve_connection = move |c: Accepted| {
        let svc = Tracked::new(
            warp::service(routes.clone()),
            c.state,
            c.peer,
            hsts_max_age_s,
            linger_bytes,
        );
        builder
            .serve_connection(c.io, TowerToHyperService::new(svc))
            .into_owned()
    };
    serve_listener(
        listener,
        acceptor,
        registry,
        kind,
        refusal,
        shutdown,
        serve_connection,
    )
    .await;
}

/// The HTTP/2 settings of every listener that speaks it (HTTPS, admin, gRPC).
pub(crate) fn h2_settings<E>(mut h2: auto::Http2Builder<'_, E>) {
    h2.timer(TokioTimer::new())
        // Pings find peers that vanished while an event stream or a call was open.
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_header_list_size(64 * 1024)
        .max_concurrent_streams(128);
}

/// An admitted connection, ready to be served: its byte stream (after the TLS handshake,
/// where the listener has TLS), its peer, and its slot's state.
pub(crate) struct Accepted {
    /// TLS or plain TCP, metered.
    pub io: TokioIo<Box<dyn Io>>,
    /// Who connected.
    pub peer: SocketAddr,
    /// The connection's slot in the registry.
    pub state: Arc<ConnState>,
}

/// The one serve loop of every HTTP listener (HTTPS, admin, gRPC, redirect): accept, a slot
/// in `registry` as `kind` (refused connections answered as `refusal` says), bytes metered,
/// the TLS handshake when there is an `acceptor`, the connection served as
/// `serve_connection` makes it and driven until it ends or should close (see
/// [`run_until_closed`]). On shutdown: stop accepting, let open connections finish within
/// [`GRACE`], then close them.
pub(crate) async fn serve_listener<S, C>(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    registry: Arc<Registry>,
    kind: Listener,
    refusal: Answer,
    shutdown: impl Future<Output = ()> + Send,
    serve_connection: S,
) where
    S: Fn(Accepted) -> C + Clone + Send + 'static,
    C: GracefulConnection + Send + 'static,
    C::Error: std::fmt::Display,
{
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let Some((tcp, peer, ticket)) =
            next_connection(&listener, &registry, kind, &refusal, shutdown.as_mut()).await
        else {
            break;
        };
        let acceptor = acceptor.clone();
        let serve_connection = serve_connection.clone();
        let watcher = graceful.watcher();
        let registry = registry.clone();
        tokio::spawn(async move {
            let state = ticket.state().clone();
            let tcp = Metered::new(tcp, state.clone());
            let io: Box<dyn Io> = match acceptor {
                Some(acceptor) => {
                    match handshake(&acceptor, tcp, &state, &registry, peer, kind).await {
                        Some(tls) => Box::new(tls),
                        None => return,
                    }
                }
                None => Box::new(tcp),
            };
            let conn = watcher.watch(serve_connection(Accepted {
                io: TokioIo::new(io),
                peer,
                state: state.clone(),
            }));
            run_until_closed(conn, &state, &registry, peer, kind).await;
            drop(ticket);
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            "{} connections still open after {GRACE:?}; closing them",
            kind.name()
        );
    }
}

/// The TLS handshake of a newly admitted connection (`state` is its slot), bounded by the
/// handshake timeout and abandoned if the connection is evicted meanwhile; `None` (logged,
/// and counted when it timed out) when it did not complete. `kind` names the listener in
/// logs.
pub(crate) async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: Metered<TcpStream>,
    state: &ConnState,
    registry: &Registry,
    peer: SocketAddr,
    kind: Listener,
) -> Option<tokio_rustls::server::TlsStream<Metered<TcpStream>>> {
    let handshake = tokio::time::timeout(registry.limits().handshake_timeout, acceptor.accept(tcp));
    let tls = tokio::select! {
        r = handshake => r,
        () = state.evicted() => return None,
    };
    let what = kind.name();
    match tls {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, "{what} TLS handshake failed: {e}");
            None
        }
        Err(_) => {
            registry.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "{what} TLS handshake timed out");
            None
        }
    }
}

/// Drives a served connection until it ends, or until it should close: evicted, or past
/// its header or idle deadline with no request in flight (see [`ConnState::closing`]).
pub(crate) async fn run_until_closed<E: std::fmt::Display>(
    conn: impl Future<Output = Result<(), E>>,
    state: &ConnState,
    registry: &Registry,
    peer: SocketAddr,
    kind: Listener,
) {
    let what = kind.name();
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(%peer, "{what} connection ended with error: {e}");
            }
        }
        timed_out = state.closing(registry.limits()) => {
            if timed_out {
                registry.counters.timed_out.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(%peer, timed_out, "closing an idle or evicted {what} connection");
        }
    }
}

/// A connection's byte stream: TLS on the public and gRPC listeners, plain TCP on the admin
/// and redirect ones.
pub(crate) trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

/// The next accepted connection that gets a slot in `registry` as `kind` (with Nagle off),
/// or `None` once `shutdown` completes. Refused connections are answered as `refusal` says
/// (see [`crate::http::conn::refusal`]); accept errors (EMFILE, should the reserve ever run out)
/// back off briefly instead of spinning.
pub(crate) async fn next_connection(
    listener: &TcpListener,
    registry: &Arc<Registry>,
    kind: Listener,
    refusal: &Answer,
    mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Option<(TcpStream, SocketAddr, Ticket)> {
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("{} accept failed: {e}", kind.name());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return None,
        };
        let _ = tcp.set_nodelay(true);
        match registry.admit(peer.ip(), kind) {
            Ok(ticket) => return Some((tcp, peer, ticket)),
            Err(why) => refuse(registry, tcp, peer, why, refusal),
        }
    }
}

/// Plain-HTTP listener that redirects every request to the HTTPS port (308, so POSTs keep
/// their method and body on the second try). One request per connection; connections take
/// slots in `registry` (the redirect listener's bounded share, see
/// [`crate::http::conn::Shares`]), get its header timeout and close when evicted.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let limits = *registry.limits();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(false);
    let serve_connection = move |c: Accepted| {
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| async move {
            Ok::<_, std::convert::Infallible>(redirect(&req, https_port))
        });
        builder.serve_connection(c.io, service)
    };
    serve_listener(
        listener,
        None,
        registry,
        Listener::Redirect,
        Answer::Plain,
        shutdown,
        serve_connection,
    )
    .await;
}

fn redirect(
    req: &hyper::Request<Incoming>,
    https_port: u16,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(host_without_port)
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c))
        })
        .unwrap_or("localhost");
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let location = format!("https://{host}:{https_port}{path}");
    hyper::Response::builder()
        .status(308)
        .header(hyper::header::LOCATION, location)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"{\"error\":\"use HTTPS\"}",
        )))
        .unwrap_or_else(|_| hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new())))
}

/// `example.com:80` → `example.com`, `[::1]:80` → `[::1]`.
fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        host.split(':').next().unwrap_or(host)
    }
}

/// Bind a TCP listener (a thin wrapper so callers get a [`ServerError`]).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    Ok(TcpListener::bind(addr).await?)
}

/// Bind the listener that `flag` (`--listen`, `--grpc-listen`, ...) puts at `addr`; a failure
/// is a [`ServerError::Bind`] that names the flag.
pub async fn bind_flag(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| ServerError::Bind { flag, addr, error })
}

/// Why an address could not be bound, in words, with the way out for the common cases.
pub(crate) fn bind_failure(flag: &str, addr: SocketAddr, error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let why = match error.kind() {
        ErrorKind::AddrInUse => "address in use".to_string(),
        ErrorKind::AddrNotAvailable => "no interface of this machine has that address".to_string(),
        ErrorKind::PermissionDenied if addr.port() < 1024 => {
            "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)".to_string()
        }
        _ => error.to_string(),
    };
    let off = if flag == "--grpc-listen" {
        ", or turn gRPC off with `--grpc-listen off`"
    } else {
        ""
    };
    format!("{flag} {addr}: {why}; pick another with {flag}{off}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_identity_has_a_fingerprint() {
        let id = tls_identity(None, None).unwrap();
        assert!(id.self_signed);
        assert_eq!(id.fingerprint.len(), 32 * 3 - 1);
        assert_eq!(id.config.alpn_protocols[0], b"h2".to_vec());
    }

    #[tokio::test]
    async fn a_busy_address_names_the_flag_that_moves_it() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = bind_flag(addr, "--listen").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("--listen {addr}: address in use; pick another with --listen")
        );
        let err = bind_flag(addr, "--grpc-listen").await.unwrap_err();
        assert!(err.to_string().ends_with("`--grpc-listen off`"), "{err}");
    }

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(host_without_port("example.com:80"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("localhost"), "localhost");
    }
}
