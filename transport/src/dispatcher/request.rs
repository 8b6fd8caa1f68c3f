//! One image's way through the cluster: a state machine with no I/O and no clock.
//!
//! The driver (the async [`super::Dispatcher`], or the simulator) feeds it events with the
//! time they happened: a node granted, an attempt started or ended, a timer fired. It answers
//! with [`Action`]s (wait for a node, open an attempt on node X, cancel attempt N, report
//! progress, finish) and says when it next needs to be woken ([`Request::next_timeout`]).
//! Credit on nodes is taken here, through the [`Cluster`], and given back by the driver when
//! an attempt is really over (its stream ended or was reset).
//!
//! The rules, in the order a request meets them:
//! - With nothing running, it waits for a node in arrival order (see [`Cluster::grant`]).
//!   Retrying on a node that already failed it (no other choice) waits 25 ms × attempts
//!   (at most 200 ms) first, rather than spin on an overloaded node.
//! - A retryable failure reopens the image elsewhere; a non-retryable one ends the request;
//!   so do `max_attempts` failures and the deadline. A node's refusal because it is full
//!   (Overloaded: other front-ends share it) is retried the same way but does not count
//!   against `max_attempts`; the deadline bounds it.
//! - Every request asks for a `Started` frame. The newest attempt is *overdue* at launch +
//!   its timeout (max(floor, factor × observed p99), or the cold timeout) + an upload
//!   allowance while it has not started, and at started + that timeout +
//!   [`STARTED_EXPECT_FACTOR`] × the node's estimate once it has. An overdue attempt that
//!   started, or whose node does not send Started frames, goes on: the image is reopened on
//!   another node and the first answer wins, so a node that is merely slow still answers
//!   while a stalled one is routed around. One that has *not* started on a node that would
//!   have said so is only queued there: it moves (reopened elsewhere, cancelled there), so a
//!   queue never makes two nodes decode one image. With no other node free, it keeps its
//!   place and looks again every [`RETRY_POLL`].
//! - When the newest attempt's node falls silent, the image is reopened elsewhere at once.
//! - With hedging on, a request still unanswered after the observed p95 gets one copy on
//!   another fresh node; the first answer wins and the others are cancelled.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand::Rng;

use super::action::{Action, Cause, Failure, Open, Won};
use super::overdue::{Attempt, Slow, base_timeout, upload_allowance};
use super::placement::Avoid;
use super::{Cluster, DispatchError, Policy, Progress};
use crate::types::InferenceError;

/// How often an overdue request looks again for a free node to reopen on.
pub const RETRY_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing running; about to ask for a node.
    Idle,
    /// Asked for a node ([`Action::Wait`]).
    Waiting,
    /// Granted a node that failed this request already: opens on it at `until`. Holds its
    /// credit meanwhile.
    Pausing { until: Instant, node: usize },
    /// Attempts running.
    Active,
    /// Answered or gave up.
    Done,
}

/// One image's dispatch state.
#[derive(Debug)]
pub struct Request {
    policy: Policy,
    image_len: usize,
    start: Instant,
    deadline: Instant,
    attempts: u32,
    /// Attempts a full node refused without doing anything ([`Cause::Overloaded`]): they
    /// do not count against `max_attempts`.
    refusals: u32,
    running: Vec<Attempt>,
    /// Attempts this request cancelled: a late answer from one still wins; a late failure is
    /// what was asked for and counts for nothing.
    cancelled: Vec<Attempt>,
    failed: Vec<usize>,
    hedged: bool,
    first_sent: Option<Instant>,
    last_error: Option<String>,
    slow: Option<Slow>,
    phase: Phase,
    actions: VecDeque<Action>,
}

impl Request {
    /// A request for an image of `image_len` bytes, arriving at `now`. Nothing happens until
    /// [`Request::start`].
    pub fn new(now: Instant, policy: Policy, image_len: usize) -> Request {
        Request {
            policy,
            image_len,
            start: now,
            deadline: now + policy.request_deadline,
            attempts: 0,
            refusals: 0,
            running: Vec::new(),
            cancelled: Vec::new(),
            failed: Vec::new(),
            hedged: false,
            first_sent: None,
            last_error: None,
            slow: None,
            phase: Phase::Idle,
            actions: VecDeque::new(),
        }
    }

