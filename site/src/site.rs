//! Shared state of the front-end and the life of a job: admission, dispatch, result.
//!
//! Admission is all-or-nothing per request: a request whose images do not all fit in the
//! queue gets 503 with Retry-After and nothing of it is queued, so a client can simply
//! retry the same request. Admitted images are dispatched by their own task, so a client
//! that disconnects does not cancel work half way, and the result is still in the job
//! store. A second, smaller semaphore bounds how many images are handed to the dispatcher
//! at once; the rest wait as `queued`, which is what the page shows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use crate::inference::{Failure, Inference, Progress, ProgressFn};
use crate::jobs::{JobStatus, JobStore, JobView};
use crate::metrics::Metrics;
use crate::sniff::check_image;

/// Limits on what one client can make the site do. Defaults are generous (users complain
/// about surprise 413s) but bounded so one request cannot exhaust memory.
#[derive(Debug, Clone, serde::Serialize)]
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
        }
    }
}

/// One uploaded file before admission.
#[derive(Debug, Clone)]
pub struct Upload {
    pub name: String,
    pub content_type: Option<String>,
    pub bytes: Bytes,
}

/// A request that did not fit in the queue.
#[derive(Debug, Clone, Copy)]
pub struct QueueFull {
    pub retry_after_s: u64,
}

/// A job created by [`Site::submit`]; `task` is `None` for files rejected on arrival.
pub struct Submitted {
    pub id: String,
    pub task: Option<JoinHandle<JobView>>,
}

/// State shared by every handler.
pub struct Site {
    pub inference: Arc<dyn Inference>,
    pub jobs: JobStore,
    pub metrics: Metrics,
    pub limits: Limits,
    queue: Arc<Semaphore>,
    dispatch: Arc<Semaphore>,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Site {
    /// `shutdown` flips to true when the server stops; long-lived streams (SSE) end then.
    pub fn new(
        inference: Arc<dyn Inference>,
        limits: Limits,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Site> {
        Arc::new(Site {
            inference,
            jobs: JobStore::new(limits.job_retention),
            metrics: Metrics::default(),
            queue: Arc::new(Semaphore::new(limits.max_queued.max(1))),
            dispatch: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            limits,
            shutdown,
        })
    }

    /// A receiver that changes when the server shuts down.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.clone()
    }

    /// Images accepted and not yet answered.
    pub fn queued(&self) -> usize {
        self.limits.max_queued.max(1) - self.queue.available_permits()
    }

    /// Images handed to the dispatcher right now.
    pub fn in_flight(&self) -> usize {
        self.limits.max_in_flight.max(1) - self.dispatch.available_permits()
    }

    /// Create one job per upload and start dispatching the images. Files that are not
    /// images get a failed job at once (415) and do not take a queue slot; the others are
    /// admitted together or not at all.
    pub fn submit(
        self: &Arc<Self>,
        uploads: Vec<Upload>,
        top_k: u32,
    ) -> Result<Vec<Submitted>, QueueFull> {
        let checked: Vec<(Upload, Result<(), String>)> = uploads
            .into_iter()
            .map(|u| {
                let verdict = check_image(&u.bytes, u.content_type.as_deref()).map(|_| ());
                (u, verdict)
            })
            .collect();
        let images = checked.iter().filter(|(_, v)| v.is_ok()).count();
        let mut permits = if images > 0 {
            let n = u32::try_from(images).unwrap_or(u32::MAX);
            match self.queue.clone().try_acquire_many_owned(n) {
                Ok(p) => Some(p),
                Err(_) => {
                    self.metrics.request_rejected("queue_full");
                    return Err(QueueFull {
                        retry_after_s: self.limits.retry_after_s,
                    });
                }
            }
        } else {
            None
        };

        let mut out = Vec::with_capacity(checked.len());
        for (upload, verdict) in checked {
            let id = self.jobs.new_id();
            let mut job = JobView::queued(id.clone(), upload.name, upload.bytes.len());
            match verdict {
                Err(reason) => {
                    let failure = Failure::Unsupported(reason);
                    job.status = JobStatus::Error;
                    job.code = Some(failure.status());
                    job.error = Some(failure.to_string());
                    self.metrics.image_done(failure.outcome(), None);
                    self.jobs.insert(job);
                    out.push(Submitted { id, task: None });
                }
                Ok(()) => {
                    // `images` permits were taken above, one is split off per image.
                    let Some(permit) = permits.as_mut().and_then(|p| p.split(1)) else {
                        // Cannot happen (we hold exactly one permit per image), but never
                        // dispatch an image without its queue slot.
                        job.status = JobStatus::Error;
                        job.code = Some(500);
                        job.error = Some("internal error: queue accounting".to_string());
                        self.jobs.insert(job);
                        out.push(Submitted { id, task: None });
                        continue;
                    };
                    self.metrics.uploaded(upload.bytes.len());
                    self.jobs.insert(job);
                    let site = Arc::clone(self);
                    let job_id = id.clone();
                    let task = tokio::spawn(async move {
                        site.run_job(job_id, upload.bytes, top_k, permit).await
                    });
                    out.push(Submitted {
                        id,
                        task: Some(task),
                    });
                }
            }
        }
        Ok(out)
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
            if let Some(view) = view.or_else(|| self.jobs.get(&s.id)) {
                results.push(view);
            }
        }
        results
    }

