//! Live membership through the real driver: `Dispatcher::set_nodes` with nodes on loopback
//! QUIC. A node that joins takes work; a node that leaves gets no new work, finishes what it
//! holds, and disappears from the list; it can come back; one that holds work too long is
//! cut off after the drain timeout and its images move on.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use glimpse_transport::{Dispatcher, NodeEndpoint};

use crate::common;

fn endpoint(name: &str, addr: std::net::SocketAddr) -> NodeEndpoint {
    NodeEndpoint {
        name: name.into(),
        addr,
    }
}

/// Waits until no node named `name` is listed.
async fn gone(d: &Dispatcher, name: &str) {
    let deadline = Instant::now() + LONG;
    while d.nodes().iter().any(|n| n.name == name) {
        assert!(
            Instant::now() < deadline,
            "{name} still listed: {:?}",
            d.nodes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_finishes_its_work_gets_no_more_and_can_come_back() {
    init_tracing();
    let pki = Pki::new();
    let ha = TestHandler::new("a");
    ha.delay_ms.store(400, Ordering::SeqCst);
    let a = start_node(pki.node_config("a", 64), ha.clone());
    let hb = TestHandler::new("b");
    let b = start_node(pki.node_config("b", 64), hb.clone());
    let d = Dispatcher::start(pki.dispatcher_config(&[("a", a.addr)])).unwrap();
    ready(&d, 1).await;

    let mut early = Vec::new();
    for i in 0..10u8 {
        let d = d.clone();
        early.push(tokio::spawn(async move {
            d.classify(image(i, 100), 5, |_| {}).await
        }));
    }
    let deadline = Instant::now() + LONG;
    while ha.calls.load(Ordering::SeqCst) < 10 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let change = d.set_nodes(&[endpoint("b", b.addr)]);
    assert_eq!(change.removed, vec![endpoint("a", a.addr)]);
    assert_eq!(change.joined, vec![endpoint("b", b.addr)]);
    let status = d.nodes();
    let a_status = status
        .iter()
        .find(|n| n.name == "a")
        .expect("a still listed");
    assert!(a_status.removed, "{status:?}");
    assert_eq!(a_status.in_flight, 10, "a holds its work: {status:?}");

    let mut late = Vec::new();
    for i in 100..110u8 {
        let d = d.clone();
        late.push(tokio::spawn(async move {
            d.classify(image(i, 100), 5, |_| {}).await
        }));
    }
    for h in early {
        let c = h.await.unwrap().expect("answered");
        assert_eq!(c.node, "a", "work held by a leaving node finishes there");
    }
    for h in late {
        let c = h.await.unwrap().expect("answered");
        assert_eq!(c.node, "b", "no new work for a leaving node");
    }
    assert_eq!(ha.calls.load(Ordering::SeqCst), 10);
    assert_eq!(ha.cancelled.load(Ordering::SeqCst), 0);
    gone(&d, "a").await;
    assert_eq!(d.nodes().len(), 1);

    // a comes back: it connects again and takes work.
    let change = d.set_nodes(&[endpoint("a", a.addr), endpoint("b", b.addr)]);
    assert_eq!(change.joined, vec![endpoint("a", a.addr)]);
    ready(&d, 2).await;
    ha.delay_ms.store(0, Ordering::SeqCst);
    hb.delay_ms.store(200, Ordering::SeqCst);
    let mut again = Vec::new();
    for i in 0..20u8 {
        let d = d.clone();
        again.push(tokio::spawn(async move {
            d.classify(image(i, 100), 5, |_| {}).await
        }));
    }
    for h in again {
        h.await.unwrap().expect("answered");
    }
    assert!(ha.calls.load(Ordering::SeqCst) > 10, "a rejoined placement");
    assert!(d.nodes().iter().all(|n| !n.removed));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_held_past_the_drain_timeout_moves_to_another_node() {
    init_tracing();
    let pki = Pki::new();
    let ha = TestHandler::new("a");
    ha.delay_ms.store(20_000, Ordering::SeqCst);
    let a = start_node(pki.node_config("a", 8), ha.clone());
    let hb = TestHandler::new("b");
    let b = start_node(pki.node_config("b", 8), hb.clone());
    let mut config = pki.dispatcher_config(&[("a", a.addr)]);
    config.drain_timeout = Duration::from_millis(300);
    let d = Dispatcher::start(config).unwrap();
    ready(&d, 1).await;
    let request = {
        let d = d.clone();
        tokio::spawn(async move { d.classify(image(1, 100), 5, |_| {}).await })
    };
    let deadline = Instant::now() + LONG;
    while ha.calls.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let removed = Instant::now();
    d.set_nodes(&[endpoint("b", b.addr)]);
    let c = request.await.unwrap().expect("answered");
    assert_eq!(c.node, "b");
    assert_eq!(c.attempts, 2);
    assert!(
        removed.elapsed() < Duration::from_secs(15),
        "moved after the drain timeout, not after a's 20 s"
    );
    gone(&d, "a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_may_start_empty_and_fill_later() {
    init_tracing();
    let pki = Pki::new();
    let ha = TestHandler::new("a");
    let a = start_node(pki.node_config("a", 8), ha.clone());
    let d = Dispatcher::start(pki.dispatcher_config(&[])).unwrap();
    assert!(d.classify(image(1, 100), 5, |_| {}).await.is_err());
    d.set_nodes(&[endpoint("a", a.addr)]);
    ready(&d, 1).await;
    let c = d
        .classify(image(2, 100), 5, |_| {})
        .await
        .expect("answered");
    assert_eq!(c.node, "a");
}
