//! What a run measured: the client's view (throughput, latency, lost images), the
//! dispatcher's counters (its own `DispatchStats`), the waste, and the CPU time the core
//! itself took.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use glimpse_transport::dispatcher::DispatchStats;
use serde::Serialize;

use crate::stats::percentile;

/// Counted by the simulation itself, beside the dispatcher's counters.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Requests started (client submissions).
    pub requests: u64,
    /// Final answers (`Action::Done`) seen: one per request, or the run fails.
    pub dones: u64,
    /// Attempts the front-end cancelled (hedge and overdue losers, unstarted moves).
    pub cancels: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Node stalls.
    pub stalls: u64,
    /// Answers lost on the way back.
    pub lost_answers: u64,
    /// Requests a node refused as Overloaded.
    pub overloaded: u64,
    /// Events processed.
    pub events: u64,
    /// Time spent inside the dispatcher core's calls, as measured.
    pub core: Duration,
    /// Calls timed.
    pub core_calls: u64,
}

/// What timing an empty call costs (two clock reads), measured once per process: the core's
/// calls are short (a fraction of a microsecond), so this bias is subtracted.
pub fn timing_overhead() -> Duration {
    static OVERHEAD: OnceLock<Duration> = OnceLock::new();
    *OVERHEAD.get_or_init(|| {
        const N: u32 = 20_000;
        let mut total = Duration::ZERO;
        for i in 0..N {
            let t0 = Instant::now();
            std::hint::black_box(i);
            total += t0.elapsed();
        }
        total / N
    })
}

/// One run's results.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub nodes: usize,
    pub images: usize,
    pub answered: usize,
    /// Images with no answer after every client submission: must be 0.
    pub lost: usize,
    /// Client submissions (requests), resubmissions included.
    pub requests: u64,
    /// Virtual time from the first submission to the last image settled, seconds.
    pub sim_s: f64,
    pub images_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    /// Attempts sent (first tries, retries, hedges).
    pub attempts: u64,
    /// Attempts beyond one per answered image.
    pub wasted: u64,
    /// Attempts the front-end cancelled (losers of a hedge or an overdue copy, and queued
    /// attempts moved off a node).
    pub cancelled: u64,
    pub retries: u64,
    pub hedges: u64,
    pub hedge_wins: u64,
    pub timeouts: u64,
    pub unstarted_cancels: u64,
    pub silences: u64,
    pub connection_losses: u64,
    pub crashes: u64,
    pub stalls: u64,
    pub lost_answers: u64,
    pub overloaded: u64,
    /// CPU time inside the dispatcher core per answered image, microseconds (the timing's own
    /// cost subtracted).
    pub core_us_per_image: f64,
    /// Calls into the core per answered image.
    pub core_calls_per_image: f64,
    /// Wall-clock time of the whole simulation, seconds.
    pub wall_s: f64,
    pub events: u64,
}

impl RunReport {
    /// Assembles the report from the client's view, the counters and the core's stats.
    pub fn new(
        nodes: usize,
        clients: &super::workload::Clients,
        counts: &Counts,
        stats: &DispatchStats,
        wall: Duration,
    ) -> RunReport {
        let mut lat = clients.latencies_ms.clone();
        lat.sort_by(f64::total_cmp);
        let sim_s = clients.last_settled as f64 / 1e9;
        let answered = clients.answered;
        RunReport {
            nodes,
            images: clients.total,
            answered,
            lost: clients.lost,
            requests: counts.requests,
            sim_s,
            images_per_s: if sim_s > 0.0 {
                answered as f64 / sim_s
            } else {
                0.0
            },
            p50_ms: percentile(&lat, 0.50),
            p95_ms: percentile(&lat, 0.95),
            p99_ms: percentile(&lat, 0.99),
            attempts: stats.attempts,
            wasted: stats.attempts.saturating_sub(answered as u64),
            cancelled: counts.cancels,
            retries: stats.retries,
            hedges: stats.hedges,
            hedge_wins: stats.hedge_wins,
            timeouts: stats.timeouts,
            unstarted_cancels: stats.unstarted_cancels,
            silences: stats.silences,
            connection_losses: stats.connection_losses,
            crashes: counts.crashes,
            stalls: counts.stalls,
            lost_answers: counts.lost_answers,
            overloaded: counts.overloaded,
            core_us_per_image: (counts.core.as_secs_f64()
                - counts.core_calls as f64 * timing_overhead().as_secs_f64())
            .max(0.0)
                * 1e6
                / answered.max(1) as f64,
            core_calls_per_image: counts.core_calls as f64 / answered.max(1) as f64,
            wall_s: wall.as_secs_f64(),
            events: counts.events,
        }
    }
}
