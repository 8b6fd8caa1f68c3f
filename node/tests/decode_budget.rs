//! The decode budget with real GoogLeNet nodes (random weights) inside this process: big
//! decodes wait for each other, an image that could never fit is refused at once and not
//! retried elsewhere, and a decode keeps its budget until it really ends even when its
//! request is cancelled mid-decode.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use common::{Cluster, gif, gif_bomb, localhost_any_port, stop_nodes};
use glimpse_model::{Backend, Classifier};
use glimpse_node::{ModelSpec, NodeConfig, shutdown_channel, start_node};
use glimpse_transport::client::{self, StartedSignal};
use glimpse_transport::codec::RequestHeader;
use glimpse_transport::{DispatchError, InferenceError};

use crate::common;

const LONG: Duration = Duration::from_secs(60);

fn classifier() -> Arc<Classifier> {
    let weights = "random".parse().expect("weights");
    Arc::new(Classifier::load(&weights, Backend::default()).expect("random weights"))
}

fn node_config(cluster: &Cluster, name: &str, model: Arc<Classifier>, budget: u64) -> NodeConfig {
    let mut config = cluster.in_process_config(name, ModelSpec::Loaded(model));
    config.decode_budget_bytes = budget;
    config
}

/// What one decode of `image` reserves on a node with `config` (its probe, in KiB units).
fn reservation(config: &NodeConfig, image: &[u8]) -> u64 {
    let info = glimpse_model::probe(image, &config.decode_limits()).expect("probe");
    info.decode_bytes.div_ceil(1024) * 1024
}

/// A budget that holds one 8000×4000 GIF canvas (~132 MB) but not two: three such images
/// sent at once all decode and are answered, one after the other, and the budget in use
/// never held two at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_decodes_wait_for_the_budget_one_after_the_other() {
    let cluster = Cluster::new();
    let (trigger, shutdown) = shutdown_channel();
    let image = gif(8000, 4000, (0, 0, 1, 1));
    let config = node_config(&cluster, "g", classifier(), 200 << 20);
    let one = reservation(&config, &image);
    assert!(one > 128_000_000 && 2 * one > config.decode_budget_bytes && one < 200 << 20);
    let node = start_node(config, shutdown.wait()).await.expect("start");
    let d = cluster.dispatcher(&[("g", node.addr())]);
    assert!(d.wait_ready(1, LONG).await);
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let (d, image) = (d.clone(), image.clone());
        tasks.push(tokio::spawn(
            async move { d.classify(image, 5, |_| {}).await },
        ));
    }
    for t in tasks {
        let c = t
            .await
            .expect("task")
            .expect("a GIF within the budget is answered");
        assert_eq!(c.answer.top.len(), 5);
    }
    let stats = node.stats();
    assert_eq!(stats.decoded, 3, "{stats:?}");
    assert_eq!(
        stats.decode_budget_peak_bytes, one,
        "never two at once: {stats:?}"
    );
    assert_eq!(stats.decode_budget_in_use_bytes, 0, "{stats:?}");
    assert_eq!(d.stats().retries, 0, "{:?}", d.stats());
    stop_nodes(trigger, vec![node]).await;
}

