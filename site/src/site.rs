//! Shared state of the front-end and the life of a job: admission, dispatch, result.
//!
//! Admission is all-or-nothing per request: a request whose images do not all fit in the
//! queue gets 503 with Retry-After (or 429 when it is the caller's own share of the queue
//! that is full) and nothing of it is queued, so a client can simply retry the same request. Admitted images are dispatched by their own task, so a client
//! that disconnects does not cancel work half way, and the result is still in the job
//! store. A second, smaller semaphore bounds how many images are handed to the dispatcher
//! at once; the rest wait as `queued`, which is what the page shows.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use warp::http::HeaderMap;

use crate::access::caller::{Caller, Identify};
use crate::access::limits::Limits;
use crate::access::throttle::{FailureThrottle, KeyedCounter, RateLimit, Share, ShareRefused};
use crate::api::job::{JobStatus, JobView};
use crate::api::jobs::{JobStore, Retention};
use crate::api::sniff::check_image;
use crate::api::upload::{Intake, Upload, UploadError};
use crate::fleet::frontend::Frontend;
use crate::fleet::inference::{Failure, Inference, Progress, ProgressFn};
use crate::http::error::ApiError;
use crate::observe::image_span;
use crate::observe::metrics::Metrics;
use crate::observe::stats::{ModelStats, StageTimes};
use glimpse_wire::budget::{ByteBudget, Held};

impl Limits {
    /// Checks that the limits can work together: a request that is within every per-request
    /// limit must be admissible when the server is idle.
    pub fn validate(&self) -> Result<(), String> {
        let one_request = self
            .max_request_bytes
            .min(self.max_files.saturating_mul(self.max_file_bytes));
        if self.max_buffered_bytes < one_request {
            return Err(format!(
                "--max-buffered-bytes ({}) must be at least one request's worth ({} bytes: --max-request-bytes, or --max-files x --max-file-bytes if smaller)",
                self.max_buffered_bytes, one_request
            ));
        }
        if self.max_files == 0 || self.max_files > glimpse_wire::shape::MAX_BATCH {
            return Err(format!(
                "--max-files must be from 1 to {}",
                glimpse_wire::shape::MAX_BATCH
            ));
        }
        if self.max_queued_per_caller == 0 || self.max_queued == 0 {
            return Err("--max-queued and --max-queued-per-caller must be at least 1".into());
        }
        Ok(())
    }
}

/// KServe requests one caller may have in parsing at once. A parse runs on a blocking thread
/// that waits on the network while the body streams in, so a slow sender holds a thread:
/// these caps keep the blocking pool (which node decoding shares with local workers) for
/// everyone. Beyond them: 429, or 503 when every caller together holds [`PARSES_TOTAL`].
/// A slot is held only while the body keeps its pace (see [`crate::http::pace`]).
pub const PARSES_PER_CALLER: usize = 8;
/// KServe requests one client address may have in parsing at once, whatever keys it uses:
/// with [`PARSES_TOTAL`], it takes 32 addresses to hold every slot, and each must keep
/// sending at the minimum body rate to keep its slots.
pub const PARSES_PER_ADDRESS: usize = 4;
/// KServe requests in parsing at once, over all callers: a quarter of tokio's blocking pool
/// (512 threads).
pub const PARSES_TOTAL: usize = 128;
/// How long a request waits for a parse slot before it is refused: long enough for a
/// client's other requests to finish reading (milliseconds each), short enough that slow
/// senders holding every slot get their refusal quickly.
pub const PARSE_SLOT_WAIT: Duration = Duration::from_secs(2);

/// A job created by [`Site::submit`]; `task` is `None` for files rejected on arrival.
pub struct Submitted {
    pub id: String,
    pub task: Option<JoinHandle<JobView>>,
}

/// What a job holds while it lives: its queue slot, its share of its caller's queue, and its
/// image's bytes in the byte budget. All go back when the job ends, however it ends.
struct Slots {
    _queue: OwnedSemaphorePermit,
    _caller: crate::access::throttle::Share,
    _bytes: Held,
}

