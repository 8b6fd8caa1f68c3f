//! The four sweeps and the code that runs one measurement point on either system.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::Mutex;

use super::LabError;
use super::baseline::{BaselineDispatcher, start_tcp_delay_proxy};
use super::driver::{HttpsSubmitter, RunResult, Submit, drive};
use super::net::{NetMode, NsLink};
use super::procs::{
    Bins, Certs, NodeSpec, Proc, free_tcp_port, free_udp_port, site_args, wait_site_ready, wait_tcp,
};
use crate::impair::DirectionConfig;
use crate::link::{Direction, LinkControl};
use crate::relay::{RelayConfig, RelayHandle};

/// Port of a Glimpse node inside its namespace (`--net netns`; the namespace is fresh, so a
/// fixed port cannot collide).
const NS_NODE_PORT: u16 = 7443;
/// Port of a baseline worker inside its namespace.
const NS_WORKER_PORT: u16 = 7600;

/// Which system a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum System {
    Glimpse,
    Baseline,
}

impl std::fmt::Display for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            System::Glimpse => "glimpse",
            System::Baseline => "baseline",
        })
    }
}

/// The cluster of one measurement point.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub workers: usize,
    /// Seed "loss": probability that a request/answer exchange is lost. Baseline: each answer
    /// is dropped by the worker with this probability. Glimpse: every link is blackholed (both
    /// directions) for each `loss_slot` with this probability, long enough that the
    /// front-end's attempt timeout, not QUIC's retransmission, recovers the image.
    pub exchange_loss: f64,
    pub loss_slot: Duration,
    /// Probability that a request kills the *first* worker (seed "failure": at most one dies).
    pub fail_rate_one: f64,
    /// Each answer held this long (seed "delay").
    pub extra_delay_ms: u64,
    /// Impairment of every link, both directions, in relay syntax (e.g. `loss=5%`, `delay=100ms`).
    pub link: Option<String>,
    /// Kill one worker (round robin) this often during the run and restart it after `down_for`.
    pub crash_every: Option<Duration>,
    pub down_for: Duration,
}

impl ClusterSpec {
    pub fn plain(workers: usize) -> ClusterSpec {
        ClusterSpec {
            workers,
            exchange_loss: 0.0,
            loss_slot: Duration::from_secs(1),
            fail_rate_one: 0.0,
            extra_delay_ms: 0,
            link: None,
            crash_every: None,
            down_for: Duration::from_millis(500),
        }
    }

    /// The point's link impairment (both directions), parsed once for every user of it.
    fn link_config(&self) -> Result<DirectionConfig, String> {
        let mut c = DirectionConfig::default();
        if let Some(link) = &self.link {
            c.apply_spec(link).map_err(|e| e.to_string())?;
        }
        Ok(c)
    }

    /// With `--net relay` the baseline cannot run a point whose links lose TCP segments (the
    /// UDP relay cannot carry TCP; delay is emulated by a TCP delay proxy). With `--net netns`
    /// every impairment applies to IP packets, TCP included, so every point is supported.
    pub fn baseline_supported(&self, net: NetMode) -> Result<(), String> {
        let c = self.link_config()?;
        let only_delay = DirectionConfig {
            delay: c.delay,
            ..DirectionConfig::default()
        };
        if net == NetMode::Relay && c != only_delay {
            return Err("the UDP relay cannot impair TCP; use --net netns".into());
        }
        Ok(())
    }

    fn link_delay(&self) -> Duration {
        self.link_config().map(|c| c.delay).unwrap_or_default()
    }
}

/// One x-value of an experiment.
#[derive(Debug, Clone)]
pub struct Point {
    pub x: f64,
    pub label: String,
    pub cluster: ClusterSpec,
}

/// One table and one plot.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub id: String,
    pub title: String,
    pub x_label: String,
    pub points: Vec<Point>,
    /// Images per run (experiments with multi-second holds use fewer).
    pub images: usize,
    /// How the experiment maps onto Glimpse and the baseline, printed under the table.
    pub method: String,
}

