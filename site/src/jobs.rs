//! The job store: one job per uploaded image, its live state, and a broadcast of changes.
//!
//! The page uploads without waiting and then follows its images through Server-Sent
//! Events; API clients may poll `GET /api/v1/jobs/{id}` instead. Both read the same
//! [`JobView`], so what the page shows and what the API answers cannot drift apart.
//! Finished jobs are kept for a bounded number of jobs (oldest evicted first) so a long
//! running server does not grow without limit.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use tokio::sync::broadcast;

use crate::inference::TopLabel;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Accepted, waiting for a dispatch slot.
    Queued,
    /// Sent to a node (see `node` and `attempts`).
    Running,
    /// An attempt failed; another one is on its way.
    Retrying,
    /// Classified; `top` holds the labels.
    Ok,
    /// Failed for good; `error` and `code` say why.
    Error,
}

impl JobStatus {
    /// True once the job will not change any more.
    pub fn is_final(self) -> bool {
        matches!(self, JobStatus::Ok | JobStatus::Error)
    }
}

/// Everything the API and the page know about a job. This is also the element of the
/// `results` array of `POST /api/v1/classify?wait=true`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct JobView {
    pub id: String,
    /// The uploaded file name (user supplied: the page shows it with `textContent`).
    pub name: String,
    pub status: JobStatus,
    /// Top labels, best first; empty until the job is done.
    pub top: Vec<TopLabel>,
    /// The node that answered (or that is working on it).
    pub node: Option<String>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Time from upload to answer as the client experiences it (site queue included).
    pub latency_ms: Option<f64>,
    /// Time the dispatcher measured from first send to answer.
    pub node_latency_ms: Option<f64>,
    /// Size of the uploaded file in bytes.
    pub bytes: usize,
    /// Why the job failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// HTTP status that describes the failure (415, 422, 503, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<u16>,
    /// Set when the labels are not trained GoogLeNet's (random weights, synthetic model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Latest progress note ("retry 2: node-1 reset the stream", "hedged to node-2").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl JobView {
    /// A freshly queued job.
    pub fn queued(id: String, name: String, bytes: usize) -> JobView {
        JobView {
            id,
            name,
            status: JobStatus::Queued,
            top: Vec::new(),
            node: None,
            attempts: 0,
            latency_ms: None,
            node_latency_ms: None,
            bytes,
            error: None,
            code: None,
            warning: None,
            note: None,
        }
    }
}

struct Inner {
    jobs: HashMap<String, JobView>,
    finished: VecDeque<String>,
}

/// Thread-safe store of jobs plus a broadcast channel of every change.
pub struct JobStore {
    inner: Mutex<Inner>,
    events: broadcast::Sender<JobView>,
    retention: usize,
    rng: SystemRandom,
}

impl JobStore {
    /// `retention` finished jobs are kept for `GET /api/v1/jobs/{id}`; live jobs always are.
    pub fn new(retention: usize) -> JobStore {
        let (events, _) = broadcast::channel(4096);
        JobStore {
            inner: Mutex::new(Inner {
                jobs: HashMap::new(),
                finished: VecDeque::new(),
            }),
            events,
            retention: retention.max(1),
            rng: SystemRandom::new(),
        }
    }

    /// A new unguessable job id: one user cannot enumerate another user's results.
    pub fn new_id(&self) -> String {
        let mut raw = [0u8; 9];
        if self.rng.fill(&mut raw).is_err() {
            // The system RNG failing is not something to serve through; fall back to a
            // time-based id, which is still unique.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            return format!("t{nanos:x}");
        }
        raw.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Subscribe to every future change (used by the SSE endpoint).
    pub fn subscribe(&self) -> broadcast::Receiver<JobView> {
        self.events.subscribe()
    }

    /// Insert a job (queued or already failed) and announce it.
    pub fn insert(&self, job: JobView) {
        let snapshot = job.clone();
        {
            let mut inner = self.lock();
            if job.status.is_final() {
                inner.finished.push_back(job.id.clone());
            }
            inner.jobs.insert(job.id.clone(), job);
            self.evict(&mut inner);
        }
        // No subscriber is fine: nobody is watching.
        let _ = self.events.send(snapshot);
    }

    /// Change a job and announce the new state. Final jobs are never changed again, so a
    /// late progress callback (e.g. from a losing hedge) cannot overwrite a result.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut JobView)) -> Option<JobView> {
        let snapshot = {
            let mut inner = self.lock();
            let job = inner.jobs.get_mut(id)?;
            if job.status.is_final() {
                return None;
            }
            change(job);
            let snapshot = job.clone();
            if snapshot.status.is_final() {
                inner.finished.push_back(snapshot.id.clone());
                self.evict(&mut inner);
            }
            snapshot
        };
        let _ = self.events.send(snapshot.clone());
        Some(snapshot)
    }

    /// Current state of a job.
    pub fn get(&self, id: &str) -> Option<JobView> {
        self.lock().jobs.get(id).cloned()
    }

    /// Number of jobs not yet final.
    pub fn live(&self) -> usize {
        self.lock()
            .jobs
            .values()
            .filter(|j| !j.status.is_final())
            .count()
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.finished.len() > self.retention {
            if let Some(old) = inner.finished.pop_front() {
                inner.jobs.remove(&old);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_jobs_do_not_change_and_old_ones_are_evicted() {
        let store = JobStore::new(2);
        let mut rx = store.subscribe();
        for i in 0..3 {
            store.insert(JobView::queued(format!("j{i}"), format!("f{i}.png"), 10));
        }
        for i in 0..3 {
            store.update(&format!("j{i}"), |j| j.status = JobStatus::Ok);
        }
        assert!(store.get("j0").is_none(), "oldest finished job is evicted");
        assert_eq!(store.get("j2").map(|j| j.status), Some(JobStatus::Ok));
        assert!(
            store
                .update("j2", |j| j.status = JobStatus::Running)
                .is_none()
        );
        assert_eq!(store.get("j2").map(|j| j.status), Some(JobStatus::Ok));
        let first = rx.try_recv().map(|j| j.id);
        assert_eq!(first.ok().as_deref(), Some("j0"));
    }

    #[test]
    fn ids_are_unique_and_hex() {
        let store = JobStore::new(10);
        let a = store.new_id();
        let b = store.new_id();
        assert_ne!(a, b);
        assert_eq!(a.len(), 18);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
