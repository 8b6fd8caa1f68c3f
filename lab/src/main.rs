//! `glimpse-lab`: reproduces the seed's experiments (workers, loss, delay, failure) on Glimpse
//! and on a baseline of the seed's design, in the same run; also the baseline's worker process,
//! and `load`, a load generator for a running deployment.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use glimpse_lab::harness::baseline::{WorkerBehaviour, run_worker};
use glimpse_lab::harness::net::NetMode;
use glimpse_lab::harness::procs::Bins;
use glimpse_lab::harness::sweep::{LabOptions, System};
use glimpse_lab::harness::{images, run_sweep};
use glimpse_lab::load::protocol::{HttpVersion, Protocol, TargetOptions};
use glimpse_lab::load::tls::Trust;
use glimpse_lab::load::{LoadOptions, LoadPlan, run_load};
use glimpse_lab::placement::{Fleet, PlacementOptions, run_placement};
use glimpse_lab::sim::ProjectOptions;
use glimpse_lab::sim::SimulateOptions;
use glimpse_lab::uplink::{UplinkOptions, run_uplink};
use glimpse_transport::CongestionControl;
use glimpse_transport::dispatcher::Placement;

#[derive(Parser, Debug)]
#[command(
    name = "glimpse-lab",
    version,
    about = "Glimpse's experiment runner: throughput vs workers, loss, delay and failures, Glimpse vs the seed's design"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: glimpse_ops::LogArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SweepKind {
    Workers,
    Loss,
    Delay,
    Failure,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Net {
    /// Userspace UDP relay per link (unprivileged; no TCP loss for the baseline).
    Relay,
    /// Each worker in its own network namespace behind an IP-level TUN link (Linux, root).
    Netns,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Systems {
    Both,
    Glimpse,
    Baseline,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one sweep and write CSV, Markdown and PNG/SVG plots to --out.
    /// Exits non-zero if any image got no final answer (the CI smoke test relies on this).
    Sweep(SweepArgs),
    /// A baseline worker (the seed's design): TCP, one image at a time per connection.
    BaselineWorker(WorkerArgs),
    /// Drive the dispatcher's real core with simulated nodes on a virtual clock: validate
    /// against the workers and seed-failure sweeps, then project to 1,000 nodes. Writes CSV,
    /// Markdown and PNG/SVG plots to --out; exits non-zero if any image is lost or the
    /// dispatcher breaks its contract (a second answer, credit not returned).
    Simulate(SimulateArgs),
    /// Load a running deployment, in the spirit of Triton's perf_analyzer: a concurrency
    /// sweep (closed loop) or Poisson arrivals at given rates (open loop), over the JSON API,
    /// KServe v2 HTTP (binary tensors) or KServe v2 gRPC. Prints a table per step (sent, ok,
    /// errors by kind, requests/s, images/s, latency p50/p90/p95/p99/mean of every
    /// successful request, no sampling) and optionally writes it as JSON. Exits non-zero if
    /// no request at all succeeded.
    Load(LoadArgs),
    /// One client uploads a burst of images at once across an impaired link, over HTTP/2
    /// (one TCP connection) and over HTTP/3 (one QUIC connection), at each loss rate: the
    /// time until the last answer and each image's latency. The front-end (synthetic
    /// workers) runs in a network namespace behind a TUN link (Linux, root). Writes CSV,
    /// Markdown and PNG/SVG plots to --out; exits non-zero if any image got no answer.
    Uplink(UplinkArgs),
    /// A fleet with one slow node (synthetic nodes, or GoogLeNet nodes with different
    /// --threads) under open-loop load through the JSON API, once per --placement of the
    /// front-end, alternating; then the same fleet simulated (the dispatcher's real core) and
    /// its p99 compared with the measured one. Writes CSV, Markdown and PNG/SVG plots to
    /// --out; exits non-zero if any request failed.
    Placement(PlacementArgs),
}

#[derive(clap::Args, Debug)]
struct PlacementArgs {
    /// Synthetic nodes in the fleet (the last one is the slow one). Default: 8.
    #[arg(long, env = "GLIMPSE_PLACEMENT_NODES", default_value_t = 8)]
    nodes: usize,
    /// Images a synthetic node serves at once (its --lanes). Default: 1, as in the sweeps
    /// and the simulator's calibrated node.
    #[arg(long, env = "GLIMPSE_PLACEMENT_LANES", default_value_t = 1)]
    lanes: u32,
    /// Synthetic service time of a normal node, ms per image. Default: 50 (the sweeps').
    #[arg(long, env = "GLIMPSE_PLACEMENT_SERVICE_MS", default_value_t = 50)]
    service_ms: u64,
    /// How much slower the slow node is. Default: 5.
    #[arg(long, env = "GLIMPSE_PLACEMENT_SLOW_FACTOR", default_value_t = 5.0)]
    slow_factor: f64,
    /// Real GoogLeNet nodes (random weights) instead of synthetic ones, one per value, each
    /// with that many --threads (e.g. 2,1). Needs --rate. Default: synthetic nodes.
    #[arg(
        long,
        env = "GLIMPSE_PLACEMENT_GOOGLENET_THREADS",
        value_delimiter = ','
    )]
    googlenet_threads: Vec<u32>,
    /// Images each node admits at once (glimpse-node --capacity): one served, the rest
    /// queued on the node. Default: 4.
    #[arg(long, env = "GLIMPSE_PLACEMENT_CAPACITY", default_value_t = 4)]
    capacity: u32,
    /// Offered load as a fraction of the synthetic fleet's nominal rate (the sum of every
    /// node's speed). Default: 0.8.
    #[arg(long, env = "GLIMPSE_PLACEMENT_LOAD", default_value_t = 0.8)]
    load: f64,
    /// Offered load in images per second, instead of --load (required with
    /// --googlenet-threads, whose speed is not configured).
    #[arg(long, env = "GLIMPSE_PLACEMENT_RATE")]
    rate: Option<f64>,
    /// Placements compared, comma-separated. Default: least-outstanding,expected-finish.
    #[arg(
        long,
        env = "GLIMPSE_PLACEMENT_PLACEMENTS",
        value_delimiter = ',',
        default_value = "least-outstanding,expected-finish"
    )]
    placements: Vec<Placement>,
    /// Runs per placement. Default: 5.
    #[arg(long, env = "GLIMPSE_PLACEMENT_RUNS", default_value_t = 5)]
    runs: usize,
    /// Seconds of load before each run's measurement window. Default: 5.
    #[arg(long, env = "GLIMPSE_PLACEMENT_WARMUP", default_value_t = 5.0)]
    warmup: f64,
    /// Seconds of each run's measurement window. Default: 30.
    #[arg(long, env = "GLIMPSE_PLACEMENT_DURATION", default_value_t = 30.0)]
    duration: f64,
    /// Simulated runs per placement for the twin (synthetic fleets only; 0: none).
    /// Default: 10.
    #[arg(long, env = "GLIMPSE_PLACEMENT_SIM_RUNS", default_value_t = 10)]
    sim_runs: usize,
    /// Directory of .jpg/.png images. Default: 8 generated 480×360 JPEGs (deterministic for
    /// --seed), as the sweeps use.
    #[arg(long, env = "GLIMPSE_PLACEMENT_IMAGES")]
    images: Option<PathBuf>,
    /// Longest wait for one answer, seconds. Default: 60.
    #[arg(long, env = "GLIMPSE_PLACEMENT_TIMEOUT", default_value_t = 60.0)]
    timeout: f64,
    /// Seed of the images, the arrivals and the simulation. Default: 1.
    #[arg(long, env = "GLIMPSE_PLACEMENT_SEED", default_value_t = 1)]
    seed: u64,
    /// Output directory. Default: lab/results/placement-lab.
    #[arg(
        long,
        env = "GLIMPSE_PLACEMENT_OUT",
        default_value = "lab/results/placement-lab"
    )]
    out: PathBuf,
    /// Directory with glimpse, glimpse-node and glimpse-certs. Default: next to this
    /// executable.
    #[arg(long, env = "GLIMPSE_LAB_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct UplinkArgs {
    /// Packet loss each way, in percent, one point per value (comma-separated).
    /// Default: 0,1,5,10.
    #[arg(
        long,
        env = "GLIMPSE_UPLINK_LOSS",
        value_delimiter = ',',
        default_value = "0,1,5,10"
    )]
    loss: Vec<f64>,
    /// Round-trip time the link adds, in milliseconds (half each way). Default: 50.
    #[arg(long, env = "GLIMPSE_UPLINK_RTT_MS", default_value_t = 50)]
    rtt_ms: u64,
    /// Runs per protocol and loss rate (the protocols alternate). Default: 5.
    #[arg(long, env = "GLIMPSE_UPLINK_RUNS", default_value_t = 5)]
    runs: usize,
    /// Images uploaded at once on one connection. Default: 20.
    #[arg(long, env = "GLIMPSE_UPLINK_BURST", default_value_t = 20)]
    burst: usize,
    /// Directory of .jpg/.png images. Default: 8 generated 480×360 JPEGs (about 100 KB each,
    /// deterministic for --seed).
    #[arg(long, env = "GLIMPSE_UPLINK_IMAGES")]
    images: Option<PathBuf>,
    /// The synthetic workers' time per image, ms. Default: 5.
    #[arg(long, env = "GLIMPSE_UPLINK_SERVICE_MS", default_value_t = 5)]
    service_ms: u64,
    /// Longest wait for one answer, seconds, before the image counts as failed. Default: 120.
    #[arg(long, env = "GLIMPSE_UPLINK_TIMEOUT", default_value_t = 120.0)]
    timeout: f64,
    /// The congestion controller of the HTTP/3 client's QUIC connection, cubic or bbr.
    /// Default: the one the kernel's TCP uses for HTTP/2 (net.ipv4.tcp_congestion_control,
    /// when it is cubic or bbr; else cubic), so that the two protocols differ in how they
    /// multiplex, not in how they react to loss.
    #[arg(long, env = "GLIMPSE_UPLINK_CONGESTION")]
    congestion: Option<CongestionControl>,
    /// Seed of the images and of the link's loss decisions. Default: 1.
    #[arg(long, env = "GLIMPSE_UPLINK_SEED", default_value_t = 1)]
    seed: u64,
    /// Output directory. Default: lab/results/uplink.
    #[arg(long, env = "GLIMPSE_UPLINK_OUT", default_value = "lab/results/uplink")]
    out: PathBuf,
    /// Directory with glimpse. Default: next to this executable.
    #[arg(long, env = "GLIMPSE_LAB_BIN_DIR")]
    bin_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("trust").args(["ca", "insecure"])))]
