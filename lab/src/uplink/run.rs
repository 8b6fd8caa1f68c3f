//! What an uplink sweep is asked to measure, and what one burst measured.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use glimpse_transport::CongestionControl;
use serde::Serialize;

use crate::harness::procs::Bins;
use crate::load::protocol::HttpVersion;

/// What to measure.
#[derive(Debug, Clone)]
pub struct UplinkOptions {
    /// Where the binaries are (`glimpse`).
    pub bins: Bins,
    /// Output directory: report, CSV, plots, logs.
    pub out: PathBuf,
    /// Loss rates to measure, each way, as fractions (0.05 = 5%).
    pub losses: Vec<f64>,
    /// Round-trip time the link adds (half each way).
    pub rtt: Duration,
    /// Runs per protocol and loss rate.
    pub runs: usize,
    /// Images per burst, all sent at once on one connection.
    pub burst: usize,
    /// The images (uploaded round-robin).
    pub images: Vec<Bytes>,
    /// The synthetic workers' service time per image.
    pub service_ms: u64,
    /// Longest wait for one answer before the image counts as failed.
    pub timeout: Duration,
    /// The HTTP/3 client's congestion controller.
    pub congestion: CongestionControl,
    /// Seed of the link's loss decisions.
    pub seed: u64,
}

/// The HTTP versions compared.
pub const PROTOCOLS: [HttpVersion; 2] = [HttpVersion::Http2, HttpVersion::Http3];

/// One burst's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// HTTP version.
    pub http: HttpVersion,
    /// Loss rate each way.
    pub loss: f64,
    /// Index of the run at this loss rate.
    pub run: usize,
    /// From the first request of the burst to its last answer, seconds.
    pub total_s: f64,
    /// Each image's latency, from the burst's start to its answer, seconds (answered ones).
    pub latencies_s: Vec<f64>,
    /// Images without a good answer (an error or the timeout).
    pub failed: usize,
    /// The first failure's message, if any.
    pub first_error: Option<String>,
    /// What the link carried and dropped during the run (the first request included).
    pub link: LinkCount,
}

/// Packets that entered the link and those it dropped, per direction (`up`: client → front-end).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LinkCount {
    /// Packets from the client.
    pub packets_up: u64,
    /// Of which dropped.
    pub dropped_up: u64,
    /// Packets from the front-end.
    pub packets_down: u64,
    /// Of which dropped.
    pub dropped_down: u64,
}
