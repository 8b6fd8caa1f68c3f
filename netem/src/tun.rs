//! An IP-level impaired link into a network namespace, made of two TUN devices (Linux, root).
//!
//! The UDP relay ([`crate::relay`]) can only impair UDP, and only for peers that send to it.
//! A TCP baseline therefore could not be measured under packet loss, and a TCP delay proxy
//! terminates connections on loopback, which changes what is measured. A [`TunLink`] instead
//! carries whole IP packets: the root namespace routes `10.77.I.0/24` into TUN device `A`,
//! this process reads each packet, passes it through the same [`Impairment`](crate::impair::Impairment) engine as the
//! relay and writes it into TUN device `B`, which lives in the worker namespace and owns
//! `10.77.I.2`. Replies go the other way. Whatever runs in the namespace (QUIC over UDP, TCP,
//! ICMP) crosses exactly the same impaired path.
//!
//! ```text
//!  root namespace                    this process                    namespace gl{pid}w{I}
//!  10.77.I.1 ── dev gl{pid}a{I} ──▶ read → Impairment(up) → write ──▶ dev gl{pid}b{I} ── 10.77.I.2
//!            ◀──────────────────── write ← Impairment(down) ← read ◀──
//! ```
//!
//! Both devices are created here, in the root namespace; `B` is then moved into the worker
//! namespace (a TUN device keeps its file descriptor across the move). Both are
//! non-persistent, so closing their descriptors removes them; the namespace is deleted by
//! [`TunLink::close`] or, if the owner errors out or panics, by `Drop`.
//!
//! Setup choices, each fixing something the path would otherwise show:
//! * IPv6 address generation is off on both devices (`addrgenmode none`): no link-local
//!   addresses, so no DAD / router-solicitation packets cross the link or skew its counters.
//! * `txqueuelen` is raised so that bursts wait in the device queue for this process rather
//!   than being dropped silently by the kernel: only the impairment may drop.
//! * MTU stays 1500: QUIC's largest datagrams (1452 B of UDP payload) and TCP segments with
//!   the usual 1460 B MSS fit. No offloads (`IFF_VNET_HDR` is not set), so the kernel hands
//!   over every packet segmented, and loss applies per packet as in a real network.
//! * The worker namespace has no other interface and a default route via `10.77.I.1`, so
//!   every reply, whatever its destination, goes back through the link.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use thiserror::Error;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::impair::DirectionConfig;
use crate::link::{Direction, LinkControl, LinkStats};
use crate::sched::{Engines, enqueue, release};

/// Largest packet read from a device; above any MTU the link is configured with.
const MAX_PACKET: usize = 65_536;

/// Packets a device may queue towards this process before the kernel drops them. Large, so
/// that drops happen in the impairment logic, where they are counted.
const TXQUEUELEN: u32 = 10_000;

/// Highest link index: the third octet of `10.77.I.0/24`, leaving room below 255.
pub const MAX_INDEX: u8 = 250;

/// Errors of the TUN link.
#[derive(Debug, Error)]
pub enum TunError {
    /// This host or process cannot make TUN links: not root, no `/dev/net/tun`, no working
    /// `ip netns`, or a setup step could not run at all. Says which.
    #[error("TUN links are unavailable here: {0}")]
    Unavailable(String),
    /// [`TunConfig::index`] is 0 or above [`MAX_INDEX`].
    #[error("link index {0} out of range (1..={MAX_INDEX})")]
    Index(u16),
    /// A device or namespace name exceeds the kernel's 15-byte limit (IFNAMSIZ).
    #[error("interface or namespace name {0:?} is longer than 15 bytes")]
    Name(String),
    /// Opening, creating or registering a TUN device failed.
    #[error("TUN device {name}: {source}")]
    Device {
        /// The device's name.
        name: String,
        /// The operating system's error.
        source: io::Error,
    },
    /// The link's subnet `10.77.I.0/24` already has a route, so the index is taken.
    #[error("10.77.{0}.0/24 is already routed here (another lab or link using index {0}?)")]
    InUse(u8),
    /// An `ip` command could not be started or exited non-zero.
    #[error("`{command}` failed: {output}")]
    Command {
        /// The command line, e.g. `ip netns add gl123w1`.
        command: String,
        /// Its stderr, or why it could not be started.
        output: String,
    },
}