/// Everything the sweeps need from the command line.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub out: PathBuf,
    pub quick: bool,
    pub model: String,
    pub runs: usize,
    pub images: usize,
    pub concurrency: usize,
    pub service_ms: u64,
    pub capacity: u32,
    pub bins: Bins,
    pub systems: Vec<System>,
    pub site_extra: Vec<String>,
    pub request_timeout: Duration,
    pub baseline_timeout: Duration,
    pub client_attempts: u32,
    /// Longest a run may take; what is unanswered by then is `unfinished`.
    pub run_limit: Duration,
    pub seed: u64,
    /// Which links connect the front-end to the workers.
    pub net: NetMode,
    /// Only these experiment ids (e.g. `loss-packet`); empty = all of the sweep.
    pub only: Vec<String>,
    /// Only points whose label or x value is listed (e.g. `5%` or `5`); empty = all.
    pub points: Vec<String>,
}

fn point(x: f64, label: impl Into<String>, cluster: ClusterSpec) -> Point {
    Point {
        x,
        label: label.into(),
        cluster,
    }
}

/// The experiments of a sweep (`workers`, `loss`, `delay`, `failure`), narrowed by
/// `--only` / `--points`, with the network mode stated in every method text.
pub fn experiments(sweep: &str, o: &LabOptions) -> Result<Vec<Experiment>, LabError> {
    let mut all = all_experiments(sweep, o)?;
    if !o.only.is_empty() {
        let ids: Vec<String> = all.iter().map(|e| e.id.clone()).collect();
        if let Some(bad) = o.only.iter().find(|id| !ids.contains(id)) {
            return Err(LabError::Usage(format!(
                "--only {bad:?}: sweep {sweep} has experiments {}",
                ids.join(", ")
            )));
        }
        all.retain(|e| o.only.contains(&e.id));
    }
    if !o.points.is_empty() {
        for e in &mut all {
            e.points.retain(|p| {
                o.points
                    .iter()
                    .any(|q| *q == p.label || *q == p.x.to_string())
            });
        }
        all.retain(|e| !e.points.is_empty());
        if all.is_empty() {
            return Err(LabError::Usage(format!(
                "--points {}: no point of the selected experiments matches",
                o.points.join(",")
            )));
        }
    }
    for e in &mut all {
        e.method = format!("{} {}", e.method, o.net.describe());
    }
    Ok(all)
}