/// State shared by every handler.
pub struct Site {
    /// Where images are classified (the dispatcher, or a test double).
    pub inference: Arc<dyn Inference>,
    /// Every job, scoped to its owner.
    pub jobs: JobStore,
    /// Counters and histograms for `/metrics`.
    pub metrics: Metrics,
    /// What clients may make the site do.
    pub limits: Limits,
    /// Who is calling: API keys or signed client tokens.
    pub identify: Identify,
    /// Bytes of image data held (see [`crate::budget`]).
    pub budget: ByteBudget,
    /// Requests per second per caller.
    pub rate: RateLimit,
    /// Images accepted and not answered, per caller.
    pub queued_by_caller: KeyedCounter,
    /// Event streams open, per caller.
    pub streams: KeyedCounter,
    /// KServe bodies being parsed, per caller: each holds a blocking thread while its body
    /// streams in (see [`PARSES_PER_CALLER`]).
    pub parses: KeyedCounter,
    /// The same, per client address (see [`PARSES_PER_ADDRESS`]).
    pub parses_by_addr: KeyedCounter,
    /// Failed API key checks per client address (see [`FailureThrottle`]).
    pub auth_failures: FailureThrottle,
    /// The HTTPS listener's connections (for `/metrics`).
    pub connections: Arc<crate::http::conn::Registry>,
    /// Counts and stage times of answered images (the statistics extension).
    pub stats: ModelStats,
    /// This front-end among several: its id (the prefix of its job ids) and whether it has
    /// begun to stop.
    pub frontend: Frontend,
    queue: Arc<Semaphore>,
    dispatch: Arc<Semaphore>,
    shutdown: glimpse_transport::Shutdown,
}

impl Site {
    /// Who sent a request with these headers from `peer`, counted against its request rate:
    /// 401 without a valid key when keys are required, 429 with `Retry-After` past the rate.
    /// An address that has failed the key check too often gets 429 before its key is looked
    /// at (see [`FailureThrottle`]). Every protocol admits its callers here.
    pub fn admit(&self, headers: &HeaderMap, peer: Option<SocketAddr>) -> Result<Caller, ApiError> {
        let now = Instant::now();
        let checks_keys = self.identify.requires_keys();
        if checks_keys
            && let Some(peer) = peer
            && let Err(wait) = self.auth_failures.check(peer.ip(), now)
        {
            self.metrics.request_rejected("auth_throttled");
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(ApiError::too_many(
                format!("too many failed API key checks from your address; retry in {secs} s"),
                secs,
            ));
        }
        let caller = self.identify.caller(headers, peer).inspect_err(|e| {
            self.metrics.request_rejected("unauthorized");
            if checks_keys
                && e.status() == warp::http::StatusCode::UNAUTHORIZED
                && let Some(peer) = peer
            {
                self.auth_failures.failed(peer.ip(), now);
            }
        })?;
        if let Err(wait) = self.rate.check(&caller.limit) {
            self.metrics.request_rejected("rate_limited");
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            return Err(ApiError::too_many(
                format!("too many requests; retry in {secs} s"),
                secs,
            ));
        }
        Ok(caller)
    }

    /// A slot for parsing `caller`'s inference request on a blocking thread, held while the
    /// request is read: one of its own ([`PARSES_PER_CALLER`]), one of its address's
    /// ([`PARSES_PER_ADDRESS`]) and so one of everyone's ([`PARSES_TOTAL`]). A caller past a
    /// share waits up to [`PARSE_SLOT_WAIT`] for one to come free, so a client with more
    /// requests in flight than its share is queued, not refused; after that, 429 (its own
    /// or its address's share) or 503 (everyone's).
    pub async fn parse_slot(&self, caller: &Caller) -> Result<(Share, Share), ApiError> {
        let deadline = tokio::time::Instant::now() + PARSE_SLOT_WAIT;
        let refuse = |refused: ShareRefused| {
            self.metrics.request_rejected("parses_full");
            refused.into_api_error(
                "inference requests being received",
                self.limits.retry_after_s,
            )
        };
        let wait = || deadline.saturating_duration_since(tokio::time::Instant::now());
        let by_addr = self
            .parses_by_addr
            .take_within(&caller.addr, 1, wait())
            .await
            .map_err(refuse)?;
        let own = self
            .parses
            .take_within(&caller.limit, 1, wait())
            .await
            .map_err(refuse)?;
        Ok((own, by_addr))
    }