/// With a 100 MiB budget (pixel cap 26 Mpx): the 16000×4000 GIF is refused by the pixel
/// cap, and a 5000×4000 GIF whose frame does not fill the canvas (decoded through a second,
/// frame-sized buffer: ~180 MB) by the budget check. Both at once, without queueing, and
/// neither is tried on the second node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_that_cannot_fit_the_budget_is_too_large_at_once_and_not_retried() {
    let cluster = Cluster::new();
    let (trigger, shutdown) = shutdown_channel();
    let model = classifier();
    let mut nodes = Vec::new();
    for name in ["p", "q"] {
        let config = node_config(&cluster, name, model.clone(), 100 << 20);
        nodes.push(
            start_node(config, shutdown.clone().wait())
                .await
                .expect("start"),
        );
    }
    let d = cluster.dispatcher(&[("p", nodes[0].addr()), ("q", nodes[1].addr())]);
    assert!(d.wait_ready(2, LONG).await);
    let offset_frame = gif(5000, 4000, (1, 0, 4999, 4000));
    for (image, why) in [
        (gif_bomb(), "26214400 pixels"),
        (
            offset_frame,
            "more than this node's whole decode budget of 100 MiB",
        ),
    ] {
        let t = Instant::now();
        let r = d.classify(image, 5, |_| {}).await;
        match r {
            Err(DispatchError::Rejected(InferenceError::TooLarge(m))) => {
                assert!(m.contains(why), "{m}")
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(t.elapsed() < Duration::from_secs(10), "refused, not queued");
    }
    let stats = d.stats();
    assert_eq!(
        (stats.attempts, stats.retries, stats.rejected),
        (2, 0, 2),
        "{stats:?}"
    );
    let failed: u64 = nodes.iter().map(|n| n.stats().failed).sum();
    let decoded: u64 = nodes.iter().map(|n| n.stats().decoded).sum();
    let peak: u64 = nodes
        .iter()
        .map(|n| n.stats().decode_budget_peak_bytes)
        .sum();
    assert_eq!((failed, decoded, peak), (2, 0, 0));
    stop_nodes(trigger, nodes).await;
}

/// A request cancelled while its blocking decode runs keeps its budget (and core) until the
/// decode really ends: the budget is never shown free while that decode has not finished,
/// and the next big image starts decoding only after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_request_keeps_its_budget_until_its_decode_ends() {
    let cluster = Cluster::new();
    let (trigger, shutdown) = shutdown_channel();
    let image = gif(8000, 4000, (0, 0, 1, 1));
    let config = node_config(&cluster, "g", classifier(), 200 << 20);
    let one = reservation(&config, &image);
    let node = start_node(config, shutdown.wait()).await.expect("start");

    // A raw front-end connection, so the test controls each stream.
    let client = cluster.ca.issue_client("frontend").expect("client cert");
    let tuning = glimpse_transport::TransportTuning::default();
    let tls = glimpse_transport::config::frontend_tls_config(
        &[cluster.ca.cert_der()],
        client.cert_chain().expect("chain"),
        client.private_key().expect("key"),
    )
    .expect("tls");
    let qcfg = glimpse_transport::config::frontend_quinn_config(tls, &tuning).expect("quinn");
    let ep = glimpse_transport::config::bind_endpoint(localhost_any_port(), None, &tuning)
        .expect("bind");
    let conn = ep
        .connect_with(qcfg, node.addr(), "g")
        .expect("connect")
        .await
        .expect("handshake");

    let send = |id: u64| {
        let notify = Arc::new(tokio::sync::Notify::new());
        let signal = Arc::new(StartedSignal::new(notify.clone()));
        let (conn, image, sig) = (conn.clone(), image.clone(), signal.clone());
        let task = tokio::spawn(async move {
            let header = RequestHeader::new(id, 1, None, 5, image.len() as u64).with_ack(true);
            let sent = AtomicU64::new(0);
            client::request_observed(&conn, &header, image, &sent, Some(&sig)).await
        });
        (task, notify)
    };

    let (first, started) = send(1);
    tokio::time::timeout(LONG, started.notified())
        .await
        .expect("the first decode started");
    // Cancel it mid-decode (its stream is reset), and queue a second image behind it.
    first.abort();
    let (second, second_started) = send(2);
    let mut saw_held_after_cancel = false;
    let deadline = Instant::now() + LONG;
    loop {
        let s = node.stats();
        if s.decoded >= 1 {
            break;
        }
        assert!(
            s.decode_budget_in_use_bytes >= one,
            "budget released before the cancelled decode ended: {s:?}"
        );
        saw_held_after_cancel = true;
        assert!(Instant::now() < deadline, "the first decode never ended");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        saw_held_after_cancel,
        "the decode ended before the cancel was observed"
    );
    tokio::time::timeout(LONG, second_started.notified())
        .await
        .expect("the second decode started");
    assert!(
        node.stats().decoded >= 1,
        "the second decode started before the first ended"
    );
    let answer = tokio::time::timeout(LONG, second)
        .await
        .expect("second answered in time")
        .expect("task")
        .expect("second answered");
    assert_eq!(answer.top.len(), 5);
    let stats = node.stats();
    // The cancelled request was decoded but never answered.
    assert_eq!((stats.decoded, stats.answered), (2, 1), "{stats:?}");
    assert_eq!(stats.decode_budget_peak_bytes, one, "{stats:?}");
    assert_eq!(stats.decode_budget_in_use_bytes, 0, "{stats:?}");
    conn.close(0u32.into(), b"done");
    stop_nodes(trigger, vec![node]).await;
}
