//! TLS and QUIC transport settings, chosen for images on a LAN with failures to notice fast.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{IdleTimeout, VarInt};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use serde::Serialize;

use crate::codec::{ALPN, MAX_FRAME_BYTES};
use crate::error::TransportError;

/// Default largest image: matches the model's default decode limit (32 MiB).
pub const DEFAULT_MAX_IMAGE_BYTES: usize = 32 * 1024 * 1024;

/// QUIC knobs shared by node and front-end. Defaults are for a cluster's private links, from
/// a LAN to a lossy long path.
#[derive(Debug, Clone, Serialize)]
pub struct TransportTuning {
    /// Largest image accepted. The per-stream receive window is this plus one frame, so a
    /// whole image can be in flight without waiting for a window update (which costs an RTT
    /// per window on long paths, quinn #2262/#2153); quinn's 1.25 MB default would stall
    /// multi-MB images every 1.25 MB.
    pub max_image_bytes: usize,
    /// Connection-wide receive window, in streams' worth of `max_image_bytes`. Bounds what one
    /// peer can make us buffer across all its streams. Default 2: two maximum-size images (or
    /// any number of small ones) at once.
    pub connection_window_images: u32,
    /// Keep-alive interval. Default 300 ms: an idle connection still exchanges packets both
    /// ways, so the node's idle timer never fires on a healthy but quiet front-end, even when
    /// most packets are lost.
    pub keep_alive: Duration,
    /// Idle timeout (the smaller of both peers' wins). Default 10 s instead of quinn's 30 s.
    /// This is not what moves a dead node's images on: the front-end does that when the node's
    /// heartbeat stops (the dispatcher's silence timeout, ~0.5 s; quinn ignores ICMP). It only
    /// decides when to give up on the connection itself. It used to be 1.5 s, which dropped
    /// healthy connections under heavy packet loss (five keep-alives lost in a row is a 33%
    /// event at 80% loss), and each reconnect handshake then fought the same loss.
    pub idle_timeout: Duration,
    /// Initial RTT estimate before any sample. Default 20 ms (LAN) instead of quinn's 333 ms,
    /// so the first packet-loss timer on a fresh connection is ~60 ms, not ~1 s.
    pub initial_rtt: Duration,
    /// Initial congestion window in bytes. Default 256 KiB instead of quinn's ~14.7 KB (ten
    /// packets, sized for the open Internet): images are sent one per stream, often when the
    /// connection is otherwise idle, so the sender is application-limited and Cubic never grows
    /// its window past the initial one; with ten packets a 100 KB image costs four round trips
    /// of slow start on every send. The links here are a private cluster's, the peers few and
    /// known, so starting larger is safe; loss still shrinks the window as usual.
    pub initial_window: u64,
    /// Congestion controller for what this side sends (the front-end sends the images).
    /// Default Cubic, quinn's default and the one it calls production-ready. BBR does not read
    /// random loss as congestion, so on lossy links it keeps sending where Cubic shrinks its
    /// window to two packets (see EXPERIMENTS.md); quinn marks it experimental.
    pub congestion: CongestionControl,
    /// UDP segmentation offload (GSO). Default on (fewer syscalls for large images). Turn it
    /// off for per-packet loss experiments: with GSO, tc netem drops ten datagrams at once.
    pub segmentation_offload: bool,
    /// Persistent stateless-reset key (node side). Default none (random per process). With a
    /// fixed key, a restarted node answers packets for its old connections with a stateless
    /// reset, so the front-end drops them at once instead of waiting for the idle timeout.
    pub stateless_reset_key: Option<[u8; 32]>,
}

/// Which congestion controller a QUIC sender uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CongestionControl {
    /// Loss-based (RFC 9438); quinn's default.
    Cubic,
    /// Model-based (BBR v1 as quinn implements it, experimental there): random loss does not
    /// shrink its sending rate.
    Bbr,
}

impl std::str::FromStr for CongestionControl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cubic" => Ok(CongestionControl::Cubic),
            "bbr" => Ok(CongestionControl::Bbr),
            other => Err(format!(
                "unknown congestion controller {other:?} (cubic, bbr)"
            )),
        }
    }
}

impl Default for TransportTuning {
    fn default() -> Self {
        TransportTuning {
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            connection_window_images: 2,
            keep_alive: Duration::from_millis(300),
            idle_timeout: Duration::from_secs(10),
            initial_rtt: Duration::from_millis(20),
            initial_window: 256 * 1024,
            congestion: CongestionControl::Cubic,
            segmentation_offload: true,
            stateless_reset_key: None,
        }
    }
}

impl TransportTuning {
    /// Stream receive window: one whole image plus its header frame.
    pub fn stream_window(&self) -> u64 {
        (self.max_image_bytes as u64).saturating_add((MAX_FRAME_BYTES + 4) as u64)
    }