struct LoadArgs {
    /// The deployment's address for --protocol, e.g. https://glimpse.example:8443; for grpc
    /// its gRPC listener (`glimpse --grpc-listen`, the HTTPS port + 1 with --local-workers).
    /// Required.
    #[arg(long, env = "GLIMPSE_LOAD_URL")]
    url: String,
    /// Which API: json (POST /api/v1/classify?wait=true), v2 (KServe v2 HTTP with binary
    /// tensor data, POST /v2/models/googlenet/infer) or grpc (KServe v2 gRPC ModelInfer).
    /// Default: json.
    #[arg(
        long,
        env = "GLIMPSE_LOAD_PROTOCOL",
        value_enum,
        default_value = "json"
    )]
    protocol: Protocol,
    /// Which HTTP carries json and v2: 1.1 (a pool, one TLS connection per request in
    /// flight), 2 (one TLS connection, a stream per request) or 3 (one QUIC connection to the
    /// URL's port over UDP, a stream per request: the front-end's HTTP/3 listener, which
    /// shares the HTTPS port unless it was moved with --h3-listen). gRPC always rides
    /// HTTP/2. Default: 1.1 for json and v2, 2 for grpc.
    #[arg(long, env = "GLIMPSE_LOAD_HTTP", value_enum)]
    http: Option<HttpVersion>,
    /// With --http 3: the congestion controller of the client's QUIC connection, cubic or
    /// bbr (HTTP/1.1 and HTTP/2 use the kernel TCP's, net.ipv4.tcp_congestion_control).
    /// Default: cubic (quinn's default, and what browsers' QUIC uses).
    #[arg(long, env = "GLIMPSE_LOAD_CONGESTION", default_value = "cubic")]
    congestion: CongestionControl,
    /// Trust only the CA certificate(s) in this PEM file (e.g. glimpse-certs' ca.pem).
    /// Default: none, the public web roots are trusted (see also --insecure).
    #[arg(long, env = "GLIMPSE_LOAD_CA")]
    ca: Option<PathBuf>,
    /// Accept any server certificate (a local front-end with its generated self-signed
    /// certificate). Default: off, certificates are verified.
    #[arg(long, env = "GLIMPSE_LOAD_INSECURE")]
    insecure: bool,
    /// API key, sent as `Authorization: Bearer KEY` with every request (every protocol).
    /// Default: none (for a server without --api-keys).
    #[arg(long, env = "GLIMPSE_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Directory of .jpg/.png images, sent round-robin. Default: 8 generated 480×360 JPEGs
    /// (about 100 KB each, deterministic for --seed).
    #[arg(long, env = "GLIMPSE_LOAD_IMAGES")]
    images: Option<PathBuf>,
    /// Images per request: one v2/gRPC tensor of shape [N], or N `file` parts in one json
    /// form. Default: 1.
    #[arg(long, env = "GLIMPSE_LOAD_BATCH", default_value_t = 1)]
    batch: usize,
    /// Closed-loop concurrency sweep, comma-separated (e.g. 1,2,4,8): each step keeps that
    /// many requests in flight, each client sending its next request when the previous one
    /// answered. Default: 1, unless --rate is given.
    #[arg(
        long,
        env = "GLIMPSE_LOAD_CONCURRENCY",
        value_delimiter = ',',
        conflicts_with = "rate"
    )]
    concurrency: Vec<usize>,
    /// Open loop instead: Poisson arrivals at R requests per second, one step per rate
    /// (comma-separated, e.g. 5,10,20). Requests go out on schedule whether or not earlier
    /// ones answered. Default: none (closed loop).
    #[arg(long, env = "GLIMPSE_LOAD_RATE", value_delimiter = ',')]
    rate: Vec<f64>,
    /// Open loop: most requests waiting for an answer at once; arrivals beyond it are not
    /// sent and are counted as `skipped`. Default: 1000.
    #[arg(long, env = "GLIMPSE_LOAD_MAX_OUTSTANDING", default_value_t = 1000)]
    max_outstanding: usize,
    /// Seconds each step is measured, after its warm-up. Default: 10.
    #[arg(long, env = "GLIMPSE_LOAD_DURATION", default_value_t = 10.0)]
    duration: f64,
    /// Seconds of load before each step's measurement starts (not counted). Default: 2.
    #[arg(long, env = "GLIMPSE_LOAD_WARMUP", default_value_t = 2.0)]
    warmup: f64,
    /// Seconds to wait for one answer before counting it as a `timeout` error. Default: 30.
    #[arg(long, env = "GLIMPSE_LOAD_TIMEOUT", default_value_t = 30.0)]
    timeout: f64,
    /// Also write the report as JSON to this file, or to stdout with `-` (the table then
    /// goes to stderr). Default: none, only the table on stdout.
    #[arg(long, env = "GLIMPSE_LOAD_JSON")]
    json: Option<PathBuf>,
    /// Seed of the generated images and the open-loop arrival times (step i uses seed + i);
    /// the same seed gives the same schedule. Default: 1.
    #[arg(long, env = "GLIMPSE_LOAD_SEED", default_value_t = 1)]
    seed: u64,
}

