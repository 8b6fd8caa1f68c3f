//! Dispatcher behaviour against real QUIC node servers on 127.0.0.1.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use glimpse_transport::{DispatchError, InferenceError, NodeState, Progress};

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_returns_the_nodes_answer_and_reports_status() {
    init_tracing();
    let pki = Pki::new();
    let h = TestHandler::new("a");
    let node = start_node(pki.node_config("a", 8), h.clone());
    let d =
        glimpse_transport::Dispatcher::start(pki.dispatcher_config(&[("a", node.addr)])).unwrap();
    ready(&d, 1).await;

    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    let img = image(3, 5000);
    let got = d
        .classify(img.clone(), 5, move |p| ev.lock().unwrap().push(p))
        .await
        .unwrap();
    assert_eq!(got.node, "a");
    assert_eq!(got.attempts, 1);
    assert_eq!(got.answer.top[0].index, checksum(&img));
    assert!(got.answer.synthetic);
    assert_eq!(
        events.lock().unwrap().as_slice(),
        &[Progress::Sent {
            node: "a".into(),
            attempt: 1
        }]
    );

    let status = &d.nodes()[0];
    assert_eq!(status.state, NodeState::Ready);
    assert_eq!(status.info.as_ref().unwrap().node_id, "a");
    assert_eq!(status.served, 1);
    assert!(status.p50_ms.is_some());
    let stats = d.stats();
    assert_eq!((stats.requests, stats.succeeded, stats.attempts), (1, 1, 1));
    assert!(stats.bytes_sent >= 5000);

    // Load reports arrive on the control stream.
    let deadline = Instant::now() + LONG;
    while d.nodes()[0].load.is_none() {
        assert!(Instant::now() < deadline, "no load report");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    node.drain().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_image_is_rejected_without_retry() {
    init_tracing();
    let pki = Pki::new();
    let a = start_node(
        pki.node_config("a", 8),
        TestHandler::failing("a", InferenceError::BadImage("nope".into())),
    );
    let hb = TestHandler::new("b");
    let b = start_node(pki.node_config("b", 8), hb.clone());
    let d = glimpse_transport::Dispatcher::start(
        pki.dispatcher_config(&[("a", a.addr), ("b", b.addr)]),
    )
    .unwrap();
    ready(&d, 2).await;
    let mut rejected = 0;
    for i in 0..10 {
        match d.classify(image(i, 100), 5, |_| {}).await {
            Err(DispatchError::Rejected(InferenceError::BadImage(m))) => {
                assert_eq!(m, "nope");
                rejected += 1;
            }
            Ok(c) => assert_eq!(c.node, "b"),
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(d.stats().retries, 0, "a bad image must not be retried");
    assert_eq!(d.stats().rejected, rejected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overloaded_node_is_retried_on_another() {
    init_tracing();
    let pki = Pki::new();
    let ha = TestHandler::failing("a", InferenceError::Overloaded);
    let a = start_node(pki.node_config("a", 8), ha.clone());
    let hb = TestHandler::new("b");
    let b = start_node(pki.node_config("b", 8), hb.clone());
    let d = glimpse_transport::Dispatcher::start(
        pki.dispatcher_config(&[("a", a.addr), ("b", b.addr)]),
    )
    .unwrap();
    ready(&d, 2).await;
    for i in 0..30u8 {
        let img = image(i, 300);
        let got = d.classify(img.clone(), 5, |_| {}).await.unwrap();
        assert_eq!(got.node, "b");
        assert_eq!(got.answer.top[0].index, checksum(&img));
    }
    let stats = d.stats();
    // Each first try picks a or b at random: 30 tries all avoiding a has probability 2^-30.
    assert!(ha.calls.load(Ordering::SeqCst) > 0);
    assert_eq!(stats.retryable_errors, ha.calls.load(Ordering::SeqCst));
    assert_eq!(stats.retries, stats.retryable_errors);
    assert_eq!(stats.succeeded, 30);
}

/// A node that accepts the connection, says hello, and resets every request stream.
async fn resetting_node(
    pki: &Pki,
    name: &str,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use glimpse_transport::codec::{ControlMessage, encode_control};
    let (ep, addr) = pki.raw_node_endpoint(name);
    let name = name.to_string();
    let task = tokio::spawn(async move {
        while let Some(inc) = ep.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                let Ok(mut ctl) = conn.open_uni().await else {
                    return;
                };
                let hello = encode_control(&ControlMessage::Hello(info(&name, 8))).unwrap();
                if ctl.write_all(&hello).await.is_err() {
                    return;
                }
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let _ = send.reset(glimpse_transport::StreamCode::Internal.varint());
                    let _ = recv.stop(glimpse_transport::StreamCode::Internal.varint());
                }
                drop(ctl);
            });
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resetting_node_is_bypassed_and_resets_are_counted() {
    init_tracing();
    let pki = Pki::new();
    let (bad, _task) = resetting_node(&pki, "bad").await;
    let hb = TestHandler::new("b");
    let b = start_node(pki.node_config("b", 8), hb.clone());
    let d =
        glimpse_transport::Dispatcher::start(pki.dispatcher_config(&[("bad", bad), ("b", b.addr)]))
            .unwrap();
    ready(&d, 2).await;
    let mut handles = Vec::new();
    for i in 0..40u8 {
        let d = d.clone();
        handles.push(tokio::spawn(async move {
            d.classify(image(i, 200), 5, |_| {}).await
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap().unwrap().node, "b");
    }
    let stats = d.stats();
    assert!(stats.resets > 0, "{stats:?}");
    assert_eq!(stats.retries, stats.resets);
    assert_eq!(hb.completed.load(Ordering::SeqCst), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_mid_request_every_request_answered_exactly_once() {
    init_tracing();
    let pki = Pki::new();
    // a holds every request for 300 ms, so it has streams in flight when killed.
    let ha = TestHandler::with_delay("a", 300);
    let mut a = KillableNode::start(pki.node_config("a", 64), ha.clone());
    let hb = TestHandler::with_delay("b", 5);
    let b = start_node(pki.node_config("b", 64), hb.clone());
    let hc = TestHandler::with_delay("c", 5);
    let c = start_node(pki.node_config("c", 64), hc.clone());
    let d = glimpse_transport::Dispatcher::start(pki.dispatcher_config(&[
        ("a", a.addr),
        ("b", b.addr),
        ("c", c.addr),
    ]))
    .unwrap();
    ready(&d, 3).await;

    let n = 60u8;
    let mut handles = Vec::new();
    for i in 0..n {
        let d = d.clone();
        handles.push(tokio::spawn(async move {
            let img = image(i, 1000);
            let r = d.classify(img.clone(), 5, |_| {}).await;
            (checksum(&img), r)
        }));
    }
    // Kill a once it holds in-flight work.
    let deadline = Instant::now() + LONG;
    while ha.calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "a never got work");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    let mut answered = 0;
    for h in handles {
        let (sum, r) = h.await.unwrap();
        let got = r.unwrap_or_else(|e| panic!("request failed: {e}"));
        assert_eq!(got.answer.top[0].index, sum, "answer for the wrong image");
        answered += 1;
    }
    assert_eq!(answered, n as usize);
    let stats = d.stats();
    assert_eq!(stats.succeeded, u64::from(n));
    assert_eq!(stats.requests, u64::from(n));
    assert!(stats.retries >= 1, "{stats:?}");
    // The dead node is noticed (silent after ~0.5 s without a heartbeat), not after the 10 s
    // idle timeout.
    let deadline = Instant::now() + Duration::from_secs(5);
    while d.nodes()[0].state == NodeState::Ready && !d.nodes()[0].silent {
        assert!(
            Instant::now() < deadline,
            "dead node still Ready and not silent"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_node_finishes_in_flight_and_new_work_goes_elsewhere() {
    init_tracing();
    let pki = Pki::new();
    let ha = TestHandler::with_delay("a", 400);
    let a = start_node(pki.node_config("a", 64), ha.clone());
    let hb = TestHandler::new("b");
    let b = start_node(pki.node_config("b", 64), hb.clone());
    let d = glimpse_transport::Dispatcher::start(
        pki.dispatcher_config(&[("a", a.addr), ("b", b.addr)]),
    )
    .unwrap();
    ready(&d, 2).await;
    let mut handles = Vec::new();
    for i in 0..20u8 {
        let d = d.clone();
        handles.push(tokio::spawn(async move {
            d.classify(image(i, 100), 5, |_| {}).await
        }));
    }
    let deadline = Instant::now() + LONG;
    while ha.calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain = tokio::spawn(a.drain());
    // Work sent after the drain began goes to b.
    let mut late = Vec::new();
    for i in 100..120u8 {
        let d = d.clone();
        late.push(tokio::spawn(async move {
            d.classify(image(i, 100), 5, |_| {}).await
        }));
    }
    for h in handles.into_iter().chain(late) {
        h.await.unwrap().unwrap();
    }
    drain.await.unwrap().unwrap();
    // Everything a started, it finished (none cancelled by the drain).
    assert_eq!(ha.cancelled.load(Ordering::SeqCst), 0);
    assert_eq!(
        ha.completed.load(Ordering::SeqCst),
        ha.calls.load(Ordering::SeqCst)
    );
    assert_eq!(d.stats().succeeded, 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_a_node_to_come_back_and_reconnects_after_restart() {
    init_tracing();
    let pki = Pki::new();
    // Reserve a port, then leave it free: the node is "down" at first.
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let d = glimpse_transport::Dispatcher::start(pki.dispatcher_config(&[("a", addr)])).unwrap();
    let pending = {
        let d = d.clone();
        tokio::spawn(async move { d.classify(image(1, 100), 5, |_| {}).await })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !pending.is_finished(),
        "must wait for a node, not fail at once"
    );
    let mut cfg = pki.node_config("a", 8);
    cfg.listen = addr;
    let node = start_node(cfg.clone(), TestHandler::new("a"));
    assert_eq!(pending.await.unwrap().unwrap().node, "a");

    // Restart on the same address: reconnected and used again.
    node.drain().await.unwrap();
    let deadline = Instant::now() + LONG;
    while d.nodes()[0].state == NodeState::Ready {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let h2 = TestHandler::new("a");
    let _node2 = start_node_on_same_addr(cfg, h2.clone()).await;
    ready(&d, 1).await;
    d.classify(image(2, 100), 5, |_| {}).await.unwrap();
    assert_eq!(h2.completed.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadline_with_no_node_is_a_typed_error() {
    init_tracing();
    let pki = Pki::new();
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = pki.dispatcher_config(&[("a", addr)]);
    cfg.policy.request_deadline = Duration::from_millis(500);
    let d = glimpse_transport::Dispatcher::start(cfg).unwrap();
    assert_eq!(
        d.classify(image(1, 10), 5, |_| {}).await.unwrap_err(),
        DispatchError::NoNodes
    );
    assert_eq!(d.stats().no_nodes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_node_hits_the_attempt_timeout_and_is_retried() {
    init_tracing();
    let pki = Pki::new();
    let ha = TestHandler::new("a");
    ha.stall.store(true, Ordering::SeqCst);
    let a = start_node(pki.node_config("a", 8), ha.clone());
    let b = start_node(pki.node_config("b", 8), TestHandler::new("b"));
    let mut cfg = pki.dispatcher_config(&[("a", a.addr), ("b", b.addr)]);
    cfg.policy.attempt_timeout_cold = Duration::from_millis(700);
    let d = glimpse_transport::Dispatcher::start(cfg).unwrap();
    ready(&d, 2).await;
    for i in 0..10u8 {
        assert_eq!(
            d.classify(image(i, 100), 5, |_| {}).await.unwrap().node,
            "b"
        );
    }
    let stats = d.stats();
    assert!(
        stats.timeouts > 0 && stats.timeouts == ha.calls.load(Ordering::SeqCst),
        "{stats:?}"
    );
    // The stalled handler's work was cancelled on the node when the attempt timed out.
    wait_cancelled(&ha, stats.timeouts, "node work not cancelled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_slower_than_the_attempt_timeout_everywhere_still_arrive() {
    // Like the seed's delay experiment: every node holds every answer longer than the
    // attempt timeout. Reopening elsewhere must not cancel the slow attempts, or no image
    // would ever be answered.
    init_tracing();
    let pki = Pki::new();
    let ha = TestHandler::with_delay("a", 1500);
    let a = start_node(pki.node_config("a", 8), ha.clone());
    let hb = TestHandler::with_delay("b", 1500);
    let b = start_node(pki.node_config("b", 8), hb.clone());
    let mut cfg = pki.dispatcher_config(&[("a", a.addr), ("b", b.addr)]);
    cfg.policy.attempt_timeout_cold = Duration::from_millis(300);
    cfg.policy.max_attempts = 2;
    let d = glimpse_transport::Dispatcher::start(cfg).unwrap();
    ready(&d, 2).await;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..4u8 {
        let d = d.clone();
        set.spawn(async move { d.classify(image(i, 100), 5, |_| {}).await });
    }
    while let Some(r) = set.join_next().await {
        let classified = r.unwrap().expect("a slow answer still arrives");
        assert!(classified.attempts >= 1);
    }
    let stats = d.stats();
    assert_eq!(stats.succeeded, 4, "{stats:?}");
    assert!(stats.timeouts >= 4 && stats.retries >= 4, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_sends_a_second_copy_and_cancels_the_loser() {
    init_tracing();
    let pki = Pki::new();
    let ha = TestHandler::with_delay("a", 1);
    let a = start_node(pki.node_config("a", 64), ha.clone());
    let hb = TestHandler::with_delay("b", 1);
    let b = start_node(pki.node_config("b", 64), hb.clone());
    let mut cfg = pki.dispatcher_config(&[("a", a.addr), ("b", b.addr)]);
    cfg.policy.hedge = true;
    // Without hedging a slow attempt would wait this long before a retry.
    cfg.policy.attempt_timeout_floor = Duration::from_secs(25);
    cfg.policy.attempt_timeout_cold = Duration::from_secs(25);
    let d = glimpse_transport::Dispatcher::start(cfg).unwrap();
    ready(&d, 2).await;
    // Warm up the latency window (hedging needs observed latency).
    for i in 0..40u8 {
        d.classify(image(i, 100), 5, |_| {}).await.unwrap();
    }
    // Now a is very slow.
    ha.delay_ms.store(20_000, Ordering::SeqCst);
    let hedged_events = Arc::new(Mutex::new(HashSet::new()));
    // Each request's first try lands on a with probability 1/2: 16 tries all missing a is 2^-16.
    for i in 0..16u8 {
        let ev = hedged_events.clone();
        let t = Instant::now();
        let got = d
            .classify(image(100 + i, 100), 5, move |p| {
                if let Progress::Hedged { node } = p {
                    ev.lock().unwrap().insert(node);
                }
            })
            .await
            .unwrap();
        assert_eq!(got.node, "b");
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "hedge did not rescue the request"
        );
    }
    let stats = d.stats();
    assert!(stats.hedges > 0 && stats.hedge_wins > 0, "{stats:?}");
    assert!(hedged_events.lock().unwrap().contains("b"));
    // The losing copies on a were cancelled by a stream reset.
    wait_cancelled(
        &ha,
        stats.hedge_wins,
        &format!("loser not cancelled: {stats:?}"),
    )
    .await;
}

/// When every node is busy, waiting images get a node in the order they arrived: a burst on
/// one node that serves one image at a time is served first come, first served, so no image
/// waits behind ones that arrived after it (the tail latency of a saturated cluster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_images_get_a_node_in_arrival_order() {
    init_tracing();
    let pki = Pki::new();
    let h = TestHandler::with_delay("a", 20);
    let node = start_node(pki.node_config("a", 1), h.clone());
    let d =
        glimpse_transport::Dispatcher::start(pki.dispatcher_config(&[("a", node.addr)])).unwrap();
    ready(&d, 1).await;
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            d.classify(image(i, 2000), 5, |_| {}).await
        }));
        // Far shorter than the service time: all but the first wait for the node's credit.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let served: Vec<u64> = h.seen.lock().unwrap().iter().map(|(id, _)| *id).collect();
    let mut sorted = served.clone();
    sorted.sort_unstable();
    assert_eq!(served, sorted, "served out of arrival order");
    node.drain().await.unwrap();
}

/// With BBR chosen on both sides (`--congestion bbr`), images large enough to need many
/// congestion windows still arrive intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bbr_congestion_control_carries_large_images() {
    init_tracing();
    let pki = Pki::new();
    let h = TestHandler::new("a");
    let mut node_cfg = pki.node_config("a", 8);
    node_cfg.tuning.congestion = glimpse_transport::CongestionControl::Bbr;
    let node = start_node(node_cfg, h.clone());
    let mut cfg = pki.dispatcher_config(&[("a", node.addr)]);
    cfg.tuning.congestion = glimpse_transport::CongestionControl::Bbr;
    let d = glimpse_transport::Dispatcher::start(cfg).unwrap();
    ready(&d, 1).await;
    for (seed, len) in [(1u8, 3 * 1024 * 1024), (2, 700), (3, 1024 * 1024)] {
        let img = image(seed, len);
        let got = d.classify(img.clone(), 5, |_| {}).await.unwrap();
        assert_eq!(
            got.answer.top[0].index,
            checksum(&img),
            "image of {len} bytes"
        );
    }
    assert_eq!(h.completed.load(Ordering::SeqCst), 3);
    node.drain().await.unwrap();
}

/// Waits (up to `LONG`) until the handler has seen at least `n` of its calls cancelled.
async fn wait_cancelled(h: &TestHandler, n: u64, why: &str) {
    let deadline = Instant::now() + LONG;
    while h.cancelled.load(Ordering::SeqCst) < n {
        assert!(Instant::now() < deadline, "{why}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Warms the dispatcher's latency window (20+ quick answers), so its attempt timeout is the
/// 500 ms floor rather than the 10 s cold timeout.
async fn warm_up(d: &glimpse_transport::Dispatcher) {
    for i in 0..30u8 {
        d.classify(image(200u8.wrapping_add(i), 100), 5, |_| {})
            .await
            .unwrap();
    }
}

/// Nodes "a" and "b" on test handlers that answer at once, each with capacity 8.
fn two_nodes(pki: &Pki) -> [(Arc<TestHandler>, RunningNode); 2] {
    ["a", "b"].map(|name| {
        let h = TestHandler::new(name);
        let node = start_node(pki.node_config(name, 8), h.clone());
        (h, node)
    })
}

/// A node that says it started, expects 3 s of work and answers after 2 s is left alone by a
/// warm dispatcher (whose attempt timeout is the 500 ms floor): the Started frame moves the
/// attempt's timeout to started + 500 ms + 2 × 3 s. Before Started frames it was reopened
/// on the second node at 500 ms and the image was worked on twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_slow_attempt_is_not_reopened_on_a_warm_dispatcher() {
    init_tracing();
    let pki = Pki::new();
    let [(ha, a), (hb, b)] = two_nodes(&pki);
    let d = glimpse_transport::Dispatcher::start(
        pki.dispatcher_config(&[("a", a.addr), ("b", b.addr)]),
    )
    .unwrap();
    ready(&d, 2).await;
    assert!(d.nodes().iter().all(|n| n.info.as_ref().unwrap().acks));
    warm_up(&d).await;
    let before = d.stats();
    let calls_before = ha.calls.load(Ordering::SeqCst) + hb.calls.load(Ordering::SeqCst);
    for h in [&ha, &hb] {
        h.delay_ms.store(2000, Ordering::SeqCst);
        h.started_expect_ms.store(3000, Ordering::SeqCst);
    }
    let t = Instant::now();
    let got = d.classify(image(1, 100), 5, |_| {}).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(2000));
    assert_eq!(got.attempts, 1, "{:?}", d.stats());
    let after = d.stats();
    assert_eq!(after.attempts - before.attempts, 1, "{after:?}");
    assert_eq!(after.retries, before.retries, "{after:?}");
    assert_eq!(after.timeouts, before.timeouts, "{after:?}");
    assert_eq!(after.unstarted_cancels, 0, "{after:?}");
    // The other node never saw the image.
    let calls = ha.calls.load(Ordering::SeqCst) + hb.calls.load(Ordering::SeqCst);
    assert_eq!(calls - calls_before, 1);
}

/// A request held un-started at one node (waiting in its queue) past the attempt timeout
/// is answered by another node, and the first node sees its stream cancelled (the handler
/// future dropped) without ever starting the work: no image is decoded on two nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstarted_overdue_attempt_moves_and_is_cancelled_where_it_waited() {
    init_tracing();
    let pki = Pki::new();
    let [(ha, a), (hb, b)] = two_nodes(&pki);
    let mut cfg = pki.dispatcher_config(&[("a", a.addr), ("b", b.addr)]);
    cfg.policy.attempt_timeout_cold = Duration::from_millis(400);
    let d = glimpse_transport::Dispatcher::start(cfg).unwrap();
    ready(&d, 2).await;
    ha.hold_unstarted.store(true, Ordering::SeqCst);
    hb.hold_unstarted.store(true, Ordering::SeqCst);
    let task = {
        let d = d.clone();
        tokio::spawn(async move { d.classify(image(9, 100), 5, |_| {}).await })
    };
    // Whichever node got the first attempt holds it; the other one will serve at once.
    let deadline = Instant::now() + LONG;
    let (first, second) = loop {
        if ha.calls.load(Ordering::SeqCst) > 0 {
            break (&ha, &hb);
        }
        if hb.calls.load(Ordering::SeqCst) > 0 {
            break (&hb, &ha);
        }
        assert!(Instant::now() < deadline, "no attempt arrived");
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    second.hold_unstarted.store(false, Ordering::SeqCst);
    let got = task.await.unwrap().unwrap();
    assert_eq!(got.node, second.name);
    assert_eq!(got.attempts, 2);
    wait_cancelled(first, 1, "the waiting attempt was not cancelled").await;
    assert_eq!(
        first.started.load(Ordering::SeqCst),
        0,
        "it must never start"
    );
    assert_eq!(first.completed.load(Ordering::SeqCst), 0);
    assert_eq!(second.completed.load(Ordering::SeqCst), 1);
    let stats = d.stats();
    assert_eq!(
        (
            stats.attempts,
            stats.retries,
            stats.timeouts,
            stats.unstarted_cancels
        ),
        (2, 1, 1, 1),
        "{stats:?}"
    );
    first.hold_unstarted.store(false, Ordering::SeqCst);
}

/// A node that predates Started frames: it ignores the header's `ack`, its Hello has no
/// `acks`, and it answers each image after `delay` with one reply frame, like the old
/// protocol. Counts the streams it answered and those reset before it could.
async fn old_node(
    pki: &Pki,
    name: &str,
    delay: Duration,
) -> (
    std::net::SocketAddr,
    Arc<std::sync::atomic::AtomicU64>,
    Arc<std::sync::atomic::AtomicU64>,
) {
    use glimpse_transport::codec::{
        ControlMessage, MAX_FRAME_BYTES, Reply, decode_request_header, encode_control, encode_reply,
    };
    use glimpse_transport::stream;
    use std::sync::atomic::AtomicU64;
    let (ep, addr) = pki.raw_node_endpoint(name);
    let answered = Arc::new(AtomicU64::new(0));
    let reset = Arc::new(AtomicU64::new(0));
    let (ans, rst) = (answered.clone(), reset.clone());
    let mut hello = info(name, 8);
    hello.load_interval_ms = Some(100);
    tokio::spawn(async move {
        while let Some(inc) = ep.accept().await {
            let (hello, ans, rst) = (hello.clone(), ans.clone(), rst.clone());
            tokio::spawn(async move {
                let Ok(conn) = inc.await else { return };
                let Ok(mut ctl) = conn.open_uni().await else {
                    return;
                };
                let frame = encode_control(&ControlMessage::Hello(hello)).unwrap();
                assert!(!frame.windows(4).any(|w| w == b"acks"));
                if ctl.write_all(&frame).await.is_err() {
                    return;
                }
                // Heartbeat, so the front-end never takes it for silent.
                let beat = conn.clone();
                tokio::spawn(async move {
                    let load = encode_control(&ControlMessage::Load(Default::default())).unwrap();
                    while ctl.write_all(&load).await.is_ok() {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    drop(beat);
                });
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let (ans, rst) = (ans.clone(), rst.clone());
                    tokio::spawn(async move {
                        let Ok(Some(body)) = stream::read_frame(&mut recv, MAX_FRAME_BYTES).await
                        else {
                            return;
                        };
                        let header = decode_request_header(&body).unwrap();
                        let image = recv.read_to_end(64 << 20).await.unwrap();
                        assert_eq!(image.len() as u64, header.image_len);
                        tokio::select! {
                            () = tokio::time::sleep(delay) => {}
                            _ = send.stopped() => {
                                rst.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                        let reply = Reply::Answer(glimpse_transport::InferenceAnswer {
                            top: vec![glimpse_transport::Label {
                                index: checksum(&image),
                                label: "old".into(),
                                probability: 1.0,
                            }],
                            timings: Default::default(),
                            synthetic: true,
                        });
                        if send.write_all(&encode_reply(&reply).unwrap()).await.is_ok() {
                            let _ = send.finish();
                            ans.fetch_add(1, Ordering::SeqCst);
                            let _ = send.stopped().await;
                        }
                    });
                }
            });
        }
    });
    (addr, answered, reset)
}

/// Against nodes that never send Started frames, an overdue attempt is reopened elsewhere
/// *without* being cancelled, exactly as before Started frames existed: the first answer
/// wins, here the first attempt's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_nodes_without_acks_are_reopened_without_cancel_and_first_answer_wins() {
    init_tracing();
    let pki = Pki::new();
    let (a, a_answered, _) = old_node(&pki, "a", Duration::from_millis(1500)).await;
    let (b, b_answered, _) = old_node(&pki, "b", Duration::from_millis(1500)).await;
    let mut cfg = pki.dispatcher_config(&[("a", a), ("b", b)]);
    cfg.policy.attempt_timeout_cold = Duration::from_millis(300);
    cfg.policy.max_attempts = 2;
    let d = glimpse_transport::Dispatcher::start(cfg).unwrap();
    ready(&d, 2).await;
    assert!(d.nodes().iter().all(|n| !n.info.as_ref().unwrap().acks));
    let first = Arc::new(Mutex::new(None));
    let f = first.clone();
    let img = image(5, 300);
    let got = d
        .classify(img.clone(), 5, move |p| {
            if let Progress::Sent { node, attempt: 1 } = p {
                *f.lock().unwrap() = Some(node);
            }
        })
        .await
        .unwrap();
    assert_eq!(got.answer.top[0].index, checksum(&img));
    // The first attempt kept running after the reopen, and its answer won.
    assert_eq!(Some(got.node.clone()), *first.lock().unwrap());
    assert_eq!(got.attempts, 2);
    let stats = d.stats();
    // Both attempts outlived the 300 ms timeout; only the first could be reopened.
    assert_eq!(
        (stats.timeouts, stats.retries, stats.unstarted_cancels),
        (2, 1, 0),
        "{stats:?}"
    );
    let answered = a_answered.load(Ordering::SeqCst) + b_answered.load(Ordering::SeqCst);
    assert!(answered >= 1);
}

/// An image too large for a node is refused as TooLarge and never tried on another node:
/// every node would refuse it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_image_is_rejected_without_retry() {
    init_tracing();
    let pki = Pki::new();
    let ha = TestHandler::failing("a", InferenceError::TooLarge("budget".into()));
    let a = start_node(pki.node_config("a", 8), ha.clone());
    let hb = TestHandler::failing("b", InferenceError::TooLarge("budget".into()));
    let b = start_node(pki.node_config("b", 8), hb.clone());
    let d = glimpse_transport::Dispatcher::start(
        pki.dispatcher_config(&[("a", a.addr), ("b", b.addr)]),
    )
    .unwrap();
    ready(&d, 2).await;
    for i in 0..6u8 {
        let r = d.classify(image(i, 100), 5, |_| {}).await;
        assert_eq!(
            r.unwrap_err(),
            DispatchError::Rejected(InferenceError::TooLarge("budget".into()))
        );
    }
    let stats = d.stats();
    assert_eq!((stats.attempts, stats.retries, stats.rejected), (6, 0, 6));
    assert_eq!(
        ha.calls.load(Ordering::SeqCst) + hb.calls.load(Ordering::SeqCst),
        6
    );
}
