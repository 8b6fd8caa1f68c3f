//! What a sweep is made of (experiments, points, clusters, the command line's options) and
//! the code that runs one measurement point on either system. Which experiments each sweep
//! runs is the table in [`super::catalogue`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::LabError;
use super::baseline::{BaselineDispatcher, start_tcp_delay_proxy};
use super::driver::{HttpsSubmitter, RunResult, Submit, drive};
use super::net::{NetMode, NsLink};
use super::procs::{
    Bins, Certs, FRONTEND_LISTEN, NodeSpec, free_tcp_port, free_udp_port, site_args, wait_frontend,
    wait_tcp,
};
use super::testbed::Testbed;
use glimpse_netem::impair::DirectionConfig;

/// Port of a Glimpse node inside its namespace (`--net netns`; the namespace is fresh, so a
/// fixed port cannot collide).
const NS_NODE_PORT: u16 = 7443;
/// Port of a baseline worker inside its namespace.
const NS_WORKER_PORT: u16 = 7600;

/// Which system a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum System {
    /// Glimpse as deployed: `glimpse-node` processes and the `glimpse` front-end, loaded
    /// through its public HTTPS API.
    Glimpse,
    /// The seed's design, rebuilt in [`super::baseline`]: TCP workers behind the lab's own
    /// dispatcher with a fixed resend timeout.
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
    /// Number of workers: Glimpse nodes or baseline workers.
    pub workers: usize,
    /// Seed "loss": probability that a request/answer exchange is lost. Baseline: each answer
    /// is dropped by the worker with this probability. Glimpse: every link is blackholed (both
    /// directions) for each `loss_slot` with this probability, long enough that the
    /// front-end's attempt timeout, not QUIC's retransmission, recovers the image.
    pub exchange_loss: f64,
    /// Length of one blackhole slot of `exchange_loss` (Glimpse only).
    pub loss_slot: Duration,
    /// Probability that a request kills the *first* worker (seed "failure": at most one dies).
    pub fail_rate_one: f64,
    /// Each answer held this long (seed "delay").
    pub extra_delay_ms: u64,
    /// Impairment of every link, both directions, in relay syntax (e.g. `loss=5%`, `delay=100ms`).
    pub link: Option<String>,
    /// Kill one worker (round robin) this often during the run and restart it after `down_for`.
    pub crash_every: Option<Duration>,
    /// How long a worker killed by `crash_every` stays down before it is restarted.
    pub down_for: Duration,
}

impl ClusterSpec {
    /// `workers` workers and nothing else: no loss, failures, delay, link impairment or
    /// crashes (`loss_slot` 1 s and `down_for` 500 ms, for whoever turns those on).
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
    /// Position on the plot's x axis, in the unit of [`Experiment::x_label`].
    pub x: f64,
    /// How the point is shown in tables and logs (e.g. `5%`, `every 500 ms`); `--points`
    /// matches it or `x`.
    pub label: String,
    /// The cluster measured at this point.
    pub cluster: ClusterSpec,
}

/// One table and one plot.
#[derive(Debug, Clone)]
pub struct Experiment {
    /// Short id (e.g. `loss-packet`): the `--only` name and the stem of its output files.
    pub id: String,
    /// Heading of its table and caption of its plot.
    pub title: String,
    /// Name and unit of the x axis, also the table's first column header.
    pub x_label: String,
    /// The points measured, in table and plot order.
    pub points: Vec<Point>,
    /// Images per run (experiments with multi-second holds use fewer).
    pub images: usize,
    /// How the experiment maps onto Glimpse and the baseline, printed under the table.
    pub method: String,
}

/// Everything the sweeps need from the command line.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Output directory: CSV, Markdown, plots, certificates and per-run logs.
    pub out: PathBuf,
    /// `--quick`: each experiment's reduced list of points (and image count, where fixed).
    pub quick: bool,
    /// Model of the Glimpse nodes, `synthetic` or `googlenet`; the baseline always uses
    /// the synthetic service time.
    pub model: String,
    /// Runs per point and system.
    pub runs: usize,
    /// `--images`: images per run, for experiments that do not fix their own count.
    pub images: usize,
    /// Client submissions in flight at once.
    pub concurrency: usize,
    /// Synthetic service time per image in ms, for nodes and baseline workers alike.
    pub service_ms: u64,
    /// Images a Glimpse node serves at once (`glimpse-node --capacity`).
    pub capacity: u32,
    /// Where the Glimpse binaries are.
    pub bins: Bins,
    /// The systems measured at every point, in this order.
    pub systems: Vec<System>,
    /// Extra arguments for the `glimpse` front-end, after the lab's own.
    pub site_extra: Vec<String>,
    /// Client timeout of one HTTPS request to Glimpse.
    pub request_timeout: Duration,
    /// The baseline dispatcher's fixed resend timeout (5 s in the seed's design).
    pub baseline_timeout: Duration,
    /// Submissions per image by the client before the image counts as lost.
    pub client_attempts: u32,
    /// Longest a run may take; what is unanswered by then is `unfinished`.
    pub run_limit: Duration,
    /// Base RNG seed; every run, point, link and worker derives its own seed from it.
    pub seed: u64,
    /// Which links connect the front-end to the workers.
    pub net: NetMode,
    /// Only these experiment ids (e.g. `loss-packet`); empty = all of the sweep.
    pub only: Vec<String>,
    /// Only points whose label or x value is listed (e.g. `5%` or `5`); empty = all.
    pub points: Vec<String>,
}