#[derive(clap::Args, Debug)]
struct SimulateArgs {
    /// CI size: fleets of 10 and 100 nodes, 100 images per node, 2 runs per validation
    /// point (well under a minute). Default: off.
    #[arg(long, env = "GLIMPSE_LAB_QUICK")]
    quick: bool,
    /// Output directory. Default: lab/results/simulate, or target/simulate-quick with
    /// --quick (so the CI size never overwrites the committed results).
    #[arg(long, env = "GLIMPSE_SIM_OUT")]
    out: Option<PathBuf>,
    /// Fleet sizes to project (comma-separated). Default: 10,30,100,300,1000 (10,100 with
    /// --quick).
    #[arg(long, env = "GLIMPSE_SIM_NODES", value_delimiter = ',')]
    nodes: Vec<usize>,
    /// Images per node in each projected run, so every run covers the same virtual time
    /// (about a minute). Default: 1000 (1,000,000 images at 1,000 nodes), or 100 with --quick.
    #[arg(long, env = "GLIMPSE_SIM_IMAGES_PER_NODE")]
    images_per_node: Option<usize>,
    /// Offered load as a fraction of the fleet's nominal rate (nodes / mean service time),
    /// Poisson arrivals. Default: 0.8, busy but stable.
    #[arg(long, env = "GLIMPSE_SIM_LOAD", default_value_t = 0.8)]
    load: f64,
    /// Only these scenarios (comma-separated ids: healthy, healthy-hedge, crash1, crash5,
    /// crash5-hedge, slow, slow-hedge, mixed, mixed-hedge, hetero, slow-4fe, healthy-4fe,
    /// degrade). Default: all.
    #[arg(long, env = "GLIMPSE_SIM_SCENARIOS", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Runs per validation point (the lab made 5). Default: 5, or 2 with --quick.
    #[arg(long, env = "GLIMPSE_SIM_VALIDATION_RUNS")]
    validation_runs: Option<usize>,
    /// Seed of every random draw; the same seed gives the same results. Default: 1.
    #[arg(long, env = "GLIMPSE_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// How the simulated front-ends place images: expected-finish (images ahead × each
    /// node's service time; the production default) or least-outstanding (the placement
    /// before it, blind to speed, for comparison). Default: expected-finish.
    #[arg(long, env = "GLIMPSE_SIM_PLACEMENT", default_value_t = Placement::ExpectedFinish)]
    placement: Placement,
}

