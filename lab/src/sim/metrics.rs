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
    /// Node processes crashed.
    pub crashes: u64,
    /// Node stalls.
    /// Node stalls (alive, but neither working nor reporting).
    pub stalls: u64,
    /// Answers lost on the way back.
    /// Answers lost on the way back.
    pub lost_answers: u64,
    /// Requests a node refused as Overloaded.
    /// Attempts a node refused as overloaded.
    pub overloaded: u64,
    /// Events processed.
    /// Events the simulation processed.
    pub events: u64,
    /// Time spent inside the dispatcher core's calls, as measured.
    pub core: Duration,
    /// Calls timed.
    pub core_calls: u64,
    /// The run's thread CPU time and wall time (to turn the core's wall-clock share into CPU
    /// time: on a shared machine the clock also runs while the thread is descheduled).
    pub run_cpu: Option<Duration>,
    pub run_wall: Duration,
}

/// CPU time this thread has used, where the platform says (Linux); `None` elsewhere.
pub(super) fn thread_cpu() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; the call only writes into it.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        if rc == 0 {
            return Some(Duration::new(
                u64::try_from(ts.tv_sec).unwrap_or(0),
                u32::try_from(ts.tv_nsec).unwrap_or(0),
            ));
        }
    }
    None
}

/// What timing an empty call costs (two clock reads), measured once per process: the core's
/// calls are short (a fraction of a microsecond), so this bias is subtracted.
pub(super) fn timing_overhead() -> Duration {
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
    /// Nodes in the fleet.
    pub nodes: usize,
    /// Images offered.
    pub images: usize,
    /// Images that got their final answer (a result or an error).
    pub answered: usize,
    /// Images with no answer after every client submission: must be 0.
    pub lost: usize,
    /// Client submissions (requests), resubmissions included.
    pub requests: u64,
    /// Virtual time from the first submission to the last image settled, seconds.
    pub sim_s: f64,
    /// Closed loop: images answered / `sim_s`, as the lab measures. Open loop: images
    /// answered while load was still offered / that time (whether the fleet keeps up).
    pub images_per_s: f64,
    /// Open loop: time from the last arrival to the last image settled, seconds.
    pub drain_s: f64,
    /// Median latency from first submission to answer, ms.
    pub p50_ms: f64,
    /// 95th percentile latency, ms.
    pub p95_ms: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Attempts sent (first tries, retries, hedges).
    pub attempts: u64,
    /// Attempts beyond one per answered image.
    pub wasted: u64,
    /// Attempts the front-end cancelled (losers of a hedge or an overdue copy, and queued
    /// attempts moved off a node).
    pub cancelled: u64,
    /// Retries after a failed or overdue attempt.
    pub retries: u64,
    /// Hedge copies sent.
    pub hedges: u64,
    /// Requests won by their hedge copy.
    pub hedge_wins: u64,
    /// Attempts that outlived their timeout.
    pub timeouts: u64,
    /// Overdue attempts moved off a node where they had not started.
    pub unstarted_cancels: u64,
    /// Times a node went silent.
    pub silences: u64,
    /// Attempts ended by a lost connection.
    pub connection_losses: u64,
    /// Node processes crashed.
    pub crashes: u64,
    /// Node stalls (alive, but neither working nor reporting).
    pub stalls: u64,
    /// Answers lost on the way back.
    pub lost_answers: u64,
    /// Attempts a node refused as overloaded.
    pub overloaded: u64,
    /// CPU time inside the dispatcher core per answered image, microseconds (the timing's own
    /// cost subtracted).
    pub core_us_per_image: f64,
    /// Calls into the core per answered image.
    pub core_calls_per_image: f64,
    /// Wall-clock time of the whole simulation, seconds.
    pub wall_s: f64,
    /// Events the simulation processed.
    pub events: u64,
    /// 99th percentile latency of the second half of the images (by submission), ms: the
    /// tail after a mid-run change.
    pub p99_second_half_ms: f64,
    /// Placements per slow node ÷ placements per other node (nodes slower than nominal at
    /// the start, or degraded); `None` without slow nodes.
    pub slow_share: Option<f64>,
}

/// CPU seconds spent inside the core: its share of the run's wall time (less the timing's
/// own cost) applied to the thread's CPU time, so time the thread spent descheduled by other
/// work on the machine is not counted; the plain wall-clock sum where CPU time is unknown.
fn core_cpu(counts: &Counts) -> f64 {
    let wall = (counts.core.as_secs_f64()
        - counts.core_calls as f64 * timing_overhead().as_secs_f64())
    .max(0.0);
    match counts.run_cpu {
        Some(cpu) if !counts.run_wall.is_zero() => {
            wall * (cpu.as_secs_f64() / counts.run_wall.as_secs_f64()).min(1.0)
        }
        _ => wall,
    }
}

impl RunReport {
    /// Assembles the report from the client's view, the counters and the core's stats.
    pub fn new(
        open_loop: bool,
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
        let window = match clients.all_submitted {
            Some((at, by_then)) if open_loop && at > 0 => Some((at as f64 / 1e9, by_then)),
            _ => None,
        };
        RunReport {
            nodes,
            images: clients.total,
            answered,
            lost: clients.lost,
            requests: counts.requests,
            sim_s,
            images_per_s: match window {
                Some((secs, by_then)) => by_then as f64 / secs,
                None if sim_s > 0.0 => answered as f64 / sim_s,
                None => 0.0,
            },
            drain_s: window.map_or(0.0, |(secs, _)| (sim_s - secs).max(0.0)),
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
            core_us_per_image: core_cpu(counts) * 1e6 / answered.max(1) as f64,
            core_calls_per_image: counts.core_calls as f64 / answered.max(1) as f64,
            wall_s: wall.as_secs_f64(),
            events: counts.events,
            p99_second_half_ms: {
                let mut late = clients.late_latencies_ms.clone();
                late.sort_by(f64::total_cmp);
                percentile(&late, 0.99)
            },
            slow_share: None,
        }
    }
}
