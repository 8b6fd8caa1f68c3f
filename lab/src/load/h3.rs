//! `--http 3`: one HTTP/3 connection (`h3` on quinn, the QUIC stack of the rest of Glimpse)
//! that carries every request of a run, each on its own QUIC stream, as a browser does.
//!
//! The connection is opened once, by [`H3Connection::connect`], so a wrong address, a closed
//! UDP port or a certificate that does not verify fails there with one clear message. If the
//! server later closes it (idle timeout, GOAWAY on shutdown, a restart), the next request
//! opens a new one; requests already in flight on the old one fail as `transport` errors.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use glimpse_transport::CongestionControl;
use h3::client::SendRequest;
use reqwest::header::HeaderMap;
use tokio::sync::Mutex;

use super::error::LoadError;
use super::tls::{Trust, client_config};

/// How long the client lets a connection sit without packets before it gives up on it: past
/// any `--timeout` the lab uses, so only a dead server ends a connection from this side.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A live connection: the request sender and what keeps the connection alive.
struct Live {
    send: SendRequest<h3_quinn::OpenStreams, Bytes>,
    quic: quinn::Connection,
}

/// The client side of one HTTP/3 connection, reopened when the server closes it.
pub(crate) struct H3Connection {
    endpoint: quinn::Endpoint,
    server: SocketAddr,
    /// The TLS server name (the URL's host).
    host: String,
    /// `https://host:port`, the authority of every request.
    base: String,
    live: Mutex<Live>,
}

/// What an HTTP/3 exchange returns: status, headers, the whole body.
pub(crate) struct H3Answer {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl H3Connection {
    /// Resolves `base` (`https://HOST:PORT`), opens a QUIC connection to its UDP port with
    /// ALPN `h3`, trusting `trust`, and completes the HTTP/3 handshake (SETTINGS).
    /// `congestion` is the controller of the client's uploads.
    pub(crate) async fn connect(
        base: &str,
        trust: &Trust,
        congestion: CongestionControl,
    ) -> Result<H3Connection, LoadError> {
        let authority = base
            .strip_prefix("https://")
            .ok_or_else(|| LoadError::Usage(format!("--url {base}: give https://HOST:PORT")))?;
        let uri: reqwest::Url = base
            .parse()
            .map_err(|e| LoadError::Usage(format!("--url {base}: {e}")))?;
        let host = uri
            .host_str()
            .ok_or_else(|| LoadError::Usage(format!("--url {base}: no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_or_known_default().unwrap_or(443);
        let server = (host.as_str(), port)
            .to_socket_addrs()
            .map_err(|e| LoadError::Client(format!("resolving {authority}: {e}")))?
            .next()
            .ok_or_else(|| LoadError::Client(format!("{authority} resolves to no address")))?;
        let tls = client_config(trust, &[b"h3"])?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| LoadError::Tls(format!("QUIC needs TLS 1.3: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_idle_timeout(Some(
            IDLE_TIMEOUT
                .try_into()
                .map_err(|e| LoadError::Client(format!("idle timeout: {e}")))?,
        ));
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        match congestion {
            CongestionControl::Cubic => {
                transport.congestion_controller_factory(Arc::new(
                    quinn::congestion::CubicConfig::default(),
                ));
            }
            CongestionControl::Bbr => {
                transport.congestion_controller_factory(Arc::new(
                    quinn::congestion::BbrConfig::default(),
                ));
            }
        }
        client.transport_config(Arc::new(transport));
        let bind: SocketAddr = if server.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let mut endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| LoadError::Client(format!("a UDP socket for HTTP/3: {e}")))?;
        endpoint.set_default_client_config(client);
        let live = open(&endpoint, server, &host).await?;
        Ok(H3Connection {
            endpoint,
            server,
            host,
            base: base.to_string(),
            live: Mutex::new(live),
        })
    }

    /// `POST path` with `headers` and `body` on a new request stream; the whole answer.
    pub(crate) async fn post(
        &self,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<H3Answer, String> {
        let mut head = http::Request::post(format!("{}{path}", self.base))
            .header(http::header::CONTENT_LENGTH, body.len())
            .body(())
            .map_err(|e| format!("{path}: {e}"))?;
        head.headers_mut().extend(headers.clone());
        let mut send = self.sender().await?;
        let mut stream = send
            .send_request(head)
            .await
            .map_err(|e| format!("opening the request stream: {e}"))?;
        if !body.is_empty() {
            stream
                .send_data(body)
                .await
                .map_err(|e| format!("sending the body: {e}"))?;
        }
        stream
            .finish()
            .await
            .map_err(|e| format!("finishing the request: {e}"))?;
        let response = stream
            .recv_response()
            .await
            .map_err(|e| format!("waiting for the response: {e}"))?;
        let mut body = BytesMut::new();
        while let Some(mut chunk) = stream
            .recv_data()
            .await
            .map_err(|e| format!("reading the response body: {e}"))?
        {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        Ok(H3Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: body.freeze(),
        })
    }

    /// A request sender on the live connection, reopening it first if the server closed it.
    async fn sender(&self) -> Result<SendRequest<h3_quinn::OpenStreams, Bytes>, String> {
        let mut live = self.live.lock().await;
        if live.quic.close_reason().is_some() {
            *live = open(&self.endpoint, self.server, &self.host)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(live.send.clone())
    }
}

/// Opens one QUIC connection to `server` and completes HTTP/3's setup on it; the connection's
/// driver runs in a task of its own until the connection closes.
async fn open(
    endpoint: &quinn::Endpoint,
    server: SocketAddr,
    host: &str,
) -> Result<Live, LoadError> {
    let quic = endpoint
        .connect(server, host)
        .map_err(|e| LoadError::Client(format!("HTTP/3 to {server}: {e}")))?
        .await
        .map_err(|e| LoadError::Client(format!("HTTP/3 (QUIC, UDP) to {server}: {e}")))?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic.clone()))
        .await
        .map_err(|e| LoadError::Client(format!("HTTP/3 setup with {server}: {e}")))?;
    tokio::spawn(async move {
        let _closed = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    Ok(Live { send, quic })
}
