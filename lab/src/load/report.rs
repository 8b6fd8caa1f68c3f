//! What one load step measured, from the record of every request: counts, errors by kind,
//! throughput and latency percentiles (no sampling), as an aligned table and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::protocol::{Failure, HttpVersion, Protocol};
use crate::stats::percentile;

/// One request as the load generator saw it.
#[derive(Debug, Clone)]
pub struct Record {
    /// When it was sent, from the start of its step (warm-up included).
    pub sent: Duration,
    /// When its answer (or error) came back, from the start of its step.
    pub done: Duration,
    /// The outcome.
    pub result: Result<(), Failure>,
}

/// The measurement window of a step, as offsets from the step's start: `[start, end)`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// End of the warm-up.
    pub start: Duration,
    /// End of the measurement.
    pub end: Duration,
}

impl Window {
    fn contains(&self, t: Duration) -> bool {
        self.start <= t && t < self.end
    }
}

/// The load of a step: closed loop at a concurrency, or open loop at a rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StepLoad {
    /// Closed loop: this many clients, each sending its next request when the last answered.
    Concurrency(usize),
    /// Open loop: Poisson arrivals at this many requests per second.
    Rate(f64),
}

impl std::fmt::Display for StepLoad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StepLoad::Concurrency(c) => write!(f, "concurrency {c}"),
            StepLoad::Rate(r) => write!(f, "rate {r}/s"),
        }
    }
}

/// Latency of the successful requests sent in the window, in milliseconds (NaN when none).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Fastest.
    pub min: f64,
    /// Slowest.
    pub max: f64,
}

/// What one step measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepReport {
    /// The load applied.
    pub load: StepLoad,
    /// Length of the measurement window in seconds (the warm-up is not counted).
    pub duration_s: f64,
    /// Requests sent during the window.
    pub sent: u64,
    /// Of those, answered successfully.
    pub ok: u64,
    /// Of those, failed, counted by kind (`http 503`, `grpc Unavailable`, `transport`,
    /// `timeout`, `bad reply`, `image failed`).
    pub errors: BTreeMap<String, u64>,
    /// Open loop only: arrivals during the window that were not sent because
    /// `--max-outstanding` requests were already waiting (0 in closed loop).
    pub skipped: u64,
    /// Successful answers that arrived during the window, per second of the window (the
    /// rate the system sustained, whenever those requests were sent).
    pub throughput_rps: f64,
    /// `throughput_rps` × images per request.
    pub images_per_s: f64,
    /// Latency of every successful request sent during the window.
    pub latency_ms: Latency,
    /// The first few error messages, to tell what the kinds mean here.
    pub error_samples: Vec<String>,
}

