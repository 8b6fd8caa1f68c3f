//! The node side: accept front-end connections, one task per request stream, draining shutdown.
//!
//! - `connection.rs`: one front-end connection, its request streams and its control stream;
//! - `request.rs`: one request stream: header, image, [`Handler`], `Started` frame (announced
//!   in the Hello as `NodeInfo::acks`), final reply;
//! - `shared.rs`: what those tasks share, and the in-flight count a drain waits on.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use quinn::Connection;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use crate::codec::CLOSE_DRAINED;
use crate::config::{TransportTuning, endpoint_on, node_quinn_config, node_tls_config};
use crate::error::TransportError;
use crate::shutdown::shutdown_channel;
use crate::types::{Handler, NodeInfo};

mod connection;
mod request;
mod shared;

use connection::serve_connection;
use shared::{InFlight, Shared};

/// Configuration of a node's QUIC server.
#[derive(Debug)]
pub struct NodeServerConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// The node's certificate chain (DNS SAN = its name).
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// The node's private key.
    pub key: PrivateKeyDer<'static>,
    /// CA(s) whose client certificates are accepted: the cluster CA.
    pub client_ca: Vec<CertificateDer<'static>>,
    /// Requests the node takes at once. Usually `info.capacity`. Each connection gets
    /// [`crate::config::stream_credit`] of it in QUIC stream credit.
    pub capacity: u32,
    /// Largest image accepted; larger ones get a TooLarge reply without being read.
    pub max_image_bytes: usize,
    /// What the node announces on connect.
    pub info: NodeInfo,
    /// How often load is reported on the control stream. Default 100 ms: the reports are the
    /// node's heartbeat, and the front-end reopens a silent node's images elsewhere after a
    /// few missed ones, so this interval sets how fast a killed node's work moves on. Each
    /// report is one ~40-byte frame.
    pub load_interval: Duration,
    /// How long a peer may take to send a request header after opening a stream. Default 10 s:
    /// a stream that never sends one would otherwise hold a capacity slot forever.
    pub header_timeout: Duration,
    /// During shutdown, how long to wait for in-flight requests before closing anyway.
    /// Default 30 s (a batch of GoogLeNet on a slow machine takes seconds, not minutes).
    pub drain_timeout: Duration,
    /// QUIC settings. `tuning.max_image_bytes` is raised to `max_image_bytes` if smaller; when
    /// `tuning.stateless_reset_key` is unset, one is derived from the node's private key, so it
    /// persists across restarts.
    pub tuning: TransportTuning,
}

impl Clone for NodeServerConfig {
    fn clone(&self) -> Self {
        NodeServerConfig {
            listen: self.listen,
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
            client_ca: self.client_ca.clone(),
            capacity: self.capacity,
            max_image_bytes: self.max_image_bytes,
            info: self.info.clone(),
            load_interval: self.load_interval,
            header_timeout: self.header_timeout,
            drain_timeout: self.drain_timeout,
            tuning: self.tuning.clone(),
        }
    }
}

impl NodeServerConfig {
    /// A config with the documented defaults; capacity comes from `info.capacity`.
    pub fn new(
        listen: SocketAddr,
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_ca: Vec<CertificateDer<'static>>,
        info: NodeInfo,
    ) -> Self {
        NodeServerConfig {
            listen,
            cert_chain,
            key,
            client_ca,
            capacity: info.capacity.max(1),
            max_image_bytes: crate::config::DEFAULT_MAX_IMAGE_BYTES,
            info,
            load_interval: Duration::from_millis(100),
            header_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            tuning: TransportTuning::default(),
        }
    }
}

/// A bound node server; [`NodeServer::run`] serves until shutdown.
#[derive(Debug)]
pub struct NodeServer {
    endpoint: quinn::Endpoint,
    config: NodeServerConfig,
    local_addr: SocketAddr,
}

impl NodeServer {
    /// Build the TLS/QUIC configuration and bind the UDP socket now (so the caller learns the
    /// port before serving). Must be called inside a tokio runtime.
    pub fn bind(config: NodeServerConfig) -> Result<NodeServer, TransportError> {
        let socket =
            std::net::UdpSocket::bind(config.listen).map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        NodeServer::on_socket(config, socket)
    }

