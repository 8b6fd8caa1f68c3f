//! What the front-end is told: the nodes, its certificate, and the knobs of placement,
//! retries, hedging and supervision, with the reason for each default. [`Policy`] is the part
//! the sans-IO core decides with, kept apart so the core never sees certificates or sockets.

use std::net::SocketAddr;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;

use super::Placement;
use crate::config::TransportTuning;

/// A node to connect to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeEndpoint {
    /// Expected TLS server name (DNS SAN of the node's certificate).
    pub name: String,
    /// UDP address.
    pub addr: SocketAddr,
}

/// Front-end configuration.
#[derive(Debug)]
pub struct DispatcherConfig {
    /// Nodes to connect to at start ([`super::Dispatcher::set_nodes`] changes them later).
    pub nodes: Vec<NodeEndpoint>,
    /// Cluster CA: node certificates must chain to it.
    pub ca: Vec<CertificateDer<'static>>,
    /// Front-end client certificate (signed by the cluster CA).
    pub client_cert_chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub client_key: PrivateKeyDer<'static>,
    /// Placement, retries, hedging, timeouts and supervision: what the sans-IO core decides
    /// with (see [`Policy`] for each default).
    pub policy: Policy,
    /// First reconnect delay. Default 100 ms.
    pub reconnect_min: Duration,
    /// Largest reconnect delay. Default 2 s: a restarted node is back in use within ~2 s.
    pub reconnect_max: Duration,
    /// Handshake + Hello timeout. Default 3 s.
    pub connect_timeout: Duration,
    /// How long a node taken out of the membership ([`super::Dispatcher::set_nodes`]) keeps
    /// its connection for the attempts it still runs; then the connection is closed and
    /// what is left moves to other nodes. Default 30 s, the default request deadline: no
    /// attempt outlives its request, so a healthy node drains well within it.
    pub drain_timeout: Duration,
    /// QUIC settings (its `max_image_bytes` is set from [`Policy::max_image_bytes`]).
    pub tuning: TransportTuning,
    /// Local UDP address to bind. Default: unspecified address of the first node's family, port 0.
    pub bind: Option<SocketAddr>,
}

impl Clone for DispatcherConfig {
    fn clone(&self) -> Self {
        DispatcherConfig {
            nodes: self.nodes.clone(),
            ca: self.ca.clone(),
            client_cert_chain: self.client_cert_chain.clone(),
            client_key: self.client_key.clone_key(),
            policy: self.policy,
            reconnect_min: self.reconnect_min,
            reconnect_max: self.reconnect_max,
            connect_timeout: self.connect_timeout,
            drain_timeout: self.drain_timeout,
            tuning: self.tuning.clone(),
            bind: self.bind,
        }
    }
}

impl DispatcherConfig {
    /// A config with the documented defaults.
    pub fn new(
        nodes: Vec<NodeEndpoint>,
        ca: Vec<CertificateDer<'static>>,
        client_cert_chain: Vec<CertificateDer<'static>>,
        client_key: PrivateKeyDer<'static>,
    ) -> Self {
        DispatcherConfig {
            nodes,
            ca,
            client_cert_chain,
            client_key,
            policy: Policy::default(),
            reconnect_min: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(3),
            drain_timeout: Duration::from_secs(30),
            tuning: TransportTuning::default(),
            bind: None,
        }
    }
}

/// The decisions' settings: what a [`super::Request`] and the cluster state need, and nothing
/// that does I/O. Part of [`DispatcherConfig`]; the simulator builds one directly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Most attempts per request, hedges included. Default 4.
    pub max_attempts: u32,
    /// Overall budget per request, retries and waiting for a node included. Default 30 s.
    pub request_deadline: Duration,
    /// How a node is chosen for each image. Default expected-finish: the image goes where it
    /// is expected to finish first (images ahead × the node's service time), so a slow node
    /// gets work only when waiting for a fast one would take longer. least-outstanding
    /// (blind to speed) is kept for comparison.
    pub placement: Placement,
    /// Send a second copy of slow requests to another node. Default off: it costs capacity.
    pub hedge: bool,
    /// Never hedge earlier than this. Default 5 ms (below it the hedge costs more than it saves).
    pub hedge_min_delay: Duration,
    /// Lower bound of the per-attempt timeout. Default 500 ms.
    pub attempt_timeout_floor: Duration,
    /// Per-attempt timeout = max(floor, factor × observed p99) once latency is known. Default 4.
    pub attempt_timeout_factor: f32,
    /// Per-attempt timeout before 20 latency samples exist. Default 10 s: the first GoogLeNet
    /// batches on a cold 2-core node are slow, and retrying them would only double the load.
    pub attempt_timeout_cold: Duration,
    /// Upload allowance added to the per-attempt timeout, in bytes per second: large images
    /// take longer to send than small ones. Default 4 MiB/s (a 16 MiB image gets +4 s).
    pub upload_bytes_per_sec: u64,
    /// Largest image accepted. The dispatcher's QUIC settings follow it
    /// (`DispatcherConfig::tuning`'s `max_image_bytes` is set from it at start). Default 32 MiB.
    pub max_image_bytes: usize,
    /// A node is *silent* when nothing arrives on its control stream for
    /// max(this floor, `silence_reports` × its load interval) + 2 × the connection's RTT; its
    /// in-flight images are then reopened on other nodes (the attempts go on and may still
    /// win). Default 500 ms: a killed node's images move on in about half a second instead
    /// of QUIC's 10 s idle timeout, while a node that is only briefly descheduled rarely
    /// trips it (and a false alarm costs a duplicate attempt, never an answer).
    pub silence_floor: Duration,
    /// Load reports a node may miss before it counts as silent (see `silence_floor`).
    /// Default 5.
    pub silence_reports: u32,
}

impl Default for Policy {
    /// The documented defaults of [`DispatcherConfig`].
    fn default() -> Self {
        Policy {
            max_attempts: 4,
            request_deadline: Duration::from_secs(30),
            placement: Placement::ExpectedFinish,
            hedge: false,
            hedge_min_delay: Duration::from_millis(5),
            attempt_timeout_floor: Duration::from_millis(500),
            attempt_timeout_factor: 4.0,
            attempt_timeout_cold: Duration::from_secs(10),
            upload_bytes_per_sec: 4 * 1024 * 1024,
            max_image_bytes: TransportTuning::default().max_image_bytes,
            silence_floor: Duration::from_millis(500),
            silence_reports: 5,
        }
    }
}
