//! Starting and stopping the processes under test: `glimpse-certs`, `glimpse-node serve`,
//! the `glimpse` front-end and baseline workers (`glimpse-lab baseline-worker`).
//!
//! The lab drives the other crates only through their command lines and public API, so it
//! measures exactly what an operator would run. Every child is killed when its handle drops,
//! so a failed or interrupted sweep leaves no stray processes behind.

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

use super::LabError;

/// Where the binaries live.
#[derive(Debug, Clone)]
pub struct Bins {
    /// The directory holding `glimpse`, `glimpse-node` and `glimpse-certs`.
    pub dir: PathBuf,
}

impl Bins {
    /// `explicit`, or the directory of the running executable (target/debug or target/release,
    /// where cargo puts all workspace binaries side by side).
    pub fn locate(explicit: Option<PathBuf>) -> Result<Bins, LabError> {
        let dir = match explicit {
            Some(d) => d,
            None => std::env::current_exe()
                .map_err(LabError::Io)?
                .parent()
                .map(Path::to_path_buf)
                .ok_or_else(|| LabError::Setup("executable has no parent directory".into()))?,
        };
        Ok(Bins { dir })
    }

    /// Where binary `name` should be (not checked; see [`Bins::require`]).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Checks that the named binaries exist, with a hint on how to build them.
    pub fn require(&self, names: &[&str]) -> Result<(), LabError> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !self.path(n).is_file())
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(LabError::Setup(format!(
                "missing binaries in {}: {} (build them with `cargo build -p glimpse-node -p glimpse-site -p glimpse-certs -p glimpse-lab`, or pass --bin-dir)",
                self.dir.display(),
                missing.join(", ")
            )))
        }
    }
}

/// A free UDP port on 127.0.0.1 (bound and released; the tiny race is acceptable in a lab).
pub fn free_udp_port() -> Result<u16, LabError> {
    Ok(UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(LabError::Io)?
        .port())
}

/// A free TCP port on 127.0.0.1.
pub fn free_tcp_port() -> Result<u16, LabError> {
    Ok(TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(LabError::Io)?
        .port())
}

