//! `glimpse-lab simulate`: the dispatcher's real core with simulated nodes on a virtual
//! clock, validated against the lab and projected to 1,000 nodes.

use std::path::PathBuf;

use glimpse_lab::sim::{ProjectOptions, SimulateOptions};
use glimpse_transport::dispatcher::Placement;

#[derive(clap::Args, Debug)]
pub(crate) struct SimulateArgs {
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

pub(crate) fn simulate(a: SimulateArgs) -> anyhow::Result<()> {
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