#[derive(clap::Args, Debug)]
struct SweepArgs {
    /// Which sweep: workers (1..8), loss (seed semantics + packet loss), delay (answer hold +
    /// link RTT) or failure (seed semantics + crash/restart cycles).
    #[arg(value_enum)]
    sweep: SweepKind,
    /// Fewer points and (unless --runs is given) 2 runs: the workers sweep finishes in under
    /// 3 minutes on 2 cores. Default: off.
    #[arg(long, env = "GLIMPSE_LAB_QUICK")]
    quick: bool,
    /// Output directory. Default: lab/results/<sweep>.
    #[arg(long, env = "GLIMPSE_LAB_OUT")]
    out: Option<PathBuf>,
    /// Model the nodes run. Default: synthetic (fixed --service-ms), since GoogLeNet on a
    /// 2-core machine measures the CPU, not the system; use googlenet on real hosts.
    #[arg(long, env = "GLIMPSE_LAB_MODEL", default_value = "synthetic", value_parser = ["synthetic", "googlenet"])]
    model: String,
    /// Runs per point (the seed used 5). Default: 5, or 2 with --quick.
    #[arg(long, env = "GLIMPSE_LAB_RUNS")]
    runs: Option<usize>,
    /// Images per run. Default: 48, or 24 with --quick (experiments with multi-second answer
    /// holds use fewer).
    #[arg(long, env = "GLIMPSE_LAB_IMAGES")]
    images: Option<usize>,
    /// Concurrent client requests. Default: 8 (enough to keep 8 one-at-a-time workers busy).
    #[arg(long, env = "GLIMPSE_LAB_CONCURRENCY", default_value_t = 8)]
    concurrency: usize,
    /// Synthetic service time per image in ms (nodes and baseline workers). Default: 50.
    #[arg(long, env = "GLIMPSE_LAB_SERVICE_MS", default_value_t = 50)]
    service_ms: u64,
    /// Images a Glimpse node serves at once (`glimpse-node --capacity`). Default: 1, the
    /// baseline's one-image-per-worker, so both systems have the same compute.
    #[arg(long, env = "GLIMPSE_LAB_CAPACITY", default_value_t = 1)]
    capacity: u32,
    /// Directory with glimpse, glimpse-node and glimpse-certs. Default: next to this executable.
    #[arg(long, env = "GLIMPSE_LAB_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// Which systems to measure. Default: both (every table shows them side by side).
    #[arg(long, env = "GLIMPSE_LAB_SYSTEMS", value_enum, default_value = "both")]
    systems: Systems,
    /// Extra argument for the `glimpse` front-end (repeatable), e.g. --site-arg=--foo=1.
    /// Default: none.
    #[arg(
        long = "site-arg",
        env = "GLIMPSE_LAB_SITE_ARGS",
        value_delimiter = ' ',
        allow_hyphen_values = true
    )]
    site_args: Vec<String>,
    /// Directory of .jpg/.png images to send instead of synthetic JPEGs. Default: synthetic
    /// 480×360 JPEGs (~100 KB, like the seed's < 150 KB uploads).
    #[arg(long, env = "GLIMPSE_LAB_IMAGES_DIR")]
    images_dir: Option<PathBuf>,
    /// Client-side timeout of one HTTPS request, seconds. Default: 120 (answers may be held 10 s
    /// and retried).
    #[arg(long, env = "GLIMPSE_LAB_REQUEST_TIMEOUT_S", default_value_t = 120)]
    request_timeout_s: u64,
    /// The baseline's fixed resend timeout, seconds. Default: 5 (the seed's design).
    #[arg(long, env = "GLIMPSE_LAB_BASELINE_TIMEOUT_S", default_value_t = 5)]
    baseline_timeout_s: u64,
    /// Submissions per image by the client before the image counts as lost. Default: 3.
    #[arg(long, env = "GLIMPSE_LAB_CLIENT_ATTEMPTS", default_value_t = 3)]
    client_attempts: u32,
    /// Longest one run may take, seconds. A run still going then is cut: its unanswered images
    /// count as unfinished (reported beside lost, which they are not: the system had not given
    /// up on them) and throughput is answered images over the elapsed time. Default: 120, so
    /// a system that collapses under heavy loss costs two minutes per run, not hours.
    #[arg(long, env = "GLIMPSE_LAB_RUN_LIMIT_S", default_value_t = 120)]
    run_limit_s: u64,
    /// Seed for images, relays and failure injection. Default: 1.
    #[arg(long, env = "GLIMPSE_LAB_SEED", default_value_t = 1)]
    seed: u64,
    /// How the front-end reaches the workers. Default: relay — a userspace UDP relay per link,
    /// unprivileged, but the baseline's TCP gets no packet loss and a proxy for delay. netns —
    /// every worker in its own network namespace (gl<pid>w<I>, 10.77.I.2) behind a TUN link
    /// that impairs IP packets, so QUIC and TCP cross the same impaired path; needs Linux,
    /// root, /dev/net/tun and `ip`.
    #[arg(long, env = "GLIMPSE_LAB_NET", value_enum, default_value = "relay")]
    net: Net,
    /// Run only these experiments of the sweep (comma-separated ids, e.g. loss-packet;
    /// the ids are the names of the .md/.csv files). Default: all.
    #[arg(long, env = "GLIMPSE_LAB_ONLY", value_delimiter = ',')]
    only: Vec<String>,
    /// Run only the points whose label or x value is listed (comma-separated, e.g. 0,5 or
    /// "5%"). Default: all.
    #[arg(long, env = "GLIMPSE_LAB_POINTS", value_delimiter = ',')]
    points: Vec<String>,
}

