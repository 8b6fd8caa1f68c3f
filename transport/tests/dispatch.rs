//! Dispatcher behaviour against real QUIC node servers on 127.0.0.1.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use glimpse_transport::{DispatchError, InferenceError, NodeState, Progress};

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
    use glimpse_transport::config::{
        TransportTuning, bind_endpoint, node_quinn_config, node_tls_config,
    };
    let ck = pki.ca.issue_node(name, &[]).unwrap();
    let tuning = TransportTuning::default();
    let tls = node_tls_config(
        ck.cert_chain().unwrap(),
        ck.private_key().unwrap(),
        &[pki.ca.cert_der()],
    )
    .unwrap();
    let ep = bind_endpoint(
        "127.0.0.1:0".parse().unwrap(),
        Some(node_quinn_config(tls, &tuning, 8).unwrap()),
        &tuning,
    )
    .unwrap();
    let addr = ep.local_addr().unwrap();
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
    cfg.request_deadline = Duration::from_millis(500);
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
    cfg.attempt_timeout_cold = Duration::from_millis(700);
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
    cfg.attempt_timeout_cold = Duration::from_millis(300);
    cfg.max_attempts = 2;
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
    cfg.hedge = true;
    // Without hedging a slow attempt would wait this long before a retry.
    cfg.attempt_timeout_floor = Duration::from_secs(25);
    cfg.attempt_timeout_cold = Duration::from_secs(25);
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
