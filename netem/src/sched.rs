//! The release side shared by every impaired link (the UDP relay and the TUN link): packets
//! that passed an [`Impairment`] wait in a time-ordered heap and
//! leave when their instant comes.
//!
//! Kept apart from the sockets so that the relay and the TUN link schedule identically: the
//! same tie-breaking, the same handling of duplicates, the same timer behaviour. Each link
//! supplies only what "sending" means for it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use parking_lot::{Mutex, MutexGuard};

use crate::impair::{Counters, DirectionConfig, Impairment, Verdict};
use crate::link::Direction;

/// How early a packet may leave. tokio's timer has millisecond ticks and rounds a deadline
/// up to the next one, which alone would add 0.5 ms on average to every delayed packet (and
/// twice that to a round trip). Waking half a tick early and releasing what is due within
/// that half tick centres the error on zero instead.
const TIMER_SLACK: Duration = Duration::from_micros(500);

/// Sending half of a scheduler: `(departure instant, packet)`.
pub(crate) type ScheduleTx<T> = mpsc::UnboundedSender<(Instant, T)>;

/// Queues the packet once per departure of `verdict` (twice when duplicated, never when
/// dropped); `make` builds it only when it is going to leave, so drops cost no copy.
pub(crate) fn enqueue<T: Clone>(tx: &ScheduleTx<T>, verdict: Verdict, make: impl FnOnce() -> T) {
    if let Verdict::Send { at, duplicate_at } = verdict {
        let item = make();
        // A closed channel means the link is shutting down: the packet is discarded.
        match duplicate_at {
            Some(dup) => {
                let _ = tx.send((at, item.clone()));
                let _ = tx.send((dup, item));
            }
            None => {
                let _ = tx.send((at, item));
            }
        }
    }
}

struct Scheduled<T> {
    at: Instant,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Scheduled<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Scheduled<T> {}
impl<T> PartialOrd for Scheduled<T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Scheduled<T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// Releases the packets of one direction in time order, calling `send` for each when its
/// instant has come; returns when every sender is gone.
///
/// Ties keep arrival order (a global sequence number), so packets with equal departure
/// times — an unimpaired link — stay FIFO across all senders.
pub(crate) async fn release<T, F, Fut>(mut rx: mpsc::UnboundedReceiver<(Instant, T)>, mut send: F)
where
    F: FnMut(T) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut heap: BinaryHeap<Reverse<Scheduled<T>>> = BinaryHeap::new();
    let mut order: u64 = 0;
    loop {
        let next_at = heap.peek().map(|Reverse(s)| s.at);
        tokio::select! {
            item = rx.recv() => {
                let Some((at, item)) = item else { return };
                order += 1;
                heap.push(Reverse(Scheduled { at, seq: order, item }));
            }
            _ = async {
                match next_at {
                    Some(at) => {
                        let wake = at.checked_sub(TIMER_SLACK).unwrap_or(at);
                        tokio::time::sleep_until(wake.into()).await
                    }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
        let due = Instant::now() + TIMER_SLACK;
        while heap.peek().is_some_and(|Reverse(s)| s.at <= due) {
            let Some(Reverse(s)) = heap.pop() else { break };
            send(s.item).await;
        }
    }
}

/// The two impairment engines of a link, one per direction, shared by its tasks.
pub(crate) struct Engines {
    up: Mutex<Impairment>,
    down: Mutex<Impairment>,
}

impl Engines {
    /// `seed` for the up direction and `seed + 1` for down, so the two are independent.
    pub(crate) fn new(up: DirectionConfig, down: DirectionConfig, seed: u64) -> Engines {
        Engines {
            up: Mutex::new(Impairment::new(up, seed)),
            down: Mutex::new(Impairment::new(down, seed.wrapping_add(1))),
        }
    }

    /// The engine of one direction (`Both` means `Up`).
    pub(crate) fn dir(&self, d: Direction) -> MutexGuard<'_, Impairment> {
        match d {
            Direction::Down => self.down.lock(),
            _ => self.up.lock(),
        }
    }

    pub(crate) fn config(&self, d: Direction) -> DirectionConfig {
        self.dir(d).config().clone()
    }

    pub(crate) fn set_config(&self, d: Direction, config: DirectionConfig) {
        match d {
            Direction::Up => self.up.lock().set_config(config),
            Direction::Down => self.down.lock().set_config(config),
            Direction::Both => {
                self.up.lock().set_config(config.clone());
                self.down.lock().set_config(config);
            }
        }
    }

    /// Counters of (up, down).
    pub(crate) fn counters(&self) -> (Counters, Counters) {
        (self.up.lock().counters(), self.down.lock().counters())
    }

    pub(crate) fn reset_counters(&self) {
        self.up.lock().reset_counters();
        self.down.lock().reset_counters();
    }
}
