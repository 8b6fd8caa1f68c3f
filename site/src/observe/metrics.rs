//! The front-end's Prometheus metrics, kept in a `prometheus-client` registry and served in
//! the Prometheus text format by `/metrics` (see [`glimpse_ops::exposition`]).
//!
//! Two kinds live here. What the site counts as it happens (images by outcome, latencies,
//! requests by route, the nodes' per-image stage times, batch sizes, retries and hedges per
//! node) is held in [`Metrics`] for the life of the process. What describes the present (queue
//! depth, in-flight counts, each node's state, the dispatcher's totals, the guards) is sampled
//! at scrape time into a fresh registry ([`Metrics::page`]), so it is never stale and a node
//! that left is not reported as if it were still there.
//!
//! Latencies are histograms with `le` buckets, which Prometheus can aggregate across
//! front-ends; no quantile gauges (they cannot be averaged or summed).

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::fleet::inference::NodeView;

/// Outcomes an image can end with; `ok` plus [`crate::fleet::inference::Failure::outcome`].
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

/// Upper bounds (seconds) of the end-to-end latency buckets: an image takes from a few
/// milliseconds (synthetic model, idle fleet) to a minute (the job timeout).
const LATENCY_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Upper bounds (seconds) of a node's stage buckets: decoding a thumbnail takes under a
/// millisecond, a GoogLeNet batch on a small CPU seconds.
const STAGE_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the batch size buckets (powers of two up to the largest `--max-batch`
/// worth using on a CPU).
const BATCH_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    code: u16,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
    code: u16,
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    method: &'static str,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabel {
    node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabel {
    event: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn stage_histogram() -> Histogram {
    Histogram::new(STAGE_BUCKETS)
}

fn batch_histogram() -> Histogram {
    Histogram::new(BATCH_BUCKETS)
}

/// What the site counts while it runs, and the registry that holds it.
pub struct Metrics {
    registry: Registry,
    images: Family<OutcomeLabel, Counter>,
    latency: Histogram,
    retries: Counter,
    hedges: Counter,
    uploaded: Counter,
    rejected: Family<ReasonLabel, Counter>,
    responses: Family<ResponseLabels, Counter>,
    requests: HistogramFamily<RouteLabels>,
    grpc: HistogramFamily<GrpcLabels>,
    node_latency: HistogramFamily<NodeLabel>,
    node_queue: HistogramFamily<NodeLabel>,
    node_decode: HistogramFamily<NodeLabel>,
    node_infer: HistogramFamily<NodeLabel>,
    node_batch: HistogramFamily<NodeLabel>,
    node_retries: Family<NodeLabel, Counter>,
    node_hedges: Family<NodeLabel, Counter>,
}

impl Default for Metrics {
    // Over 80 lines on purpose: every counted metric registered with its help text, one after another.
    fn default() -> Self {
        let mut registry =
            glimpse_ops::exposition::base_registry("frontend", env!("CARGO_PKG_VERSION"));
        let images = Family::<OutcomeLabel, Counter>::default();
        for outcome in OUTCOMES {
            // Every outcome from the start, so rates work before the first failure.
            let _ = images.get_or_create(&OutcomeLabel { outcome });
        }
        let latency = latency_histogram();
        let m = Metrics {
            images,
            latency,
            retries: Counter::default(),
            hedges: Counter::default(),
            uploaded: Counter::default(),
            rejected: Family::default(),
            responses: Family::default(),
            requests: Family::new_with_constructor(latency_histogram),
            grpc: Family::new_with_constructor(latency_histogram),
            node_latency: Family::new_with_constructor(latency_histogram),
            node_queue: Family::new_with_constructor(stage_histogram),
            node_decode: Family::new_with_constructor(stage_histogram),
            node_infer: Family::new_with_constructor(stage_histogram),
            node_batch: Family::new_with_constructor(batch_histogram),
            node_retries: Family::default(),
            node_hedges: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "glimpse_images",
            "Images classified, by outcome",
            m.images.clone(),
        );
        registry.register(
            "glimpse_image_latency_seconds",
            "Upload-to-answer latency of successful images",
            m.latency.clone(),
        );
        registry.register(
            "glimpse_retries",
            "Dispatch attempts retried on another try",
            m.retries.clone(),
        );
        registry.register(
            "glimpse_hedges",
            "Hedged duplicate requests sent",
            m.hedges.clone(),
        );
        registry.register(
            "glimpse_uploaded_bytes",
            "Bytes of image data accepted",
            m.uploaded.clone(),
        );
        registry.register(
            "glimpse_requests_rejected",
            "Whole requests refused, by reason",
            m.rejected.clone(),
        );
        registry.register(
            "glimpse_http_responses",
            "HTTP responses, by status code and protocol (http/1.1, h2, h3)",
            m.responses.clone(),
        );
        registry.register(
            "glimpse_http_request_duration_seconds",
            "HTTP request latency, from its headers to its response headers, by route, status code and protocol (http/1.1, h2, h3)",
            m.requests.clone(),
        );
        registry.register(
            "glimpse_grpc_request_duration_seconds",
            "gRPC call latency, from its headers to its response headers, by method and gRPC status code (0: OK)",
            m.grpc.clone(),
        );
        registry.register(
            "glimpse_node_request_duration_seconds",
            "Dispatch latency of answered images (first send to answer, retries included), by the node that answered",
            m.node_latency.clone(),
        );
        registry.register(
            "glimpse_node_queue_seconds",
            "Time answered images waited on the node (decode budget, batch queue), by node",
            m.node_queue.clone(),
        );
        registry.register(
            "glimpse_node_decode_seconds",
            "Decode and preprocess time of answered images on the node, by node",
            m.node_decode.clone(),
        );
        registry.register(
            "glimpse_node_inference_seconds",
            "Forward-pass time of the batch that answered each image, by node",
            m.node_infer.clone(),
        );
        registry.register(
            "glimpse_node_batch_size",
            "Size of the batch that answered each image, by node (nodes before 0.1 do not report it)",
            m.node_batch.clone(),
        );
        registry.register(
            "glimpse_node_retries",
            "Retry attempts sent to the node (after an attempt elsewhere failed or was overdue)",
            m.node_retries.clone(),
        );
        registry.register(
            "glimpse_node_hedges",
            "Hedge copies sent to the node",
            m.node_hedges.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// Count one finished image and, for successes, its end-to-end latency.
    pub fn image_done(&self, outcome: &str, latency: Option<Duration>) {
        if let Some(outcome) = OUTCOMES.iter().find(|o| **o == outcome) {
            self.images.get_or_create(&OutcomeLabel { outcome }).inc();
        }
        if let Some(latency) = latency {
            self.latency.observe(latency.as_secs_f64());
        }
    }

    /// Count of images that ended with `outcome`.
    pub fn outcome_count(&self, outcome: &str) -> u64 {
        OUTCOMES
            .iter()
            .find(|o| **o == outcome)
            .and_then(|outcome| self.images.get(&OutcomeLabel { outcome }).map(|c| c.get()))
            .unwrap_or(0)
    }

    /// Where `node` spent an answered image's time, as the node reported it, and the
    /// dispatch latency the front-end measured.
    pub fn node_answer(&self, node: &str, timings: &glimpse_transport::Timings, latency: Duration) {
        let label = NodeLabel {
            node: node.to_string(),
        };
        let s = |ms: f32| f64::from(ms.max(0.0)) / 1000.0;
        self.node_latency
            .get_or_create(&label)
            .observe(latency.as_secs_f64());
        self.node_queue
            .get_or_create(&label)
            .observe(s(timings.queue_ms));
        self.node_decode
            .get_or_create(&label)
            .observe(s(timings.decode_ms + timings.preprocess_ms));
        self.node_infer
            .get_or_create(&label)
            .observe(s(timings.infer_ms));
        if let Some(size) = timings.batch_size {
            self.node_batch
                .get_or_create(&label)
                .observe(f64::from(size));
        }
    }

    /// One retry: `node` is where it was sent.
    pub fn retry(&self, node: &str) {
        self.retries.inc();
        self.node_retries
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .inc();
    }

    /// One hedge copy, sent to `node`.
    pub fn hedge(&self, node: &str) {
        self.hedges.inc();
        self.node_hedges
            .get_or_create(&NodeLabel {
                node: node.to_string(),
            })
            .inc();
    }

    /// Bytes of one accepted image.
    pub fn uploaded(&self, bytes: usize) {
        self.uploaded.inc_by(bytes as u64);
    }

    /// A whole request refused before any image was queued (`queue_full`, `too_large`, ...).
    pub fn request_rejected(&self, reason: &'static str) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Count an HTTP response to `path` by status code, and its latency by route, each by
    /// the protocol the request came over (see [`protocol_of`]).
    pub fn response(&self, path: &str, code: u16, protocol: &'static str, elapsed: Duration) {
        self.responses
            .get_or_create(&ResponseLabels { code, protocol })
            .inc();
        self.requests
            .get_or_create(&RouteLabels {
                route: route_of(path),
                code,
                protocol,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Count a gRPC call to `path` by its status code, and its latency by method.
    pub fn grpc_call(&self, path: &str, code: u16, elapsed: Duration) {
        self.grpc
            .get_or_create(&GrpcLabels {
                method: grpc_method_of(path),
                code,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The whole `/metrics` page: these metrics, then `live`, sampled by the caller now.
    pub fn page(&self, live: &Registry) -> String {
        glimpse_ops::exposition::encode(&[&self.registry, live])
    }
}

/// Registers the site's present state into `live`: queue depth, in-flight images, and each
/// node's state and counts.
// Over 80 lines on purpose: every metric sampled at scrape time, one after another.
pub(crate) fn register_live(
    live: &mut Registry,
    queued: usize,
    in_flight: usize,
    nodes: &[NodeView],
) {
    let gauge = |v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        g
    };
    live.register(
        "glimpse_queued_images",
        "Images accepted and not yet answered",
        gauge(i64::try_from(queued).unwrap_or(i64::MAX)),
    );
    live.register(
        "glimpse_dispatch_in_flight",
        "Images handed to the dispatcher now",
        gauge(i64::try_from(in_flight).unwrap_or(i64::MAX)),
    );
    let up = Family::<NodeLabel, Gauge>::default();
    let node_in_flight = Family::<NodeLabel, Gauge>::default();
    let capacity = Family::<NodeLabel, Gauge>::default();
    let served = Family::<NodeLabel, Counter>::default();
    let failed = Family::<NodeLabel, Counter>::default();
    let service = Family::<NodeLabel, Gauge<f64, AtomicU64>>::default();
    let expected = Family::<NodeLabel, Gauge<f64, AtomicU64>>::default();
    let share = Family::<NodeLabel, Gauge<f64, AtomicU64>>::default();
    for n in nodes {
        let label = NodeLabel {
            node: n.name.clone(),
        };
        up.get_or_create(&label).set(i64::from(n.can_serve()));
        node_in_flight
            .get_or_create(&label)
            .set(i64::from(n.in_flight));
        if let Some(c) = n.capacity {
            capacity.get_or_create(&label).set(i64::from(c));
        }
        served.get_or_create(&label).inc_by(n.served);
        failed.get_or_create(&label).inc_by(n.failed);
        if let Some(ms) = n.service_ms {
            service.get_or_create(&label).set(f64::from(ms) / 1000.0);
        }
        if let Some(ms) = n.expected_ms {
            expected.get_or_create(&label).set(f64::from(ms) / 1000.0);
        }
        if let Some(s) = n.placement_share {
            share.get_or_create(&label).set(f64::from(s));
        }
    }
    live.register(
        "glimpse_node_up",
        "1 while the node is connected and ready",
        up,
    );
    live.register(
        "glimpse_node_in_flight",
        "Requests in flight to the node from this front-end",
        node_in_flight,
    );
    live.register(
        "glimpse_node_capacity",
        "Images the node takes at once, as it announced",
        capacity,
    );
    live.register("glimpse_node_served", "Requests the node answered", served);
    live.register(
        "glimpse_node_failed",
        "Requests to the node that failed",
        failed,
    );
    live.register(
        "glimpse_node_service_seconds",
        "Placement's estimate of the node's service time per image on one lane",
        service,
    );
    live.register(
        "glimpse_node_expected_finish_seconds",
        "When one more image placed on the node is expected to be done",
        expected,
    );
    live.register(
        "glimpse_node_placement_share",
        "The node's share of this front-end's placements (0 to 1)",
        share,
    );
}

/// Registers counters whose values are sampled at scrape time (`name` without `_total`).
pub(crate) fn register_counters(live: &mut Registry, rows: &[(&str, &str, u64)]) {
    for (name, help, value) in rows {
        let c = Counter::<u64>::default();
        c.inc_by(*value);
        live.register(*name, *help, c);
    }
}

/// Registers gauges whose values are sampled at scrape time.
pub(crate) fn register_gauges(live: &mut Registry, rows: &[(&str, &str, usize)]) {
    for (name, help, value) in rows {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(*value).unwrap_or(i64::MAX));
        live.register(*name, *help, g);
    }
}

/// Registers a counter family with one label, sampled at scrape time.
pub(crate) fn register_events(
    live: &mut Registry,
    name: &str,
    help: &str,
    rows: &[(&'static str, u64)],
) {
    let family = Family::<EventLabel, Counter>::default();
    for (event, value) in rows {
        family.get_or_create(&EventLabel { event }).inc_by(*value);
    }
    live.register(name, help, family);
}

/// The method of a gRPC path (`/inference.GRPCInferenceService/ModelInfer`), from the fixed
/// list the service has; anything else is `other`.
/// The `protocol` label (and log field) of a request of `version`: the ALPN names operators
/// know from TLS and `Alt-Svc` — `http/1.1`, `h2` or `h3` — so a dashboard can tell how much of
/// the traffic, and which latencies, came over QUIC.
pub(crate) fn protocol_of(version: warp::http::Version) -> &'static str {
    match version {
        warp::http::Version::HTTP_2 => "h2",
        warp::http::Version::HTTP_3 => "h3",
        warp::http::Version::HTTP_10 => "http/1.0",
        warp::http::Version::HTTP_11 => "http/1.1",
        _ => "other",
    }
}

fn grpc_method_of(path: &str) -> &'static str {
    const METHODS: [&str; 8] = [
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "ModelConfig",
        "ModelStatistics",
    ];
    path.strip_prefix("/inference.GRPCInferenceService/")
        .and_then(|m| METHODS.iter().find(|k| **k == m))
        .copied()
        .unwrap_or("other")
}

/// The route a path belongs to, with the parts that vary (job ids, model names, versions)
/// replaced by placeholders, so the `route` label stays a short, fixed list.
fn route_of(path: &str) -> &'static str {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [""] | ["index.html"] | ["app.js"] | ["style.css"] => "/",
        ["healthz"] => "/healthz",
        ["readyz"] => "/readyz",
        ["metrics"] => "/metrics",
        ["openapi.json"] => "/openapi.json",
        ["api", "v1", "classify"] => "/api/v1/classify",
        ["api", "v1", "status"] => "/api/v1/status",
        ["api", "v1", "nodes"] => "/api/v1/nodes",
        ["api", "v1", "events"] => "/api/v1/events",
        ["api", "v1", "session"] => "/api/v1/session",
        ["api", "v1", "jobs", _] => "/api/v1/jobs/{id}",
        ["v2"] => "/v2",
        ["v2", "health", "live"] => "/v2/health/live",
        ["v2", "health", "ready"] => "/v2/health/ready",
        ["v2", "models", "stats"] => "/v2/models/stats",
        ["v2", "models", _, "versions", _, rest @ ..] | ["v2", "models", _, rest @ ..] => {
            match rest {
                [] => "/v2/models/{model}",
                ["infer"] => "/v2/models/{model}/infer",
                ["ready"] => "/v2/models/{model}/ready",
                ["config"] => "/v2/models/{model}/config",
                ["stats"] => "/v2/models/{model}/stats",
                _ => "other",
            }
        }
        _ => "other",
    }
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
        let text = m.page(&Registry::default());
        assert!(
            text.contains("glimpse_images_total{outcome=\"ok\"} 2"),
            "{text}"
        );
        assert!(text.contains("glimpse_images_total{outcome=\"bad_image\"} 1"));
        assert!(text.contains("glimpse_images_total{outcome=\"internal\"} 0"));
        assert!(text.contains("glimpse_image_latency_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("glimpse_image_latency_seconds_bucket{le=\"1\"} 2"));
        assert!(text.contains("glimpse_image_latency_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("glimpse_image_latency_seconds_count 2"));
        assert!(text.contains("glimpse_build_info{component=\"frontend\""));
        assert_eq!(m.outcome_count("ok"), 2);
    }

    #[test]
    fn node_stages_batches_retries_and_hedges_are_per_node() {
        let m = Metrics::default();
        let timings = glimpse_transport::Timings {
            queue_ms: 2.0,
            decode_ms: 3.0,
            preprocess_ms: 1.0,
            infer_ms: 40.0,
            batch_size: Some(4),
        };
        m.node_answer("a", &timings, Duration::from_millis(60));
        m.retry("b");
        m.hedge("b");
        let text = m.page(&Registry::default());
        for line in [
            "glimpse_node_queue_seconds_bucket{node=\"a\",le=\"0.0025\"} 1",
            "glimpse_node_decode_seconds_bucket{node=\"a\",le=\"0.005\"} 1",
            "glimpse_node_inference_seconds_bucket{node=\"a\",le=\"0.025\"} 0",
            "glimpse_node_inference_seconds_bucket{node=\"a\",le=\"0.05\"} 1",
            "glimpse_node_batch_size_bucket{node=\"a\",le=\"4\"} 1",
            "glimpse_node_batch_size_bucket{node=\"a\",le=\"2\"} 0",
            "glimpse_node_request_duration_seconds_count{node=\"a\"} 1",
            "glimpse_node_retries_total{node=\"b\"} 1",
            "glimpse_node_hedges_total{node=\"b\"} 1",
            "glimpse_retries_total 1",
            "glimpse_hedges_total 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(!text.contains("quantile"), "{text}");
    }

    #[test]
    fn routes_are_a_fixed_list() {
        for (path, route) in [
            ("/", "/"),
            ("/app.js", "/"),
            ("/api/v1/jobs/abc-123", "/api/v1/jobs/{id}"),
            ("/v2/models/googlenet/infer", "/v2/models/{model}/infer"),
            (
                "/v2/models/googlenet/versions/1/infer",
                "/v2/models/{model}/infer",
            ),
            ("/v2/models/googlenet", "/v2/models/{model}"),
            ("/v2/models/stats", "/v2/models/stats"),
            ("/etc/passwd", "other"),
            ("/api/v1/jobs/a/b", "other"),
        ] {
            assert_eq!(route_of(path), route, "{path}");
        }
        let m = Metrics::default();
        m.response(
            "/api/v1/jobs/x",
            404,
            protocol_of(warp::http::Version::HTTP_3),
            Duration::from_millis(3),
        );
        m.response(
            "/",
            200,
            protocol_of(warp::http::Version::HTTP_2),
            Duration::ZERO,
        );
        m.response(
            "/",
            200,
            protocol_of(warp::http::Version::HTTP_11),
            Duration::ZERO,
        );
        let text = m.page(&Registry::default());
        assert!(
            text.contains(
                "glimpse_http_request_duration_seconds_count{route=\"/api/v1/jobs/{id}\",code=\"404\",protocol=\"h3\"} 1"
            ),
            "{text}"
        );
        for (code, protocol) in [(404, "h3"), (200, "h2"), (200, "http/1.1")] {
            let line = format!(
                "glimpse_http_responses_total{{code=\"{code}\",protocol=\"{protocol}\"}} 1"
            );
            assert!(text.contains(&line), "{line} in {text}");
        }
        m.grpc_call(
            "/inference.GRPCInferenceService/ModelInfer",
            0,
            Duration::from_millis(3),
        );
        m.grpc_call("/other.Service/X", 12, Duration::from_millis(3));
        let text = m.page(&Registry::default());
        for line in [
            "glimpse_grpc_request_duration_seconds_count{method=\"ModelInfer\",code=\"0\"} 1",
            "glimpse_grpc_request_duration_seconds_count{method=\"other\",code=\"12\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn live_state_is_sampled_into_its_own_registry() {
        let mut live = Registry::default();
        let node = NodeView {
            name: "n\"1".into(),
            addr: "127.0.0.1:1".into(),
            state: "ready".into(),
            in_flight: 3,
            served: 10,
            failed: 1,
            p50_ms: Some(5.0),
            p95_ms: Some(9.0),
            service_ms: Some(50.0),
            expected_ms: Some(150.0),
            placement_share: Some(0.25),
            model: Some("synthetic".into()),
            weights: None,
            trained: None,
            synthetic: Some(true),
            backend: None,
            capacity: Some(32),
        };
        register_live(&mut live, 7, 2, &[node]);
        let text = Metrics::default().page(&live);
        for line in [
            "glimpse_queued_images 7",
            "glimpse_dispatch_in_flight 2",
            "glimpse_node_up{node=\"n\\\"1\"} 1",
            "glimpse_node_in_flight{node=\"n\\\"1\"} 3",
            "glimpse_node_served_total{node=\"n\\\"1\"} 10",
            "glimpse_node_capacity{node=\"n\\\"1\"} 32",
            "glimpse_node_service_seconds{node=\"n\\\"1\"} 0.05",
            "glimpse_node_expected_finish_seconds{node=\"n\\\"1\"} 0.15",
            "glimpse_node_placement_share{node=\"n\\\"1\"} 0.25",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