    /// The quinn transport config for one side. `max_incoming_bidi` is how many request streams
    /// the peer may open at once (node: its capacity; front-end: 0); `max_incoming_uni` likewise
    /// for control streams (node: 0; front-end: a few).
    pub fn quinn_config(
        &self,
        max_incoming_bidi: u32,
        max_incoming_uni: u32,
    ) -> Result<quinn::TransportConfig, TransportError> {
        let varint = |v: u64, what: &str| {
            VarInt::from_u64(v).map_err(|_| TransportError::Config(format!("{what} {v} too large")))
        };
        let stream_window = self.stream_window();
        let conn_window =
            stream_window.saturating_mul(u64::from(self.connection_window_images.max(1)));
        let mut t = quinn::TransportConfig::default();
        // Backpressure: a bound on the streams the front-end may have open (a node passes
        // `stream_credit(capacity)`); beyond it `open_bi` waits for credit instead of queueing
        // work on the node.
        t.max_concurrent_bidi_streams(VarInt::from_u32(max_incoming_bidi));
        t.max_concurrent_uni_streams(VarInt::from_u32(max_incoming_uni));
        t.stream_receive_window(varint(stream_window, "stream window")?);
        t.receive_window(varint(conn_window, "connection window")?);
        // Symmetric: we may send as much as the peer may buffer.
        t.send_window(conn_window);
        t.keep_alive_interval(Some(self.keep_alive));
        t.max_idle_timeout(Some(
            IdleTimeout::try_from(self.idle_timeout)
                .map_err(|_| TransportError::Config("idle timeout too large".into()))?,
        ));
        t.initial_rtt(self.initial_rtt);
        match self.congestion {
            CongestionControl::Cubic => {
                let mut cubic = quinn::congestion::CubicConfig::default();
                cubic.initial_window(self.initial_window);
                t.congestion_controller_factory(Arc::new(cubic));
            }
            CongestionControl::Bbr => {
                let mut bbr = quinn::congestion::BbrConfig::default();
                bbr.initial_window(self.initial_window);
                t.congestion_controller_factory(Arc::new(bbr));
            }
        }
        t.enable_segmentation_offload(self.segmentation_offload);
        // We use no datagrams.
        t.datagram_receive_buffer_size(None);
        Ok(t)
    }

    /// Endpoint config, with the persistent stateless-reset key if set.
    pub fn endpoint_config(&self) -> quinn::EndpointConfig {
        match self.stateless_reset_key {
            Some(key) => quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
                ring::hmac::HMAC_SHA256,
                &key,
            ))),
            None => quinn::EndpointConfig::default(),
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    // Explicit provider: never depend on a process-level default (which panics when both ring
    // and aws-lc-rs are compiled in).
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &[CertificateDer<'static>]) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| TransportError::Tls(format!("bad CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(TransportError::Tls("no CA certificate given".into()));
    }
    Ok(Arc::new(roots))
}

/// rustls config for a node: TLS 1.3, ALPN `glimpse/1`, and a client certificate signed by the
/// cluster CA is *required* (anyone else fails the handshake).
pub fn node_tls_config(
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: &[CertificateDer<'static>],
) -> Result<rustls::ServerConfig, TransportError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(client_ca)?, provider.clone())
        .build()
        .map_err(|e| TransportError::Tls(format!("client verifier: {e}")))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(cert_chain, key)
        .map_err(|e| TransportError::Tls(format!("node certificate/key: {e}")))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// rustls config for the front-end: trusts only the cluster CA (the server name is checked per
/// connection against the configured node name) and presents the front-end client certificate.
pub fn frontend_tls_config(
    ca: &[CertificateDer<'static>],
    client_cert_chain: Vec<CertificateDer<'static>>,
    client_key: PrivateKeyDer<'static>,
) -> Result<rustls::ClientConfig, TransportError> {
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TransportError::Tls(e.to_string()))?
        .with_root_certificates(roots(ca)?)
        .with_client_auth_cert(client_cert_chain, client_key)
        .map_err(|e| TransportError::Tls(format!("front-end certificate/key: {e}")))?;
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    Ok(cfg)
}

/// Request streams a node lets one front-end connection open at once: twice its capacity.
///
/// The front-end holds itself to `capacity` outstanding requests per node (announced in
/// Hello), and the node's handler refuses work beyond it (Overloaded), so the extra credit is
/// not extra work. What it buys is time: QUIC returns a stream's credit only once the stream
/// is closed on both sides, which is about one round trip after the answer reached the
/// front-end. With credit equal to capacity, every new request waited for that round trip;
/// at capacity 1 and 200 ms RTT, throughput halved (measured in EXPERIMENTS.md §3b).
pub fn stream_credit(capacity: u32) -> u32 {
    capacity.max(1).saturating_mul(2)
}

/// quinn server config for a node.
pub fn node_quinn_config(
    tls: rustls::ServerConfig,
    tuning: &TransportTuning,
    capacity: u32,
) -> Result<quinn::ServerConfig, TransportError> {
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    cfg.transport_config(Arc::new(tuning.quinn_config(stream_credit(capacity), 0)?));
    Ok(cfg)
}

/// quinn client config for the front-end.
pub fn frontend_quinn_config(
    tls: rustls::ClientConfig,
    tuning: &TransportTuning,
) -> Result<quinn::ClientConfig, TransportError> {
    let crypto = QuicClientConfig::try_from(tls).map_err(|e| TransportError::Tls(e.to_string()))?;
    let mut cfg = quinn::ClientConfig::new(Arc::new(crypto));
    // The node never opens request streams; it opens one control stream per connection.
    cfg.transport_config(Arc::new(tuning.quinn_config(0, 4)?));
    Ok(cfg)
}

/// Bind a quinn endpoint on `addr` (server if `server` is set). Must run inside a tokio runtime.
pub fn bind_endpoint(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    tuning: &TransportTuning,
) -> Result<quinn::Endpoint, TransportError> {
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| TransportError::Bind { addr, source })?;
    endpoint_on(socket, server, tuning)
}

/// A QUIC endpoint on a UDP socket the caller bound already (a node holds its port from
/// start-up, before its model loads, so no other process can take it meanwhile).
pub fn endpoint_on(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
    tuning: &TransportTuning,
) -> Result<quinn::Endpoint, TransportError> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(TransportError::Config(
            "must be called inside a tokio runtime".into(),
        ));
    }
    let addr = socket.local_addr().map_err(|source| TransportError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    quinn::Endpoint::new(
        tuning.endpoint_config(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|source| TransportError::Bind { addr, source })
}