/// A child process that is killed when dropped, with its output in a log file.
pub struct Proc {
    /// The name it was spawned under (e.g. `n1`, `glimpse`); also its log file's stem.
    pub name: String,
    child: Child,
    /// Its log file, `log_dir/name.log`, holding stdout and stderr.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `program args...`, stdout and stderr appended to `log_dir/name.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Proc, LabError> {
        std::fs::create_dir_all(log_dir).map_err(LabError::Io)?;
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(LabError::Io)?;
        let err = out.try_clone().map_err(LabError::Io)?;
        tracing::debug!(name, program = %program.display(), ?args, "spawn");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .env(
                "RUST_LOG",
                std::env::var("GLIMPSE_LAB_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| LabError::Setup(format!("starting {}: {e}", program.display())))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// `Some(exit status)` if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL and reap (a crash, as the failure experiments want).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The rest of the last line of the process's output that starts with `prefix`, once it
    /// has printed one (the log may hold an earlier run's lines). An error, with the log's
    /// tail, when the process exits first or `deadline` passes.
    pub async fn printed(&mut self, prefix: &str, deadline: Instant) -> Result<String, LabError> {
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(rest) = text.lines().rev().find_map(|l| l.strip_prefix(prefix)) {
                return Ok(rest.trim().to_string());
            }
            if let Some(status) = self.exited() {
                return Err(LabError::Setup(format!(
                    "{} exited ({status}) before printing {prefix:?}:\n{}",
                    self.name,
                    self.log_tail(20)
                )));
            }
            if Instant::now() >= deadline {
                return Err(LabError::Setup(format!(
                    "{} did not print {prefix:?} in time:\n{}",
                    self.name,
                    self.log_tail(20)
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `n` lines of the log, for error messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Paths written by `glimpse-certs init`.
#[derive(Debug, Clone)]
pub struct Certs {
    /// The directory `glimpse-certs init --dir` wrote into.
    pub dir: PathBuf,
}

impl Certs {
    /// The CA certificate every node and the front-end trust (`--ca`).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// Node `name`'s certificate (`glimpse-node serve --cert`).
    pub fn node_cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("node-{name}.pem"))
    }
    /// Node `name`'s private key (`glimpse-node serve --key`).
    pub fn node_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("node-{name}.key"))
    }
    /// The certificate the front-end presents to the nodes (`glimpse --cert`).
    pub fn frontend_cert(&self) -> PathBuf {
        self.dir.join("frontend.pem")
    }
    /// The private key of [`Certs::frontend_cert`] (`glimpse --key`).
    pub fn frontend_key(&self) -> PathBuf {
        self.dir.join("frontend.key")
    }
    /// The certificate of the front-end's public HTTPS API (`glimpse --tls-cert`).
    pub fn https_cert(&self) -> PathBuf {
        self.dir.join("https.pem")
    }
    /// The private key of [`Certs::https_cert`] (`glimpse --tls-key`).
    pub fn https_key(&self) -> PathBuf {
        self.dir.join("https.key")
    }
}

/// Runs `glimpse-certs init` for the given node names (all on 127.0.0.1).
pub async fn make_certs(bins: &Bins, dir: &Path, nodes: &[String]) -> Result<Certs, LabError> {
    let mut args = vec![
        "init".to_string(),
        "--dir".into(),
        dir.display().to_string(),
        "--force".into(),
        "--site-name".into(),
        "localhost".into(),
    ];
    for n in nodes {
        args.push("--node".into());
        args.push(format!("{n}=127.0.0.1"));
    }
    let out = Command::new(bins.path("glimpse-certs"))
        .args(&args)
        .output()
        .await
        .map_err(|e| LabError::Setup(format!("running glimpse-certs: {e}")))?;
    if !out.status.success() {
        return Err(LabError::Setup(format!(
            "glimpse-certs {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let certs = Certs {
        dir: dir.to_path_buf(),
    };
    for p in [certs.ca(), certs.frontend_cert(), certs.https_cert()] {
        if !p.is_file() {
            return Err(LabError::Setup(format!(
                "glimpse-certs did not write {}",
                p.display()
            )));
        }
    }
    Ok(certs)
}

/// How one Glimpse node is started.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// Node id (`--node-id`); its certificate must have been made for this name by
    /// [`make_certs`].
    pub name: String,
    /// The UDP address the node serves QUIC on.
    pub listen: SocketAddr,
    /// `synthetic` or `googlenet` (`--model`).
    pub model: String,
    /// Service time per image in ms; passed only with the synthetic model.
    pub service_ms: u64,
    /// Images the node serves at once (`--capacity`).
    pub capacity: u32,
    /// Probability that a request kills the node (`--fail-rate`); 0 = never.
    pub fail_rate: f64,
    /// Probability that the node stops answering for good (`--stall-rate`); 0 = never.
    pub stall_rate: f64,
    /// Extra hold before each answer, in ms (`--extra-delay-ms`).
    pub extra_delay_ms: u64,
    /// Further `glimpse-node serve` flags, after the lab's own (e.g. `--threads 1`).
    pub extra: Vec<String>,
}

impl NodeSpec {
    /// The `glimpse-node serve ...` arguments for this node, with its certificates in `certs`.
    pub fn args(&self, certs: &Certs) -> Vec<String> {
        let mut a = vec![
            "serve".to_string(),
            "--listen".into(),
            self.listen.to_string(),
            "--cert".into(),
            certs.node_cert(&self.name).display().to_string(),
            "--key".into(),
            certs.node_key(&self.name).display().to_string(),
            "--ca".into(),
            certs.ca().display().to_string(),
            "--node-id".into(),
            self.name.clone(),
            "--model".into(),
            self.model.clone(),
            "--capacity".into(),
            self.capacity.to_string(),
        ];
        if self.model == "synthetic" {
            a.extend(["--service-ms".into(), self.service_ms.to_string()]);
        }
        if self.fail_rate > 0.0 {
            a.extend(["--fail-rate".into(), self.fail_rate.to_string()]);
        }
        if self.stall_rate > 0.0 {
            a.extend(["--stall-rate".into(), self.stall_rate.to_string()]);
        }
        if self.extra_delay_ms > 0 {
            a.extend(["--extra-delay-ms".into(), self.extra_delay_ms.to_string()]);
        }
        a.extend(self.extra.iter().cloned());
        a
    }
}

/// Arguments of the `glimpse` front-end for the given `(name, address)` nodes.
pub fn site_args(
    certs: &Certs,
    listen: SocketAddr,
    nodes: &[(String, SocketAddr)],
    extra: &[String],
) -> Vec<String> {
    let mut a = vec![
        "--listen".to_string(),
        listen.to_string(),
        "--tls-cert".into(),
        certs.https_cert().display().to_string(),
        "--tls-key".into(),
        certs.https_key().display().to_string(),
        "--ca".into(),
        certs.ca().display().to_string(),
        "--cert".into(),
        certs.frontend_cert().display().to_string(),
        "--key".into(),
        certs.frontend_key().display().to_string(),
    ];
    for (name, addr) in nodes {
        a.push("--node".into());
        a.push(format!("{name}={addr}"));
    }
    // The lab is one client standing in for many: the front-end's per-caller limits (made
    // for strangers on a public deployment) would measure the lab, not the system.
    for (flag, value) in [
        ("--rate-limit", "off"),
        ("--max-queued-per-caller", "100000"),
    ] {
        if !extra.iter().any(|e| e == flag) {
            a.extend([flag.to_string(), value.to_string()]);
        }
    }
    a.extend(extra.iter().cloned());
    a
}

/// Waits until the front-end answers `/readyz` with 200 and lists `min_nodes` ready nodes
/// in `/api/v1/nodes` (or, if that list cannot be read, until `/readyz` alone is 200).
pub async fn wait_site_ready(
    base: &str,
    min_nodes: usize,
    timeout: Duration,
    site: &mut Proc,
) -> Result<(), LabError> {
    wait_ready_until(base, min_nodes, Instant::now() + timeout, site).await
}

/// The address on which the loopback listeners of the lab's front-ends are bound: port 0, so
/// the kernel picks a port no one holds and the front-end says which (see
/// [`wait_frontend`]). A port picked free beforehand can be taken by anything on the
/// machine before the front-end binds it, and its gRPC listener (at the HTTPS port + 1 with
/// local workers) was never checked at all: parallel tests collided on it.
pub const FRONTEND_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// What `glimpse` prints on stdout once its HTTPS listener is bound.
const SERVING_AT: &str = "Glimpse is serving at ";

/// Waits for a front-end started on [`FRONTEND_LISTEN`] to print where it serves and then
/// for it to be ready as [`wait_site_ready`] says, all within `timeout`; returns its base
/// URL, `https://127.0.0.1:PORT` (what the lab's clients and certificates expect).
pub async fn wait_frontend(
    site: &mut Proc,
    min_nodes: usize,
    timeout: Duration,
) -> Result<String, LabError> {
    let deadline = Instant::now() + timeout;
    let url = site.printed(SERVING_AT, deadline).await?;
    let base = url
        .trim_end_matches('/')
        .replacen("://localhost:", "://127.0.0.1:", 1);
    wait_ready_until(&base, min_nodes, deadline, site).await?;
    Ok(base)
}

async fn wait_ready_until(
    base: &str,
    min_nodes: usize,
    deadline: Instant,
    site: &mut Proc,
) -> Result<(), LabError> {
    let client = super::driver::https_client(Duration::from_secs(5))?;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        if let Some(status) = site.exited() {
            return Err(LabError::Setup(format!(
                "front-end exited ({status}) during startup:\n{}",
                site.log_tail(20)
            )));
        }
        match client.get(format!("{base}/readyz")).send().await {
            Ok(r) if r.status().is_success() => match ready_nodes(&client, base).await {
                Some(n) if n >= min_nodes => return Ok(()),
                Some(n) => last = format!("{n}/{min_nodes} nodes ready"),
                None => return Ok(()),
            },
            Ok(r) => last = format!("/readyz answered {}", r.status()),
            Err(e) => last = format!("/readyz: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(LabError::Setup(format!(
        "front-end not ready in time: {last}\n{}",
        site.log_tail(20)
    )))
}

/// Counts nodes whose `state` is Ready in `/api/v1/nodes` (a list, or an object with a
/// `nodes` list). `None` when the shape is not recognised.
async fn ready_nodes(client: &reqwest::Client, base: &str) -> Option<usize> {
    let v: serde_json::Value = client
        .get(format!("{base}/api/v1/nodes"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    let list = v.as_array().or_else(|| v["nodes"].as_array())?;
    Some(
        list.iter()
            .filter(|n| {
                n["state"]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case("ready"))
            })
            .count(),
    )
}

/// Waits until a TCP port accepts connections (baseline workers).
pub async fn wait_tcp(addr: SocketAddr, timeout: Duration) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(LabError::Setup(format!(
        "{addr} did not accept connections within {timeout:?}"
    )))
}