    async fn run_job(
        self: Arc<Self>,
        id: String,
        image: Bytes,
        top_k: u32,
        queue_slot: OwnedSemaphorePermit,
    ) -> JobView {
        let started = Instant::now();
        let _queue_slot = queue_slot;
        // The semaphore is never closed, so this only waits for a free slot.
        let _dispatch_slot = self.dispatch.clone().acquire_owned().await.ok();

        let progress: ProgressFn = {
            let site = Arc::clone(&self);
            let id = id.clone();
            Arc::new(move |p: Progress| site.on_progress(&id, p))
        };
        let result = tokio::time::timeout(
            self.limits.job_timeout,
            self.inference.classify(image, top_k, progress),
        )
        .await;
        let result = match result {
            Ok(r) => r,
            Err(_) => {
                let attempts = self.jobs.get(&id).map(|j| j.attempts).unwrap_or(0);
                Err(Failure::Deadline { attempts })
            }
        };
        let elapsed = started.elapsed();
        let view = match result {
            Ok(outcome) => {
                self.metrics.image_done("ok", Some(elapsed));
                self.jobs.update(&id, |j| {
                    j.status = JobStatus::Ok;
                    j.top = outcome.top;
                    j.node = Some(outcome.node);
                    j.warning = outcome.warning;
                    j.attempts = outcome.attempts;
                    j.latency_ms = Some(elapsed.as_secs_f64() * 1000.0);
                    j.node_latency_ms = Some(outcome.latency.as_secs_f64() * 1000.0);
                    j.note = None;
                })
            }
            Err(failure) => {
                tracing::debug!(job = %id, "image failed: {failure}");
                self.metrics.image_done(failure.outcome(), None);
                self.jobs.update(&id, |j| {
                    j.status = JobStatus::Error;
                    j.attempts = j.attempts.max(failure.attempts());
                    j.code = Some(failure.status());
                    j.error = Some(failure.to_string());
                    j.latency_ms = Some(elapsed.as_secs_f64() * 1000.0);
                })
            }
        };
        view.or_else(|| self.jobs.get(&id)).unwrap_or_else(|| {
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
                self.metrics.retry();
                self.jobs.update(id, |j| {
                    j.status = JobStatus::Retrying;
                    j.note = Some(format!(
                        "retry {}: {reason}",
                        attempt.saturating_sub(1).max(1)
                    ));
                });
            }
            Progress::Hedged { node } => {
                self.metrics.hedge();
                self.jobs
                    .update(id, |j| j.note = Some(format!("hedged to {node}")));
            }
        }
    }
}
