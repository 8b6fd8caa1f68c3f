//! The job store: one job per uploaded image, its live state, and a broadcast of changes.
//!
//! The page uploads without waiting and then follows its images through Server-Sent
//! Events; API clients may poll `GET /api/v1/jobs/{id}` instead. Both read the same
//! [`JobView`], so what the page shows and what the API answers cannot drift apart.
//! Finished jobs are kept for a bounded number of jobs (oldest evicted first) so a long
//! running server does not grow without limit.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use ring::rand::{SecureRandom, SystemRandom};

use crate::access::caller::Owner;
use crate::api::events::{EventHub, Subscription};
use crate::api::job::JobView;

struct Stored {
    view: Arc<JobView>,
    owner: Owner,
    bytes: usize,
}

struct Inner {
    jobs: HashMap<String, Stored>,
    /// Finished jobs, oldest first, with their size.
    finished: VecDeque<(String, usize)>,
    finished_bytes: usize,
}

/// How many finished jobs the store keeps for `GET /api/v1/jobs/{id}`: at most `jobs` of
/// them and at most `bytes` together, oldest evicted first. Live jobs are always kept (the
/// queue limits bound them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub jobs: usize,
    pub bytes: usize,
}

/// Thread-safe store of jobs, each with its owner, and the hub that tells owners about
/// changes.
pub struct JobStore {
    inner: Mutex<Inner>,
    hub: Arc<EventHub>,
    retention: Retention,
    rng: SystemRandom,
    /// Starts every id: the owning front-end's id and a dot (see [`crate::fleet::frontend`]).
    id_prefix: String,
}

impl JobStore {
    /// A store that keeps finished jobs within `retention` and starts every job id with
    /// `id_prefix` (the front-end's id and a dot, so other front-ends can tell the owner).
    pub fn new(retention: Retention, id_prefix: String) -> JobStore {
        JobStore {
            inner: Mutex::new(Inner {
                jobs: HashMap::new(),
                finished: VecDeque::new(),
                finished_bytes: 0,
            }),
            hub: Arc::new(EventHub::default()),
            retention: Retention {
                jobs: retention.jobs.max(1),
                bytes: retention.bytes,
            },
            rng: SystemRandom::new(),
            id_prefix,
        }
    }

    /// A new unguessable job id, the prefix and 72 random bits in hex: one user cannot
    /// enumerate another user's results.
    pub fn new_id(&self) -> String {
        let mut raw = [0u8; 9];
        if self.rng.fill(&mut raw).is_err() {
            // The system RNG failing is not something to serve through; fall back to a
            // time-based id, which is still unique.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            return format!("{}t{nanos:x}", self.id_prefix);
        }
        let mut id = self.id_prefix.clone();
        for b in raw {
            id.push_str(&format!("{b:02x}"));
        }
        id
    }

    /// Subscribe to the changes of `owner`'s jobs (the SSE endpoint).
    pub fn subscribe(&self, owner: Owner) -> Subscription {
        self.hub.subscribe(owner)
    }

    /// Event streams open now.
    pub fn subscribers(&self) -> usize {
        self.hub.subscribers()
    }

    /// Insert `owner`'s job (queued or already failed) and announce it to the owner.
    pub fn insert(&self, owner: &Owner, job: JobView) {
        let view = Arc::new(job);
        let bytes = view.approx_bytes();
        {
            let mut inner = self.inner.lock();
            if view.status.is_final() {
                inner.finished.push_back((view.id.clone(), bytes));
                inner.finished_bytes += bytes;
            }
            inner.jobs.insert(
                view.id.clone(),
                Stored {
                    view: view.clone(),
                    owner: owner.clone(),
                    bytes,
                },
            );
            self.evict(&mut inner);
        }
        self.hub.publish(owner, &view, bytes);
    }

