//! The load driver: pushes a fixed list of images through a system at a fixed concurrency and
//! measures what the seed measured (throughput) plus what it did not (latency percentiles,
//! retries, failures, lost images).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::LabError;
use crate::stats::percentile;

/// The result of one image submission as seen by the client.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The system returned a classification.
    pub ok: bool,
    /// Resends/retries the system reported (Glimpse: attempts − 1; baseline: resends).
    pub retries: u32,
    /// From submitting the image to the answer or the error.
    pub latency: Duration,
    /// Why the submission failed; `None` when `ok`.
    pub error: Option<String>,
}

impl Outcome {
    /// A successful submission.
    pub fn ok(retries: u32, latency: Duration) -> Outcome {
        Outcome {
            ok: true,
            retries,
            latency,
            error: None,
        }
    }
    /// A failed submission, with the reason kept for the run's error log.
    pub fn failed(why: impl Into<String>, retries: u32, latency: Duration) -> Outcome {
        Outcome {
            ok: false,
            retries,
            latency,
            error: Some(why.into()),
        }
    }
}

/// A system under test: Glimpse through its HTTPS API, or the baseline dispatcher.
pub trait Submit: Send + Sync + 'static {
    /// Submits one image and resolves when the system has given its final answer or error
    /// for that submission; the driver's own resubmissions are separate calls.
    fn classify(&self, image: Bytes) -> impl Future<Output = Outcome> + Send;
}

/// Measurements of one run.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// Images the run was given (answered + lost + unfinished).
    pub images: usize,
    /// Images that got a final answer.
    pub answered: usize,
    /// Images with no final answer even after the client's own retries: must be 0.
    pub lost: usize,
    /// Images not answered when the run hit its time limit (never sent, or still waiting):
    /// the system did not give up on them, the lab stopped waiting. Not counted as lost.
    pub unfinished: usize,
    /// Submissions that came back as errors (each counted, even if a later client retry succeeded).
    pub failures: usize,
    /// Retries inside the system plus the client's own resubmissions.
    pub retries: u64,
    /// Wall-clock seconds from the start of the run until every client had finished or been
    /// cut off by the run limit.
    pub elapsed_s: f64,
    /// Bytes of the answered images (unanswered ones do not count towards throughput).
    pub payload_bytes: u64,
    /// Answered images per second of `elapsed_s`: the seed's throughput.
    pub images_per_s: f64,
    /// Image bytes × 8 / elapsed, in Mbit/s (the seed's "throughput (bps)" / 1e6).
    pub mbit_per_s: f64,
    /// Median latency of answered images in ms, from first submission to final answer
    /// (client resubmissions included); NaN when none was answered.
    pub p50_ms: f64,
    /// 95th-percentile latency of answered images in ms, measured as `p50_ms`.
    pub p95_ms: f64,
    /// 99th-percentile latency of answered images in ms, measured as `p50_ms`.
    pub p99_ms: f64,
    /// The first few error messages, for the log.
    pub errors: Vec<String>,
}

