//! Shared helpers for the process-level tests: a cluster CA written to a temp dir, real
//! `glimpse-node serve` processes on 127.0.0.1, signals, and a front-end `Dispatcher`.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use glimpse_certs::ClusterCa;
use glimpse_transport::{Dispatcher, DispatcherConfig, NodeEndpoint, NodeState};

pub(crate) const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Generous: the tests run on a loaded 2-core machine next to compilers.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// A cluster CA and its files in a temp dir.
pub(crate) struct Cluster {
    pub dir: tempfile::TempDir,
    pub ca: ClusterCa,
}

impl Cluster {
    pub(crate) fn new() -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ClusterCa::generate("glimpse test CA").expect("CA");
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).expect("write ca");
        Cluster { dir, ca }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues (once) and writes a node certificate; returns (cert, key) paths.
    pub(crate) fn node_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let cert = self.path(&format!("node-{name}.pem"));
        let key = self.path(&format!("node-{name}.key"));
        if !cert.exists() {
            let issued = self.ca.issue_node(name, &[LOCALHOST]).expect("issue node");
            std::fs::write(&cert, issued.cert_pem).expect("write cert");
            std::fs::write(&key, issued.key_pem).expect("write key");
        }
        (cert, key)
    }

    /// A dispatcher (the front-end side) for `nodes`, with a client certificate from the CA.
    /// The configuration of an in-process node `name` serving `model` on a free port, with a
    /// certificate from this cluster's CA.
    pub(crate) fn in_process_config(
        &self,
        name: &str,
        model: glimpse_node::ModelSpec,
    ) -> glimpse_node::NodeConfig {
        let issued = self.ca.issue_node(name, &[LOCALHOST]).expect("node cert");
        let tls = glimpse_node::NodeTls {
            cert_chain: issued.cert_chain().expect("chain"),
            key: issued.private_key().expect("key"),
            client_ca: vec![self.ca.cert_der()],
        };
        let mut config = glimpse_node::NodeConfig::new(localhost_any_port(), tls, name);
        config.model = model;
        config
    }

    pub(crate) fn dispatcher(&self, nodes: &[(&str, SocketAddr)]) -> Dispatcher {
        self.dispatcher_with(nodes, |_| {})
    }

    /// Like [`Cluster::dispatcher`], with `tweak` applied to the config before start.
    pub(crate) fn dispatcher_with(
        &self,
        nodes: &[(&str, SocketAddr)],
        tweak: impl FnOnce(&mut DispatcherConfig),
    ) -> Dispatcher {
        let client = self.ca.issue_client("frontend").expect("client cert");
        let mut config = DispatcherConfig::new(
            nodes
                .iter()
                .map(|(name, addr)| NodeEndpoint {
                    name: name.to_string(),
                    addr: *addr,
                })
                .collect(),
            vec![self.ca.cert_der()],
            client.cert_chain().expect("chain"),
            client.private_key().expect("key"),
        );
        config.policy.max_attempts = 6;
        config.policy.request_deadline = Duration::from_secs(60);
        config.policy.hedge = false;
        tweak(&mut config);
        Dispatcher::start(config).expect("dispatcher")
    }
}

