//! `glimpse-lab uplink`: a burst of uploads from one client across a lossy link, HTTP/2
//! against HTTP/3.

use std::path::PathBuf;
use std::time::Duration;

use glimpse_lab::harness::procs::Bins;
use glimpse_lab::uplink::{UplinkOptions, run_uplink};
use glimpse_transport::CongestionControl;

use crate::args::{lab_images, seconds};
use crate::interrupt::interrupted;

#[derive(clap::Args, Debug)]
pub(crate) struct UplinkArgs {
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

/// The kernel TCP's congestion controller as a QUIC one: bbr if it is BBR, else cubic.
pub(crate) fn kernel_congestion() -> CongestionControl {
    match std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control") {
        Ok(cc) if cc.trim() == "bbr" => CongestionControl::Bbr,
        _ => CongestionControl::Cubic,
    }
}

pub(crate) async fn uplink(a: UplinkArgs) -> anyhow::Result<()> {
    let options = UplinkOptions {
        bins: Bins::locate(a.bin_dir)?,
        out: a.out,
        losses: a.loss.iter().map(|l| l / 100.0).collect(),
        rtt: Duration::from_millis(a.rtt_ms),
        runs: a.runs,
        burst: a.burst,
        images: lab_images(a.images.as_deref(), a.seed)?,
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
