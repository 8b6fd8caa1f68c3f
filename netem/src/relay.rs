//! The tokio layer of the impairment relay: real UDP sockets around [`crate::impair`].
//!
//! One relay stands for one link. Clients send to the relay's listen address; for every client
//! address the relay opens its own upstream socket (like a NAT), so the upstream server's
//! answers on that socket go back to exactly that client. Each direction has one
//! [`Impairment`](crate::impair::Impairment) and one scheduler task that releases packets when their time comes.
//!
//! Deliberately no UDP GRO/GSO on the relay's sockets: each datagram is received, impaired
//! and sent on its own, which is what per-packet loss experiments need. quinn sends up to
//! ten datagrams in one GSO batch; with GRO the kernel could hand such a batch to the relay
//! as one buffer, and the relay would then drop or delay the ten together. Receive buffers
//! are raised so that bursts are dropped by the impairment logic and counted, not silently
//! by the kernel.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use socket2::{Domain, Protocol, Socket, Type};
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::impair::{DirectionConfig, SpecError};
use crate::link::{Direction, LinkControl, LinkStats};
use crate::sched::{Engines, ScheduleTx, enqueue, release};

/// Largest datagram the relay forwards (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

/// Errors of the relay's tokio layer.
#[derive(Debug, Error)]
pub enum RelayError {
    /// Binding a UDP socket failed (address in use, not local, or not permitted).
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The operating system's error.
        source: io::Error,
    },
    /// Creating, configuring or connecting a socket failed, other than binding it.
    #[error("socket setup failed: {0}")]
    Socket(#[from] io::Error),
    /// A `key=value` configuration given to [`RelayHandle::apply_spec`] is invalid.
    #[error(transparent)]
    Spec(#[from] SpecError),
}

/// Everything a relay needs to start.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where clients send (port 0 = pick a free port; read it back with [`RelayHandle::local_addr`]).
    pub listen: SocketAddr,
    /// The one server this link leads to.
    pub upstream: SocketAddr,
    /// Impairment of client → upstream packets.
    pub up: DirectionConfig,
    /// Impairment of upstream → client packets.
    pub down: DirectionConfig,
    /// RNG seed; the downstream direction uses `seed + 1` so the two directions are independent.
    pub seed: u64,
    /// Requested SO_RCVBUF/SO_SNDBUF in bytes (the kernel may cap it at net.core.rmem_max).
    pub socket_buffer: usize,
    /// At most this many client sessions are kept; the least recently active one is evicted.
    pub max_sessions: usize,
}

impl RelayConfig {
    /// A transparent relay (no impairment) with sensible buffers.
    pub fn new(listen: SocketAddr, upstream: SocketAddr) -> RelayConfig {
        RelayConfig {
            listen,
            upstream,
            up: DirectionConfig::default(),
            down: DirectionConfig::default(),
            seed: 1,
            socket_buffer: 8 * 1024 * 1024,
            max_sessions: 256,
        }
    }
}

struct Session {
    socket: Arc<UdpSocket>,
    last_seen: Instant,
    task: JoinHandle<()>,
}

struct Shared {
    engines: Engines,
    sessions: Mutex<HashMap<SocketAddr, Session>>,
}

/// Where a scheduled packet goes.
#[derive(Clone)]
enum Target {
    /// Out of a session's upstream socket (connected to the upstream server).
    Upstream(Arc<UdpSocket>),
    /// Out of the listen socket, to a client.
    Client(SocketAddr),
}

/// One datagram waiting in a direction's scheduler.
#[derive(Clone)]
struct Outgoing {
    data: Bytes,
    target: Target,
}

/// A running relay. Cloneable; the relay stops when [`RelayHandle::shutdown`] is called or the
/// last handle is dropped.
#[derive(Clone)]
pub struct RelayHandle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    local_addr: SocketAddr,
    upstream: SocketAddr,
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        for (_, s) in self.shared.sessions.lock().drain() {
            s.task.abort();
        }
    }
}

