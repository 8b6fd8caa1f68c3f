//! The Prometheus text exposition both `/metrics` pages serve: one registry of long-lived
//! metrics, plus metrics sampled at scrape time, encoded by `prometheus-client` in the
//! Prometheus text format 0.0.4 (what every Prometheus version and most scrapers read).

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::process::ProcessCollector;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// A registry with what every Glimpse process reports: `glimpse_build_info{component,
/// version} 1` and the `process_*` metrics.
pub fn base_registry(component: &str, version: &str) -> Registry {
    let mut registry = Registry::default();
    registry.register(
        "glimpse_build",
        "Build of this process: its component and version (the value is always 1)",
        Info::new(vec![
            ("component".to_string(), component.to_string()),
            ("version".to_string(), version.to_string()),
        ]),
    );
    registry.register_collector(Box::new(ProcessCollector));
    registry
}

/// The registries one after another, as one page (their metric names must not overlap).
pub fn encode(registries: &[&Registry]) -> String {
    let mut out = String::with_capacity(8192);
    for registry in registries {
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, registry);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_info_and_process_metrics_are_on_the_page() {
        let text = encode(&[&base_registry("test", "1.2.3")]);
        assert!(
            text.contains("glimpse_build_info{component=\"test\",version=\"1.2.3\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE glimpse_build_info gauge"), "{text}");
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(
                text.contains("# TYPE process_cpu_seconds_total counter"),
                "{text}"
            );
            assert!(text.contains("process_resident_memory_bytes "), "{text}");
            assert!(text.contains("process_max_fds "), "{text}");
        }
    }
}
