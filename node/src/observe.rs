//! What a node tells its operator about itself: whether it is alive and ready, and its
//! Prometheus metrics. The admin listener ([`crate::admin`]) serves them; Kubernetes probes
//! and Prometheus read them.
//!
//! The families are named `glimpse_worker_*`: the front-end's `glimpse_node_*{node=…}` are
//! its view of each node, and a name must not mean two things in one Prometheus.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use glimpse_transport::Handler;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::batches::BatchHistograms;
use crate::handler::{NodeCounters, NodeHandler};
use crate::lanes::Parallelism;

/// A node's health and metrics, shared by the node and its admin listener.
#[derive(Debug)]
pub(crate) struct Observed {
    loaded: AtomicBool,
    draining: AtomicBool,
    capacity: u32,
    parallelism: Parallelism,
    pub(crate) counters: Arc<NodeCounters>,
    pub(crate) batches: Arc<BatchHistograms>,
    /// Set once serving starts; weak so the admin listener never keeps the inference lanes
    /// alive past the node's own shutdown.
    handler: OnceLock<Weak<NodeHandler>>,
    registry: Registry,
}

impl Observed {
    /// Before the model is loaded: alive, not ready.
    pub(crate) fn new(capacity: u32, parallelism: Parallelism) -> Observed {
        let batches = Arc::new(BatchHistograms::default());
        let mut registry =
            glimpse_ops::exposition::base_registry("node", env!("CARGO_PKG_VERSION"));
        registry.register(
            "glimpse_worker_batch_size",
            "Images per forward pass",
            batches.sizes.clone(),
        );
        registry.register(
            "glimpse_worker_batch_seconds",
            "Duration of each forward pass",
            batches.seconds.clone(),
        );
        Observed {
            loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            capacity,
            parallelism,
            counters: Arc::default(),
            batches,
            handler: OnceLock::new(),
            registry,
        }
    }

    /// The model is loaded and the node serves.
    pub(crate) fn serving(&self, handler: &Arc<NodeHandler>) {
        let _ = self.handler.set(Arc::downgrade(handler));
        self.loaded.store(true, Ordering::SeqCst);
    }

    /// Shutdown began: the node takes no new work.
    pub(crate) fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Why the node is not ready (`None` when it is): still loading its model, or draining.
    pub(crate) fn not_ready(&self) -> Option<&'static str> {
        if self.draining.load(Ordering::SeqCst) {
            Some("draining")
        } else if !self.loaded.load(Ordering::SeqCst) {
            Some("loading the model")
        } else {
            None
        }
    }

    /// The `/metrics` page now.
    // Over 80 lines on purpose: every metric of the node's page, one after another.
    pub(crate) fn metrics_page(&self) -> String {
        let stats = self.counters.snapshot();
        let load = self
            .handler
            .get()
            .and_then(Weak::upgrade)
            .map(|h| h.load())
            .unwrap_or_default();
        let mut live = Registry::default();
        let counters: [(&str, &str, u64); 4] = [
            (
                "glimpse_worker_answered",
                "Requests answered with labels",
                stats.answered,
            ),
            (
                "glimpse_worker_failed",
                "Admitted requests that ended in an error (bad or too large image, full queue, draining, model failure)",
                stats.failed,
            ),
            (
                "glimpse_worker_overloaded",
                "Requests refused as overloaded (over capacity, or a full inference queue)",
                stats.overloaded,
            ),
            (
                "glimpse_worker_decoded",
                "Image decodes run to their end",
                stats.decoded,
            ),
        ];
        for (name, help, v) in counters {
            let c = Counter::<u64>::default();
            c.inc_by(v);
            live.register(name, help, c);
        }
        let gauges: [(&str, &str, u64); 9] = [
            (
                "glimpse_worker_in_flight",
                "Requests being served now",
                u64::from(load.in_flight),
            ),
            (
                "glimpse_worker_queued",
                "Images waiting for a forward pass",
                u64::from(load.queued),
            ),
            (
                "glimpse_worker_capacity",
                "Images taken at once (--capacity)",
                u64::from(self.capacity),
            ),
            (
                "glimpse_worker_lanes",
                "Forward passes run at once (--lanes)",
                self.parallelism.lanes() as u64,
            ),
            (
                "glimpse_worker_threads",
                "Compute threads shared out among the lanes (--threads)",
                self.parallelism.threads() as u64,
            ),
            (
                "glimpse_worker_decode_budget_in_use_bytes",
                "Bytes of the decode budget reserved by running decodes",
                stats.decode_budget_in_use_bytes,
            ),
            (
                "glimpse_worker_decode_budget_peak_bytes",
                "Most bytes of the decode budget ever reserved at once",
                stats.decode_budget_peak_bytes,
            ),
            (
                "glimpse_worker_ready",
                "1 when the model is loaded and the node is not draining",
                u64::from(self.not_ready().is_none()),
            ),
            (
                "glimpse_worker_draining",
                "1 once shutdown began",
                u64::from(self.draining.load(Ordering::SeqCst)),
            ),
        ];
        for (name, help, v) in gauges {
            let g = Gauge::<i64>::default();
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
            live.register(name, help, g);
        }
        glimpse_ops::exposition::encode(&[&self.registry, &live])
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn ready_only_between_loading_and_draining() {
        let o = Observed::new(4, Parallelism::default());
        assert_eq!(o.not_ready(), Some("loading the model"));
        o.loaded.store(true, Ordering::SeqCst);
        assert_eq!(o.not_ready(), None);
        o.drain();
        assert_eq!(o.not_ready(), Some("draining"));
    }

    #[test]
    fn the_page_has_batches_counters_and_build_info() {
        let o = Observed::new(4, Parallelism::new(Some(3), Some(2)).expect("valid"));
        o.batches.observe(3, Duration::from_millis(20));
        o.counters.answered.fetch_add(3, Ordering::Relaxed);
        let text = o.metrics_page();
        for line in [
            "glimpse_worker_batch_size_bucket{le=\"2\"} 0",
            "glimpse_worker_batch_size_bucket{le=\"4\"} 1",
            "glimpse_worker_batch_seconds_count 1",
            "glimpse_worker_answered_total 3",
            "glimpse_worker_capacity 4",
            "glimpse_worker_lanes 2",
            "glimpse_worker_threads 3",
            "glimpse_worker_ready 0",
            "glimpse_build_info{component=\"node\"",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
