//! `/metrics` gauges and counters of the site's protections: the byte budget, event
//! streams, kept jobs and connections, read from the [`Site`] they guard.

use std::fmt::Write;

use crate::site::Site;

/// Gauges and counters of the site's protections: the byte budget, event streams, kept
/// jobs and connections.
pub(crate) fn render_guards(site: &Site) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let mut out = String::with_capacity(2048);
    let (kept, kept_bytes) = site.jobs.retained();
    let c = &site.connections.counters;
    let gauges: [(&str, &str, usize); 6] = [
        (
            "glimpse_buffered_bytes",
            "Bytes of image data held: bodies being read, queued and in-flight images.",
            site.budget.in_use(),
        ),
        (
            "glimpse_buffered_bytes_limit",
            "The byte budget (--max-buffered-bytes).",
            site.budget.total(),
        ),
        (
            "glimpse_event_streams",
            "Event streams (SSE) open.",
            site.streams.total(),
        ),
        (
            "glimpse_retained_jobs",
            "Finished jobs kept for lookups.",
            kept,
        ),
        (
            "glimpse_retained_job_bytes",
            "Approximate bytes of the finished jobs kept.",
            kept_bytes,
        ),
        (
            "glimpse_connections",
            "HTTPS connections open.",
            site.connections.open(),
        ),
    ];
    for (name, help, v) in gauges {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
        );
    }
    let _ = write!(
        out,
        "# HELP glimpse_connections_total HTTPS connections by what became of them at admission or close.\n# TYPE glimpse_connections_total counter\n"
    );
    for (what, v) in [
        ("accepted", &c.accepted),
        ("refused_per_ip", &c.refused_per_ip),
        ("refused_full", &c.refused_full),
        ("evicted", &c.evicted),
        ("timed_out", &c.timed_out),
    ] {
        let _ = writeln!(
            out,
            "glimpse_connections_total{{event=\"{what}\"}} {}",
            v.load(Relaxed)
        );
    }
    out
}