fn udp_socket(addr: SocketAddr, buffer: usize) -> Result<UdpSocket, RelayError> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: an unprivileged process gets at most net.core.rmem_max.
    if let Err(e) = socket.set_recv_buffer_size(buffer) {
        tracing::warn!(error = %e, "could not raise SO_RCVBUF");
    }
    if let Err(e) = socket.set_send_buffer_size(buffer) {
        tracing::warn!(error = %e, "could not raise SO_SNDBUF");
    }
    socket.set_nonblocking(true)?;
    socket
        .bind(&addr.into())
        .map_err(|source| RelayError::Bind { addr, source })?;
    Ok(UdpSocket::from_std(socket.into())?)
}

impl RelayHandle {
    /// Binds the listen socket and starts the relay's tasks on the current tokio runtime.
    pub async fn start(config: RelayConfig) -> Result<RelayHandle, RelayError> {
        let listen = Arc::new(udp_socket(config.listen, config.socket_buffer)?);
        let local_addr = listen.local_addr()?;
        let shared = Arc::new(Shared {
            engines: Engines::new(config.up.clone(), config.down.clone(), config.seed),
            sessions: Mutex::new(HashMap::new()),
        });
        let (up_tx, up_rx) = mpsc::unbounded_channel();
        let (down_tx, down_rx) = mpsc::unbounded_channel();
        let upstream = config.upstream;
        let tasks = vec![
            tokio::spawn(scheduler(
                up_rx,
                listen.clone(),
                shared.clone(),
                Direction::Up,
            )),
            tokio::spawn(scheduler(
                down_rx,
                listen.clone(),
                shared.clone(),
                Direction::Down,
            )),
            tokio::spawn(listen_loop(listen, shared.clone(), config, up_tx, down_tx)),
        ];
        tracing::info!(%local_addr, "relay listening");
        Ok(RelayHandle {
            inner: Arc::new(HandleInner {
                local_addr,
                upstream,
                shared,
                tasks: Mutex::new(tasks),
            }),
        })
    }

    /// The address clients should send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The server this relay forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.inner.upstream
    }

    /// Current configuration of one direction (`Both` reads `Up`).
    pub fn config(&self, dir: Direction) -> DirectionConfig {
        self.inner.shared.engines.config(dir)
    }

    /// Replaces a direction's configuration at run time.
    pub fn set_config(&self, dir: Direction, config: DirectionConfig) {
        self.inner.shared.engines.set_config(dir, config);
    }

    /// Applies `key=value` settings (see [`DirectionConfig::apply_spec`]) on top of the current
    /// configuration; on error nothing changes.
    pub fn apply_spec(&self, dir: Direction, spec: &str) -> Result<(), RelayError> {
        Ok(LinkControl::apply_spec(self, dir, spec)?)
    }

    /// Counters of both directions and the number of client sessions now open.
    pub fn stats(&self) -> LinkStats {
        let s = &self.inner.shared;
        let (up, down) = s.engines.counters();
        LinkStats {
            up,
            down,
            sessions: s.sessions.lock().len(),
        }
    }

    /// Zeroes both directions' counters; configuration and sessions are kept.
    pub fn reset_counters(&self) {
        self.inner.shared.engines.reset_counters();
    }

    /// Stops all tasks now (packets still scheduled are discarded).
    pub fn shutdown(&self) {
        for t in self.inner.tasks.lock().drain(..) {
            t.abort();
        }
        for (_, s) in self.inner.shared.sessions.lock().drain() {
            s.task.abort();
        }
    }
}