/// A raw measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// The experiment's [`Experiment::id`].
    pub experiment: String,
    /// The point's [`Point::x`].
    pub x: f64,
    /// The point's [`Point::label`].
    pub label: String,
    /// The system measured.
    pub system: System,
    /// Run number at this point, from 0.
    pub run: usize,
    /// The measurements; `None` when the point is unsupported or the run failed (see `note`).
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

/// One Glimpse run: a node per worker (each behind a relay or in its namespace, as the point
/// and `--net` ask), the front-end, the point's impairment and disturbances, then the load.
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
    // Owns everything started below; an early return tears it down in its `Drop`.
    let mut bed = Testbed::new(log_dir);
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
            extra: Vec::new(),
        };
        let (prog, args) = match &ns {
            Some(l) => l.wrap(&node_bin, &spec.args(certs)),
            None => (node_bin.clone(), spec.args(certs)),
        };
        let in_namespace = ns.is_some();
        if let Some(l) = ns {
            bed.add_namespace(l);
        }
        bed.spawn_worker(&name, prog, args)?;
        let addr = if in_namespace {
            // The TUN link into the namespace is the impaired link.
            listen
        } else if c.link.is_some() || c.exchange_loss > 0.0 {
            bed.start_relay(listen, link_seed).await?
        } else {
            listen
        };
        site_nodes.push((name, addr));
    }
    let site = bed.spawn_frontend(
        "glimpse",
        &o.bins.path("glimpse"),
        &site_args(certs, FRONTEND_LISTEN, &site_nodes, &o.site_extra),
    )?;
    let base = wait_frontend(site, c.workers, Duration::from_secs(60)).await?;
    // Impair the links only once the connections are up: the experiment is about serving
    // under loss, not about handshakes under loss (quinn's initial PTO makes those minutes).
    if let Some(link) = &c.link {
        bed.impair(link)?;
    }
    if c.exchange_loss > 0.0 {
        bed.start_flapping(c.exchange_loss, c.loss_slot, seed);
    }
    if let Some(every) = c.crash_every {
        bed.start_crash_cycles(every, c.down_for);
    }
    let submitter = Arc::new(HttpsSubmitter::new(&base, o.request_timeout)?);
    let result = drive_run(o, submitter, images, on_done).await;
    bed.close().await;
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

/// One baseline run: a worker per point worker (behind a TCP delay proxy or in its
/// namespace, as the point and `--net` ask), the point's impairment and crash cycles, then
/// the lab's own dispatcher as the load.
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
    // Owns everything started below; an early return tears it down in its `Drop`.
    let mut bed = Testbed::new(log_dir);
    let mut addrs = Vec::new();
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
        let in_namespace = ns.is_some();
        if let Some(l) = ns {
            bed.add_namespace(l);
        }
        bed.spawn_worker(&name, prog, args)?;
        wait_tcp(listen, Duration::from_secs(20)).await?;
        let delay = c.link_delay();
        if in_namespace || delay.is_zero() {
            // In a namespace the TUN link carries the impairment; no proxy.
            addrs.push(listen);
        } else {
            let (a, task) = start_tcp_delay_proxy(listen, delay).await?;
            bed.add_proxy(task);
            addrs.push(a);
        }
    }
    // As for Glimpse: the workers are up before their links are impaired.
    if let Some(link) = &c.link {
        bed.impair(link)?;
    }
    if let Some(every) = c.crash_every {
        bed.start_crash_cycles(every, c.down_for);
    }
    let dispatcher = Arc::new(BaselineDispatcher::start(&addrs, o.baseline_timeout));
    let started = Instant::now();
    let result = drive_run(o, dispatcher, images, on_done).await;
    tracing::debug!(elapsed = ?started.elapsed(), "baseline run done");
    bed.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

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