    /// An upload error as the client sees it, counted.
    pub fn refuse_upload(&self, e: UploadError) -> ApiError {
        self.metrics.request_rejected(e.reason());
        let status = warp::http::StatusCode::from_u16(e.status())
            .unwrap_or(warp::http::StatusCode::BAD_REQUEST);
        let err = ApiError::new(status, e.to_string());
        match e.retry_after() {
            Some(s) => err.retry_after(s),
            None => err,
        }
    }

    /// `shutdown` flips to true when the server stops; long-lived streams (SSE) end then.
    /// `frontend` names this front-end's jobs.
    pub fn new(
        inference: Arc<dyn Inference>,
        limits: Limits,
        identify: Identify,
        connections: Arc<crate::http::conn::Registry>,
        shutdown: glimpse_transport::Shutdown,
        frontend: Frontend,
    ) -> Arc<Site> {
        Arc::new(Site {
            inference,
            jobs: JobStore::new(
                Retention {
                    jobs: limits.job_retention,
                    bytes: limits.job_retention_bytes,
                },
                frontend.job_id_prefix(),
            ),
            frontend,
            metrics: Metrics::default(),
            identify,
            budget: ByteBudget::new(limits.max_buffered_bytes),
            rate: RateLimit::new(limits.rate),
            queued_by_caller: KeyedCounter::new(limits.max_queued_per_caller, limits.max_queued),
            streams: KeyedCounter::new(
                limits.max_event_streams_per_caller,
                limits.max_event_streams,
            ),
            parses: KeyedCounter::new(PARSES_PER_CALLER, PARSES_TOTAL),
            // The total is `parses`'.
            parses_by_addr: KeyedCounter::new(PARSES_PER_ADDRESS, usize::MAX),
            auth_failures: FailureThrottle::new(limits.auth_failures),
            connections,
            stats: ModelStats::default(),
            queue: Arc::new(Semaphore::new(limits.max_queued.max(1))),
            dispatch: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            limits,
            shutdown,
        })
    }

    /// A receiver that changes when the server shuts down.
    pub fn shutdown_signal(&self) -> glimpse_transport::Shutdown {
        self.shutdown.clone()
    }

    /// How request bodies are read: paid for from the byte budget, at their pace.
    pub fn intake(&self) -> Intake {
        Intake {
            budget: self.budget.clone(),
            pace: self.limits.pace(),
            retry_after_s: self.limits.retry_after_s,
            conn: None,
        }
    }

    /// Images accepted and not yet answered.
    pub fn queued(&self) -> usize {
        self.limits.max_queued.max(1) - self.queue.available_permits()
    }

    /// Images handed to the dispatcher right now.
    pub fn in_flight(&self) -> usize {
        self.limits.max_in_flight.max(1) - self.dispatch.available_permits()
    }