    /// As [`NodeServer::bind`], on a socket the caller bound already (`config.listen` is then
    /// only a label): a node binds its port before loading its model, so a busy port fails
    /// at once and no other process can take the port while the model loads.
    pub fn on_socket(
        mut config: NodeServerConfig,
        socket: std::net::UdpSocket,
    ) -> Result<NodeServer, TransportError> {
        if config.capacity == 0 {
            return Err(TransportError::Config("capacity must be at least 1".into()));
        }
        config.tuning.max_image_bytes = config.tuning.max_image_bytes.max(config.max_image_bytes);
        if config.tuning.stateless_reset_key.is_none() {
            // Derive a reset key that survives restarts but stays secret: HMAC of the node's
            // private key. A restarted node then resets the front-end's stale connection at
            // once instead of leaving it to the idle timeout.
            let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, config.key.secret_der());
            let tag = ring::hmac::sign(&k, b"glimpse stateless reset key v1");
            let mut key = [0u8; 32];
            key.copy_from_slice(&tag.as_ref()[..32]);
            config.tuning.stateless_reset_key = Some(key);
        }
        let tls = node_tls_config(
            config.cert_chain.clone(),
            config.key.clone_key(),
            &config.client_ca,
        )?;
        let server = node_quinn_config(tls, &config.tuning, config.capacity)?;
        let endpoint = endpoint_on(socket, Some(server), &config.tuning)?;
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        Ok(NodeServer {
            endpoint,
            config,
            local_addr,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serve until `shutdown` completes, then drain: announce draining on every control stream,
    /// refuse new streams with [`StreamCode::Draining`] (so front-ends retry elsewhere), finish
    /// in-flight requests (up to `drain_timeout`), close connections, return `Ok`.
    pub async fn run<H: Handler>(
        self,
        handler: Arc<H>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), TransportError> {
        let (drain_tx, drain_rx) = shutdown_channel();
        let shared = Arc::new(Shared {
            info: NodeInfo {
                load_interval_ms: Some(
                    u32::try_from(self.config.load_interval.as_millis()).unwrap_or(u32::MAX),
                ),
                // This server writes the Started frames its handler signals.
                acks: true,
                ..self.config.info.clone()
            },
            max_image_bytes: self.config.max_image_bytes,
            load_interval: self.config.load_interval,
            header_timeout: self.config.header_timeout,
            draining: drain_rx,
            in_flight: Arc::new(InFlight::default()),
            connections: Mutex::new(HashMap::new()),
        });
        info!(addr = %self.local_addr, node = %shared.info.node_id, "node transport listening");
        tokio::pin!(shutdown);
        let mut next_id = 0usize;
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                incoming = self.endpoint.accept() => {
                    let Some(incoming) = incoming else { break };
                    next_id += 1;
                    tokio::spawn(serve_connection(incoming, next_id, shared.clone(), handler.clone()));
                }
            }
        }

        info!(node = %shared.info.node_id, "draining: refusing new work, finishing in-flight requests");
        // No new connections from here on.
        self.endpoint.set_server_config(None);
        drain_tx.trigger();
        let conns: Vec<Connection> = shared.connections.lock().values().cloned().collect();
        for c in &conns {
            // Grant no further stream credit; streams already granted are refused with DRAINING.
            c.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(0));
        }
        if tokio::time::timeout(self.config.drain_timeout, shared.in_flight.wait_idle())
            .await
            .is_err()
        {
            warn!(
                remaining = shared.in_flight.count(),
                "drain timeout: closing with requests still in flight"
            );
        }
        let conns: Vec<Connection> = shared.connections.lock().values().cloned().collect();
        for c in conns {
            c.close(quinn::VarInt::from_u32(CLOSE_DRAINED), b"drained");
        }
        // Let the CONNECTION_CLOSE frames go out; bounded in case a peer vanished.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        info!(node = %shared.info.node_id, "drained");
        Ok(())
    }
}
