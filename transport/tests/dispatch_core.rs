//! The dispatcher's decisions on a virtual clock: the sans-IO core (`Cluster`, `Request`)
//! driven by hand, with no socket, no task and no sleep. Each test plays one behaviour's
//! events at chosen instants and checks the actions that come back.

use std::time::{Duration, Instant};

use glimpse_transport::dispatcher::{
    Action, Cause, Cluster, Failure, NodeEndpoint, Open, Policy, Request, Won,
};
use glimpse_transport::{DispatchError, InferenceError, NodeInfo, Progress};
use rand::SeedableRng;
use rand::rngs::SmallRng;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn info(capacity: u32, acks: bool) -> NodeInfo {
    NodeInfo {
        node_id: "test".into(),
        model: "synthetic".into(),
        weights: "none".into(),
        trained: false,
        synthetic: true,
        backend: "none".into(),
        capacity,
        max_batch: 1,
        max_batch_wait_ms: 0,
        version: "test".into(),
        load_interval_ms: Some(100),
        acks,
    }
}

/// A cluster of Ready nodes named n0, n1, ... and a virtual clock starting at `t0`.
struct Bench {
    t0: Instant,
    c: Cluster<u32>,
    rng: SmallRng,
}

impl Bench {
    fn new(nodes: usize, capacity: u32, acks: bool) -> Bench {
        let endpoints = (0..nodes).map(|i| NodeEndpoint {
            name: format!("n{i}"),
            addr: "127.0.0.1:1".parse().unwrap(),
        });
        let mut c = Cluster::new(endpoints);
        for i in 0..nodes {
            c.set_ready(i, info(capacity, acks));
        }
        Bench {
            t0: Instant::now(),
            c,
            rng: SmallRng::seed_from_u64(42),
        }
    }

    fn at(&self, t: u64) -> Instant {
        self.t0 + ms(t)
    }

    /// Starts a request at `t` ms (token `token` if it has to queue); returns its actions.
    fn start(&mut self, policy: Policy, t: u64, token: u32) -> (Request, Vec<Action>) {
        let mut req = Request::new(self.at(t), policy, 1000);
        req.start(&mut self.c);
        let actions = self.drain(&mut req, t, token);
        (req, actions)
    }

    /// Drains `req`'s actions, getting it a node at `t` whenever it asks for one (if one is
    /// usable; otherwise it stays queued under `token`).
    fn drain(&mut self, req: &mut Request, t: u64, token: u32) -> Vec<Action> {
        let mut out = Vec::new();
        while let Some(a) = req.poll_action() {
            if a == Action::Wait
                && let Some(node) =
                    self.c
                        .wait_or_grant(self.at(t), token, req.failed(), &mut self.rng)
            {
                req.on_granted(self.at(t), node, &mut self.c);
            }
            out.push(a);
        }
        out
    }

    fn timeout(&mut self, req: &mut Request, t: u64) -> Vec<Action> {
        req.handle_timeout(self.at(t), &mut self.c, &mut self.rng);
        self.drain(req, t, 0)
    }

    /// `attempt` on `node` ends at `t` (the driver gives its credit back first).
    fn end(
        &mut self,
        req: &mut Request,
        t: u64,
        open: &Open,
        result: Result<(), Failure>,
    ) -> Vec<Action> {
        self.c.release(open.node);
        req.on_attempt_end(self.at(t), open.attempt, ms(t), result, &mut self.c);
        self.drain(req, t, 0)
    }

    /// When the request wants to be woken, to the nearest ms (the upload allowance of its
    /// 1000-byte image and f32 percentiles add fractions).
    fn next(&mut self, req: &Request) -> Option<Duration> {
        let at = req.next_timeout(&mut self.c)?;
        Some(ms(((at - self.t0).as_secs_f64() * 1000.0).round() as u64))
    }

    /// Fills the front-end's latency window with `n` answers of `latency_ms`.
    fn warm(&mut self, n: usize, latency_ms: f32) {
        for _ in 0..n {
            self.c.record_answer(0, latency_ms);
        }
    }
}

fn opens(actions: &[Action]) -> Vec<Open> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Open(o) => Some(o.clone()),
            _ => None,
        })
        .collect()
}