    /// Create one job per upload, owned by `caller`, and start dispatching the images. Files
    /// that are not images get a failed job at once (415) and take no queue slot; the others
    /// are admitted together or not at all: 429 when they would take the caller past its
    /// share of the queue, 503 when the queue itself is full.
    // Over 80 lines on purpose: admission is all-or-nothing over every check (queue, caller share, budget), in one place so none can be skipped.
    pub fn submit(
        self: &Arc<Self>,
        caller: &Caller,
        uploads: Vec<Upload>,
        top_k: u32,
    ) -> Result<Vec<Submitted>, ApiError> {
        let checked: Vec<(Upload, Result<(), String>)> = uploads
            .into_iter()
            .map(|u| {
                let verdict = check_image(&u.bytes, u.content_type.as_deref()).map(|_| ());
                (u, verdict)
            })
            .collect();
        let images = checked.iter().filter(|(_, v)| v.is_ok()).count();
        let retry = self.limits.retry_after_s;
        let mut slots = None;
        if images > 0 {
            let share = match self.queued_by_caller.take(&caller.limit, images) {
                Ok(s) => s,
                Err(refused @ ShareRefused::Caller { .. }) => {
                    self.metrics.request_rejected("caller_queue_full");
                    return Err(refused.into_api_error("images waiting", retry));
                }
                Err(ShareRefused::Total { .. }) => return Err(self.queue_full()),
            };
            let n = u32::try_from(images).unwrap_or(u32::MAX);
            let permits = match self.queue.clone().try_acquire_many_owned(n) {
                Ok(p) => p,
                Err(_) => return Err(self.queue_full()),
            };
            slots = Some((permits, share));
        }

        let mut out = Vec::with_capacity(checked.len());
        for (upload, verdict) in checked {
            let id = self.jobs.new_id();
            let mut job = JobView::queued(id.clone(), upload.name, upload.bytes.len());
            let parts = match verdict {
                Ok(()) => slots
                    .as_mut()
                    .and_then(|(permits, share)| Some((permits.split(1)?, share.split(1)?))),
                Err(reason) => {
                    let failure = Failure::Unsupported(reason);
                    job.status = JobStatus::Error;
                    job.code = Some(failure.status());
                    job.error = Some(failure.to_string());
                    self.metrics.image_done(failure.outcome(), None);
                    self.jobs.insert(&caller.owner, job);
                    out.push(Submitted { id, task: None });
                    continue;
                }
            };
            // One queue permit and one caller share per image were taken above; an image is
            // never dispatched without its slots.
            let Some((queue, share)) = parts else {
                job.status = JobStatus::Error;
                job.code = Some(500);
                job.error = Some("internal error: queue accounting".to_string());
                self.jobs.insert(&caller.owner, job);
                out.push(Submitted { id, task: None });
                continue;
            };
            self.metrics.uploaded(upload.bytes.len());
            self.jobs.insert(&caller.owner, job);
            let site = Arc::clone(self);
            let job_id = id.clone();
            let slots = Slots {
                _queue: queue,
                _caller: share,
                _bytes: upload.held,
            };
            let task = tokio::spawn(site.answer(
                job_id,
                upload.bytes,
                top_k,
                slots,
                caller.traceparent.clone(),
            ));
            out.push(Submitted {
                id,
                task: Some(task),
            });
        }
        Ok(out)
    }

    /// The 503 of a full queue, counted.
    fn queue_full(&self) -> ApiError {
        self.metrics.request_rejected("queue_full");
        let retry = self.limits.retry_after_s;
        ApiError::unavailable(
            format!(
                "the queue is full ({} images waiting); retry in {retry} s",
                self.limits.max_queued
            ),
            retry,
        )
    }

    /// Wait for every submitted job and return the final views in submission order.
    pub async fn wait_all(&self, submitted: Vec<Submitted>) -> Vec<JobView> {
        let mut results = Vec::with_capacity(submitted.len());
        for s in submitted {
            let view = match s.task {
                Some(task) => match task.await {
                    Ok(view) => Some(view),
                    Err(e) => {
                        tracing::error!(job = %s.id, "job task failed: {e}");
                        self.jobs.update(&s.id, |j| {
                            j.status = JobStatus::Error;
                            j.code = Some(500);
                            j.error = Some("internal error: job task failed".to_string());
                        })
                    }
                },
                None => None,
            };
            if let Some(view) = view.or_else(|| self.jobs.get_internal(&s.id)) {
                results.push(view);
            }
        }
        results
    }

