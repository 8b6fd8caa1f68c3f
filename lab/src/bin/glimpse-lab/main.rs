//! `glimpse-lab`: reproduces the seed's experiments (workers, loss, delay, failure) on Glimpse
//! and on a baseline of the seed's design, in the same run; also the baseline's worker process,
//! `load`, a load generator for a running deployment, `simulate`, `uplink` and `placement`.
//! Each subcommand's arguments and what it does with them live in a module of its own.

#![forbid(unsafe_code)]

mod args;
mod interrupt;
mod load;
mod placement;
mod simulate;
mod sweep;
mod uplink;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use load::LoadArgs;
use placement::PlacementArgs;
use simulate::SimulateArgs;
use sweep::SweepArgs;
use uplink::UplinkArgs;
use worker::WorkerArgs;

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
        Command::BaselineWorker(a) => worker::baseline_worker(a).await,
        Command::Sweep(a) => sweep::sweep(a).await,
        Command::Simulate(a) => simulate::simulate(a),
        Command::Load(a) => load::load(a).await,
        Command::Uplink(a) => uplink::uplink(a).await,
        Command::Placement(a) => placement::placement(a).await,
    }
}