#[derive(clap::Args, Debug)]
struct WorkerArgs {
    /// TCP address to listen on. Default: 127.0.0.1:7600.
    #[arg(
        long,
        env = "GLIMPSE_BASELINE_LISTEN",
        default_value = "127.0.0.1:7600"
    )]
    listen: std::net::SocketAddr,
    /// Simulated inference time per image, ms. Default: 50.
    #[arg(long, env = "GLIMPSE_BASELINE_SERVICE_MS", default_value_t = 50)]
    service_ms: u64,
    /// Probability that a request makes this worker exit. Default: 0.
    #[arg(long, env = "GLIMPSE_BASELINE_FAIL_RATE", default_value_t = 0.0)]
    fail_rate: f64,
    /// Probability that an answer is never sent. Default: 0.
    #[arg(long, env = "GLIMPSE_BASELINE_DROP_RATE", default_value_t = 0.0)]
    drop_rate: f64,
    /// Extra hold before each answer, ms. Default: 0.
    #[arg(long, env = "GLIMPSE_BASELINE_EXTRA_DELAY_MS", default_value_t = 0)]
    extra_delay_ms: u64,
    /// RNG seed. Default: 1.
    #[arg(long, env = "GLIMPSE_BASELINE_SEED", default_value_t = 1)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The error once, on one line, for people; details and a stack trace with --verbose.
    // The log filter defaults to warn: the lab's own output is its progress and reports.
    let reporter = cli.log.init("glimpse-lab", "warn");
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli)));
    reporter.finish(result)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::BaselineWorker(a) => {
            for (name, p) in [("--fail-rate", a.fail_rate), ("--drop-rate", a.drop_rate)] {
                anyhow::ensure!((0.0..=1.0).contains(&p), "{name} must be within 0..=1");
            }
            let listener = tokio::net::TcpListener::bind(a.listen)
                .await
                .with_context(|| format!("binding {}", a.listen))?;
            run_worker(
                listener,
                WorkerBehaviour {
                    service: Duration::from_millis(a.service_ms),
                    fail_rate: a.fail_rate,
                    drop_rate: a.drop_rate,
                    extra_delay: Duration::from_millis(a.extra_delay_ms),
                    seed: a.seed,
                },
            )
            .await?;
            Ok(())
        }
        Command::Sweep(a) => sweep(a).await,
        Command::Simulate(a) => simulate(a),
        Command::Load(a) => load(a).await,
        Command::Uplink(a) => uplink(a).await,
        Command::Placement(a) => placement(a).await,
    }
}