/// A `glimpse-node serve` child process. Killed (SIGKILL) when dropped.
pub(crate) struct NodeProc {
    pub name: String,
    pub addr: SocketAddr,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl NodeProc {
    /// Starts a synthetic node and waits for its "listening" line. `listen` may use port 0.
    pub(crate) fn spawn(
        cluster: &Cluster,
        name: &str,
        listen: SocketAddr,
        service_ms: u32,
        extra: &[&str],
    ) -> NodeProc {
        let service_ms = service_ms.to_string();
        Self::spawn_model(
            cluster,
            name,
            listen,
            &["--model", "synthetic", "--service-ms", &service_ms],
            extra,
        )
    }

    /// Starts a GoogLeNet node with random weights (real decoding and inference, nothing to
    /// download) and waits for its "listening" line.
    pub(crate) fn spawn_googlenet(
        cluster: &Cluster,
        name: &str,
        listen: SocketAddr,
        extra: &[&str],
    ) -> NodeProc {
        Self::spawn_model(
            cluster,
            name,
            listen,
            &["--model", "googlenet", "--weights", "random"],
            extra,
        )
    }

    fn spawn_model(
        cluster: &Cluster,
        name: &str,
        listen: SocketAddr,
        model: &[&str],
        extra: &[&str],
    ) -> NodeProc {
        let (cert, key) = cluster.node_files(name);
        let log = cluster.path(&format!("{name}-{}.log", unique()));
        let stderr = std::fs::File::create(&log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_glimpse-node"))
            .arg("serve")
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .arg("--ca")
            .arg(cluster.path("ca.pem"))
            .arg("--node-id")
            .arg(name)
            .args(model)
            .args(extra)
            .env("GLIMPSE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn glimpse-node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("glimpse-node listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(a) => a.parse().expect("address"),
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "node {name} did not start; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        };
        NodeProc {
            name: name.to_string(),
            addr,
            child: Some(child),
            log,
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub(crate) fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) with a pid of our own child and a valid signal number.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Waits for the process to exit (after a signal), with a timeout.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "node {} did not exit within {timeout:?}; log:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A field of /proc/PID/status in bytes (e.g. "VmHWM", the peak resident set).
    pub(crate) fn status_bytes(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no {field} in /proc/{}/status", self.pid()))
    }
}

/// A GIF declaring a `screen_w`×`screen_h` logical screen with one frame at (`left`, `top`)
/// of `frame_w`×`frame_h` whose data holds a single pixel: tiny on the wire, as costly as its
/// screen (and its frame, if it does not fill the screen's width from the left) to decode.
pub(crate) fn gif(screen_w: u16, screen_h: u16, frame: (u16, u16, u16, u16)) -> bytes::Bytes {
    let (left, top, fw, fh) = frame;
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&screen_w.to_le_bytes());
    g.extend_from_slice(&screen_h.to_le_bytes());
    g.extend_from_slice(&[0x80, 0, 0]); // a 2-entry global color table follows
    g.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    g.extend_from_slice(&[0x21, 0xF9, 4, 0, 0, 0, 0, 0]); // graphic control extension
    g.extend_from_slice(&[0x21, 0xFE, 15]); // comment extension
    g.extend_from_slice(b"decode-bomb.gif");
    g.push(0);
    g.push(0x2C); // image descriptor
    for v in [left, top, fw, fh] {
        g.extend_from_slice(&v.to_le_bytes());
    }
    g.push(0);
    // LZW, minimum code size 2, one 2-byte sub-block: clear (4), index 0, end (5).
    g.extend_from_slice(&[2, 2, 0x44, 0x01, 0]);
    g.push(0x3B);
    bytes::Bytes::from(g)
}

/// The security issue's image: 62 bytes, a 16000×4000 logical screen, one 1×1 frame.
pub(crate) fn gif_bomb() -> bytes::Bytes {
    gif(16000, 4000, (0, 0, 1, 1))
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A distinct test "image" (the synthetic model does not decode, it hashes).
pub(crate) fn image(i: usize) -> bytes::Bytes {
    let mut v = format!("synthetic test image #{i} ").into_bytes();
    v.resize(2048, (i % 251) as u8);
    bytes::Bytes::from(v)
}

/// The answer the synthetic model must give for `image`.
pub(crate) fn expected_indices(image: &[u8], top_k: usize) -> Vec<u32> {
    glimpse_node::synthetic::synthetic_labels(image, top_k)
        .iter()
        .map(|l| l.index)
        .collect()
}

/// Waits until the dispatcher reports `name` in state Ready.
pub(crate) async fn wait_node_ready(d: &Dispatcher, name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if d.nodes()
            .iter()
            .any(|n| n.name == name && n.state == NodeState::Ready)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}

/// Waits until the dispatcher has at least one request in flight on `name`.
pub(crate) async fn wait_in_flight(d: &Dispatcher, name: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if d.nodes().iter().any(|n| n.name == name && n.in_flight > 0) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    false
}

pub(crate) fn localhost_any_port() -> SocketAddr {
    SocketAddr::new(LOCALHOST, 0)
}

pub(crate) fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Triggers the shutdown of in-process nodes and waits until each has drained cleanly.
pub(crate) async fn stop_nodes(
    trigger: glimpse_node::ShutdownTrigger,
    nodes: Vec<glimpse_node::RunningNode>,
) {
    trigger.trigger();
    for node in nodes {
        tokio::time::timeout(Duration::from_secs(60), node.wait())
            .await
            .expect("drained in time")
            .expect("clean drain");
    }
}

/// `GET path` over HTTP/1.1 with a plain socket: (status, body).
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read");
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {raw:?}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of an unlabelled sample on a metrics page.
pub(crate) fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