/// Everything a [`TunLink`] needs to start.
#[derive(Debug, Clone)]
pub struct TunConfig {
    /// Link index I (1..=250): addresses `10.77.I.1` (root side) and `10.77.I.2` (worker side).
    pub index: u8,
    /// The worker namespace to create; it must not exist yet.
    pub namespace: String,
    /// Root-side device name (`A`).
    pub root_device: String,
    /// Worker-side device name (`B`), moved into the namespace.
    pub worker_device: String,
    /// Root → worker (front-end → worker).
    pub up: DirectionConfig,
    /// Worker → root.
    pub down: DirectionConfig,
    /// RNG seed; the down direction uses `seed + 1`, as in the relay.
    pub seed: u64,
}

impl TunConfig {
    /// A transparent link with index `index` and names derived from this process id, so two
    /// labs on one host never collide: namespace `gl{pid}w{I}`, devices `gl{pid}a{I}` and
    /// `gl{pid}b{I}` (at most 15 bytes, the kernel's IFNAMSIZ limit).
    pub fn new(index: u8) -> TunConfig {
        let pid = std::process::id();
        TunConfig {
            index,
            namespace: format!("gl{pid}w{index}"),
            root_device: format!("gl{pid}a{index}"),
            worker_device: format!("gl{pid}b{index}"),
            up: DirectionConfig::default(),
            down: DirectionConfig::default(),
            seed: 1,
        }
    }
}

/// Root-side address of link `index`.
pub fn root_addr(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, index, 1)
}

/// Worker-side address of link `index` (inside the namespace).
pub fn worker_addr(index: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 77, index, 2)
}

/// Checks what a TUN link needs: root, `/dev/net/tun` and the `ip` tool with netns support.
/// The error says which one is missing.
pub fn check_available() -> Result<(), TunError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(TunError::Unavailable(
            "not root (TUN devices and network namespaces need CAP_NET_ADMIN)".into(),
        ));
    }
    if std::fs::metadata("/dev/net/tun").is_err() {
        return Err(TunError::Unavailable("/dev/net/tun is missing".into()));
    }
    let ip_ok = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ip_ok {
        return Err(TunError::Unavailable(
            "`ip netns list` does not run (install iproute2)".into(),
        ));
    }
    Ok(())
}