async fn placement(a: PlacementArgs) -> anyhow::Result<()> {
    let fleet = if a.googlenet_threads.is_empty() {
        Fleet::Synthetic {
            nodes: a.nodes,
            lanes: a.lanes,
            service_ms: a.service_ms as f64,
            slow_factor: a.slow_factor,
        }
    } else {
        Fleet::GoogLeNet {
            threads: a.googlenet_threads.clone(),
        }
    };
    anyhow::ensure!(
        a.slow_factor.is_finite() && a.slow_factor >= 1.0,
        "--slow-factor {}: give a factor of at least 1",
        a.slow_factor
    );
    let rate = match (a.rate, fleet.nominal_per_s()) {
        (Some(r), _) => r,
        (None, Some(nominal)) => a.load * nominal,
        (None, None) => anyhow::bail!("--googlenet-threads needs --rate (images per second)"),
    };
    let options = PlacementOptions {
        bins: Bins::locate(a.bin_dir)?,
        out: a.out,
        fleet,
        capacity: a.capacity,
        placements: a.placements,
        rate,
        warmup: seconds("--warmup", a.warmup)?,
        duration: seconds("--duration", a.duration)?,
        runs: a.runs,
        images: match &a.images {
            Some(d) => images::from_dir(d)?,
            None => images::synthetic(8, 480, 360, a.seed)?,
        },
        sim_runs: a.sim_runs,
        seed: a.seed,
        timeout: seconds("--timeout", a.timeout)?,
    };
    let runs = tokio::select! {
        r = run_placement(&options) => r?,
        _ = interrupted() => anyhow::bail!("interrupted"),
    };
    let failed: u64 = runs.iter().map(|r| r.failed).sum();
    anyhow::ensure!(
        failed == 0,
        "{failed} request(s) failed; see {}",
        options.out.display()
    );
    eprintln!(
        "glimpse-lab placement: report in {}",
        options.out.join("placement.md").display()
    );
    Ok(())
}