fn all_experiments(sweep: &str, o: &LabOptions) -> Result<Vec<Experiment>, LabError> {
    let net = o.net;
    let q = o.quick;
    let n = o.images;
    let svc = o.service_ms;
    Ok(match sweep {
        "workers" => {
            let counts: Vec<usize> = if q {
                vec![1, 2, 4, 8]
            } else {
                (1..=8).collect()
            };
            vec![Experiment {
                id: "workers".into(),
                title: "Throughput vs number of workers".into(),
                x_label: "workers".into(),
                points: counts
                    .into_iter()
                    .map(|w| point(w as f64, w.to_string(), ClusterSpec::plain(w)))
                    .collect(),
                images: n,
                method: format!(
                    "Each worker serves one image at a time ({svc} ms service time with the synthetic model); no impairment."
                ),
            }]
        }
        "loss" => {
            let seed_rates = [0.0, 0.4, 0.8];
            let pkt: Vec<f64> = if q {
                vec![0.0, 5.0, 20.0]
            } else {
                vec![0.0, 1.0, 5.0, 10.0, 20.0, 40.0, 80.0]
            };
            vec![
                Experiment {
                    id: "loss-seed".into(),
                    title: "Throughput vs request/answer loss (seed semantics)".into(),
                    x_label: "loss probability".into(),
                    points: seed_rates
                        .iter()
                        .map(|&p| {
                            let mut c = ClusterSpec::plain(3);
                            c.exchange_loss = p;
                            point(p, format!("{p}"), c)
                        })
                        .collect(),
                    images: (n / 2).max(6),
                    method: "A whole exchange is lost with probability p. Baseline: the worker drops each answer with probability p (the seed's semantics exactly). Glimpse: `glimpse-node --stall-rate` is sticky (a stalled node never answers again), so instead each link blackholes both directions for each 1 s slot with probability p; requests caught in a dark slot are recovered by the front-end's attempt timeout and a resend to another node. Recovery is by timeout and resend in both: the baseline's fixed 5 s, Glimpse's adaptive attempt timeout.".into(),
                },
                Experiment {
                    id: "loss-packet".into(),
                    title: "Throughput vs packet loss on every link".into(),
                    x_label: "packet loss (%)".into(),
                    points: pkt
                        .iter()
                        .map(|&p| {
                            let mut c = ClusterSpec::plain(3);
                            if p > 0.0 {
                                c.link = Some(format!("loss={p}%"));
                            }
                            point(p, format!("{p}%"), c)
                        })
                        .collect(),
                    images: (n / 2).max(6),
                    method: match net {
                        NetMode::Relay => "Random loss in both directions of every front-end↔worker link, applied by one userspace relay per link after the QUIC connections are up. The baseline's TCP links cannot lose packets in userspace, so its column is empty except at 0%; rerun with `--net netns` for TCP loss.",
                        NetMode::Netns => "Random loss in both directions of every front-end↔worker link, applied to IP packets by the worker's TUN link once the connections are up (QUIC handshakes / TCP connects done), for both systems alike.",
                    }.into(),
                },
            ]
        }
        "delay" => {
            let holds: Vec<u64> = vec![0, 5000, 10_000];
            let rtts: Vec<u64> = if q {
                vec![0, 200]
            } else {
                vec![0, 50, 200, 1000]
            };
            vec![
                Experiment {
                    id: "delay-seed".into(),
                    title: "Throughput vs answer delay (seed semantics)".into(),
                    x_label: "answer held (s)".into(),
                    points: holds
                        .iter()
                        .map(|&d| {
                            let mut c = ClusterSpec::plain(3);
                            c.extra_delay_ms = d;
                            point(d as f64 / 1000.0, format!("{} s", d / 1000), c)
                        })
                        .collect(),
                    images: if q { 6 } else { 12 },
                    method: "Each answer is held D seconds by the worker (Glimpse: `glimpse-node --extra-delay-ms`; baseline worker: same flag). The baseline's fixed 5 s timeout fires first for D ≥ 5 s, so it resends and the resent copy occupies the worker again.".into(),
                },
                Experiment {
                    id: "delay-rtt".into(),
                    title: "Throughput vs link round-trip time".into(),
                    x_label: "RTT (ms)".into(),
                    points: rtts
                        .iter()
                        .map(|&rtt| {
                            let mut c = ClusterSpec::plain(3);
                            if rtt > 0 {
                                c.link = Some(format!("delay={}ms", rtt / 2));
                            }
                            point(rtt as f64, format!("{rtt} ms"), c)
                        })
                        .collect(),
                    images: n,
                    method: match net {
                        NetMode::Relay => "RTT/2 one-way delay in each direction of every link: UDP relay for Glimpse, TCP delay proxy for the baseline.",
                        NetMode::Netns => "RTT/2 one-way delay in each direction of every link, applied to IP packets by the worker's TUN link for both systems.",
                    }.into(),
                },
            ]
        }
        "failure" => {
            let rates = [0.0, 0.4, 0.8];
            let cycles: Vec<u64> = if q {
                vec![0, 1000]
            } else {
                vec![0, 2000, 1000, 500]
            };
            vec![
                Experiment {
                    id: "failure-seed".into(),
                    title: "Throughput vs worker failure rate (seed semantics)".into(),
                    x_label: "failure probability".into(),
                    points: rates
                        .iter()
                        .map(|&p| {
                            let mut c = ClusterSpec::plain(3);
                            c.fail_rate_one = p;
                            point(p, format!("{p}"), c)
                        })
                        .collect(),
                    images: n,
                    method: "Each request to worker 1 kills that worker with probability p (`--fail-rate p` on one worker only, so at most one of three dies, as in the seed); it stays dead for the rest of the run.".into(),
                },
                Experiment {
                    id: "failure-cycles".into(),
                    title: "Throughput under repeated crash/restart cycles".into(),
                    x_label: "crash interval (ms, 0 = none)".into(),
                    points: cycles
                        .iter()
                        .map(|&ms| {
                            let mut c = ClusterSpec::plain(3);
                            if ms > 0 {
                                c.crash_every = Some(Duration::from_millis(ms));
                            }
                            point(ms as f64, if ms == 0 { "none".into() } else { format!("every {ms} ms") }, c)
                        })
                        .collect(),
                    images: n,
                    method: "Every interval one worker (round robin) is SIGKILLed and restarted 500 ms later on the same port.".into(),
                },
            ]
        }
        other => {
            return Err(LabError::Usage(format!(
                "unknown sweep {other:?} (workers, loss, delay, failure)"
            )));
        }
    })
}