    /// Counts the request and checks what can be refused at once (no node configured, an
    /// image over the limit), else asks for a node.
    pub fn start<W>(&mut self, cluster: &mut Cluster<W>) {
        cluster.stats_mut().requests += 1;
        if cluster.is_empty() {
            return self.finish(Err(DispatchError::NoNodes), cluster);
        }
        if self.image_len > self.policy.max_image_bytes {
            let too_large = InferenceError::TooLarge(format!(
                "{} bytes exceeds the limit of {} bytes",
                self.image_len, self.policy.max_image_bytes
            ));
            return self.finish(Err(DispatchError::Rejected(too_large)), cluster);
        }
        self.advance(cluster);
    }

    /// The next action to carry out, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Nodes that failed this request: a last resort for its next attempt.
    pub fn failed(&self) -> &[usize] {
        &self.failed
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether the request has its final answer.
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether it is waiting for a node.
    pub fn is_waiting(&self) -> bool {
        self.phase == Phase::Waiting
    }

    /// `node` (credit taken) was granted after [`Action::Wait`].
    pub fn on_granted<W>(&mut self, now: Instant, node: usize, cluster: &mut Cluster<W>) {
        if self.phase != Phase::Waiting {
            // Not asked for (the request ended meanwhile): give it back.
            cluster.release(node);
            return;
        }
        if self.failed.contains(&node) {
            let pause = Duration::from_millis(25 * u64::from(self.attempts.min(8)));
            if now + pause >= self.deadline {
                cluster.release(node);
                let attempts = self.attempts;
                return self.finish(Err(DispatchError::DeadlineExceeded { attempts }), cluster);
            }
            self.phase = Phase::Pausing {
                until: now + pause,
                node,
            };
            return;
        }
        self.open(now, node, false, cluster);
    }

    /// The node running `attempt` said at `at` that work began, expected to take `expect`.
    pub fn on_started(&mut self, at: Instant, attempt: u32, expect: Duration) {
        if let Some(a) = self.running.iter_mut().find(|a| a.id == attempt) {
            a.started.get_or_insert((at, expect));
        }
    }

    /// `attempt` ended at `now` after `elapsed`: answered (`Ok`) or failed.
    pub fn on_attempt_end<W>(
        &mut self,
        now: Instant,
        attempt: u32,
        elapsed: Duration,
        result: Result<(), Failure>,
        cluster: &mut Cluster<W>,
    ) {
        if self.phase == Phase::Done {
            return;
        }
        let (a, was_cancelled) = if let Some(i) = self.running.iter().position(|a| a.id == attempt)
        {
            (self.running.remove(i), false)
        } else if let Some(i) = self.cancelled.iter().position(|a| a.id == attempt) {
            (self.cancelled.remove(i), true)
        } else {
            return;
        };
        if self.slow.as_ref().is_some_and(|s| s.attempt == attempt) {
            self.slow = None;
        }
        let failure = match result {
            Ok(()) => {
                cluster.record_answer(a.node, elapsed.as_secs_f32() * 1000.0);
                if a.hedge {
                    cluster.stats_mut().hedge_wins += 1;
                }
                let won = Won {
                    attempt,
                    node: a.node,
                    node_name: cluster.name(a.node).to_string(),
                    attempts: self.attempts,
                    hedge: a.hedge,
                    latency: now.saturating_duration_since(self.start),
                };
                return self.finish(Ok(won), cluster);
            }
            Err(_) if was_cancelled => return,
            Err(f) => f,
        };
        cluster.record_failure(a.node);
        let stats = cluster.stats_mut();
        match failure.cause {
            Cause::Reset => stats.resets += 1,
            Cause::Timeout => stats.timeouts += 1,
            Cause::ConnectionLost => stats.connection_losses += 1,
            Cause::NodeError | Cause::Overloaded => stats.retryable_errors += 1,
            Cause::Other => {}
        }
        if failure.cause == Cause::Overloaded {
            self.refusals += 1;
            cluster.record_full(a.node);
        }
        if let Some(fatal) = failure.fatal {
            return self.finish(Err(DispatchError::Rejected(fatal)), cluster);
        }
        self.note_failed(a.node);
        let reason = format!("{}: {}", cluster.name(a.node), failure.message);
        if self.running.is_empty() && !self.attempts_spent() {
            self.actions.push_back(Action::Progress(Progress::Retrying {
                attempt: self.attempts + 1,
                reason: reason.clone(),
            }));
        }
        self.last_error = Some(reason);
        self.advance(cluster);
    }

    /// When the driver must call [`Request::handle_timeout`] next (`None` once done). Call
    /// again after every event: a Started frame or a node's silence moves it.
    pub fn next_timeout<W>(&self, cluster: &mut Cluster<W>) -> Option<Instant> {
        if self.phase == Phase::Done {
            return None;
        }
        let mut at = self.deadline;
        if let Phase::Pausing { until, .. } = self.phase {
            at = at.min(until);
        }
        if let Some(h) = self.hedge_at(cluster) {
            at = at.min(h);
        }
        if let Some(d) = self.overdue_at(cluster) {
            at = at.min(d);
        }
        Some(at)
    }

    /// Time passed: acts on whatever fell due by `now`.
    pub fn handle_timeout<W>(
        &mut self,
        now: Instant,
        cluster: &mut Cluster<W>,
        rng: &mut impl Rng,
    ) {
        if self.phase == Phase::Done {
            return;
        }
        if now >= self.deadline {
            let attempts = self.attempts;
            let err = if self.phase == Phase::Waiting && attempts == 0 {
                DispatchError::NoNodes
            } else {
                DispatchError::DeadlineExceeded { attempts }
            };
            return self.finish(Err(err), cluster);
        }
        if let Phase::Pausing { until, node } = self.phase
            && now >= until
        {
            self.open(now, node, false, cluster);
        }
        if self.hedge_at(cluster).is_some_and(|h| now >= h) {
            self.hedge(now, cluster, rng);
        }
        if self.overdue_at(cluster).is_some_and(|d| now >= d) {
            self.reopen_overdue(now, cluster, rng);
        }
    }

    /// The caller went away before the answer: gives back credit the request holds itself
    /// (the driver stops its running attempts).
    pub fn abandon<W>(&mut self, cluster: &mut Cluster<W>) {
        if let Phase::Pausing { node, .. } = self.phase {
            cluster.release(node);
        }
        self.phase = Phase::Done;
    }

    /// With nothing running, ask for a node, or give up when the attempts are spent.
    fn advance<W>(&mut self, cluster: &mut Cluster<W>) {
        if self.phase == Phase::Active && self.running.is_empty() {
            self.phase = Phase::Idle;
        }
        if self.phase != Phase::Idle {
            return;
        }
        if self.attempts_spent() {
            let err = DispatchError::AttemptsExhausted {
                attempts: self.attempts,
                last: self.last_error.clone().unwrap_or_default(),
            };
            return self.finish(Err(err), cluster);
        }
        self.phase = Phase::Waiting;
        self.actions.push_back(Action::Wait);
    }

    /// Whether the request has used up its `max_attempts` (refusals by full nodes not
    /// counted).
    fn attempts_spent(&self) -> bool {
        self.attempts.saturating_sub(self.refusals) >= self.policy.max_attempts
    }

    /// Opens an attempt on `node`, whose credit is already taken.
    fn open<W>(&mut self, now: Instant, node: usize, hedge: bool, cluster: &mut Cluster<W>) {
        self.attempts += 1;
        let id = self.attempts;
        let stats = cluster.stats_mut();
        stats.attempts += 1;
        if hedge {
            stats.hedges += 1;
        } else if id > 1 {
            stats.retries += 1;
        }
        let base = base_timeout(&self.policy, cluster);
        let remaining = self.deadline.saturating_duration_since(now);
        let unstarted_at =
            now + (base + upload_allowance(&self.policy, self.image_len)).min(remaining);
        let name = cluster.name(node).to_string();
        self.actions.push_back(Action::Progress(if hedge {
            Progress::Hedged { node: name }
        } else {
            Progress::Sent {
                node: name,
                attempt: id,
            }
        }));
        self.actions.push_back(Action::Open(Open {
            attempt: id,
            node,
            hedge,
            remaining,
        }));
        self.running.push(Attempt {
            id,
            node,
            hedge,
            launched: now,
            started: None,
            acks: cluster.acks(node),
            base,
            unstarted_at,
        });
        if !hedge {
            self.slow = Some(Slow {
                attempt: id,
                retry_at: None,
                silenced: false,
            });
        }
        self.first_sent.get_or_insert(now);
        self.phase = Phase::Active;
    }

    /// Sends the hedge copy, if a fresh node is free (once per request either way).
    fn hedge<W>(&mut self, now: Instant, cluster: &mut Cluster<W>, rng: &mut impl Rng) {
        self.hedged = true;
        let running: Vec<usize> = self.running.iter().map(|a| a.node).collect();
        let avoid = Avoid {
            running: &running,
            failed: &self.failed,
            fresh_only: true,
        };
        if let Some(node) = cluster.pick(now, avoid, rng) {
            cluster.acquire(node);
            self.open(now, node, true, cluster);
        }
    }

    /// The newest attempt is overdue (or its node fell silent): count it once, and reopen
    /// the image on another fresh node; cancel the old attempt when it never started on a
    /// node that would have said so (see the module's rules).
    fn reopen_overdue<W>(&mut self, now: Instant, cluster: &mut Cluster<W>, rng: &mut impl Rng) {
        let Some(mut slow) = self.slow.take() else {
            return;
        };
        let Some(a) = self.running.iter().find(|a| a.id == slow.attempt).cloned() else {
            return;
        };
        let silent = cluster.is_silent(a.node);
        if slow.retry_at.is_none() {
            slow.silenced = silent;
            let stats = cluster.stats_mut();
            if silent {
                stats.silence_reopens += 1;
            } else {
                stats.timeouts += 1;
            }
            cluster.record_failure(a.node);
            self.note_failed(a.node);
            let why = if silent {
                "node went silent (no heartbeat)"
            } else {
                "no answer within the attempt timeout"
            };
            self.last_error = Some(format!("{}: {why}", cluster.name(a.node)));
        }
        if self.attempts_spent() {
            // No attempt left to reopen with: the running ones may still answer.
            return;
        }
        // A silent node cannot be trusted to have said it started: it keeps its attempt.
        let cancel = !silent && !slow.silenced && a.acks && a.started.is_none();
        let running: Vec<usize> = self.running.iter().map(|a| a.node).collect();
        let avoid = Avoid {
            running: &running,
            failed: &self.failed,
            fresh_only: true,
        };
        let Some(node) = cluster.pick(now, avoid, rng) else {
            slow.retry_at = Some(now + RETRY_POLL);
            self.slow = Some(slow);
            return;
        };
        cluster.acquire(node);
        self.actions.push_back(Action::Progress(Progress::Retrying {
            attempt: self.attempts + 1,
            reason: self.last_error.clone().unwrap_or_default(),
        }));
        self.open(now, node, false, cluster);
        if cancel {
            self.running.retain(|r| r.id != a.id);
            self.actions.push_back(Action::Cancel {
                attempt: a.id,
                node: a.node,
            });
            self.cancelled.push(a);
            cluster.stats_mut().unstarted_cancels += 1;
        }
    }

    /// Ends the request: cancels what still runs, counts the outcome.
    fn finish<W>(&mut self, result: Result<Won, DispatchError>, cluster: &mut Cluster<W>) {
        if let Phase::Pausing { node, .. } = self.phase {
            cluster.release(node);
        }
        for a in self.running.drain(..) {
            self.actions.push_back(Action::Cancel {
                attempt: a.id,
                node: a.node,
            });
            self.cancelled.push(a);
        }
        cluster.stats_mut().count_outcome(&result);
        self.slow = None;
        self.phase = Phase::Done;
        self.actions.push_back(Action::Done(result));
    }

    fn note_failed(&mut self, node: usize) {
        if !self.failed.contains(&node) {
            self.failed.push(node);
        }
    }

    /// When to send a hedge copy, if at all.
    fn hedge_at<W>(&self, cluster: &mut Cluster<W>) -> Option<Instant> {
        let p = &self.policy;
        if !p.hedge
            || self.hedged
            || self.running.len() != 1
            || self.attempts_spent()
            || cluster.len() < 2
        {
            return None;
        }
        let first = self.first_sent?;
        let p95 = cluster.latency().settled_percentile(95.0)?;
        Some(first + Duration::from_secs_f32(p95.max(0.0) / 1000.0).max(p.hedge_min_delay))
    }

    /// When the newest attempt must be looked at again: at its timeout, at once if its node
    /// has gone silent; while waiting for a free node, at the next poll, and after a timeout
    /// (not a silence) not before the attempt's timeout as it stands now: a Started frame
    /// that arrived since pushed it further, the work is under way and may finish.
    fn overdue_at<W>(&self, cluster: &Cluster<W>) -> Option<Instant> {
        let slow = self.slow.as_ref()?;
        let a = self.running.iter().find(|a| a.id == slow.attempt)?;
        Some(match slow.retry_at {
            None if cluster.is_silent(a.node) => a.launched,
            None => a.timeout_at(),
            Some(poll) if slow.silenced => poll,
            Some(poll) => poll.max(a.timeout_at()),
        })
    }
}