/// The kernel TCP's congestion controller as a QUIC one: bbr if it is BBR, else cubic.
fn kernel_congestion() -> CongestionControl {
    match std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control") {
        Ok(cc) if cc.trim() == "bbr" => CongestionControl::Bbr,
        _ => CongestionControl::Cubic,
    }
}

async fn uplink(a: UplinkArgs) -> anyhow::Result<()> {
    let options = UplinkOptions {
        bins: Bins::locate(a.bin_dir)?,
        out: a.out,
        losses: a.loss.iter().map(|l| l / 100.0).collect(),
        rtt: Duration::from_millis(a.rtt_ms),
        runs: a.runs,
        burst: a.burst,
        images: match &a.images {
            Some(d) => images::from_dir(d)?,
            None => images::synthetic(8, 480, 360, a.seed)?,
        },
        service_ms: a.service_ms,
        timeout: seconds("--timeout", a.timeout)?,
        congestion: a.congestion.unwrap_or_else(kernel_congestion),
        seed: a.seed,
    };
    let runs = tokio::select! {
        r = run_uplink(&options) => r?,
        _ = interrupted() => anyhow::bail!("interrupted"),
    };
    let failed: usize = runs.iter().map(|r| r.failed).sum();
    if failed > 0 {
        anyhow::bail!(
            "{failed} image(s) got no answer; see {}",
            options.out.display()
        );
    }
    eprintln!(
        "glimpse-lab uplink: report in {}",
        options.out.join("uplink.md").display()
    );
    Ok(())
}

/// Seconds from a command-line number, refusing negative, NaN and absurd values.
fn seconds(name: &str, s: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(s).map_err(|e| anyhow::anyhow!("{name} {s}: {e}"))
}

