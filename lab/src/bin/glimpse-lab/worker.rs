//! `glimpse-lab baseline-worker`: a worker of the seed's design (TCP, one image at a time
//! per connection), the baseline the sweeps compare Glimpse with.

use std::time::Duration;

use anyhow::Context;
use glimpse_lab::harness::baseline::{WorkerBehaviour, run_worker};

#[derive(clap::Args, Debug)]
pub(crate) struct WorkerArgs {
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

/// Serves as a baseline worker on `--listen` until the process is stopped.
pub(crate) async fn baseline_worker(a: WorkerArgs) -> anyhow::Result<()> {
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
