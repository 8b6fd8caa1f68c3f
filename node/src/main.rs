//! `glimpse-node`: the Glimpse worker daemon (`serve`) and a local classifier (`classify`).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use glimpse_node::classify::{self, ClassifyArgs};
use glimpse_node::shutdown::TerminationSignals;
use glimpse_node::{ServeArgs, shutdown_channel, start_node};
use glimpse_ops::OpsArgs;

/// Glimpse worker node: labels images with GoogLeNet, locally or for a Glimpse front-end.
#[derive(Debug, Parser)]
#[command(name = "glimpse-node", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    ops: OpsArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Classify image files and print the top labels with per-image timings.
    Classify(ClassifyArgs),
    /// Serve front-ends over QUIC (mutual TLS) until SIGTERM/SIGINT, then drain and exit 0.
    Serve(Box<ServeArgs>),
}

fn main() -> ExitCode {
    // Flags over environment over the --config file over defaults.
    let cli: Cli = glimpse_ops::config_file::parse();
    // Logs go to stderr so `classify --json` output on stdout stays machine-readable.
    // GLIMPSE_LOG (or RUST_LOG) sets the filter; default: info for serve, warn for classify.
    let default_level = match cli.command {
        Command::Classify(_) => "warn",
        Command::Serve(_) => "info",
    };
    // An error ends the program as one line for people; --verbose adds the backtrace.
    // With --otlp-endpoint, the spans are exported too.
    let (reporter, traces) = cli.ops.init("glimpse-node", default_level);

    match cli.command {
        Command::Classify(args) => ExitCode::from(classify::run(&args)),
        Command::Serve(args) => reporter.finish(serve(*args, traces)),
    }
}

fn serve(args: ServeArgs, traces: glimpse_ops::Traces) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("glimpse-node")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        // Install the signal handlers before announcing readiness, so a SIGTERM sent right
        // after the "listening" line is a drain, not a kill.
        let mut signals =
            TerminationSignals::install().context("cannot install signal handlers")?;
        let (trigger, shutdown) = shutdown_channel();
        let node = start_node(config, shutdown.wait()).await?;
        if let Some(admin) = node.admin_addr() {
            println!("glimpse-node admin on http://{admin} (/healthz /readyz /metrics)");
        }
        // The one line scripts and tests wait for (stdout, flushed by println!).
        println!("glimpse-node listening on {}", node.addr());
        tokio::spawn(async move {
            let name = signals.recv().await;
            tracing::info!(signal = name, "draining (send it again to exit at once)");
            trigger.trigger();
            let name = signals.recv().await;
            tracing::warn!(signal = name, "second signal: exiting without draining");
            std::process::exit(130);
        });
        let stopped = node.wait().await;
        // The spans of the last requests, whether or not the node stopped cleanly.
        traces.shutdown().await;
        stopped?;
        tracing::info!("drained; exiting");
        Ok(())
    })
}
