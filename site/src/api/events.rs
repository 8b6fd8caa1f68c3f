//! Job updates for the live page, delivered only to their owner.
//!
//! Each `GET /api/v1/events` stream subscribes for one [`Owner`] and receives that owner's
//! job updates and nothing else: a stranger's stream carries nothing of anyone else's. Every
//! subscriber has its own queue bounded in bytes; a subscriber that does not read (a slow
//! client, or one that never reads at all) loses updates instead of growing the server, and
//! is told how many it lost so the page can fetch the jobs it follows again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::access::caller::Owner;
use crate::api::job::JobView;

/// Bytes of updates one subscriber may have waiting before it starts losing them.
pub(crate) const QUEUE_BYTES: usize = 256 * 1024;

/// What a subscriber receives next.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A job changed; this is its new state.
    Job(Arc<JobView>),
    /// This many updates were dropped because the subscriber fell behind.
    Lagged(u64),
}

#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<(Arc<JobView>, usize)>,
    bytes: usize,
    lagged: u64,
}

#[derive(Debug)]
struct Subscriber {
    queue: Mutex<Queue>,
    wake: Notify,
    max_bytes: usize,
}

/// Routes job updates to their owner's subscribers.
#[derive(Debug, Default)]
pub(crate) struct EventHub {
    subs: Mutex<HashMap<Owner, Vec<Weak<Subscriber>>>>,
}

/// One subscription; unsubscribes when dropped.
#[derive(Debug)]
pub struct Subscription {
    hub: Arc<EventHub>,
    owner: Owner,
    sub: Arc<Subscriber>,
}

impl EventHub {
    /// Subscribe to `owner`'s updates, with [`QUEUE_BYTES`] of room.
    pub(crate) fn subscribe(self: &Arc<Self>, owner: Owner) -> Subscription {
        self.subscribe_with(owner, QUEUE_BYTES)
    }

    /// Subscribe with `max_bytes` of room (tests use small queues).
    pub(crate) fn subscribe_with(self: &Arc<Self>, owner: Owner, max_bytes: usize) -> Subscription {
        let sub = Arc::new(Subscriber {
            queue: Mutex::new(Queue::default()),
            wake: Notify::new(),
            max_bytes,
        });
        self.subs
            .lock()
            .entry(owner.clone())
            .or_default()
            .push(Arc::downgrade(&sub));
        Subscription {
            hub: self.clone(),
            owner,
            sub,
        }
    }

    /// Deliver `job` (`size` bytes, as the job store counts them) to `owner`'s subscribers.
    pub(crate) fn publish(&self, owner: &Owner, job: &Arc<JobView>, size: usize) {
        let subs: Vec<Arc<Subscriber>> = match self.subs.lock().get(owner) {
            Some(list) => list.iter().filter_map(Weak::upgrade).collect(),
            None => return,
        };
        for sub in subs {
            {
                let mut q = sub.queue.lock();
                if q.bytes + size > sub.max_bytes {
                    q.lagged += 1;
                } else {
                    q.bytes += size;
                    q.items.push_back((job.clone(), size));
                }
            }
            sub.wake.notify_one();
        }
    }

    /// Subscriptions open now, over all owners.
    pub(crate) fn subscribers(&self) -> usize {
        self.subs.lock().values().map(Vec::len).sum()
    }
}

impl Subscription {
    /// The next event, waiting for one if none is queued.
    pub async fn next(&self) -> Event {
        loop {
            {
                let mut q = self.sub.queue.lock();
                if q.lagged > 0 {
                    let n = std::mem::take(&mut q.lagged);
                    return Event::Lagged(n);
                }
                if let Some((job, size)) = q.items.pop_front() {
                    q.bytes -= size;
                    return Event::Job(job);
                }
            }
            // `notify_one` stores a wake-up when nobody waits, so none is lost between the
            // check above and this wait.
            self.sub.wake.notified().await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subs = self.hub.subs.lock();
        if let Some(list) = subs.get_mut(&self.owner) {
            list.retain(|w| w.upgrade().is_some_and(|s| !Arc::ptr_eq(&s, &self.sub)));
            if list.is_empty() {
                subs.remove(&self.owner);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> Arc<JobView> {
        Arc::new(JobView::queued(id.to_string(), format!("{id}.png"), 1))
    }

    #[tokio::test]
    async fn owners_see_only_their_own_jobs() {
        let hub = Arc::new(EventHub::default());
        let alice = Owner::Key(Arc::from("alice"));
        let bob = Owner::Key(Arc::from("bob"));
        let a = hub.subscribe(alice.clone());
        let b = hub.subscribe(bob.clone());
        hub.publish(&alice, &job("a1"), 10);
        hub.publish(&bob, &job("b1"), 10);
        assert_eq!(a.next().await, Event::Job(job("a1")));
        assert_eq!(b.next().await, Event::Job(job("b1")));
        let nothing = tokio::time::timeout(std::time::Duration::from_millis(50), a.next()).await;
        assert!(nothing.is_err(), "alice got nothing of bob's");
        assert_eq!(hub.subscribers(), 2);
        drop(a);
        drop(b);
        assert_eq!(hub.subscribers(), 0);
        assert!(
            hub.subs.lock().is_empty(),
            "owners are forgotten with their last subscriber"
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_does_not_read_loses_updates_not_memory() {
        let hub = Arc::new(EventHub::default());
        let me = Owner::Client([1; 16]);
        let s = hub.subscribe_with(me.clone(), 25);
        for i in 0..5 {
            hub.publish(&me, &job(&format!("j{i}")), 10);
        }
        assert_eq!(s.next().await, Event::Lagged(3));
        assert_eq!(s.next().await, Event::Job(job("j0")));
        assert_eq!(s.next().await, Event::Job(job("j1")));
        hub.publish(&me, &job("j5"), 10);
        assert_eq!(s.next().await, Event::Job(job("j5")));
    }
}