async fn load(a: LoadArgs) -> anyhow::Result<()> {
    let imgs = match &a.images {
        Some(d) => images::from_dir(d)?,
        None => images::synthetic(8, 480, 360, a.seed)?,
    };
    let plan = if !a.rate.is_empty() {
        LoadPlan::Rate(a.rate)
    } else if !a.concurrency.is_empty() {
        LoadPlan::Concurrency(a.concurrency)
    } else {
        LoadPlan::Concurrency(vec![1])
    };
    let options = LoadOptions {
        target: TargetOptions {
            url: a.url,
            protocol: a.protocol,
            http: a.http.unwrap_or(match a.protocol {
                Protocol::Grpc => HttpVersion::Http2,
                Protocol::Json | Protocol::V2 => HttpVersion::Http1,
            }),
            congestion: a.congestion,
            trust: match (a.ca, a.insecure) {
                (Some(ca), _) => Trust::Ca(ca),
                (None, true) => Trust::Insecure,
                (None, false) => Trust::PublicRoots,
            },
            api_key: a.api_key.filter(|k| !k.is_empty()),
            timeout: seconds("--timeout", a.timeout)?,
        },
        images: imgs,
        batch: a.batch,
        plan,
        max_outstanding: a.max_outstanding,
        warmup: seconds("--warmup", a.warmup)?,
        duration: seconds("--duration", a.duration)?,
        seed: a.seed,
    };
    let json_to_stdout = a.json.as_deref() == Some(std::path::Path::new("-"));
    eprintln!(
        "glimpse-lab load: {} over {} ({}), batch {}, {} s warm-up + {} s per step",
        options.target.url,
        options.target.protocol,
        options.target.http,
        options.batch,
        options.warmup.as_secs_f64(),
        options.duration.as_secs_f64()
    );
    let report = tokio::select! {
        r = run_load(&options, |s| {
            eprintln!(
                "{}: {} ok, {} error(s), {:.1} req/s, p50 {:.1} ms, p99 {:.1} ms",
                s.load,
                s.ok,
                s.error_total(),
                s.throughput_rps,
                s.latency_ms.p50,
                s.latency_ms.p99
            )
        }) => r?,
        _ = interrupted() => anyhow::bail!("interrupted"),
    };
    if json_to_stdout {
        eprint!("{}", report.table());
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
        if let Some(path) = &a.json {
            std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    let ok: u64 = report.steps.iter().map(|s| s.ok).sum();
    anyhow::ensure!(ok > 0, "no request succeeded");
    Ok(())
}

async fn sweep(a: SweepArgs) -> anyhow::Result<()> {
    let name = match a.sweep {
        SweepKind::Workers => "workers",
        SweepKind::Loss => "loss",
        SweepKind::Delay => "delay",
        SweepKind::Failure => "failure",
    };
    let images_per_run = a.images.unwrap_or(if a.quick { 24 } else { 48 });
    let imgs = match &a.images_dir {
        Some(d) => images::from_dir(d)?,
        None => images::synthetic(8, 480, 360, a.seed)?,
    };
    let options = LabOptions {
        out: a
            .out
            .unwrap_or_else(|| PathBuf::from("lab/results").join(name)),
        quick: a.quick,
        model: a.model,
        runs: a.runs.unwrap_or(if a.quick { 2 } else { 5 }).max(1),
        images: images_per_run.max(1),
        concurrency: a.concurrency.max(1),
        service_ms: a.service_ms,
        capacity: a.capacity.max(1),
        bins: Bins::locate(a.bin_dir)?,
        systems: match a.systems {
            Systems::Both => vec![System::Glimpse, System::Baseline],
            Systems::Glimpse => vec![System::Glimpse],
            Systems::Baseline => vec![System::Baseline],
        },
        site_extra: a.site_args.into_iter().filter(|s| !s.is_empty()).collect(),
        request_timeout: Duration::from_secs(a.request_timeout_s.max(1)),
        baseline_timeout: Duration::from_secs(a.baseline_timeout_s.max(1)),
        client_attempts: a.client_attempts.max(1),
        run_limit: Duration::from_secs(a.run_limit_s.max(1)),
        seed: a.seed,
        net: match a.net {
            Net::Relay => NetMode::Relay,
            Net::Netns => NetMode::Netns,
        },
        only: a.only.into_iter().filter(|s| !s.is_empty()).collect(),
        points: a.points.into_iter().filter(|s| !s.is_empty()).collect(),
    };
    let started = std::time::Instant::now();
    // On Ctrl-C / SIGTERM the sweep's future is dropped, which kills its processes and
    // removes its namespaces (`--net netns`) instead of leaving them behind.
    let outcome = tokio::select! {
        r = run_sweep(name, &options, imgs) => r?,
        _ = interrupted() => anyhow::bail!("interrupted; partial results in {}", options.out.display()),
    };
    println!("{}", outcome.markdown);
    println!(
        "sweep {name}: {} runs in {:.0} s, results in {}",
        outcome.samples.len(),
        started.elapsed().as_secs_f64(),
        options.out.display()
    );
    if outcome.lost > 0 || outcome.failed_runs > 0 {
        anyhow::bail!(
            "{} image(s) lost and {} run(s) failed: see {}",
            outcome.lost,
            outcome.failed_runs,
            options.out.join("raw.csv").display()
        );
    }
    Ok(())
}

fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
    let nodes = match (a.nodes.is_empty(), a.quick) {
        (false, _) => a.nodes,
        (true, true) => vec![10, 100],
        (true, false) => vec![10, 30, 100, 300, 1000],
    };
    let options = SimulateOptions {
        out: a.out.unwrap_or_else(|| {
            PathBuf::from(if a.quick {
                "target/simulate-quick"
            } else {
                "lab/results/simulate"
            })
        }),
        validation_runs: a.validation_runs.unwrap_or(if a.quick { 2 } else { 5 }),
        project: ProjectOptions {
            nodes,
            images_per_node: a
                .images_per_node
                .unwrap_or(if a.quick { 100 } else { 1000 }),
            load: a.load,
            only: a.scenarios.into_iter().filter(|s| !s.is_empty()).collect(),
            seed: a.seed,
            placement: a.placement,
        },
    };
    let started = std::time::Instant::now();
    let outcome = glimpse_lab::sim::simulate(&options, |p| {
        eprintln!(
            "{:>13} {:>5} nodes: {:>8} images, {:>8.0} images/s, p99 {:>6.0} ms, core {:.2} µs/image ({:.1} s)",
            p.scenario,
            p.report.nodes,
            p.report.images,
            p.report.images_per_s,
            p.report.p99_ms,
            p.report.core_us_per_image,
            p.report.wall_s
        )
    })?;
    println!("{}", outcome.markdown);
    println!(
        "simulate: {} validation points, {} projections in {:.1} s, results in {}",
        outcome.checks.len(),
        outcome.projections.len(),
        started.elapsed().as_secs_f64(),
        options.out.display()
    );
    anyhow::ensure!(outcome.lost == 0, "{} image(s) lost", outcome.lost);
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