/// Sends every image once (with up to `client_attempts` submissions each) using `concurrency`
/// parallel clients, for at most `limit`: a system that collapses (TCP under heavy loss, say)
/// would otherwise hold a sweep for hours. Images not answered by then are `unfinished`, and
/// throughput is what was answered over the elapsed time. `on_done` is called after each
/// image (for the progress bar).
// Over 80 lines on purpose: one run's closed loop: the clients, their resubmissions and the run limit share one set of counters.
pub async fn drive<S: Submit>(
    system: Arc<S>,
    images: Arc<Vec<Bytes>>,
    concurrency: usize,
    client_attempts: u32,
    limit: Duration,
    on_done: impl Fn() + Send + Sync + 'static,
) -> Result<RunResult, LabError> {
    let next = Arc::new(AtomicUsize::new(0));
    let on_done = Arc::new(on_done);
    let start = Instant::now();
    let cutoff = tokio::time::Instant::from_std(start + limit);
    let mut clients = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (system, images, next, on_done) = (
            system.clone(),
            images.clone(),
            next.clone(),
            on_done.clone(),
        );
        clients.push(tokio::spawn(async move {
            let mut results: Vec<ImageRecord> = Vec::new();
            loop {
                if tokio::time::Instant::now() >= cutoff {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(image) = images.get(i) else { break };
                let t0 = Instant::now();
                let mut retries = 0u64;
                let mut failures = 0usize;
                let mut errors = Vec::new();
                let mut ok = false;
                let mut cut = false;
                for attempt in 0..client_attempts.max(1) {
                    let Ok(o) =
                        tokio::time::timeout_at(cutoff, system.classify(image.clone())).await
                    else {
                        cut = true;
                        break;
                    };
                    retries += u64::from(o.retries) + u64::from(attempt > 0);
                    if o.ok {
                        ok = true;
                        break;
                    }
                    failures += 1;
                    errors.push(o.error.unwrap_or_else(|| "unknown error".into()));
                }
                on_done();
                results.push(ImageRecord {
                    bytes: image.len(),
                    ok,
                    cut,
                    retries,
                    failures,
                    latency: t0.elapsed(),
                    errors,
                });
                if cut {
                    break;
                }
            }
            results
        }));
    }
    let mut all = Vec::new();
    for c in clients {
        all.extend(
            c.await
                .map_err(|e| LabError::Driver(format!("client task: {e}")))?,
        );
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = all
        .iter()
        .filter(|r| r.ok)
        .map(|r| r.latency.as_secs_f64() * 1e3)
        .collect();
    lat.sort_by(f64::total_cmp);
    let answered = all.iter().filter(|r| r.ok).count();
    let lost = all.iter().filter(|r| !r.ok && !r.cut).count();
    let payload_bytes: u64 = all.iter().filter(|r| r.ok).map(|r| r.bytes as u64).sum();
    let errors: Vec<String> = all
        .iter()
        .flat_map(|r| r.errors.iter().cloned())
        .take(5)
        .collect();
    Ok(RunResult {
        images: images.len(),
        answered,
        lost,
        unfinished: images.len() - answered - lost,
        failures: all.iter().map(|r| r.failures).sum(),
        retries: all.iter().map(|r| r.retries).sum(),
        elapsed_s: elapsed,
        payload_bytes,
        images_per_s: answered as f64 / elapsed,
        mbit_per_s: payload_bytes as f64 * 8.0 / elapsed / 1e6,
        p50_ms: percentile(&lat, 0.50),
        p95_ms: percentile(&lat, 0.95),
        p99_ms: percentile(&lat, 0.99),
        errors,
    })
}

/// What happened to one image in a run.
struct ImageRecord {
    bytes: usize,
    /// Answered (possibly after client resubmissions).
    ok: bool,
    /// Still unanswered when the run hit its time limit.
    cut: bool,
    retries: u64,
    failures: usize,
    latency: Duration,
    errors: Vec<String>,
}

/// Glimpse through its public API: `POST /api/v1/classify?wait=true` with the raw image.
pub struct HttpsSubmitter {
    client: reqwest::Client,
    url: String,
}

impl HttpsSubmitter {
    /// `base` like `https://127.0.0.1:8443`. The lab talks only to its own front-end on
    /// loopback, whose certificate it just generated, so certificate verification is off.
    pub fn new(base: &str, timeout: Duration) -> Result<HttpsSubmitter, LabError> {
        Ok(HttpsSubmitter {
            client: https_client(timeout)?,
            url: format!("{base}/api/v1/classify?wait=true"),
        })
    }
}

/// A reqwest client for the lab's own front-end (self-signed certificate accepted).
pub fn https_client(timeout: Duration) -> Result<reqwest::Client, LabError> {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(timeout)
        .pool_max_idle_per_host(64)
        .build()
        .map_err(|e| LabError::Driver(format!("building HTTPS client: {e}")))
}

impl Submit for HttpsSubmitter {
    async fn classify(&self, image: Bytes) -> Outcome {
        let t0 = Instant::now();
        let resp = self
            .client
            .post(&self.url)
            .header("content-type", "image/jpeg")
            .body(image)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Outcome::failed(format!("HTTP: {e}"), 0, t0.elapsed()),
        };
        let status = resp.status();
        let body: serde_json::Value = match resp.json().await {
            Ok(v) => v,
            Err(e) => {
                return Outcome::failed(
                    format!("HTTP {status}: unreadable body: {e}"),
                    0,
                    t0.elapsed(),
                );
            }
        };
        parse_answer(status.as_u16(), &body, t0.elapsed())
    }
}