impl StepReport {
    /// Requests sent in the window that failed.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// How many error messages a step keeps.
const ERROR_SAMPLES: usize = 5;

/// The report of one step from the records of all its requests (warm-up and drain included:
/// only those that belong to `window` count).
pub fn summarize(
    load: StepLoad,
    records: &[Record],
    window: Window,
    batch: usize,
    skipped: u64,
) -> StepReport {
    let in_window: Vec<&Record> = records.iter().filter(|r| window.contains(r.sent)).collect();
    let mut errors = BTreeMap::new();
    let mut error_samples = Vec::new();
    let mut latencies: Vec<f64> = Vec::with_capacity(in_window.len());
    for r in &in_window {
        match &r.result {
            Ok(()) => latencies.push(r.done.saturating_sub(r.sent).as_secs_f64() * 1e3),
            Err(f) => {
                *errors.entry(f.kind.to_string()).or_insert(0) += 1;
                if error_samples.len() < ERROR_SAMPLES {
                    error_samples.push(format!("{}: {}", f.kind, f.detail));
                }
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let completed_ok = records
        .iter()
        .filter(|r| r.result.is_ok() && window.contains(r.done))
        .count();
    let duration_s = window.end.saturating_sub(window.start).as_secs_f64();
    let throughput_rps = if duration_s > 0.0 {
        completed_ok as f64 / duration_s
    } else {
        f64::NAN
    };
    let mean = if latencies.is_empty() {
        f64::NAN
    } else {
        latencies.iter().sum::<f64>() / latencies.len() as f64
    };
    StepReport {
        load,
        duration_s,
        sent: in_window.len() as u64,
        ok: latencies.len() as u64,
        errors,
        skipped,
        throughput_rps,
        images_per_s: throughput_rps * batch as f64,
        latency_ms: Latency {
            p50: percentile(&latencies, 0.50),
            p90: percentile(&latencies, 0.90),
            p95: percentile(&latencies, 0.95),
            p99: percentile(&latencies, 0.99),
            mean,
            min: latencies.first().copied().unwrap_or(f64::NAN),
            max: latencies.last().copied().unwrap_or(f64::NAN),
        },
        error_samples,
    }
}

/// A whole `glimpse-lab load` run: its settings and one report per step.
#[derive(Debug, Clone, Serialize)]
pub struct LoadReport {
    /// The deployment measured.
    pub url: String,
    /// The API used.
    pub protocol: Protocol,
    /// The HTTP it went over (gRPC: HTTP/2).
    pub http: HttpVersion,
    /// Images per request.
    pub batch: usize,
    /// Warm-up before each step's window, seconds.
    pub warmup_s: f64,
    /// Seed of the open-loop arrivals.
    pub seed: u64,
    /// The steps, in the order they ran.
    pub steps: Vec<StepReport>,
}

impl LoadReport {
    /// The steps as an aligned text table, then one line per step that had errors.
    pub fn table(&self) -> String {
        let open = self
            .steps
            .iter()
            .any(|s| matches!(s.load, StepLoad::Rate(_)));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:>11} {:>8} {:>8} {:>7} {:>8} {:>9} {:>9} {:>8} {:>8} {:>8} {:>8} {:>8}",
            if open { "rate/s" } else { "concurrency" },
            "sent",
            "ok",
            "errors",
            "skipped",
            "req/s",
            "images/s",
            "p50 ms",
            "p90 ms",
            "p95 ms",
            "p99 ms",
            "mean ms"
        );
        for s in &self.steps {
            let load = match s.load {
                StepLoad::Concurrency(c) => c.to_string(),
                StepLoad::Rate(r) => format!("{r}"),
            };
            let l = &s.latency_ms;
            let _ = writeln!(
                out,
                "{load:>11} {:>8} {:>8} {:>7} {:>8} {:>9.1} {:>9.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>8.1}",
                s.sent,
                s.ok,
                s.error_total(),
                s.skipped,
                s.throughput_rps,
                s.images_per_s,
                l.p50,
                l.p90,
                l.p95,
                l.p99,
                l.mean
            );
        }
        for s in self.steps.iter().filter(|s| !s.errors.is_empty()) {
            let kinds: Vec<String> = s.errors.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            let _ = writeln!(out, "{}: errors {}", s.load, kinds.join(", "));
            for e in &s.error_samples {
                let _ = writeln!(out, "    {e}");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::protocol::ErrorKind;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn ok(sent: u64, done: u64) -> Record {
        Record {
            sent: ms(sent),
            done: ms(done),
            result: Ok(()),
        }
    }

    fn err(sent: u64, kind: ErrorKind) -> Record {
        Record {
            sent: ms(sent),
            done: ms(sent + 1),
            result: Err(Failure {
                kind,
                detail: "why".into(),
            }),
        }
    }

    #[test]
    fn counts_throughput_and_percentiles_follow_the_window() {
        let window = Window {
            start: ms(1000),
            end: ms(3000),
        };
        let mut records = vec![
            // Warm-up: sent before the window; its answer lands inside it, so it counts
            // for throughput but not for latency or counts.
            ok(900, 1100),
            // Sent after the window: ignored entirely.
            ok(3000, 3010),
            err(3500, ErrorKind::Timeout),
            err(1500, ErrorKind::Http(503)),
            err(1600, ErrorKind::Http(503)),
            err(1700, ErrorKind::Grpc("Unavailable".into())),
        ];
        // 100 successful requests in the window, latencies 1..=100 ms; the last one is
        // answered after the window ends (drain): it counts for latency, not throughput.
        for i in 1..=100u64 {
            let sent = 1000 + 19 * i;
            let done = if i == 100 { 3050 } else { sent + i };
            records.push(ok(sent, done));
        }
        let r = summarize(StepLoad::Concurrency(2), &records, window, 4, 0);
        assert_eq!(r.sent, 103);
        assert_eq!(r.ok, 100);
        assert_eq!(r.error_total(), 3);
        assert_eq!(r.errors["http 503"], 2);
        assert_eq!(r.errors["grpc Unavailable"], 1);
        assert_eq!(r.errors.get("timeout"), None);
        assert_eq!(r.duration_s, 2.0);
        // 99 in-window answers of the window's requests + 1 warm-up answer, over 2 s.
        assert!(
            (r.throughput_rps - 50.0).abs() < 1e-9,
            "{}",
            r.throughput_rps
        );
        assert!((r.images_per_s - 200.0).abs() < 1e-9);
        // Latencies are 1..=99 ms and, for the last one, 3050 − 2900 = 150 ms.
        let l = r.latency_ms;
        assert!((l.p50 - 50.5).abs() < 1e-9, "{l:?}");
        assert!((l.p90 - 90.1).abs() < 1e-9, "{l:?}");
        assert!((l.p95 - 95.05).abs() < 1e-9, "{l:?}");
        // Between the 99th (99 ms) and the 100th (150 ms) value: 99 + 0.01 × 51.
        assert!((l.p99 - 99.51).abs() < 1e-9, "{l:?}");
        assert_eq!(l.min, 1.0);
        assert_eq!(l.max, 150.0);
        assert!((l.mean - (4950.0 + 150.0) / 100.0).abs() < 1e-9, "{l:?}");
        assert_eq!(r.error_samples.len(), 3);
        assert_eq!(r.error_samples[0], "http 503: why");
    }

    #[test]
    fn an_empty_step_has_no_latencies_but_valid_json() {
        let window = Window {
            start: ms(0),
            end: ms(1000),
        };
        let r = summarize(StepLoad::Rate(5.0), &[], window, 1, 7);
        assert_eq!((r.sent, r.ok, r.skipped), (0, 0, 7));
        assert_eq!(r.throughput_rps, 0.0);
        assert!(r.latency_ms.p50.is_nan());
        let report = LoadReport {
            url: "https://x".into(),
            protocol: Protocol::V2,
            http: HttpVersion::Http3,
            batch: 1,
            warmup_s: 0.0,
            seed: 1,
            steps: vec![r],
        };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["protocol"], "v2");
        assert_eq!(json["http"], "h3");
        assert_eq!(json["steps"][0]["load"]["rate"], 5.0);
        assert_eq!(json["steps"][0]["skipped"], 7);
        assert!(
            json["steps"][0]["latency_ms"]["p99"].is_null(),
            "NaN is null"
        );
        assert!(report.table().starts_with("     rate/s"));
    }

    #[test]
    fn the_table_lines_up_and_lists_errors() {
        let window = Window {
            start: ms(0),
            end: ms(1000),
        };
        let records = vec![ok(10, 20), err(30, ErrorKind::Transport)];
        let report = LoadReport {
            url: "https://x".into(),
            protocol: Protocol::Json,
            http: HttpVersion::Http1,
            batch: 1,
            warmup_s: 0.0,
            seed: 1,
            steps: vec![
                summarize(StepLoad::Concurrency(1), &records, window, 1, 0),
                summarize(StepLoad::Concurrency(16), &records, window, 1, 0),
            ],
        };
        let t = report.table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0].len(), lines[1].len(), "{t}");
        assert_eq!(lines[1].len(), lines[2].len(), "{t}");
        assert!(lines[0].starts_with("concurrency"));
        assert!(t.contains("concurrency 16: errors transport ×1"), "{t}");
        assert!(t.contains("    transport: why"), "{t}");
    }
}