/// A raw measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub experiment: String,
    pub x: f64,
    pub label: String,
    pub system: System,
    pub run: usize,
    pub result: Option<RunResult>,
    /// Why there is no result (unsupported point) or why the run failed to set up.
    pub note: Option<String>,
}

/// Runs one measurement of `system` at `point`. Everything it starts is stopped before it
/// returns.
// One call site; a parameter struct would only rename these eight values.
#[allow(clippy::too_many_arguments)]
pub async fn run_point(
    o: &LabOptions,
    certs: &Certs,
    images: Arc<Vec<Bytes>>,
    exp: &Experiment,
    p: &Point,
    system: System,
    run: usize,
    on_done: impl Fn() + Send + Sync + 'static,
) -> Result<RunResult, LabError> {
    let log_dir = o.out.join("logs").join(format!(
        "{}-{}-{}-run{}",
        exp.id,
        p.label.replace([' ', '%'], ""),
        system,
        run
    ));
    let seed = o
        .seed
        .wrapping_add(run as u64 * 1000)
        .wrapping_add(p.x.to_bits() % 997);
    match system {
        System::Glimpse => run_glimpse(o, certs, images, p, &log_dir, seed, on_done).await,
        System::Baseline => run_baseline(o, images, p, &log_dir, seed, on_done).await,
    }
}

/// Kills one worker (round robin) every `every` and restarts it `down_for` later.
async fn crash_cycles(
    procs: Arc<Mutex<Vec<Proc>>>,
    respawn: Vec<(String, PathBuf, Vec<String>)>,
    every: Duration,
    down_for: Duration,
    log_dir: PathBuf,
) {
    let mut k = 0usize;
    loop {
        tokio::time::sleep(every).await;
        let idx = k % respawn.len();
        k += 1;
        procs.lock().await[idx].kill().await;
        tokio::time::sleep(down_for).await;
        let (name, prog, args) = &respawn[idx];
        match Proc::spawn(name, prog, args, &log_dir) {
            Ok(p) => procs.lock().await[idx] = p,
            Err(e) => tracing::warn!(error = %e, "restart failed"),
        }
    }
}

/// Seed-semantics loss for Glimpse: each `slot`, each link goes dark (both directions) with
/// probability `p`, independently.
async fn flap_links(links: Vec<Arc<dyn LinkControl>>, p: f64, slot: Duration, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    loop {
        for r in &links {
            let dark = rng.random_bool(p.clamp(0.0, 1.0));
            let spec = if dark {
                "blackhole=on"
            } else {
                "blackhole=off"
            };
            if let Err(e) = r.apply_spec(Direction::Both, spec) {
                tracing::warn!(error = %e, "flap");
            }
        }
        tokio::time::sleep(slot).await;
    }
}

