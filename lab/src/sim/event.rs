//! The simulation's clock and agenda: virtual time in nanoseconds and a binary heap of timed
//! events. Events at the same instant run in the order they were scheduled, so a run depends
//! only on its seed, never on heap internals.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Virtual time, nanoseconds since the run began.
pub(super) type Nanos = u64;

/// A duration as virtual nanoseconds (saturating: a run never lasts 584 years).
pub(super) fn nanos(d: Duration) -> Nanos {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Milliseconds as virtual nanoseconds.
pub(super) fn ms_f(ms: f64) -> Nanos {
    (ms.max(0.0) * 1e6) as Nanos
}

/// Something that happens at an instant. Node-side events carry the node's process epoch and
/// front-end-side ones its connection epoch, so events of a crashed process or a lost
/// connection are recognised as stale and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Event {
    /// A client submits (open loop: the next arrival; closed loop: a client's next image).
    Arrive { client: u32 },
    /// A resubmission of an image whose request failed.
    Resubmit { image: u32, client: u32 },
    /// An attempt's request reaches its node.
    Deliver { serial: u64 },
    /// A node's worker finishes the job it was serving.
    ServiceDone { node: u32, epoch: u32, worker: u32 },
    /// The node learns that the front-end cancelled an attempt (stream reset).
    NodeCancel { node: u32, epoch: u32, serial: u64 },
    /// An attempt's answer (or typed error) reaches the front-end, with the node-side
    /// service time its timings carry (µs).
    Answer {
        serial: u64,
        ok: bool,
        service_us: u32,
    },
    /// A node's Started frame reaches the front-end.
    Started { serial: u64 },
    /// An attempt whose answer was lost runs out its `remaining` time.
    Expire { serial: u64 },
    /// A request's timer (`Request::next_timeout`); `generation` tells stale timers apart.
    Timer { request: u64, generation: u32 },
    /// Front-end `fe` checks a node's heartbeat.
    HeartbeatCheck { fe: u32, node: u32, conn: u32 },
    /// A load report after a quiet spell reaches front-end `fe`.
    Report { fe: u32, node: u32, conn: u32 },
    /// A node's periodic load report reaches the front-ends.
    Reports { node: u32 },
    /// The degraded nodes turn slower (`slower`) or recover.
    Degrade { slower: bool },
    /// A crashed node process starts again.
    Restart { node: u32 },
    /// Front-end `fe` notices that the connection to a node is gone.
    ConnectionLost { fe: u32, node: u32, conn: u32 },
    /// Front-end `fe` tries to connect to a node.
    Connect { fe: u32, node: u32 },
    /// A connection attempt ends (`generation` tells a superseded attempt apart).
    Connected {
        fe: u32,
        node: u32,
        generation: u32,
        ok: bool,
    },
    /// A stalled node resumes.
    StallEnd { node: u32, epoch: u32 },
    /// The next fleet-wide fault draw (crash or stall), as a Poisson process.
    NextFault { crash: bool },
}

/// The agenda: a min-heap on (time, order of scheduling).
#[derive(Debug, Default)]
pub(super) struct Agenda {
    heap: BinaryHeap<Reverse<(Nanos, u64, EventKey)>>,
    events: Vec<Option<Event>>,
    free: Vec<usize>,
    seq: u64,
}

/// Index of an event's payload; the heap orders only (time, seq), never the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct EventKey(usize);

impl Agenda {
    /// An empty agenda.
    pub(super) fn new() -> Agenda {
        Agenda::default()
    }

    /// Schedules `event` at `at`.
    pub(super) fn push(&mut self, at: Nanos, event: Event) {
        let slot = match self.free.pop() {
            Some(i) => {
                self.events[i] = Some(event);
                i
            }
            None => {
                self.events.push(Some(event));
                self.events.len() - 1
            }
        };
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, EventKey(slot))));
    }

    /// The earliest event, with its time.
    pub(super) fn pop(&mut self) -> Option<(Nanos, Event)> {
        let Reverse((at, _, EventKey(slot))) = self.heap.pop()?;
        let event = self.events.get_mut(slot)?.take()?;
        self.free.push(slot);
        Some((at, event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earliest_first_and_ties_in_scheduling_order() {
        let mut a = Agenda::new();
        a.push(5, Event::Restart { node: 1 });
        a.push(3, Event::Restart { node: 2 });
        a.push(5, Event::Restart { node: 3 });
        let order: Vec<Event> = std::iter::from_fn(|| a.pop().map(|(_, e)| e)).collect();
        assert_eq!(
            order,
            vec![
                Event::Restart { node: 2 },
                Event::Restart { node: 1 },
                Event::Restart { node: 3 }
            ]
        );
        assert!(a.pop().is_none());
    }
}
