//! `/metrics` gauges and counters of the site's protections: the byte budget, event
//! streams, kept jobs and connections, read from the [`Site`] they guard at scrape time.

use prometheus_client::registry::Registry;

use crate::observe::metrics::{register_events, register_gauges};
use crate::site::Site;

/// Registers the gauges and counters of the site's protections into `live`: the byte budget,
/// event streams, kept jobs and connections.
pub(crate) fn register_guards(site: &Site, live: &mut Registry) {
    let (kept, kept_bytes) = site.jobs.retained();
    let c = &site.connections.counters;
    register_gauges(
        live,
        &[
            (
                "glimpse_buffered_bytes",
                "Bytes of image data held: bodies being read, queued and in-flight images",
                site.budget.in_use(),
            ),
            (
                "glimpse_buffered_bytes_limit",
                "The byte budget (--max-buffered-bytes)",
                site.budget.total(),
            ),
            (
                "glimpse_event_streams",
                "Event streams (SSE) open",
                site.streams.total(),
            ),
            (
                "glimpse_retained_jobs",
                "Finished jobs kept for lookups",
                kept,
            ),
            (
                "glimpse_retained_job_bytes",
                "Approximate bytes of the finished jobs kept",
                kept_bytes,
            ),
            (
                "glimpse_connections",
                "Connections open on all listeners (HTTPS, HTTP/3, gRPC, redirect, admin)",
                site.connections.open(),
            ),
        ],
    );
    register_events(
        live,
        "glimpse_connection_events",
        "Connections by what became of them at admission or close (a counter apart from the glimpse_connections gauge, whose name it would otherwise share)",
        &c.events(),
    );
}