/// Runs `ip ARGS...`; a non-zero exit becomes [`TunError::Command`] with its stderr.
fn ip(args: &[&str]) -> Result<(), TunError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| TunError::Command {
            command: command.clone(),
            output: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TunError::Command {
            command,
            output: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Opens a non-persistent, non-blocking `IFF_TUN | IFF_NO_PI` device named `name`: reads and
/// writes are bare IP packets, and closing the descriptor removes the device.
fn open_tun(name: &str) -> Result<File, TunError> {
    let err = |source: io::Error| TunError::Device {
        name: name.to_string(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(err)?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value (empty name, no flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // Leave room for the terminating NUL that the zeroed array already provides.
    if name.len() >= req.ifr_name.len() {
        return Err(TunError::Name(name.to_string()));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: the descriptor is open for the duration of the call and `req` is a valid,
    // initialised ifreq that TUNSETIFF reads (and may write the final name into).
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(file)
}

/// Deletes a namespace when dropped (unless disarmed), so a link that fails half-way
/// through its setup, or whose owner errors out, leaves nothing behind.
struct NamespaceGuard {
    name: String,
    armed: AtomicBool,
}

impl NamespaceGuard {
    fn delete(&self) {
        if self.armed.swap(false, Ordering::SeqCst)
            && let Err(e) = ip(&["netns", "del", &self.name])
        {
            tracing::warn!(error = %e, "could not delete namespace");
        }
    }
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        self.delete();
    }
}

/// Removes namespaces `gl{pid}w{I}` left behind by lab processes that no longer exist (a
/// SIGKILLed lab cannot clean up). Their devices vanished with the process; only the empty
/// namespace remains. Best effort.
pub fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name.strip_prefix("gl") else {
            continue;
        };
        let Some((pid, index)) = rest.split_once('w') else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), index.parse::<u8>()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            tracing::info!(namespace = name, "removing stale namespace");
            let _ = ip(&["netns", "del", &name]);
        }
    }
}

/// A running TUN link. Share it with `Arc` (it implements [`LinkControl`] either way); it
/// stops and removes its namespace and devices on [`TunLink::close`] or when dropped.
pub struct TunLink {
    config: TunConfig,
    shared: Arc<Engines>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    namespace: NamespaceGuard,
}

impl TunLink {
    /// Creates the namespace and both devices, configures addresses and starts forwarding on
    /// the current tokio runtime. On error everything created so far is removed.
    pub async fn create(config: TunConfig) -> Result<TunLink, TunError> {
        if config.index == 0 || config.index > MAX_INDEX {
            return Err(TunError::Index(config.index.into()));
        }
        for n in [
            &config.namespace,
            &config.root_device,
            &config.worker_device,
        ] {
            if n.len() > 15 {
                return Err(TunError::Name(n.clone()));
            }
        }
        check_available()?;
        // The commands below take milliseconds each; run them off the async worker threads.
        let c = config.clone();
        let (dev_a, dev_b, namespace) = tokio::task::spawn_blocking(move || setup(&c))
            .await
            .map_err(|e| TunError::Unavailable(format!("setup task: {e}")))??;
        let wrap = |f: File, name: &str| {
            // SAFETY: a `File` owns its descriptor until it is dropped, and the AsyncFd owns
            // the File, so the descriptor stays open and the same for the AsyncFd's lifetime.
            unsafe { AsyncFd::register(f) }
                .map(Arc::new)
                .map_err(|e| TunError::Device {
                    name: name.to_string(),
                    source: e.into_parts().1,
                })
        };
        let a = wrap(dev_a, &config.root_device)?;
        let b = wrap(dev_b, &config.worker_device)?;
        let shared = Arc::new(Engines::new(
            config.up.clone(),
            config.down.clone(),
            config.seed,
        ));
        let (up_tx, up_rx) = mpsc::unbounded_channel();
        let (down_tx, down_rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(read_loop(a.clone(), shared.clone(), Direction::Up, up_tx)),
            tokio::spawn(write_loop(b.clone(), shared.clone(), Direction::Up, up_rx)),
            tokio::spawn(read_loop(b, shared.clone(), Direction::Down, down_tx)),
            tokio::spawn(write_loop(a, shared.clone(), Direction::Down, down_rx)),
        ];
        tracing::info!(
            namespace = config.namespace,
            root = %root_addr(config.index),
            worker = %worker_addr(config.index),
            "TUN link up"
        );
        Ok(TunLink {
            config,
            shared,
            tasks: Mutex::new(tasks),
            namespace,
        })
    }

    /// The worker namespace (for `ip netns exec`).
    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    /// The link index I of `10.77.I.0/24`.
    pub fn index(&self) -> u8 {
        self.config.index
    }

    /// This side's address (`10.77.I.1`).
    pub fn root_addr(&self) -> Ipv4Addr {
        root_addr(self.config.index)
    }

    /// The namespace side's address (`10.77.I.2`): what servers in the namespace listen on.
    pub fn worker_addr(&self) -> Ipv4Addr {
        worker_addr(self.config.index)
    }

    /// Name of the root-side TUN device (`A`).
    pub fn root_device(&self) -> &str {
        &self.config.root_device
    }

    /// Name of the worker-side TUN device (`B`), inside the namespace.
    pub fn worker_device(&self) -> &str {
        &self.config.worker_device
    }

    /// Stops forwarding, waits until both devices are closed (and so removed) and deletes the
    /// namespace. Processes still running inside keep an anonymous namespace alive, without
    /// devices, until they exit.
    pub async fn close(&self) {
        let tasks: Vec<JoinHandle<()>> = self.tasks.lock().drain(..).collect();
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            // Cancelled is the expected outcome; it means the task and its descriptors are gone.
            let _ = t.await;
        }
        self.namespace.delete();
    }
}

