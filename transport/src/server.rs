//! The node side: accept front-end connections, one task per request stream, draining shutdown.
//!
//! Each request stream's task reads the header and image, runs the [`Handler`], and writes the
//! final reply. When the header asks for it (`ack`), the handler's [`WorkStarted`] signal
//! becomes a `Reply::Started` frame, written while the handler keeps running; the Hello this
//! server sends announces it (`NodeInfo::acks`). A stream the front-end stops or resets drops
//! the handler's future at once.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn::{Connection, RecvStream, SendStream};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::codec::{
    self, CLOSE_DRAINED, ControlMessage, ErrorKind, ErrorReply, MAX_FRAME_BYTES, Reply, StreamCode,
};
use crate::config::{TransportTuning, bind_endpoint, node_quinn_config, node_tls_config};
use crate::error::TransportError;
use crate::shutdown::{Shutdown, shutdown_channel};
use crate::stream::{self, FrameReadError};
use crate::sync::lock;
use crate::types::{Handler, InferenceError, InferenceRequest, NodeInfo, WorkStarted};

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

/// Counts requests being handled, so shutdown can wait for them.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

struct InFlightGuard(Arc<InFlight>);

impl InFlight {
    fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        InFlightGuard(self.clone())
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// State shared by all connection and stream tasks of one server.
struct Shared {
    info: NodeInfo,
    max_image_bytes: usize,
    load_interval: Duration,
    header_timeout: Duration,
    draining: Shutdown,
    in_flight: Arc<InFlight>,
    connections: Mutex<HashMap<usize, Connection>>,
}

impl NodeServer {
    /// Build the TLS/QUIC configuration and bind the UDP socket now (so the caller learns the
    /// port before serving). Must be called inside a tokio runtime.
    pub fn bind(mut config: NodeServerConfig) -> Result<NodeServer, TransportError> {
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
        let endpoint = bind_endpoint(config.listen, Some(server), &config.tuning)?;
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
        let conns: Vec<Connection> = lock(&shared.connections).values().cloned().collect();
        for c in &conns {
            // Grant no further stream credit; streams already granted are refused with DRAINING.
            c.set_max_concurrent_bi_streams(quinn::VarInt::from_u32(0));
        }
        if tokio::time::timeout(self.config.drain_timeout, shared.in_flight.wait_idle())
            .await
            .is_err()
        {
            warn!(
                remaining = shared.in_flight.count.load(Ordering::SeqCst),
                "drain timeout: closing with requests still in flight"
            );
        }
        let conns: Vec<Connection> = lock(&shared.connections).values().cloned().collect();
        for c in conns {
            c.close(quinn::VarInt::from_u32(CLOSE_DRAINED), b"drained");
        }
        // Let the CONNECTION_CLOSE frames go out; bounded in case a peer vanished.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        info!(node = %shared.info.node_id, "drained");
        Ok(())
    }
}

async fn serve_connection<H: Handler>(
    incoming: quinn::Incoming,
    id: usize,
    shared: Arc<Shared>,
    handler: Arc<H>,
) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            // Includes clients without a CA-signed certificate: refused at the handshake.
            debug!(%remote, error = %e, "handshake failed");
            return;
        }
    };
    debug!(%remote, "front-end connected");
    lock(&shared.connections).insert(id, conn.clone());
    let control = tokio::spawn(control_stream(
        conn.clone(),
        shared.clone(),
        handler.clone(),
    ));
    let mut draining = shared.draining.clone();
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok((send, recv)) => {
                    let guard = shared.in_flight.enter();
                    let is_draining = draining.is_triggered();
                    tokio::spawn(serve_stream(send, recv, shared.clone(), handler.clone(), is_draining, guard));
                }
                Err(e) => {
                    debug!(%remote, reason = %e, "connection ended");
                    break;
                }
            },
            () = draining.recv(), if !draining.is_triggered() => {}
        }
    }
    control.abort();
    lock(&shared.connections).remove(&id);
}

