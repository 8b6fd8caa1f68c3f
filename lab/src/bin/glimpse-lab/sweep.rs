//! `glimpse-lab sweep`: the seed's experiments (workers, loss, delay, failure) on Glimpse and
//! on a baseline of the seed's design, in the same run.

use std::path::PathBuf;
use std::time::Duration;

use clap::ValueEnum;
use glimpse_lab::harness::net::NetMode;
use glimpse_lab::harness::procs::Bins;
use glimpse_lab::harness::run_sweep;
use glimpse_lab::harness::sweep::{LabOptions, System};

use crate::args::lab_images;
use crate::interrupt::interrupted;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum SweepKind {
    Workers,
    Loss,
    Delay,
    Failure,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub(crate) enum Net {
    /// Userspace UDP relay per link (unprivileged; no TCP loss for the baseline).
    Relay,
    /// Each worker in its own network namespace behind an IP-level TUN link (Linux, root).
    Netns,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub(crate) enum Systems {
    Both,
    Glimpse,
    Baseline,
}

#[derive(clap::Args, Debug)]
pub(crate) struct SweepArgs {
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

pub(crate) async fn sweep(a: SweepArgs) -> anyhow::Result<()> {
    let name = match a.sweep {
        SweepKind::Workers => "workers",
        SweepKind::Loss => "loss",
        SweepKind::Delay => "delay",
        SweepKind::Failure => "failure",
    };
    let images_per_run = a.images.unwrap_or(if a.quick { 24 } else { 48 });
    let imgs = lab_images(a.images_dir.as_deref(), a.seed)?;
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