async fn run_glimpse(
    o: &LabOptions,
    certs: &Certs,
    images: Arc<Vec<Bytes>>,
    p: &Point,
    log_dir: &std::path::Path,
    seed: u64,
    on_done: impl Fn() + Send + Sync + 'static,
) -> Result<RunResult, LabError> {
    let c = &p.cluster;
    let node_bin = o.bins.path("glimpse-node");
    let mut procs = Vec::new();
    let mut respawn = Vec::new();
    let mut relays = Vec::new();
    // Every impaired link, whatever its kind: what `c.link` and the flapping act on.
    let mut links: Vec<Arc<dyn LinkControl>> = Vec::new();
    // Declared after `procs`, so on an early return the namespaces go before the processes
    // are killed; either order cleans up.
    let mut ns_links = Vec::new();
    let mut site_nodes = Vec::new();
    for i in 0..c.workers {
        let name = format!("n{}", i + 1);
        let link_seed = seed.wrapping_add(i as u64 * 2);
        let ns = match o.net {
            NetMode::Netns => Some(NsLink::create(i + 1, link_seed).await?),
            NetMode::Relay => None,
        };
        let listen: SocketAddr = match &ns {
            Some(l) => (l.addr(), NS_NODE_PORT).into(),
            None => ([127, 0, 0, 1], free_udp_port()?).into(),
        };
        let spec = NodeSpec {
            name: name.clone(),
            listen,
            model: o.model.clone(),
            service_ms: o.service_ms,
            capacity: o.capacity,
            fail_rate: if i == 0 { c.fail_rate_one } else { 0.0 },
            stall_rate: 0.0,
            extra_delay_ms: c.extra_delay_ms,
        };
        let (prog, args) = match &ns {
            Some(l) => l.wrap(&node_bin, &spec.args(certs)),
            None => (node_bin.clone(), spec.args(certs)),
        };
        procs.push(Proc::spawn(&name, &prog, &args, log_dir)?);
        respawn.push((name.clone(), prog, args));
        let addr = if let Some(l) = ns {
            links.push(l.control());
            ns_links.push(l);
            listen
        } else if c.link.is_some() || c.exchange_loss > 0.0 {
            let mut rc = RelayConfig::new(
                "127.0.0.1:0"
                    .parse()
                    .map_err(|e| LabError::Setup(format!("{e}")))?,
                listen,
            );
            rc.seed = link_seed;
            let relay = RelayHandle::start(rc)
                .await
                .map_err(|e| LabError::Setup(e.to_string()))?;
            let a = relay.local_addr();
            links.push(Arc::new(relay.clone()));
            relays.push(relay);
            a
        } else {
            listen
        };
        site_nodes.push((name, addr));
    }
    let site_port = free_tcp_port()?;
    let site_listen: SocketAddr = ([127, 0, 0, 1], site_port).into();
    let mut site = Proc::spawn(
        "glimpse",
        &o.bins.path("glimpse"),
        &site_args(certs, site_listen, &site_nodes, &o.site_extra),
        log_dir,
    )?;
    let base = format!("https://127.0.0.1:{site_port}");
    wait_site_ready(&base, c.workers, Duration::from_secs(60), &mut site).await?;
    // Impair the links only once the connections are up: the experiment is about serving
    // under loss, not about handshakes under loss (quinn's initial PTO makes those minutes).
    impair_links(&links, c)?;
    let flapper = (c.exchange_loss > 0.0).then(|| {
        tokio::spawn(flap_links(
            links.clone(),
            c.exchange_loss,
            c.loss_slot,
            seed,
        ))
    });
    let procs = Arc::new(Mutex::new(procs));
    let cycler = c.crash_every.map(|every| {
        tokio::spawn(crash_cycles(
            procs.clone(),
            respawn,
            every,
            c.down_for,
            log_dir.to_path_buf(),
        ))
    });
    let submitter = Arc::new(HttpsSubmitter::new(&base, o.request_timeout)?);
    let result = drive_run(o, submitter, images, on_done).await;
    if let Some(t) = cycler {
        t.abort();
    }
    if let Some(t) = flapper {
        t.abort();
    }
    for l in &links {
        tracing::debug!(stats = ?l.stats(), "link counters");
    }
    for r in &relays {
        r.shutdown();
    }
    drop(site);
    drop(procs);
    for l in ns_links {
        l.close().await;
    }
    result
}

/// Drives one run with the lab's client settings (concurrency, resubmissions, run limit).
async fn drive_run<S: Submit>(
    o: &LabOptions,
    system: Arc<S>,
    images: Arc<Vec<Bytes>>,
    on_done: impl Fn() + Send + Sync + 'static,
) -> Result<RunResult, LabError> {
    drive(
        system,
        images,
        o.concurrency,
        o.client_attempts,
        o.run_limit,
        on_done,
    )
    .await
}

/// Applies the point's link impairment (both directions) to every link.
fn impair_links(links: &[Arc<dyn LinkControl>], c: &ClusterSpec) -> Result<(), LabError> {
    if let Some(link) = &c.link {
        for l in links {
            l.apply_spec(Direction::Both, link)
                .map_err(|e| LabError::Setup(e.to_string()))?;
        }
    }
    Ok(())
}

