//! Prometheus metrics, rendered by hand in the text exposition format.
//!
//! The set is small and fixed, so plain atomics are enough and we avoid pulling in a
//! metrics framework. Users asked other servers for latency *histograms*, not only totals,
//! and for per-replica in-flight counts; both are here. Per-node numbers come from the
//! dispatcher's live view at scrape time, so they are never stale.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::inference::NodeView;

/// Outcomes an image can end with; `ok` plus [`crate::inference::Failure::outcome`].
pub(crate) const OUTCOMES: [&str; 9] = [
    "ok",
    "bad_image",
    "unsupported",
    "too_large",
    "no_nodes",
    "overloaded",
    "deadline",
    "exhausted",
    "internal",
];

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// All counters the site keeps itself.
#[derive(Default)]
pub struct Metrics {
    outcomes: [AtomicU64; OUTCOMES.len()],
    buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    retries: AtomicU64,
    hedges: AtomicU64,
    bytes_uploaded: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    responses: Mutex<BTreeMap<u16, u64>>,
}

impl Metrics {
    /// Count one finished image and, for successes, its end-to-end latency.
    pub fn image_done(&self, outcome: &str, latency: Option<Duration>) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            self.outcomes[i].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(latency) = latency {
            let secs = latency.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    self.buckets[i].fetch_add(1, Ordering::Relaxed);
                }
            }
            self.latency_count.fetch_add(1, Ordering::Relaxed);
            self.latency_sum_us
                .fetch_add(latency.as_micros() as u64, Ordering::Relaxed);
        }
    }

    /// Count of images that ended with `outcome` (used by tests and `/metrics`).
    pub fn outcome_count(&self, outcome: &str) -> u64 {
        OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .map(|i| self.outcomes[i].load(Ordering::Relaxed))
            .unwrap_or(0)
    }

    pub fn retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn hedge(&self) {
        self.hedges.fetch_add(1, Ordering::Relaxed);
    }

    pub fn uploaded(&self, bytes: usize) {
        self.bytes_uploaded
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A whole request refused before any image was queued (`queue_full`, `too_large`, ...).
    pub fn request_rejected(&self, reason: &'static str) {
        let mut map = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    /// Count an HTTP response by status code.
    pub fn response(&self, code: u16) {
        let mut map = self.responses.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(code).or_default() += 1;
    }

    /// Render the exposition text; `queued` and `nodes` are sampled by the caller.
    pub fn render(&self, queued: usize, in_flight: usize, nodes: &[NodeView]) -> String {
        let mut out = String::with_capacity(4096);
        let _ = self.render_into(&mut out, queued, in_flight, nodes);
        out
    }

    fn render_into(
        &self,
        out: &mut String,
        queued: usize,
        in_flight: usize,
        nodes: &[NodeView],
    ) -> std::fmt::Result {
        writeln!(
            out,
            "# HELP glimpse_images_total Images classified, by outcome."
        )?;
        writeln!(out, "# TYPE glimpse_images_total counter")?;
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let v = self.outcomes[i].load(Ordering::Relaxed);
            writeln!(out, "glimpse_images_total{{outcome=\"{outcome}\"}} {v}")?;
        }

        writeln!(
            out,
            "# HELP glimpse_image_latency_seconds Upload-to-answer latency of successful images."
        )?;
        writeln!(out, "# TYPE glimpse_image_latency_seconds histogram")?;
        for (i, bound) in BUCKETS.iter().enumerate() {
            let v = self.buckets[i].load(Ordering::Relaxed);
            writeln!(
                out,
                "glimpse_image_latency_seconds_bucket{{le=\"{bound}\"}} {v}"
            )?;
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        let sum = self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        writeln!(
            out,
            "glimpse_image_latency_seconds_bucket{{le=\"+Inf\"}} {count}"
        )?;
        writeln!(out, "glimpse_image_latency_seconds_sum {sum}")?;
        writeln!(out, "glimpse_image_latency_seconds_count {count}")?;

        writeln!(
            out,
            "# HELP glimpse_retries_total Dispatch attempts retried on another try."
        )?;
        writeln!(out, "# TYPE glimpse_retries_total counter")?;
        writeln!(
            out,
            "glimpse_retries_total {}",
            self.retries.load(Ordering::Relaxed)
        )?;
        writeln!(
            out,
            "# HELP glimpse_hedges_total Hedged duplicate requests sent."
        )?;
        writeln!(out, "# TYPE glimpse_hedges_total counter")?;
        writeln!(
            out,
            "glimpse_hedges_total {}",
            self.hedges.load(Ordering::Relaxed)
        )?;
        writeln!(
            out,
            "# HELP glimpse_uploaded_bytes_total Bytes of image data accepted."
        )?;
        writeln!(out, "# TYPE glimpse_uploaded_bytes_total counter")?;
        writeln!(
            out,
            "glimpse_uploaded_bytes_total {}",
            self.bytes_uploaded.load(Ordering::Relaxed)
        )?;

        writeln!(
            out,
            "# HELP glimpse_requests_rejected_total Whole requests refused, by reason."
        )?;
        writeln!(out, "# TYPE glimpse_requests_rejected_total counter")?;
        {
            let map = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
            for (reason, v) in map.iter() {
                writeln!(
                    out,
                    "glimpse_requests_rejected_total{{reason=\"{reason}\"}} {v}"
                )?;
            }
        }
        writeln!(
            out,
            "# HELP glimpse_http_responses_total HTTP responses, by status code."
        )?;
        writeln!(out, "# TYPE glimpse_http_responses_total counter")?;
        {
            let map = self.responses.lock().unwrap_or_else(|e| e.into_inner());
            for (code, v) in map.iter() {
                writeln!(out, "glimpse_http_responses_total{{code=\"{code}\"}} {v}")?;
            }
        }

        writeln!(
            out,
            "# HELP glimpse_queued_images Images accepted and not yet answered."
        )?;
        writeln!(out, "# TYPE glimpse_queued_images gauge")?;
        writeln!(out, "glimpse_queued_images {queued}")?;
        writeln!(
            out,
            "# HELP glimpse_dispatch_in_flight Images handed to the dispatcher now."
        )?;
        writeln!(out, "# TYPE glimpse_dispatch_in_flight gauge")?;
        writeln!(out, "glimpse_dispatch_in_flight {in_flight}")?;

        writeln!(
            out,
            "# HELP glimpse_node_up 1 while the node is connected and ready."
        )?;
        writeln!(out, "# TYPE glimpse_node_up gauge")?;
        for n in nodes {
            let up = u8::from(n.can_serve());
            writeln!(out, "glimpse_node_up{{node=\"{}\"}} {up}", label(&n.name))?;
        }
        writeln!(
            out,
            "# HELP glimpse_node_in_flight Requests in flight to the node."
        )?;
        writeln!(out, "# TYPE glimpse_node_in_flight gauge")?;
        for n in nodes {
            writeln!(
                out,
                "glimpse_node_in_flight{{node=\"{}\"}} {}",
                label(&n.name),
                n.in_flight
            )?;
        }
        writeln!(
            out,
            "# HELP glimpse_node_served_total Requests the node answered."
        )?;
        writeln!(out, "# TYPE glimpse_node_served_total counter")?;
        for n in nodes {
            writeln!(
                out,
                "glimpse_node_served_total{{node=\"{}\"}} {}",
                label(&n.name),
                n.served
            )?;
        }
        writeln!(
            out,
            "# HELP glimpse_node_failed_total Requests to the node that failed."
        )?;
        writeln!(out, "# TYPE glimpse_node_failed_total counter")?;
        for n in nodes {
            writeln!(
                out,
                "glimpse_node_failed_total{{node=\"{}\"}} {}",
                label(&n.name),
                n.failed
            )?;
        }
        writeln!(
            out,
            "# HELP glimpse_node_latency_seconds Recent node latency quantiles."
        )?;
        writeln!(out, "# TYPE glimpse_node_latency_seconds gauge")?;
        for n in nodes {
            for (q, v) in [("0.5", n.p50_ms), ("0.95", n.p95_ms)] {
                if let Some(ms) = v {
                    writeln!(
                        out,
                        "glimpse_node_latency_seconds{{node=\"{}\",quantile=\"{q}\"}} {}",
                        label(&n.name),
                        f64::from(ms) / 1000.0
                    )?;
                }
            }
        }
        Ok(())
    }
}

/// Escape a label value as the exposition format requires.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_counts_match() {
        let m = Metrics::default();
        m.image_done("ok", Some(Duration::from_millis(30)));
        m.image_done("ok", Some(Duration::from_millis(700)));
        m.image_done("bad_image", None);
        let text = m.render(0, 0, &[]);
        assert!(
            text.contains("glimpse_images_total{outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("glimpse_images_total{outcome=\"bad_image\"} 1"));
        assert!(text.contains("glimpse_image_latency_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("glimpse_image_latency_seconds_bucket{le=\"1\"} 2"));
        assert!(text.contains("glimpse_image_latency_seconds_count 2"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