async fn listen_loop(
    listen: Arc<UdpSocket>,
    shared: Arc<Shared>,
    config: RelayConfig,
    up_tx: ScheduleTx<Outgoing>,
    down_tx: ScheduleTx<Outgoing>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match listen.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP port-unreachable from a vanished client shows up here on Linux; it
                // concerns one peer only, so keep serving the others.
                tracing::debug!(error = %e, "recv on listen socket");
                continue;
            }
        };
        let now = Instant::now();
        let socket = match session_socket(&shared, &config, client, now, &down_tx) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, %client, "cannot open upstream session");
                continue;
            }
        };
        let verdict = shared.engines.dir(Direction::Up).process(now, n);
        enqueue(&up_tx, verdict, || Outgoing {
            data: Bytes::copy_from_slice(&buf[..n]),
            target: Target::Upstream(socket),
        });
    }
}

/// Finds or creates the upstream socket for `client`.
fn session_socket(
    shared: &Arc<Shared>,
    config: &RelayConfig,
    client: SocketAddr,
    now: Instant,
    down_tx: &ScheduleTx<Outgoing>,
) -> Result<Arc<UdpSocket>, RelayError> {
    let mut sessions = shared.sessions.lock();
    if let Some(s) = sessions.get_mut(&client) {
        s.last_seen = now;
        return Ok(s.socket.clone());
    }
    if sessions.len() >= config.max_sessions.max(1)
        && let Some(oldest) = sessions
            .iter()
            .min_by_key(|(_, s)| s.last_seen)
            .map(|(a, _)| *a)
        && let Some(s) = sessions.remove(&oldest)
    {
        s.task.abort();
    }
    let bind: SocketAddr = if config.upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = udp_socket(bind, config.socket_buffer)?;
    let std_sock = socket.into_std()?;
    std_sock.connect(config.upstream)?;
    let socket = Arc::new(UdpSocket::from_std(std_sock)?);
    let task = tokio::spawn(upstream_loop(
        socket.clone(),
        shared.clone(),
        client,
        down_tx.clone(),
    ));
    tracing::debug!(%client, "new session");
    sessions.insert(
        client,
        Session {
            socket: socket.clone(),
            last_seen: now,
            task,
        },
    );
    Ok(socket)
}

/// Receives the upstream server's datagrams for one client and schedules them downstream.
async fn upstream_loop(
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    client: SocketAddr,
    down_tx: ScheduleTx<Outgoing>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let n = match socket.recv(&mut buf).await {
            Ok(n) => n,
            Err(e) => {
                // ECONNREFUSED while the upstream server is down (e.g. a crash/restart
                // experiment): keep the session, the server may come back.
                tracing::debug!(error = %e, %client, "recv from upstream");
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
        };
        let now = Instant::now();
        let verdict = shared.engines.dir(Direction::Down).process(now, n);
        enqueue(&down_tx, verdict, || Outgoing {
            data: Bytes::copy_from_slice(&buf[..n]),
            target: Target::Client(client),
        });
    }
}

/// Releases scheduled packets of one direction in time order.
async fn scheduler(
    rx: mpsc::UnboundedReceiver<(Instant, Outgoing)>,
    listen: Arc<UdpSocket>,
    shared: Arc<Shared>,
    dir: Direction,
) {
    release(rx, |out: Outgoing| {
        let (listen, shared) = (listen.clone(), shared.clone());
        async move {
            let sent = match &out.target {
                Target::Upstream(sock) => sock.send(&out.data).await,
                Target::Client(addr) => listen.send_to(&out.data, *addr).await,
            };
            match sent {
                Ok(_) => shared.engines.dir(dir).record_sent(out.data.len()),
                Err(e) => tracing::debug!(error = %e, "send failed"),
            }
        }
    })
    .await;
}

impl LinkControl for RelayHandle {
    fn config(&self, dir: Direction) -> DirectionConfig {
        RelayHandle::config(self, dir)
    }
    fn set_config(&self, dir: Direction, config: DirectionConfig) {
        RelayHandle::set_config(self, dir, config);
    }
    fn stats(&self) -> LinkStats {
        RelayHandle::stats(self)
    }
    fn reset_counters(&self) {
        RelayHandle::reset_counters(self);
    }
    fn shutdown(&self) {
        RelayHandle::shutdown(self);
    }
}
