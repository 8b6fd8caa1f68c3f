//! HTTPS serving: our own TCP accept loop, a rustls handshake with ALPN `h2` and
//! `http/1.1`, and hyper-util's auto connection builder running warp's routes as a tower
//! service. warp 0.4 cannot do TLS itself and does not let a custom listener be plugged
//! in, so this is the supported way. Shutdown is graceful: stop accepting, let open
//! requests finish (bounded by a grace period), then close.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use warp::filters::BoxedFilter;
use warp::reply::Response;

/// Errors of the serving layer.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("no certificate found in {0}")]
    NoCertificate(String),
    #[error("no private key found in {0}")]
    NoKey(String),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// The server's TLS identity and how a user can check it.
pub struct TlsIdentity {
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
            let chain = read_certs(cert)?;
            let key = read_key(key)?;
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

fn read_file(path: &Path) -> Result<Vec<u8>, ServerError> {
    std::fs::read(path).map_err(|source| ServerError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let pem = read_file(path)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ServerError::Read {
            path: path.display().to_string(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServerError::NoCertificate(path.display().to_string()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, ServerError> {
    let pem = read_file(path)?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|source| ServerError::Read {
            path: path.display().to_string(),
            source,
        })?
        .ok_or_else(|| ServerError::NoKey(path.display().to_string()))
}

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown starts.
const GRACE: Duration = Duration::from_secs(10);

/// Serve `routes` over HTTPS on `listener` until `shutdown` completes.
pub async fn serve_https(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    routes: BoxedFilter<(Response,)>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let acceptor = TlsAcceptor::from(tls);
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let Some((tcp, peer)) = next_connection(&listener, shutdown.as_mut()).await else {
            break;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let conn = builder
                .serve_connection(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, "connection ended with error: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {GRACE:?}; closing them");
    }
}

/// The next accepted connection, or `None` once `shutdown` completes. Accept errors (usually
/// EMFILE under load) back off briefly instead of spinning.
async fn next_connection(
    listener: &TcpListener,
    mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => return Some(x),
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => return None,
        }
    }
}

/// Plain-HTTP listener that redirects every request to the HTTPS port (308, so POSTs keep
/// their method and body on the second try).
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    shutdown: impl Future<Output = ()> + Send,
) {
    let builder = hyper::server::conn::http1::Builder::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let Some((tcp, _)) = next_connection(&listener, shutdown.as_mut()).await else {
            break;
        };
        let builder = builder.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: hyper::Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(redirect(&req, https_port))
                });
            if let Err(e) = builder.serve_connection(TokioIo::new(tcp), service).await {
                tracing::debug!("redirect connection: {e}");
            }
        });
    }
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

    #[test]
    fn host_port_is_stripped() {
        assert_eq!(host_without_port("example.com:80"), "example.com");
        assert_eq!(host_without_port("[::1]:8080"), "[::1]");
        assert_eq!(host_without_port("localhost"), "localhost");
    }
}