/// The blocking part of [`TunLink::create`]: devices, namespace, addresses, routes.
fn setup(c: &TunConfig) -> Result<(File, File, NamespaceGuard), TunError> {
    remove_stale_namespaces();
    // Names carry the pid, addresses cannot: two links with one index would split the route.
    let subnet = format!("10.77.{}.0/24", c.index);
    let routes = Command::new("ip")
        .args(["-4", "route", "show", &subnet])
        .output()
        .map_err(|e| TunError::Unavailable(format!("ip route: {e}")))?;
    if !routes.stdout.iter().all(u8::is_ascii_whitespace) {
        return Err(TunError::InUse(c.index));
    }
    let dev_a = open_tun(&c.root_device)?;
    let dev_b = open_tun(&c.worker_device)?;
    ip(&["netns", "add", &c.namespace])?;
    let namespace = NamespaceGuard {
        name: c.namespace.clone(),
        armed: AtomicBool::new(true),
    };
    let ns = c.namespace.as_str();
    let (a, b) = (c.root_device.as_str(), c.worker_device.as_str());
    let root = format!("{}/24", root_addr(c.index));
    let worker = format!("{}/24", worker_addr(c.index));
    let gateway = root_addr(c.index).to_string();
    let qlen = TXQUEUELEN.to_string();
    ip(&["link", "set", "dev", b, "netns", ns])?;
    // addrgenmode may be unsupported by an old iproute2; the link works without it.
    let _ = ip(&["link", "set", "dev", a, "addrgenmode", "none"]);
    let _ = ip(&["-n", ns, "link", "set", "dev", b, "addrgenmode", "none"]);
    ip(&["link", "set", "dev", a, "mtu", "1500", "txqueuelen", &qlen])?;
    ip(&[
        "-n",
        ns,
        "link",
        "set",
        "dev",
        b,
        "mtu",
        "1500",
        "txqueuelen",
        &qlen,
    ])?;
    ip(&["addr", "add", &root, "dev", a])?;
    ip(&["-n", ns, "addr", "add", &worker, "dev", b])?;
    ip(&["link", "set", "dev", a, "up"])?;
    ip(&["-n", ns, "link", "set", "dev", "lo", "up"])?;
    ip(&["-n", ns, "link", "set", "dev", b, "up"])?;
    ip(&["-n", ns, "route", "add", "default", "via", &gateway])?;
    Ok((dev_a, dev_b, namespace))
}

/// Reads packets from one device and schedules them per the direction's impairment.
async fn read_loop(
    dev: Arc<AsyncFd<File>>,
    shared: Arc<Engines>,
    dir: Direction,
    tx: mpsc::UnboundedSender<(Instant, Bytes)>,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let n = match dev.readable().await {
            Ok(mut guard) => match guard.try_io(|f| f.get_ref().read(&mut buf)) {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    // EIO while the device is down, e.g. during setup or teardown.
                    tracing::debug!(error = %e, ?dir, "TUN read");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                Err(_would_block) => continue,
            },
            Err(e) => {
                tracing::warn!(error = %e, ?dir, "TUN poll failed; direction stopped");
                return;
            }
        };
        if n == 0 {
            continue;
        }
        let verdict = shared.dir(dir).process(Instant::now(), n);
        enqueue(&tx, verdict, || Bytes::copy_from_slice(&buf[..n]));
    }
}

/// Writes a direction's packets into the other device when their time comes.
async fn write_loop(
    dev: Arc<AsyncFd<File>>,
    shared: Arc<Engines>,
    dir: Direction,
    rx: mpsc::UnboundedReceiver<(Instant, Bytes)>,
) {
    release(rx, |pkt: Bytes| {
        let (dev, shared) = (dev.clone(), shared.clone());
        async move {
            match write_packet(&dev, &pkt).await {
                Ok(()) => shared.dir(dir).record_sent(pkt.len()),
                Err(e) => tracing::debug!(error = %e, ?dir, "TUN write"),
            }
        }
    })
    .await;
}

async fn write_packet(dev: &AsyncFd<File>, pkt: &[u8]) -> io::Result<()> {
    loop {
        let mut guard = dev.writable().await?;
        match guard.try_io(|f| f.get_ref().write(pkt)) {
            Ok(r) => return r.map(|_| ()),
            Err(_would_block) => continue,
        }
    }
}

impl LinkControl for TunLink {
    fn config(&self, dir: Direction) -> DirectionConfig {
        self.shared.config(dir)
    }

    fn set_config(&self, dir: Direction, config: DirectionConfig) {
        self.shared.set_config(dir, config);
    }

    fn stats(&self) -> LinkStats {
        let (up, down) = self.shared.counters();
        LinkStats {
            up,
            down,
            sessions: 0,
        }
    }

    fn reset_counters(&self) {
        self.shared.reset_counters();
    }

    /// Stops forwarding and deletes the namespace without waiting for the devices to close
    /// (they close as soon as the runtime drops the cancelled tasks); prefer
    /// [`TunLink::close`] where one can `.await`.
    fn shutdown(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        self.namespace.delete();
    }
}

impl Drop for TunLink {
    fn drop(&mut self) {
        LinkControl::shutdown(self);
    }
}
