//! Issue 3's acceptance tests with real `glimpse-node` processes on 127.0.0.1 (UDP), the
//! synthetic model, and glimpse-transport's `Dispatcher` as the front-end in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    Cluster, NodeProc, expected_indices, image, localhost_any_port, wait_in_flight, wait_node_ready,
};
use glimpse_transport::{Classified, DispatchError, Dispatcher, NodeState, Progress};

use crate::common;

const READY: Duration = Duration::from_secs(60);

/// Sends images `range` concurrently; returns each result with its completion time.
async fn classify_all(d: &Dispatcher, range: std::ops::Range<usize>) -> Vec<Answer> {
    let mut tasks = Vec::new();
    for i in range {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let r = d.classify(image(i), 5, |_p: Progress| {}).await;
            (i, r, Instant::now())
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

type Answer = (usize, Result<Classified, DispatchError>, Instant);

/// Awaits every task, each within `limit`.
async fn join_within(tasks: Vec<tokio::task::JoinHandle<Answer>>, limit: Duration) -> Vec<Answer> {
    let mut results = Vec::new();
    for t in tasks {
        results.push(
            tokio::time::timeout(limit, t)
                .await
                .unwrap_or_else(|_| panic!("no answer within {limit:?}"))
                .expect("task"),
        );
    }
    results
}

/// Every result is a success, carries the synthetic answer for its own image, and is marked
/// synthetic. Returns how many each node answered.
fn check_all_answered(results: &[Answer]) -> HashMap<String, usize> {
    let mut per_node = HashMap::new();
    for (i, r, _) in results {
        let c = match r {
            Ok(c) => c,
            Err(e) => panic!("image {i} failed: {e:?}"),
        };
        let got: Vec<u32> = c.answer.top.iter().map(|l| l.index).collect();
        assert_eq!(
            got,
            expected_indices(&image(*i), 5),
            "image {i} got another image's answer"
        );
        assert!(c.answer.synthetic, "answers must be marked synthetic");
        *per_node.entry(c.node.clone()).or_insert(0) += 1;
    }
    per_node
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_streams_in_flight_loses_no_image() {
    let cluster = Cluster::new();
    let nodes: Vec<NodeProc> = ["a", "b", "c"]
        .iter()
        .map(|n| NodeProc::spawn(&cluster, n, localhost_any_port(), 20, &[]))
        .collect();
    let d = cluster.dispatcher(&[
        ("a", nodes[0].addr),
        ("b", nodes[1].addr),
        ("c", nodes[2].addr),
    ]);
    assert!(d.wait_ready(3, READY).await, "nodes did not become ready");

    let work = {
        let d = d.clone();
        tokio::spawn(async move { classify_all(&d, 0..200).await })
    };
    // Kill b while the dispatcher has streams open on it.
    assert!(
        wait_in_flight(&d, "b", Duration::from_secs(30)).await,
        "b never got work"
    );
    let killed_at = Instant::now();
    nodes[1].signal(libc::SIGKILL);
    let results = tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("200 images within 120 s")
        .expect("task");

    assert_eq!(results.len(), 200);
    let per_node = check_all_answered(&results);
    assert_eq!(
        per_node.values().sum::<usize>(),
        200,
        "each image answered exactly once"
    );
    // Nothing b answered can have completed after it was killed (plus scheduling slack).
    for (i, r, done) in &results {
        if let Ok(c) = r
            && c.node == "b"
        {
            assert!(
                *done < killed_at + Duration::from_millis(500),
                "image {i} answered by b long after it was killed"
            );
        }
    }
    let stats = d.stats();
    assert!(
        stats.retries >= 1,
        "b held streams when killed, so some images must have been retried: {stats:?}"
    );
    assert!(per_node.get("a").copied().unwrap_or(0) > 0);
    assert!(per_node.get("c").copied().unwrap_or(0) > 0);
}

/// A killed node's in-flight images move on as soon as its heartbeat (the load reports on its
/// control stream) stops, before QUIC's idle timeout (10 s) ends the connection and long
/// before the 60 s attempt timeout: every retry must give the silence as its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_is_noticed_by_its_silence_before_the_connection_times_out() {
    let cluster = Cluster::new();
    let nodes: Vec<NodeProc> = ["a", "b"]
        .iter()
        .map(|n| NodeProc::spawn(&cluster, n, localhost_any_port(), 400, &[]))
        .collect();
    let d = cluster.dispatcher_with(&[("a", nodes[0].addr), ("b", nodes[1].addr)], |c| {
        c.policy.attempt_timeout_cold = Duration::from_secs(60);
        c.policy.attempt_timeout_floor = Duration::from_secs(60);
        c.policy.request_deadline = Duration::from_secs(120);
    });
    assert!(d.wait_ready(2, READY).await, "nodes did not become ready");
    let reasons = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (d, reasons) = (d.clone(), reasons.clone());
        tasks.push(tokio::spawn(async move {
            let r = d
                .classify(image(i), 5, move |p: Progress| {
                    if let Progress::Retrying { reason, .. } = p {
                        reasons.lock().expect("lock").push(reason);
                    }
                })
                .await;
            (i, r, Instant::now())
        }));
    }
    assert!(
        wait_in_flight(&d, "b", Duration::from_secs(30)).await,
        "b never got work"
    );
    nodes[1].signal(libc::SIGKILL);
    // Well before the 60 s attempt timeout.
    let results = join_within(tasks, Duration::from_secs(50)).await;
    let per_node = check_all_answered(&results);
    assert_eq!(per_node.values().sum::<usize>(), 16);
    let stats = d.stats();
    assert!(stats.silences >= 1, "b's silence not counted: {stats:?}");
    assert!(stats.retries >= 1, "b held images when killed: {stats:?}");
    assert_eq!(stats.silence_reopens, stats.retries, "{stats:?}");
    let reasons = reasons.lock().expect("lock").clone();
    assert_eq!(reasons.len() as u64, stats.retries);
    for r in &reasons {
        assert!(
            r.starts_with("b: node went silent"),
            "an image was retried for another reason than b's silence: {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_node_is_bypassed_and_used_again_after_sigcont() {
    let cluster = Cluster::new();
    let nodes: Vec<NodeProc> = ["a", "b", "c"]
        .iter()
        .map(|n| NodeProc::spawn(&cluster, n, localhost_any_port(), 20, &[]))
        .collect();
    let d = cluster.dispatcher(&[
        ("a", nodes[0].addr),
        ("b", nodes[1].addr),
        ("c", nodes[2].addr),
    ]);
    assert!(d.wait_ready(3, READY).await);

    let work = {
        let d = d.clone();
        tokio::spawn(async move { classify_all(&d, 0..90).await })
    };
    assert!(wait_in_flight(&d, "c", Duration::from_secs(30)).await);
    nodes[2].signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    let results = tokio::time::timeout(Duration::from_secs(120), work)
        .await
        .expect("answers while c is stopped")
        .expect("task");
    let per_node = check_all_answered(&results);
    assert_eq!(per_node.values().sum::<usize>(), 90);
    for (i, r, done) in &results {
        if let Ok(c) = r
            && c.node == "c"
        {
            assert!(
                *done < stopped_at + Duration::from_millis(500),
                "image {i} answered by a stopped node"
            );
        }
    }

    nodes[2].signal(libc::SIGCONT);
    assert!(
        takes_work_again(&d, "c", 1000, 30).await,
        "c never took work after SIGCONT: {:?}",
        d.nodes()
    );
}

/// Waits for `node` to be reconnected, then sends rounds of `batch` images (ids from `first`)
/// until it answers some; false if either does not happen within a minute.
async fn takes_work_again(d: &Dispatcher, node: &str, first: usize, batch: usize) -> bool {
    if !wait_node_ready(d, node, Duration::from_secs(60)).await {
        return false;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = first;
    while Instant::now() < deadline {
        let results = classify_all(d, next..next + batch).await;
        next += batch;
        if check_all_answered(&results).get(node).copied().unwrap_or(0) > 0 {
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_restarted_on_same_address_is_used_again() {
    let cluster = Cluster::new();
    let mut a = NodeProc::spawn(&cluster, "a", localhost_any_port(), 5, &[]);
    let b = NodeProc::spawn(&cluster, "b", localhost_any_port(), 5, &[]);
    let a_addr = a.addr;
    let d = cluster.dispatcher(&[("a", a_addr), ("b", b.addr)]);
    assert!(d.wait_ready(2, READY).await);
    let before = check_all_answered(&classify_all(&d, 0..40).await);
    assert!(before.get("a").copied().unwrap_or(0) > 0);

    a.kill();
    // While a is down, b answers everything.
    let during = check_all_answered(&classify_all(&d, 100..120).await);
    assert_eq!(during.get("b").copied(), Some(20), "{during:?}");

    let _a2 = NodeProc::spawn(&cluster, "a", a_addr, 5, &[]);
    assert!(
        takes_work_again(&d, "a", 200, 20).await,
        "restarted a never reconnected or used: {:?}",
        d.nodes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_work_and_exits_zero() {
    let cluster = Cluster::new();
    // Slow service so a has a queue of work when the signal arrives.
    let mut a = NodeProc::spawn(
        &cluster,
        "a",
        localhost_any_port(),
        200,
        &["--capacity", "4"],
    );
    let b = NodeProc::spawn(
        &cluster,
        "b",
        localhost_any_port(),
        200,
        &["--capacity", "4"],
    );
    let d = cluster.dispatcher(&[("a", a.addr), ("b", b.addr)]);
    assert!(d.wait_ready(2, READY).await);

    let mut tasks = Vec::new();
    for i in 0..16 {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            let r = d.classify(image(i), 5, |_| {}).await;
            (i, r, Instant::now())
        }));
    }
    assert!(wait_in_flight(&d, "a", Duration::from_secs(30)).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    a.signal(libc::SIGTERM);
    let signalled = Instant::now();

    // Once a has announced draining, new work goes elsewhere.
    let announce_deadline = Instant::now() + Duration::from_secs(30);
    while !d
        .nodes()
        .iter()
        .any(|n| n.name == "a" && matches!(n.state, NodeState::Draining | NodeState::Down))
    {
        assert!(
            Instant::now() < announce_deadline,
            "a never announced draining"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let later = classify_all(&d, 500..510).await;
    let later_nodes = check_all_answered(&later);
    assert_eq!(later_nodes.get("b").copied(), Some(10), "{later_nodes:?}");

    let results = join_within(tasks, Duration::from_secs(120)).await;
    let per_node = check_all_answered(&results);
    assert_eq!(per_node.values().sum::<usize>(), 16);
    // a finished work it held when the signal came, rather than dropping it.
    let a_after_signal = results
        .iter()
        .filter(|(_, r, done)| matches!(r, Ok(c) if c.node == "a") && *done > signalled)
        .count();
    assert!(
        a_after_signal >= 1,
        "a answered nothing after SIGTERM; per node {per_node:?}; log:\n{}",
        a.log_text()
    );
    let status = a.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "log:\n{}", a.log_text());
    assert!(a.log_text().contains("draining"), "drain not announced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_rate_one_kills_the_node_and_others_answer() {
    let cluster = Cluster::new();
    let mut a = NodeProc::spawn(
        &cluster,
        "a",
        localhost_any_port(),
        5,
        &["--fail-rate", "1", "--seed", "1"],
    );
    let b = NodeProc::spawn(&cluster, "b", localhost_any_port(), 5, &[]);
    let d = cluster.dispatcher(&[("a", a.addr), ("b", b.addr)]);
    assert!(d.wait_ready(2, READY).await);
    let results = tokio::time::timeout(Duration::from_secs(120), classify_all(&d, 0..30))
        .await
        .expect("in time");
    let per_node = check_all_answered(&results);
    assert_eq!(per_node.get("b").copied(), Some(30), "{per_node:?}");
    let status = a.wait_exit(Duration::from_secs(30));
    assert_eq!(
        status.code(),
        Some(glimpse_node::FAULT_EXIT_CODE),
        "log:\n{}",
        a.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stall_rate_one_node_is_bypassed_by_timeouts() {
    let cluster = Cluster::new();
    let a = NodeProc::spawn(
        &cluster,
        "a",
        localhost_any_port(),
        5,
        &["--stall-rate", "1", "--seed", "1"],
    );
    let b = NodeProc::spawn(&cluster, "b", localhost_any_port(), 5, &[]);
    let d = cluster.dispatcher(&[("a", a.addr), ("b", b.addr)]);
    assert!(d.wait_ready(2, READY).await);
    let results = tokio::time::timeout(Duration::from_secs(120), classify_all(&d, 0..20))
        .await
        .expect("in time");
    let per_node = check_all_answered(&results);
    assert_eq!(per_node.get("b").copied(), Some(20), "{per_node:?}");
}