    /// One admitted image from admission to its final answer, in its own span (a child of the
    /// caller's when `traceparent` names one).
    #[tracing::instrument(
        name = "image",
        skip_all,
        fields(
            otel.kind = "server",
            glimpse.job_id = %id,
            glimpse.image_bytes = image.len() as i64,
            glimpse.node = tracing::field::Empty,
            glimpse.attempts = tracing::field::Empty,
            glimpse.outcome = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        )
    )]
    async fn answer(
        self: Arc<Self>,
        id: String,
        image: Bytes,
        top_k: u32,
        slots: Slots,
        traceparent: Option<String>,
    ) -> JobView {
        let span = tracing::Span::current();
        glimpse_ops::traces::continue_trace(&span, traceparent.as_deref());
        // The nodes' spans are this span's children; when spans are not exported, the
        // caller's context still reaches them.
        let to_nodes = glimpse_ops::traces::traceparent(&span).or(traceparent);
        let view = self.run_job(id, image, top_k, slots, to_nodes).await;
        image_span::answered(&span, &view);
        view
    }

    // Over 80 lines on purpose: one job's life in order (wait for a dispatch slot, dispatch with progress, record the answer), each step reading the last.
    async fn run_job(
        self: Arc<Self>,
        id: String,
        image: Bytes,
        top_k: u32,
        slots: Slots,
        traceparent: Option<String>,
    ) -> JobView {
        let started = Instant::now();
        let _slots = slots;
        // The semaphore is never closed, so this only waits for a free slot.
        let _dispatch_slot = self.dispatch.clone().acquire_owned().await.ok();
        let site_queue = started.elapsed();

        let progress: ProgressFn = {
            let site = Arc::clone(&self);
            let id = id.clone();
            Arc::new(move |p: Progress| site.on_progress(&id, p))
        };
        let result = tokio::time::timeout(
            self.limits.job_timeout,
            self.inference
                .classify_traced(image, top_k, traceparent, progress),
        )
        .await;
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                let attempts = self.jobs.get_internal(&id).map(|j| j.attempts).unwrap_or(0);
                Err(Failure::Deadline { attempts })
            }
        };
        let elapsed = started.elapsed();
        let view = match result {
            Ok(outcome) => {
                self.metrics.image_done("ok", Some(elapsed));
                self.metrics
                    .node_answer(&outcome.node, &outcome.timings, outcome.latency);
                let node = outcome.timings;
                let view = self.jobs.update(&id, |j| {
                    j.status = JobStatus::Ok;
                    j.top = outcome.top;
                    j.node = Some(outcome.node);
                    j.warning = outcome.warning;
                    j.attempts = outcome.attempts;
                    j.latency_ms = Some(elapsed.as_secs_f64() * 1000.0);
                    j.node_latency_ms = Some(outcome.latency.as_secs_f64() * 1000.0);
                    j.note = None;
                });
                let ms = |v: f32| Duration::from_secs_f64(f64::from(v.max(0.0)) / 1000.0);
                self.stats.success(
                    started.elapsed(),
                    StageTimes {
                        queue: site_queue + ms(node.queue_ms),
                        compute_input: ms(node.decode_ms + node.preprocess_ms),
                        compute_infer: ms(node.infer_ms),
                        compute_output: started.elapsed().saturating_sub(elapsed),
                    },
                );
                view
            }
            Err(failure) => {
                tracing::debug!(job = %id, "image failed: {failure}");
                self.metrics.image_done(failure.outcome(), None);
                self.stats.failure(elapsed);
                self.jobs.update(&id, |j| {
                    j.status = JobStatus::Error;
                    j.attempts = j.attempts.max(failure.attempts());
                    j.code = Some(failure.status());
                    j.error = Some(failure.to_string());
                    j.latency_ms = Some(elapsed.as_secs_f64() * 1000.0);
                })
            }
        };
        view.or_else(|| self.jobs.get_internal(&id))
            .unwrap_or_else(|| {
                // Only reachable if the job was evicted while running, which retention of live
                // jobs prevents; answer something truthful anyway.
                let mut j = JobView::queued(id, String::new(), 0);
                j.status = JobStatus::Error;
                j.code = Some(500);
                j.error = Some("internal error: job vanished".to_string());
                j
            })
    }

    fn on_progress(&self, id: &str, progress: Progress) {
        match progress {
            Progress::Sent { node, attempt } => {
                if attempt > 1 {
                    self.metrics.retry(&node);
                }
                self.jobs.update(id, |j| {
                    j.status = JobStatus::Running;
                    j.note = Some(if attempt > 1 {
                        format!("retry {} on {node}", attempt - 1)
                    } else {
                        format!("on {node}")
                    });
                    j.node = Some(node);
                    j.attempts = j.attempts.max(attempt);
                });
            }
            Progress::Retrying { attempt, reason } => {
                self.jobs.update(id, |j| {
                    j.status = JobStatus::Retrying;
                    j.note = Some(format!(
                        "retry {}: {reason}",
                        attempt.saturating_sub(1).max(1)
                    ));
                });
            }
            Progress::Hedged { node } => {
                self.metrics.hedge(&node);
                self.jobs
                    .update(id, |j| j.note = Some(format!("hedged to {node}")));
            }
        }
    }
}
