//! What one client, and all of them together, may make the site do: sizes, counts, queues,
//! rates and timeouts, with the reason for each default.

use std::time::Duration;

use crate::access::throttle::RateSpec;
use crate::http::pace::PaceLimits;

pub use glimpse_wire::text::{file_too_large, human_bytes};

/// Limits on what one client can make the site do. Defaults are generous (users complain
/// about surprise 413s) but bounded so one request cannot exhaust memory.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest single image in bytes.
    pub max_file_bytes: usize,
    /// Largest request body in bytes (all files together).
    pub max_request_bytes: usize,
    /// Most files in one request.
    pub max_files: usize,
    /// Most images accepted and not yet answered, over all clients; beyond: 503.
    pub max_queued: usize,
    /// Most images handed to the dispatcher at once.
    pub max_in_flight: usize,
    /// Seconds suggested in Retry-After when the queue is full.
    pub retry_after_s: u64,
    /// Site-side bound on one image's dispatch; the dispatcher's own deadline should be
    /// shorter, this only guarantees that no client waits forever.
    pub job_timeout: Duration,
    /// Finished jobs kept for `GET /api/v1/jobs/{id}`.
    pub job_retention: usize,
    /// Bytes of finished jobs kept (oldest evicted first).
    pub job_retention_bytes: usize,
    /// Bytes of image data held at once: bodies being read, queued and in-flight images.
    pub max_buffered_bytes: usize,
    /// Most images one caller may have accepted and not yet answered; beyond: 429.
    pub max_queued_per_caller: usize,
    /// A request body that sends nothing for this long is abandoned (408).
    pub body_timeout: Duration,
    /// Bytes per second a request body must average once `body_rate_grace` is over (0: no
    /// minimum); slower ones are abandoned (408).
    pub body_min_rate: u64,
    /// How long a request body may take before its average rate is checked.
    pub body_rate_grace: Duration,
    /// A request body must be complete within this, however fast it comes (408).
    pub body_deadline: Duration,
    /// Failed API key checks per second (and burst) one client address may make before its
    /// requests get 429 without their key being checked; `None`: unlimited.
    pub auth_failures: Option<RateSpec>,
    /// Event streams open at once, over all callers; beyond: 503.
    pub max_event_streams: usize,
    /// Event streams one caller may hold open; beyond: 429.
    pub max_event_streams_per_caller: usize,
    /// Requests per second (and burst) per caller; `None`: unlimited.
    pub rate: Option<RateSpec>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_file_bytes: 20 * 1024 * 1024,
            max_request_bytes: 100 * 1024 * 1024,
            max_files: 64,
            max_queued: 512,
            max_in_flight: 64,
            retry_after_s: 2,
            job_timeout: Duration::from_secs(60),
            job_retention: 10_000,
            job_retention_bytes: 64 << 20,
            max_buffered_bytes: 512 << 20,
            max_queued_per_caller: 128,
            body_timeout: Duration::from_secs(30),
            body_min_rate: 1024,
            body_rate_grace: Duration::from_secs(10),
            body_deadline: Duration::from_secs(300),
            auth_failures: RateSpec::new(10, 50),
            max_event_streams: 512,
            max_event_streams_per_caller: 8,
            rate: None,
        }
    }
}

impl Limits {
    /// How fast every request body must arrive (see [`crate::http::pace`]).
    pub fn pace(&self) -> PaceLimits {
        PaceLimits {
            inactivity: self.body_timeout,
            grace: self.body_rate_grace,
            min_rate: self.body_min_rate,
            deadline: self.body_deadline,
        }
    }
}

/// The refusal of a request body over `--max-request-bytes`, like [`file_too_large`] (which,
/// with [`human_bytes`], lives with the wire format: the KServe parsers report the per-image
/// limit the same way).
pub fn request_too_large(size: Option<u64>, limit: usize) -> String {
    let limit = human_bytes(limit as u64);
    match size {
        Some(size) => format!(
            "the request is {}; the limit is {limit} per request",
            human_bytes(size)
        ),
        None => format!("the request is larger than the limit of {limit} per request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_over_its_limit_reads_as_the_page_shows_it() {
        assert_eq!(
            request_too_large(Some(200 << 20), 100 << 20),
            "the request is 200.0 MiB; the limit is 100.0 MiB per request"
        );
        assert_eq!(
            request_too_large(None, 100 << 20),
            "the request is larger than the limit of 100.0 MiB per request"
        );
    }
}