fn cancels(actions: &[Action]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Cancel { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect()
}

fn done(actions: &[Action]) -> Option<Result<Won, DispatchError>> {
    actions.iter().find_map(|a| match a {
        Action::Done(r) => Some(r.clone()),
        _ => None,
    })
}

fn retryable(cause: Cause, message: &str) -> Failure {
    Failure {
        cause,
        fatal: None,
        message: message.into(),
    }
}

fn policy() -> Policy {
    Policy {
        attempt_timeout_cold: ms(300),
        ..Policy::default()
    }
}

#[test]
fn reset_is_retried_on_another_node() {
    let mut b = Bench::new(2, 4, true);
    let (mut req, a) = b.start(policy(), 0, 0);
    let first = opens(&a).remove(0);
    assert_eq!(first.attempt, 1);
    assert!(matches!(
        &a[..2],
        [
            Action::Wait,
            Action::Progress(Progress::Sent { attempt: 1, .. })
        ]
    ));
    let a = b.end(
        &mut req,
        10,
        &first,
        Err(retryable(Cause::Reset, "stream reset by node")),
    );
    assert!(
        matches!(&a[0], Action::Progress(Progress::Retrying { attempt: 2, reason }) if reason.contains("reset"))
    );
    let second = opens(&a).remove(0);
    assert_ne!(
        second.node, first.node,
        "the retry avoids the node that failed it"
    );
    let a = b.end(&mut req, 20, &second, Ok(()));
    let won = done(&a).unwrap().unwrap();
    assert_eq!((won.attempt, won.attempts, won.node), (2, 2, second.node));
    let s = b.c.stats();
    assert_eq!((s.resets, s.retries, s.attempts, s.succeeded), (1, 1, 2, 1));
    assert_eq!(b.c.outstanding(0) + b.c.outstanding(1), 0);
}

#[test]
fn a_node_falling_silent_reopens_its_image_at_once_and_the_old_attempt_may_still_win() {
    let mut b = Bench::new(2, 4, true);
    let (mut req, a) = b.start(policy(), 0, 0);
    let first = opens(&a).remove(0);
    assert_eq!(b.next(&req), Some(ms(300)), "overdue at the cold timeout");
    b.c.set_silent(first.node, true);
    // The node's silence makes the attempt due now, not at its timeout.
    assert!(b.next(&req).unwrap() <= ms(50));
    let a = b.timeout(&mut req, 50);
    let second = opens(&a).remove(0);
    assert_ne!(second.node, first.node);
    assert!(
        cancels(&a).is_empty(),
        "a silent node's attempt is not cancelled"
    );
    assert_eq!(b.c.stats().silence_reopens, 1);
    assert_eq!(b.c.stats().silences, 1);
    // The silent node answers after all: first answer wins, the copy is cancelled.
    let a = b.end(&mut req, 80, &first, Ok(()));
    assert_eq!(cancels(&a), vec![2]);
    assert_eq!(done(&a).unwrap().unwrap().attempt, 1);
}

#[test]
fn overdue_started_attempt_is_reopened_without_cancel_and_the_first_answer_wins() {
    let mut b = Bench::new(2, 4, true);
    let (mut req, a) = b.start(policy(), 0, 0);
    let first = opens(&a).remove(0);
    // Started at 100 ms, expecting 50 ms of work: due at 100 + 300 + 2 × 50.
    req.on_started(b.at(100), first.attempt, ms(50));
    assert_eq!(b.next(&req), Some(ms(500)));
    assert!(
        opens(&b.timeout(&mut req, 301)).is_empty(),
        "not due yet at 301 ms"
    );
    let a = b.timeout(&mut req, 500);
    let second = opens(&a).remove(0);
    assert!(cancels(&a).is_empty(), "work under way is not thrown away");
    assert_eq!(b.c.stats().timeouts, 1);
    assert_eq!(b.c.stats().unstarted_cancels, 0);
    let a = b.end(&mut req, 600, &second, Ok(()));
    assert_eq!(
        cancels(&a),
        vec![1],
        "the slow original is cancelled once the copy wins"
    );
    assert_eq!(done(&a).unwrap().unwrap().node, second.node);
}

#[test]
fn overdue_attempt_on_a_node_without_started_frames_is_not_cancelled() {
    let mut b = Bench::new(2, 4, false);
    let (mut req, a) = b.start(policy(), 0, 0);
    let first = opens(&a).remove(0);
    let a = b.timeout(&mut req, 301);
    assert_eq!(opens(&a).len(), 1);
    assert!(cancels(&a).is_empty());
    let a = b.end(&mut req, 310, &first, Ok(()));
    assert_eq!(done(&a).unwrap().unwrap().attempt, 1);
}

#[test]
fn overdue_unstarted_attempt_moves_and_is_cancelled_where_it_waited() {
    let mut b = Bench::new(2, 4, true);
    let (mut req, a) = b.start(policy(), 0, 0);
    let first = opens(&a).remove(0);
    let a = b.timeout(&mut req, 301);
    let second = opens(&a).remove(0);
    assert_ne!(second.node, first.node);
    assert_eq!(cancels(&a), vec![1]);
    assert_eq!(b.c.stats().unstarted_cancels, 1);
    // The cancelled attempt's reset arrives later: it counts for nothing.
    let a = b.end(
        &mut req,
        310,
        &first,
        Err(retryable(Cause::Reset, "cancelled")),
    );
    assert!(a.is_empty());
    assert_eq!(b.c.stats().resets, 0);
    assert!(
        done(&b.end(&mut req, 400, &second, Ok(())))
            .unwrap()
            .is_ok()
    );
}

#[test]
fn overdue_with_no_other_node_free_keeps_its_place_and_polls() {
    let mut b = Bench::new(1, 4, true);
    let (mut req, _) = b.start(policy(), 0, 0);
    let a = b.timeout(&mut req, 301);
    assert!(opens(&a).is_empty() && cancels(&a).is_empty());
    assert_eq!(b.c.stats().timeouts, 1);
    assert_eq!(
        b.next(&req),
        Some(ms(351)),
        "looks again after the retry poll"
    );
    b.timeout(&mut req, 351);
    assert_eq!(b.c.stats().timeouts, 1, "counted once");
}

#[test]
fn hedge_goes_out_after_the_p95_and_the_loser_is_cancelled() {
    let mut b = Bench::new(2, 4, true);
    b.warm(20, 100.0);
    let p = Policy {
        hedge: true,
        ..Policy::default()
    };
    let (mut req, a) = b.start(p, 0, 0);
    let first = opens(&a).remove(0);
    assert_eq!(b.next(&req), Some(ms(100)), "hedge at the observed p95");
    let a = b.timeout(&mut req, 101);
    assert!(matches!(&a[0], Action::Progress(Progress::Hedged { .. })));
    let hedge = opens(&a).remove(0);
    assert!(hedge.hedge);
    assert_ne!(hedge.node, first.node);
    assert_eq!(
        b.next(&req),
        Some(ms(500)),
        "one hedge only; the original's timeout stays"
    );
    let a = b.end(&mut req, 150, &hedge, Ok(()));
    assert_eq!(cancels(&a), vec![1]);
    let won = done(&a).unwrap().unwrap();
    assert!(won.hedge);
    assert_eq!((b.c.stats().hedges, b.c.stats().hedge_wins), (1, 1));
}

#[test]
fn no_hedge_before_enough_latency_samples() {
    let mut b = Bench::new(2, 4, true);
    b.warm(19, 100.0);
    let p = Policy {
        hedge: true,
        ..Policy::default()
    };
    let (req, _) = b.start(p, 0, 0);
    assert_eq!(
        b.next(&req),
        Some(ms(10_000)),
        "cold: only the cold timeout"
    );
}

#[test]
fn deadline_ends_the_request_and_cancels_what_runs() {
    let mut b = Bench::new(1, 4, true);
    let p = Policy {
        request_deadline: ms(1000),
        attempt_timeout_cold: ms(5000),
        ..Policy::default()
    };
    let (mut req, a) = b.start(p, 0, 0);
    assert_eq!(opens(&a)[0].remaining, ms(1000));
    assert_eq!(
        b.next(&req),
        Some(ms(1000)),
        "the unstarted timeout never passes the deadline"
    );
    let a = b.timeout(&mut req, 1000);
    assert_eq!(cancels(&a), vec![1]);
    assert_eq!(
        done(&a),
        Some(Err(DispatchError::DeadlineExceeded { attempts: 1 }))
    );
    assert_eq!(b.c.stats().deadline_exceeded, 1);
    assert_eq!(b.next(&req), None);
}

#[test]
fn no_usable_node_until_the_deadline_is_no_nodes() {
    let mut b = Bench::new(1, 4, true);
    b.c.set_down(0, Some("gone".into()));
    let p = Policy {
        request_deadline: ms(500),
        ..Policy::default()
    };
    let (mut req, a) = b.start(p, 0, 7);
    assert_eq!(a, vec![Action::Wait]);
    assert!(req.is_waiting());
    assert_eq!(b.c.waiting(), 1);
    let a = b.timeout(&mut req, 500);
    assert_eq!(done(&a), Some(Err(DispatchError::NoNodes)));
    b.c.forget_waiters(|&t| t == 7);
    assert_eq!(b.c.waiting(), 0);
}

#[test]
fn attempts_exhausted_after_max_attempts_retryable_failures() {
    let mut b = Bench::new(3, 4, true);
    let p = Policy {
        max_attempts: 2,
        ..policy()
    };
    let (mut req, a) = b.start(p, 0, 0);
    let first = opens(&a).remove(0);
    let a = b.end(
        &mut req,
        5,
        &first,
        Err(retryable(Cause::NodeError, "overloaded")),
    );
    let second = opens(&a).remove(0);
    let a = b.end(
        &mut req,
        10,
        &second,
        Err(retryable(Cause::ConnectionLost, "connection lost")),
    );
    match done(&a) {
        Some(Err(DispatchError::AttemptsExhausted { attempts: 2, last })) => {
            assert!(
                last.contains("connection lost") && last.starts_with('n'),
                "{last}"
            );
        }
        other => panic!("{other:?}"),
    }
    let s = b.c.stats();
    assert_eq!(
        (
            s.retryable_errors,
            s.connection_losses,
            s.attempts_exhausted
        ),
        (1, 1, 1)
    );
}

/// Two nodes shared with other front-ends, both full: their refusals (Overloaded) do not use
/// up the request's attempts; it keeps trying, pausing before a node that refused it, until
/// one takes it, within its deadline.
#[test]
fn refusals_by_full_nodes_do_not_use_up_attempts() {
    let mut b = Bench::new(2, 4, true);
    let p = Policy {
        max_attempts: 2,
        ..policy()
    };
    let (mut req, a) = b.start(p, 0, 0);
    let mut open = opens(&a).remove(0);
    let mut t = 0;
    for _ in 0..6 {
        t += 1;
        let mut a = b.end(
            &mut req,
            t,
            &open,
            Err(retryable(
                Cause::Overloaded,
                "node replied: node overloaded",
            )),
        );
        assert_eq!(done(&a), None, "refusals ended the request: {a:?}");
        // Both nodes refused it once already: the next try waits a little first.
        while opens(&a).is_empty() {
            let next = b.next(&req).expect("a wake-up");
            t = u64::try_from(next.as_millis()).unwrap();
            a = b.timeout(&mut req, t);
        }
        open = opens(&a).remove(0);
    }
    let a = b.end(&mut req, t + 5, &open, Ok(()));
    assert!(
        matches!(done(&a), Some(Ok(Won { attempts: 7, .. }))),
        "{a:?}"
    );
    // Real failures still count: two of them end the request.
    let (mut req, a) = b.start(p, t + 10, 0);
    let first = opens(&a).remove(0);
    let a = b.end(
        &mut req,
        t + 11,
        &first,
        Err(retryable(Cause::Overloaded, "full")),
    );
    let second = opens(&a).remove(0);
    let a = b.end(
        &mut req,
        t + 12,
        &second,
        Err(retryable(Cause::Reset, "reset")),
    );
    let mut a = a;
    while opens(&a).is_empty() && done(&a).is_none() {
        let next = b.next(&req).expect("a wake-up");
        a = b.timeout(&mut req, u64::try_from(next.as_millis()).unwrap());
    }
    let third = opens(&a).remove(0);
    let a = b.end(
        &mut req,
        t + 400,
        &third,
        Err(retryable(Cause::Reset, "reset")),
    );
    assert!(
        matches!(
            done(&a),
            Some(Err(DispatchError::AttemptsExhausted { attempts: 3, .. }))
        ),
        "{a:?}"
    );
}

#[test]
fn a_bad_image_is_rejected_without_retry() {
    let mut b = Bench::new(2, 4, true);
    let (mut req, a) = b.start(policy(), 0, 0);
    let first = opens(&a).remove(0);
    let bad = InferenceError::BadImage("not an image".into());
    let f = Failure {
        cause: Cause::Other,
        fatal: Some(bad.clone()),
        message: "bad".into(),
    };
    let a = b.end(&mut req, 5, &first, Err(f));
    assert!(opens(&a).is_empty());
    assert_eq!(done(&a), Some(Err(DispatchError::Rejected(bad))));
    assert_eq!(b.c.stats().rejected, 1);
}

#[test]
fn too_large_and_no_node_configured_end_at_once() {
    let mut b = Bench::new(1, 4, true);
    let p = Policy {
        max_image_bytes: 999,
        ..Policy::default()
    };
    let (_, a) = b.start(p, 0, 0);
    assert!(matches!(
        done(&a),
        Some(Err(DispatchError::Rejected(InferenceError::TooLarge(_))))
    ));
    let mut empty: Cluster<u32> = Cluster::new([]);
    let mut req = Request::new(b.t0, Policy::default(), 10);
    req.start(&mut empty);
    assert_eq!(
        req.poll_action(),
        Some(Action::Done(Err(DispatchError::NoNodes)))
    );
}

#[test]
fn draining_nodes_get_no_new_work() {
    let mut b = Bench::new(2, 1, true);
    b.c.set_draining(0);
    let (_, a) = b.start(policy(), 0, 1);
    assert_eq!(opens(&a)[0].node, 1);
    // Node 1 is now full (capacity 1): the next request waits rather than use node 0.
    let (req, a) = b.start(policy(), 0, 2);
    assert_eq!(a, vec![Action::Wait]);
    assert!(req.is_waiting());
    assert_eq!(b.c.outstanding(0), 0);
}

#[test]
fn waiting_requests_get_nodes_in_arrival_order() {
    let mut b = Bench::new(1, 1, true);
    let (mut first, a) = b.start(policy(), 0, 100);
    let open = opens(&a).remove(0);
    let mut queued: Vec<Request> = (1..=3)
        .map(|token| {
            let (r, a) = b.start(policy(), token as u64, token);
            assert_eq!(a, vec![Action::Wait]);
            r
        })
        .collect();
    // Each freed unit of credit goes to the longest waiter.
    b.end(&mut first, 10, &open, Ok(()));
    let mut order = Vec::new();
    while let Some((token, node)) = b.c.grant(b.at(10), &mut b.rng) {
        order.push(token);
        let r = &mut queued[token as usize - 1];
        r.on_granted(b.at(10), node, &mut b.c);
        let a = b.drain(r, 10, token);
        let o = opens(&a).remove(0);
        b.end(r, 11, &o, Ok(()));
    }
    assert_eq!(order, vec![1, 2, 3]);
}

#[test]
fn retry_on_the_only_node_that_failed_waits_a_moment_first() {
    let mut b = Bench::new(1, 4, true);
    let (mut req, a) = b.start(policy(), 0, 0);
    let first = opens(&a).remove(0);
    let a = b.end(
        &mut req,
        10,
        &first,
        Err(retryable(Cause::NodeError, "overloaded")),
    );
    assert!(opens(&a).is_empty(), "granted the failed node, but paused");
    assert_eq!(b.next(&req), Some(ms(35)), "25 ms × 1 attempt");
    let a = b.timeout(&mut req, 35);
    assert_eq!(opens(&a)[0].node, 0);
    assert_eq!(opens(&a)[0].attempt, 2);
}

#[test]
fn an_abandoned_request_gives_back_the_credit_it_held() {
    let mut b = Bench::new(1, 4, true);
    let (mut req, a) = b.start(policy(), 0, 0);
    let first = opens(&a).remove(0);
    b.end(
        &mut req,
        10,
        &first,
        Err(retryable(Cause::NodeError, "overloaded")),
    );
    assert_eq!(b.c.outstanding(0), 1, "held through the pause");
    req.abandon(&mut b.c);
    assert_eq!(b.c.outstanding(0), 0);
}

// Membership: nodes joining and leaving while requests run.

fn endpoint(name: &str, port: u16) -> NodeEndpoint {
    NodeEndpoint {
        name: name.into(),
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

#[test]
fn placement_never_picks_a_node_that_left() {
    let mut c: Cluster<u32> = Cluster::new([endpoint("a", 1), endpoint("b", 2)]);
    c.set_ready(0, info(4, true));
    c.set_ready(1, info(4, true));
    let change = c.set_members(&[endpoint("b", 2)]);
    assert_eq!(change.removed, vec![0]);
    assert!(change.joined.is_empty() && change.rejoined.is_empty());
    assert!(!c.is_listed(0) && c.is_listed(1));
    assert_eq!((c.len(), c.ready_count(), c.usable_count()), (1, 1, 1));
    let mut rng = SmallRng::seed_from_u64(1);
    for token in 0..200 {
        // Even as a last resort (it failed nothing, but "failed" lists it) it is never picked.
        let failed = [0];
        let node = c.wait_or_grant(Instant::now(), token, &failed, &mut rng);
        assert_eq!(node, Some(1), "only the listed node takes work");
        c.release(1);
    }
    // With the only listed node gone too, requests wait rather than go to a leaving node.
    c.set_members(&[]);
    assert!(c.is_empty());
    assert_eq!(c.wait_or_grant(Instant::now(), 7, &[], &mut rng), None);
    assert_eq!(c.waiting(), 1);
    // The status still shows both, as removed.
    let status = c.status();
    assert_eq!(status.len(), 2);
    assert!(status.iter().all(|n| n.removed));
}

#[test]
fn a_node_that_left_finishes_its_work_then_its_slot_is_freed() {
    let mut b = Bench::new(2, 4, true);
    let (mut req, actions) = b.start(Policy::default(), 0, 1);
    let open = opens(&actions).remove(0);
    let leaving = open.node;
    let staying = 1 - leaving;
    let keep = b.c.endpoint(staying).clone();
    b.c.set_members(&[keep]);
    // Its credit is still out: the slot cannot be freed yet.
    assert!(!b.c.reclaim(leaving));
    // The attempt answers normally, from the node that left.
    let actions = b.end(&mut req, 10, &open, Ok(()));
    let won = done(&actions).expect("done").expect("answered");
    assert_eq!(won.node, leaving);
    assert_eq!(won.node_name, format!("n{leaving}"));
    // Idle now: the slot is freed, and disappears from the status.
    assert!(b.c.reclaim(leaving));
    assert!(!b.c.reclaim(leaving), "freed once");
    assert_eq!(b.c.status().len(), 1);
    // A new request goes to the remaining node.
    let (_req, actions) = b.start(Policy::default(), 20, 2);
    assert_eq!(opens(&actions)[0].node, staying);
}

#[test]
fn a_node_that_left_and_failed_moves_its_image_elsewhere() {
    let mut b = Bench::new(2, 4, true);
    let (mut req, actions) = b.start(Policy::default(), 0, 1);
    let open = opens(&actions).remove(0);
    let staying = 1 - open.node;
    let keep = b.c.endpoint(staying).clone();
    b.c.set_members(&[keep]);
    let failure = Failure {
        cause: Cause::ConnectionLost,
        fatal: None,
        message: "gone".into(),
    };
    let actions = b.end(&mut req, 10, &open, Err(failure));
    let retry = opens(&actions);
    assert_eq!(retry.len(), 1);
    assert_eq!(retry[0].node, staying);
}

#[test]
fn a_node_listed_again_rejoins_and_slots_are_reused_under_churn() {
    let mut c: Cluster<u32> = Cluster::new([endpoint("a", 1)]);
    c.set_ready(0, info(4, true));
    // Leaves, comes back before it was freed: same slot, still connected and Ready.
    c.set_members(&[]);
    let change = c.set_members(&[endpoint("a", 1)]);
    assert_eq!(change.rejoined, vec![0]);
    assert!(change.joined.is_empty());
    assert_eq!(c.usable_count(), 1);
    assert!(!c.reclaim(0), "a listed node is never freed");
    // Leaves and is freed; coming back later it joins anew (Connecting), in the freed slot.
    c.set_members(&[]);
    assert!(c.reclaim(0));
    let change = c.set_members(&[endpoint("a", 1)]);
    assert_eq!(change.joined, vec![0]);
    assert_eq!(c.state(0), glimpse_transport::NodeState::Connecting);
    // Duplicates count once; listing the same set again changes nothing.
    assert!(
        c.set_members(&[endpoint("a", 1), endpoint("a", 1)])
            .is_empty()
    );
    // The same address under another name is another node.
    let change = c.set_members(&[endpoint("other", 1)]);
    assert_eq!((change.joined.len(), change.removed), (1, vec![0]));
    // Churn: a thousand rounds of one node replaced by another never grows the slots past
    // what is listed and leaving at once.
    let mut c: Cluster<u32> = Cluster::new([]);
    for round in 0..1000u16 {
        let change = c.set_members(&[endpoint("n", round)]);
        for i in change.removed {
            assert!(c.reclaim(i));
        }
    }
    assert!(c.slots() <= 2, "{} slots", c.slots());
    assert_eq!(c.len(), 1);
}