async fn run_baseline(
    o: &LabOptions,
    images: Arc<Vec<Bytes>>,
    p: &Point,
    log_dir: &std::path::Path,
    seed: u64,
    on_done: impl Fn() + Send + Sync + 'static,
) -> Result<RunResult, LabError> {
    let c = &p.cluster;
    c.baseline_supported(o.net).map_err(LabError::Unsupported)?;
    let lab = std::env::current_exe().map_err(LabError::Io)?;
    let mut procs = Vec::new();
    let mut respawn = Vec::new();
    let mut addrs = Vec::new();
    let mut proxies = Vec::new();
    let mut links: Vec<Arc<dyn LinkControl>> = Vec::new();
    let mut ns_links = Vec::new();
    for i in 0..c.workers {
        let name = format!("baseline-w{}", i + 1);
        let ns = match o.net {
            NetMode::Netns => Some(NsLink::create(i + 1, seed.wrapping_add(i as u64 * 2)).await?),
            NetMode::Relay => None,
        };
        let listen: SocketAddr = match &ns {
            Some(l) => (l.addr(), NS_WORKER_PORT).into(),
            None => ([127, 0, 0, 1], free_tcp_port()?).into(),
        };
        let mut args = vec![
            "baseline-worker".to_string(),
            "--listen".into(),
            listen.to_string(),
            "--service-ms".into(),
            o.service_ms.to_string(),
            "--seed".into(),
            seed.wrapping_add(i as u64).to_string(),
        ];
        if i == 0 && c.fail_rate_one > 0.0 {
            args.extend(["--fail-rate".into(), c.fail_rate_one.to_string()]);
        }
        if c.exchange_loss > 0.0 {
            args.extend(["--drop-rate".into(), c.exchange_loss.to_string()]);
        }
        if c.extra_delay_ms > 0 {
            args.extend(["--extra-delay-ms".into(), c.extra_delay_ms.to_string()]);
        }
        let (prog, args) = match &ns {
            Some(l) => l.wrap(&lab, &args),
            None => (lab.clone(), args),
        };
        procs.push(Proc::spawn(&name, &prog, &args, log_dir)?);
        respawn.push((name, prog, args));
        wait_tcp(listen, Duration::from_secs(20)).await?;
        let delay = c.link_delay();
        if let Some(l) = ns {
            // The TUN link carries the impairment; no proxy.
            links.push(l.control());
            ns_links.push(l);
            addrs.push(listen);
        } else if delay.is_zero() {
            addrs.push(listen);
        } else {
            let (a, task) = start_tcp_delay_proxy(listen, delay).await?;
            proxies.push(task);
            addrs.push(a);
        }
    }
    // As for Glimpse: the workers are up before their links are impaired.
    impair_links(&links, c)?;
    let procs = Arc::new(Mutex::new(procs));
    let cycler = c.crash_every.map(|every| {
        tokio::spawn(crash_cycles(
            procs.clone(),
            respawn,
            every,
            c.down_for,
            log_dir.to_path_buf(),
        ))
    });
    let dispatcher = Arc::new(BaselineDispatcher::start(&addrs, o.baseline_timeout));
    let started = Instant::now();
    let result = drive_run(o, dispatcher, images, on_done).await;
    tracing::debug!(elapsed = ?started.elapsed(), "baseline run done");
    if let Some(t) = cycler {
        t.abort();
    }
    for t in proxies {
        t.abort();
    }
    for l in &links {
        tracing::debug!(stats = ?l.stats(), "link counters");
    }
    drop(procs);
    for l in ns_links {
        l.close().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options `glimpse-lab sweep` builds by default (48 images, 24 with `--quick`).
    fn options(quick: bool, net: NetMode) -> LabOptions {
        LabOptions {
            out: PathBuf::from("/nonexistent"),
            quick,
            model: "synthetic".into(),
            runs: 1,
            images: if quick { 24 } else { 48 },
            concurrency: 4,
            service_ms: 100,
            capacity: 1,
            bins: Bins {
                dir: PathBuf::from("/nonexistent"),
            },
            systems: vec![System::Glimpse, System::Baseline],
            site_extra: Vec::new(),
            request_timeout: Duration::from_secs(30),
            baseline_timeout: Duration::from_secs(5),
            client_attempts: 3,
            run_limit: Duration::from_secs(600),
            seed: 1,
            net,
            only: Vec::new(),
            points: Vec::new(),
        }
    }

    /// `(x, label)` of each point.
    type Points = Vec<(f64, String)>;

    /// `(id, images, points)` of every experiment of a sweep.
    fn shape(sweep: &str, o: &LabOptions) -> Vec<(String, usize, Points)> {
        experiments(sweep, o)
            .unwrap()
            .into_iter()
            .map(|e| {
                let pts = e.points.iter().map(|p| (p.x, p.label.clone())).collect();
                (e.id, e.images, pts)
            })
            .collect()
    }

    fn pts(xs: &[(f64, &str)]) -> Points {
        xs.iter().map(|(x, l)| (*x, l.to_string())).collect()
    }

    /// Every sweep's experiments, images and points, full and `--quick`: a wrong row in the
    /// catalogue shows up here.
    #[test]
    fn the_catalogue_of_every_sweep() {
        let full = options(false, NetMode::Relay);
        let quick = options(true, NetMode::Relay);
        let workers: Points = (1..=8).map(|w| (w as f64, w.to_string())).collect();
        assert_eq!(
            shape("workers", &full),
            vec![("workers".into(), 48, workers)]
        );
        assert_eq!(
            shape("workers", &quick),
            vec![(
                "workers".into(),
                24,
                pts(&[(1.0, "1"), (2.0, "2"), (4.0, "4"), (8.0, "8")])
            )]
        );
        let seed_loss = pts(&[(0.0, "0"), (0.4, "0.4"), (0.8, "0.8")]);
        assert_eq!(
            shape("loss", &full),
            vec![
                ("loss-seed".into(), 24, seed_loss.clone()),
                (
                    "loss-packet".into(),
                    24,
                    pts(&[
                        (0.0, "0%"),
                        (1.0, "1%"),
                        (5.0, "5%"),
                        (10.0, "10%"),
                        (20.0, "20%"),
                        (40.0, "40%"),
                        (80.0, "80%")
                    ])
                ),
            ]
        );
        assert_eq!(
            shape("loss", &quick),
            vec![
                ("loss-seed".into(), 12, seed_loss.clone()),
                (
                    "loss-packet".into(),
                    12,
                    pts(&[(0.0, "0%"), (5.0, "5%"), (20.0, "20%")])
                ),
            ]
        );
        let holds = pts(&[(0.0, "0 s"), (5.0, "5 s"), (10.0, "10 s")]);
        assert_eq!(
            shape("delay", &full),
            vec![
                ("delay-seed".into(), 12, holds.clone()),
                (
                    "delay-rtt".into(),
                    48,
                    pts(&[
                        (0.0, "0 ms"),
                        (50.0, "50 ms"),
                        (200.0, "200 ms"),
                        (1000.0, "1000 ms")
                    ])
                ),
            ]
        );
        assert_eq!(
            shape("delay", &quick),
            vec![
                ("delay-seed".into(), 6, holds),
                (
                    "delay-rtt".into(),
                    24,
                    pts(&[(0.0, "0 ms"), (200.0, "200 ms")])
                ),
            ]
        );
        assert_eq!(
            shape("failure", &full),
            vec![
                ("failure-seed".into(), 48, seed_loss.clone()),
                (
                    "failure-cycles".into(),
                    48,
                    pts(&[
                        (0.0, "none"),
                        (2000.0, "every 2000 ms"),
                        (1000.0, "every 1000 ms"),
                        (500.0, "every 500 ms")
                    ])
                ),
            ]
        );
        assert_eq!(
            shape("failure", &quick),
            vec![
                ("failure-seed".into(), 24, seed_loss),
                (
                    "failure-cycles".into(),
                    24,
                    pts(&[(0.0, "none"), (1000.0, "every 1000 ms")])
                ),
            ]
        );
        // A few images more than the floor of the seed-loss experiments: never fewer than 6.
        let mut few = options(false, NetMode::Relay);
        few.images = 4;
        assert_eq!(shape("loss", &few)[0].1, 6);
    }

    fn cluster(sweep: &str, id: &str, label: &str) -> ClusterSpec {
        let all = experiments(sweep, &options(false, NetMode::Relay)).unwrap();
        let e = all.into_iter().find(|e| e.id == id).unwrap();
        e.points
            .into_iter()
            .find(|p| p.label == label)
            .unwrap()
            .cluster
    }

    /// What each experiment varies in the cluster of a point.
    #[test]
    fn points_set_the_cluster() {
        assert_eq!(cluster("workers", "workers", "5").workers, 5);
        assert_eq!(cluster("loss", "loss-seed", "0.4").exchange_loss, 0.4);
        let packet = cluster("loss", "loss-packet", "5%");
        assert_eq!((packet.workers, packet.link), (3, Some("loss=5%".into())));
        assert_eq!(cluster("loss", "loss-packet", "0%").link, None);
        assert_eq!(cluster("delay", "delay-seed", "5 s").extra_delay_ms, 5000);
        assert_eq!(
            cluster("delay", "delay-rtt", "200 ms").link,
            Some("delay=100ms".into())
        );
        assert_eq!(cluster("delay", "delay-rtt", "0 ms").link, None);
        assert_eq!(cluster("failure", "failure-seed", "0.8").fail_rate_one, 0.8);
        assert_eq!(
            cluster("failure", "failure-cycles", "every 500 ms").crash_every,
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            cluster("failure", "failure-cycles", "none").crash_every,
            None
        );
    }

    /// Titles, axis labels and method texts: the service time and the network mode are
    /// filled in, and the two link experiments explain each mode differently.
    #[test]
    fn methods_name_the_network() {
        let relay = experiments("workers", &options(false, NetMode::Relay)).unwrap();
        assert_eq!(relay[0].title, "Throughput vs number of workers");
        assert_eq!(relay[0].x_label, "workers");
        assert!(relay[0].method.starts_with(
            "Each worker serves one image at a time (100 ms service time with the synthetic model); no impairment. Network `--net relay`"
        ));
        for (sweep, id) in [("loss", "loss-packet"), ("delay", "delay-rtt")] {
            let text = |net| {
                experiments(sweep, &options(false, net))
                    .unwrap()
                    .into_iter()
                    .find(|e| e.id == id)
                    .unwrap()
                    .method
            };
            let (r, n) = (text(NetMode::Relay), text(NetMode::Netns));
            assert!(
                r.contains("relay") && r.ends_with(NetMode::Relay.describe()),
                "{r}"
            );
            assert!(
                n.contains("TUN link") && n.ends_with(NetMode::Netns.describe()),
                "{n}"
            );
        }
    }

    /// Unknown sweeps, `--only` ids and `--points` are usage errors that list what exists.
    #[test]
    fn unknown_names_are_usage_errors() {
        let o = options(false, NetMode::Relay);
        let err = experiments("latency", &o).unwrap_err().to_string();
        assert_eq!(
            err,
            "usage: unknown sweep \"latency\" (workers, loss, delay, failure)"
        );
        let mut only = o.clone();
        only.only = vec!["loss-bits".into()];
        let err = experiments("loss", &only).unwrap_err().to_string();
        assert_eq!(
            err,
            "usage: --only \"loss-bits\": sweep loss has experiments loss-seed, loss-packet"
        );
        only.only = vec!["loss-packet".into()];
        only.points = vec!["5".into(), "20%".into()];
        assert_eq!(
            shape("loss", &only),
            vec![("loss-packet".into(), 24, pts(&[(5.0, "5%"), (20.0, "20%")]))]
        );
        only.points = vec!["3%".into()];
        assert!(experiments("loss", &only).is_err());
    }

    fn with_link(spec: &str) -> ClusterSpec {
        let mut c = ClusterSpec::plain(3);
        c.link = Some(spec.into());
        c
    }

    /// The relay carries only UDP, so the baseline runs a packet-loss point only through the
    /// TUN links; delay works in both (a TCP proxy under `relay`); a bad spec is an error.
    #[test]
    fn baseline_points_depend_on_the_network_mode() {
        let loss = with_link("loss=5%");
        assert!(loss.baseline_supported(NetMode::Relay).is_err());
        assert!(loss.baseline_supported(NetMode::Netns).is_ok());
        let delay = with_link("delay=100ms");
        assert!(delay.baseline_supported(NetMode::Relay).is_ok());
        assert_eq!(delay.link_delay(), Duration::from_millis(100));
        assert!(
            ClusterSpec::plain(3)
                .baseline_supported(NetMode::Relay)
                .is_ok()
        );
        assert_eq!(ClusterSpec::plain(3).link_delay(), Duration::ZERO);
        let bad = with_link("loss=lots");
        assert!(bad.baseline_supported(NetMode::Relay).is_err());
        assert!(bad.baseline_supported(NetMode::Netns).is_err());
    }
}
