//! `glimpse-lab placement`: one slow node in a real fleet, under each placement rule, and its
//! simulated twin.

use std::path::PathBuf;

use glimpse_lab::harness::procs::Bins;
use glimpse_lab::placement::{Fleet, PlacementOptions, run_placement};
use glimpse_transport::dispatcher::Placement;

use crate::args::{lab_images, seconds};
use crate::interrupt::interrupted;

#[derive(clap::Args, Debug)]
pub(crate) struct PlacementArgs {
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

pub(crate) async fn placement(a: PlacementArgs) -> anyhow::Result<()> {
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
        images: lab_images(a.images.as_deref(), a.seed)?,
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