/// Reads `{"results":[{"status":"ok","attempts":N,...}]}`.
pub fn parse_answer(status: u16, body: &serde_json::Value, latency: Duration) -> Outcome {
    let first = &body["results"][0];
    let attempts = first["attempts"].as_u64().unwrap_or(1).max(1) as u32;
    if (200..300).contains(&status) && first["status"].as_str() == Some("ok") {
        Outcome::ok(attempts - 1, latency)
    } else {
        let why = first["error"]
            .as_str()
            .or_else(|| body["error"].as_str())
            .unwrap_or("no result")
            .to_string();
        Outcome::failed(format!("HTTP {status}: {why}"), attempts - 1, latency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Flaky(AtomicUsize);
    impl Submit for Flaky {
        async fn classify(&self, _image: Bytes) -> Outcome {
            // Every third submission fails; the client retry recovers it.
            if self.0.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
                Outcome::failed("boom", 1, Duration::from_millis(1))
            } else {
                Outcome::ok(0, Duration::from_millis(1))
            }
        }
    }

    #[tokio::test]
    async fn driver_counts_retries_failures_and_losses() {
        let images = Arc::new(vec![Bytes::from_static(&[0u8; 1000]); 30]);
        let r = drive(
            Arc::new(Flaky(AtomicUsize::new(0))),
            images.clone(),
            4,
            3,
            LONG,
            || {},
        )
        .await
        .unwrap();
        assert_eq!(r.images, 30);
        assert_eq!(r.lost, 0);
        assert!(r.failures > 0);
        assert!(r.retries >= 2 * r.failures as u64);
        assert_eq!(r.payload_bytes, 30_000);

        let r = drive(
            Arc::new(Flaky(AtomicUsize::new(0))),
            images,
            1,
            1,
            LONG,
            || {},
        )
        .await
        .unwrap();
        assert_eq!(
            r.lost, 10,
            "without client retries every third image is lost"
        );
        assert_eq!(r.unfinished, 0);
    }

    const LONG: Duration = Duration::from_secs(3600);

    /// Answers the first `fast` submissions at once and never answers the rest.
    struct Hangs {
        fast: usize,
        seen: AtomicUsize,
    }
    impl Submit for Hangs {
        async fn classify(&self, _image: Bytes) -> Outcome {
            if self.seen.fetch_add(1, Ordering::Relaxed) < self.fast {
                Outcome::ok(0, Duration::from_millis(1))
            } else {
                std::future::pending().await
            }
        }
    }

    #[tokio::test]
    async fn a_run_past_its_limit_is_cut_and_its_images_are_unfinished_not_lost() {
        let images = Arc::new(vec![Bytes::from_static(&[0u8; 100]); 20]);
        let system = Arc::new(Hangs {
            fast: 5,
            seen: AtomicUsize::new(0),
        });
        let started = Instant::now();
        let r = drive(system, images, 2, 3, Duration::from_millis(300), || {})
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the run was not cut"
        );
        assert_eq!(r.images, 20);
        assert_eq!(r.answered, 5);
        assert_eq!(r.lost, 0, "the system never gave up on an image");
        assert_eq!(r.unfinished, 15);
        assert_eq!(r.payload_bytes, 500);
    }

    #[test]
    fn parses_the_site_answer() {
        let ok = serde_json::json!({"results":[{"id":"1","status":"ok","attempts":3,"top":[]}]});
        let o = parse_answer(200, &ok, Duration::ZERO);
        assert!(o.ok);
        assert_eq!(o.retries, 2);
        let err =
            serde_json::json!({"results":[{"status":"error","attempts":2,"error":"deadline"}]});
        assert!(!parse_answer(200, &err, Duration::ZERO).ok);
        assert!(
            !parse_answer(
                503,
                &serde_json::json!({"error":"no nodes"}),
                Duration::ZERO
            )
            .ok
        );
    }
}