/// Node → front-end: Hello, then periodic load, then Draining.
async fn control_stream<H: Handler>(conn: Connection, shared: Arc<Shared>, handler: Arc<H>) {
    let result: Result<(), String> = async {
        let mut send = conn.open_uni().await.map_err(|e| e.to_string())?;
        let hello = codec::encode_control(&ControlMessage::Hello(shared.info.clone())).map_err(|e| e.to_string())?;
        stream::write_frame(&mut send, &hello).await.map_err(|e| e.to_string())?;
        let mut draining = shared.draining.clone();
        let mut tick = tokio::time::interval(shared.load_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announced = false;
        loop {
            if draining.is_triggered() && !announced {
                let f = codec::encode_control(&ControlMessage::Draining).map_err(|e| e.to_string())?;
                stream::write_frame(&mut send, &f).await.map_err(|e| e.to_string())?;
                announced = true;
            }
            tokio::select! {
                _ = tick.tick() => {
                    let f = codec::encode_control(&ControlMessage::Load(handler.load())).map_err(|e| e.to_string())?;
                    stream::write_frame(&mut send, &f).await.map_err(|e| e.to_string())?;
                }
                () = draining.recv(), if !announced => {}
            }
        }
    }
    .await;
    if let Err(e) = result {
        debug!(error = %e, "control stream ended");
    }
}

/// Write one reply frame and finish the stream; failures mean the peer is gone (nothing to do).
async fn send_reply(send: &mut SendStream, reply: &Reply) {
    send_final(send, &[], reply).await;
}

/// Write `pending` (the unwritten rest of a Started frame), then the final reply frame, and
/// finish the stream.
async fn send_final(send: &mut SendStream, pending: &[u8], reply: &Reply) {
    if !pending.is_empty()
        && let Err(e) = send.write_all(pending).await
    {
        debug!(error = %e, "could not write the started frame");
        return;
    }
    match codec::encode_reply(reply) {
        Ok(frame) => {
            if let Err(e) = stream::write_frame(send, &frame).await {
                debug!(error = %e, "could not write reply");
                return;
            }
            let _ = send.finish();
            // Wait (bounded) until the peer has acknowledged the reply, so a draining shutdown
            // that closes the connection right after cannot discard it.
            let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
        }
        Err(e) => {
            warn!(error = %e, "cannot encode reply");
            let _ = send.reset(StreamCode::Internal.varint());
        }
    }
}

/// Refuse a request with a typed reply and stop reading its (remaining) bytes.
async fn refuse(mut send: SendStream, mut recv: RecvStream, reply: ErrorReply, code: StreamCode) {
    let _ = recv.stop(code.varint());
    send_reply(&mut send, &Reply::Error(reply)).await;
}

async fn serve_stream<H: Handler>(
    mut send: SendStream,
    mut recv: RecvStream,
    shared: Arc<Shared>,
    handler: Arc<H>,
    draining: bool,
    _guard: InFlightGuard,
) {
    if draining {
        let reply = ErrorReply::from(&InferenceError::Draining);
        refuse(send, recv, reply, StreamCode::Draining).await;
        return;
    }
    let header = match tokio::time::timeout(
        shared.header_timeout,
        stream::read_frame(&mut recv, MAX_FRAME_BYTES),
    )
    .await
    {
        Err(_) => {
            let reply = ErrorReply {
                kind: ErrorKind::BadRequest,
                message: "no request header in time".into(),
            };
            refuse(send, recv, reply, StreamCode::BadRequest).await;
            return;
        }
        Ok(Ok(Some(body))) => codec::decode_request_header(&body),
        Ok(Ok(None)) => Err(codec::CodecError::Truncated),
        Ok(Err(FrameReadError::Codec(e))) => Err(e),
        Ok(Err(e)) => {
            debug!(error = %e, "request stream failed before its header");
            return;
        }
    };
    let header = match header {
        Ok(h) => h,
        Err(e) => {
            debug!(error = %e, "bad request frame");
            refuse(send, recv, e.to_reply(), StreamCode::BadRequest).await;
            return;
        }
    };
    let received_at = Instant::now();
    let image_len = match usize::try_from(header.image_len) {
        Ok(n) if n <= shared.max_image_bytes => n,
        _ => {
            let reply = ErrorReply::from(&InferenceError::TooLarge(format!(
                "{} bytes exceeds this node's limit of {} bytes",
                header.image_len, shared.max_image_bytes
            )));
            refuse(send, recv, reply, StreamCode::BadRequest).await;
            return;
        }
    };
    let mut image = BytesMut::with_capacity(image_len);
    let mut truncated = false;
    while image.len() < image_len {
        match recv.read_chunk(image_len - image.len(), true).await {
            Ok(Some(chunk)) => image.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                truncated = true;
                break;
            }
            Err(e) => {
                debug!(error = %e, "request stream failed while reading the image");
                return;
            }
        }
    }
    if truncated {
        let reply = ErrorReply {
            kind: ErrorKind::BadRequest,
            message: format!("image truncated: {} of {} bytes", image.len(), image_len),
        };
        refuse(send, recv, reply, StreamCode::BadRequest).await;
        return;
    }
    let req = InferenceRequest {
        request_id: header.request_id,
        attempt: header.attempt,
        deadline: header
            .deadline_ms
            .map(|ms| received_at + Duration::from_millis(ms)),
        top_k: header.top_k,
        image: image.freeze(),
    };
    let request_id = req.request_id;
    // The handler's "work started" signal reaches this task only if the front-end asked.
    let (started, mut started_rx) = if header.ack {
        let (handle, rx) = WorkStarted::channel();
        (handle, Some(rx))
    } else {
        (WorkStarted::ignored(), None)
    };
    let work = handler.handle(req, started);
    tokio::pin!(work);
    // If the front-end cancels (hedge lost, overdue and moved, client gone), stop working.
    let stopped = send.stopped();
    tokio::pin!(stopped);
    // The Started frame being written, and how much of it is out. It is written a piece at a
    // time inside this loop so the handler keeps being polled meanwhile: a slow write never
    // delays the work (a write future dropped half-way has written nothing more).
    let mut started_frame: Option<(Bytes, usize)> = None;
    let result = loop {
        tokio::select! {
            biased;
            r = &mut work => break r,
            expect = async {
                match started_rx.as_mut() {
                    Some(rx) => rx.await,
                    None => std::future::pending().await,
                }
            }, if started_rx.is_some() => {
                started_rx = None;
                // Err: the handler dropped its handle without starting; nothing to say.
                if let Ok(expect) = expect {
                    let expect_ms = u32::try_from(expect.as_nanos().div_ceil(1_000_000))
                        .unwrap_or(u32::MAX);
                    match codec::encode_reply(&Reply::Started { expect_ms }) {
                        Ok(frame) => started_frame = Some((frame, 0)),
                        Err(e) => warn!(error = %e, "cannot encode started frame"),
                    }
                }
            }
            written = async {
                match &started_frame {
                    Some((frame, done)) => send.write(&frame[*done..]).await,
                    None => std::future::pending().await,
                }
            }, if started_frame.is_some() => {
                match written {
                    Ok(n) => {
                        if let Some((frame, done)) = &mut started_frame {
                            *done += n;
                            if *done >= frame.len() {
                                started_frame = None;
                            }
                        }
                    }
                    // The peer stopped or reset: `stopped` reports it on the next turn.
                    Err(e) => {
                        debug!(request_id, error = %e, "could not write the started frame");
                        started_frame = None;
                    }
                }
            }
            stopped = &mut stopped => {
                debug!(request_id, ?stopped, "request cancelled by the front-end");
                return;
            }
        }
    };
    drop(recv);
    let reply = match result {
        Ok(answer) => Reply::Answer(answer),
        Err(e) => Reply::Error(ErrorReply::from(&e)),
    };
    let pending = started_frame
        .as_ref()
        .map_or(&[][..], |(f, done)| &f[*done..]);
    send_final(&mut send, pending, &reply).await;
}
