//! The library API (`start_node`) as `glimpse --local-workers N` uses it: nodes inside this
//! process, certificates from the in-memory CA, the dispatcher as front-end.

use std::time::Duration;

use common::{Cluster, expected_indices, image, stop_nodes};
use glimpse_node::{ModelSpec, shutdown_channel, start_node};
use glimpse_transport::{DispatchError, InferenceError};

use crate::common;

fn jpeg_bytes() -> bytes::Bytes {
    let img = image::RgbImage::from_fn(300, 200, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("encode jpeg");
    bytes::Bytes::from(out.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn synthetic_nodes_in_process_serve_announce_and_drain() {
    let cluster = Cluster::new();
    let (trigger, shutdown) = shutdown_channel();
    let mut nodes = Vec::new();
    for name in ["p", "q"] {
        let config = cluster.in_process_config(
            name,
            ModelSpec::Synthetic {
                service: Duration::from_millis(2),
            },
        );
        nodes.push(
            start_node(config, shutdown.clone().wait())
                .await
                .expect("start"),
        );
    }
    assert!(nodes[0].info().synthetic && !nodes[0].info().trained);
    let d = cluster.dispatcher(&[("p", nodes[0].addr()), ("q", nodes[1].addr())]);
    assert!(d.wait_ready(2, Duration::from_secs(60)).await);
    // What each node announced reaches the front-end.
    for status in d.nodes() {
        let info = status.info.expect("announced");
        assert!(info.synthetic);
        assert_eq!(info.node_id, status.name);
        assert_eq!(info.capacity, glimpse_node::config::DEFAULT_CAPACITY);
    }
    for i in 0..20 {
        let c = d.classify(image(i), 7, |_| {}).await.expect("classified");
        let got: Vec<u32> = c.answer.top.iter().map(|l| l.index).collect();
        assert_eq!(got, expected_indices(&image(i), 7));
        assert!(c.answer.synthetic);
    }
    let answered: u64 = nodes.iter().map(|n| n.stats().answered).sum();
    assert_eq!(answered, 20);

    stop_nodes(trigger, nodes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn googlenet_node_decodes_classifies_and_rejects_bad_images() {
    let cluster = Cluster::new();
    let (trigger, shutdown) = shutdown_channel();
    let mut config = cluster.in_process_config(
        "g",
        ModelSpec::GoogLeNet {
            weights: "random".parse().expect("weights"),
            backend: glimpse_model::Backend::default(),
        },
    );
    config.max_batch = 4;
    let node = start_node(config, shutdown.wait()).await.expect("start");
    assert!(!node.info().synthetic);
    assert!(
        !node.info().trained,
        "random weights are announced as untrained"
    );
    let d = cluster.dispatcher(&[("g", node.addr())]);
    assert!(d.wait_ready(1, Duration::from_secs(60)).await);

    let jpeg = jpeg_bytes();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let d = d.clone();
        let jpeg = jpeg.clone();
        tasks.push(tokio::spawn(
            async move { d.classify(jpeg, 5, |_| {}).await },
        ));
    }
    let mut first: Option<Vec<u32>> = None;
    for t in tasks {
        let c = t.await.expect("task").expect("classified");
        assert!(!c.answer.synthetic);
        assert_eq!(c.answer.top.len(), 5);
        let t = &c.answer.timings;
        assert!(
            t.decode_ms > 0.0 && t.preprocess_ms > 0.0 && t.infer_ms > 0.0,
            "{t:?}"
        );
        let idx: Vec<u32> = c.answer.top.iter().map(|l| l.index).collect();
        // Same image, same weights: same labels whichever batch it landed in.
        match &first {
            None => first = Some(idx),
            Some(f) => assert_eq!(f, &idx),
        }
    }

    let bad = d
        .classify(
            bytes::Bytes::from_static(b"definitely not an image"),
            5,
            |_| {},
        )
        .await;
    assert!(
        matches!(
            bad,
            Err(DispatchError::Rejected(InferenceError::BadImage(_)))
        ),
        "{bad:?}"
    );
    stop_nodes(trigger, vec![node]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_beyond_capacity_answers_overloaded() {
    // Each front-end holds itself to `capacity` requests per node; a second front-end can
    // still exceed the node's total, and the node must refuse rather than queue without bound.
    let cluster = Cluster::new();
    let (trigger, shutdown) = shutdown_channel();
    let mut config = cluster.in_process_config(
        "solo",
        ModelSpec::Synthetic {
            service: Duration::from_millis(1500),
        },
    );
    config.capacity = 1;
    let node = start_node(config, shutdown.wait()).await.expect("start");
    let d1 = cluster.dispatcher(&[("solo", node.addr())]);
    // Expected-finish placement sees the other front-end's load in the node's reports and
    // would wait rather than send; a front-end blind to it (the older rule) must still be
    // refused by the node itself.
    let d2 = cluster.dispatcher_with(&[("solo", node.addr())], |c| {
        c.policy.placement = glimpse_transport::dispatcher::Placement::LeastOutstanding;
    });
    assert!(d1.wait_ready(1, Duration::from_secs(60)).await);
    assert!(d2.wait_ready(1, Duration::from_secs(60)).await);

    let busy = {
        let d1 = d1.clone();
        tokio::spawn(async move { d1.classify(image(1), 5, |_| {}).await })
    };
    // Wait until the node holds the first image, then offer a second through d2.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while d1.nodes().iter().all(|n| n.in_flight == 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "first image never sent"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = d2.classify(image(2), 5, |_| {}).await;
    assert!(
        node.stats().overloaded >= 1,
        "{:?} / {second:?}",
        node.stats()
    );
    let first = busy.await.expect("task").expect("first image answered");
    assert_eq!(first.node, "solo");
    stop_nodes(trigger, vec![node]).await;
}