    /// Change a job and announce the new state to its owner. Final jobs are never changed
    /// again, so a late progress callback (e.g. from a losing hedge) cannot overwrite a
    /// result.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut JobView)) -> Option<JobView> {
        let (owner, view, bytes) = {
            let mut inner = self.inner.lock();
            let stored = inner.jobs.get_mut(id)?;
            if stored.view.status.is_final() {
                return None;
            }
            let mut job = (*stored.view).clone();
            change(&mut job);
            let view = Arc::new(job);
            let bytes = view.approx_bytes();
            stored.view = view.clone();
            stored.bytes = bytes;
            let owner = stored.owner.clone();
            if view.status.is_final() {
                inner.finished.push_back((view.id.clone(), bytes));
                inner.finished_bytes += bytes;
                self.evict(&mut inner);
            }
            (owner, view, bytes)
        };
        self.hub.publish(&owner, &view, bytes);
        Some((*view).clone())
    }

    /// `owner`'s job `id`. Another owner's job is indistinguishable from a missing one.
    pub fn get(&self, id: &str, owner: &Owner) -> Option<JobView> {
        let inner = self.inner.lock();
        let stored = inner.jobs.get(id)?;
        (stored.owner == *owner).then(|| (*stored.view).clone())
    }

    /// Job `id` whoever owns it: for the site's own bookkeeping, never for a client.
    pub(crate) fn get_internal(&self, id: &str) -> Option<JobView> {
        self.inner.lock().jobs.get(id).map(|s| (*s.view).clone())
    }

    /// Number of jobs not yet final.
    pub fn live(&self) -> usize {
        self.inner
            .lock()
            .jobs
            .values()
            .filter(|j| !j.view.status.is_final())
            .count()
    }

    /// Finished jobs kept, and their bytes.
    pub fn retained(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.finished.len(), inner.finished_bytes)
    }

    fn evict(&self, inner: &mut Inner) {
        while inner.finished.len() > self.retention.jobs
            || (inner.finished_bytes > self.retention.bytes && !inner.finished.is_empty())
        {
            if let Some((old, bytes)) = inner.finished.pop_front() {
                inner.finished_bytes -= bytes;
                inner.jobs.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::events::Event;
    use crate::api::job::{JobStatus, JobView, MAX_NAME_BYTES, display_name};
    use crate::fleet::inference::TopLabel;

    fn owner(n: u8) -> Owner {
        Owner::Client([n; 16])
    }

    fn keep(jobs: usize) -> Retention {
        Retention {
            jobs,
            bytes: usize::MAX,
        }
    }

    #[tokio::test]
    async fn final_jobs_do_not_change_and_old_ones_are_evicted() {
        let store = JobStore::new(keep(2), String::new());
        let me = owner(1);
        let rx = store.subscribe(me.clone());
        for i in 0..3 {
            store.insert(
                &me,
                JobView::queued(format!("j{i}"), format!("f{i}.png"), 10),
            );
        }
        for i in 0..3 {
            store.update(&format!("j{i}"), |j| j.status = JobStatus::Ok);
        }
        assert!(
            store.get("j0", &me).is_none(),
            "oldest finished job is evicted"
        );
        assert_eq!(store.get("j2", &me).map(|j| j.status), Some(JobStatus::Ok));
        assert!(
            store
                .update("j2", |j| j.status = JobStatus::Running)
                .is_none()
        );
        assert_eq!(store.get("j2", &me).map(|j| j.status), Some(JobStatus::Ok));
        let first = match rx.next().await {
            Event::Job(j) => Some(j.id.clone()),
            Event::Lagged(_) => None,
        };
        assert_eq!(first.as_deref(), Some("j0"));
    }

    #[test]
    fn ids_are_unique_and_hex() {
        let store = JobStore::new(keep(10), "web-1.".into());
        let a = store.new_id();
        let b = store.new_id();
        assert_ne!(a, b);
        let random = a.strip_prefix("web-1.").expect("the owner's prefix");
        assert_eq!(random.len(), 18);
        assert!(random.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn another_owners_job_is_not_found() {
        let store = JobStore::new(keep(10), String::new());
        store.insert(&owner(1), JobView::queued("j".into(), "mri.png".into(), 1));
        assert!(store.get("j", &owner(1)).is_some());
        assert!(store.get("j", &owner(2)).is_none());
        assert!(store.get_internal("j").is_some());
    }

    #[test]
    fn finished_jobs_are_kept_within_a_byte_budget() {
        let big = |id: String| {
            let mut j = JobView::queued(id, "x".repeat(255), 1);
            j.top = (0..1000)
                .map(|i| TopLabel {
                    index: i,
                    label: format!("label number {i}"),
                    probability: 0.001,
                })
                .collect();
            j.status = JobStatus::Ok;
            j
        };
        let one = big("probe".into()).approx_bytes();
        assert!(one > 40_000, "a top-1000 job is large: {one}");
        let store = JobStore::new(
            Retention {
                jobs: 10_000,
                bytes: 10 * one,
            },
            String::new(),
        );
        for i in 0..100 {
            store.insert(&owner(1), big(format!("j{i}")));
        }
        let (kept, bytes) = store.retained();
        assert_eq!(kept, 10);
        assert!(bytes <= 10 * one);
        assert!(store.get("j99", &owner(1)).is_some());
        assert!(store.get("j89", &owner(1)).is_none());
    }

    #[test]
    fn long_and_odd_names_are_cut_visibly() {
        let long = "a".repeat(1 << 20);
        let name = display_name(&long);
        assert!(name.len() <= MAX_NAME_BYTES && name.ends_with('…'));
        assert_eq!(display_name("cat.jpg"), "cat.jpg");
        assert_eq!(display_name("a\nb"), "a\u{fffd}b");
        assert_eq!(display_name("   "), "upload");
    }
}
