//! A node that resets every stream: its images are answered by the others and the resets are
//! counted in the dispatcher's stats.
//!
//! The transport's `Handler` can only answer or return a typed error, so a node that resets
//! streams cannot be built from glimpse-node; this test runs a misbehaving node in-process from
//! glimpse-transport's public pieces (its TLS/QUIC config and control-stream codec): it
//! completes the mutual-TLS handshake, announces itself like a real node, reports load, and
//! then answers every request stream with RESET_STREAM + STOP_SENDING. The other two nodes are
//! real `glimpse-node` processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Cluster, LOCALHOST, NodeProc, expected_indices, image, localhost_any_port};
use glimpse_transport::codec::{ControlMessage, encode_control};
use glimpse_transport::config::{bind_endpoint, node_quinn_config, node_tls_config};
use glimpse_transport::{LoadReport, NodeInfo, StreamCode, TransportTuning};

use crate::common;

/// Starts the resetting node; returns its address and the count of streams it reset.
fn start_resetting_node(cluster: &Cluster, name: &str) -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let issued = cluster
        .ca
        .issue_node(name, &[LOCALHOST])
        .expect("node cert");
    let tls = node_tls_config(
        issued.cert_chain().expect("chain"),
        issued.private_key().expect("key"),
        &[cluster.ca.cert_der()],
    )
    .expect("tls");
    let tuning = TransportTuning::default();
    let server = node_quinn_config(tls, &tuning, 32).expect("quinn config");
    let endpoint = bind_endpoint(localhost_any_port(), Some(server), &tuning).expect("bind");
    let addr = endpoint.local_addr().expect("addr");
    let resets = Arc::new(AtomicU64::new(0));
    let info = NodeInfo {
        node_id: name.to_string(),
        model: "synthetic".into(),
        weights: "none".into(),
        trained: false,
        synthetic: true,
        backend: "synthetic".into(),
        capacity: 32,
        max_batch: 1,
        max_batch_wait_ms: 0,
        version: "test".into(),
        load_interval_ms: None,
        acks: false,
    };
    let counter = resets.clone();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let info = info.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let control = {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        let Ok(mut send) = conn.open_uni().await else {
                            return;
                        };
                        let Ok(hello) = encode_control(&ControlMessage::Hello(info)) else {
                            return;
                        };
                        if send.write_all(&hello).await.is_err() {
                            return;
                        }
                        loop {
                            tokio::time::sleep(Duration::from_millis(250)).await;
                            let Ok(load) =
                                encode_control(&ControlMessage::Load(LoadReport::default()))
                            else {
                                return;
                            };
                            if send.write_all(&load).await.is_err() {
                                return;
                            }
                        }
                    })
                };
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    // Wait for the request to start arriving, so the reset hits a live request.
                    let mut buf = [0u8; 1];
                    let _ = recv.read(&mut buf).await;
                    let _ = send.reset(StreamCode::Internal.varint());
                    let _ = recv.stop(StreamCode::Internal.varint());
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                control.abort();
            });
        }
    });
    (addr, resets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_resetting_every_stream_is_routed_around_and_counted() {
    let cluster = Cluster::new();
    let (rogue_addr, rogue_resets) = start_resetting_node(&cluster, "rogue");
    let a = NodeProc::spawn(&cluster, "a", localhost_any_port(), 5, &[]);
    let b = NodeProc::spawn(&cluster, "b", localhost_any_port(), 5, &[]);
    let d = cluster.dispatcher(&[("rogue", rogue_addr), ("a", a.addr), ("b", b.addr)]);
    assert!(
        d.wait_ready(3, Duration::from_secs(60)).await,
        "{:?}",
        d.nodes()
    );

    let mut tasks = Vec::new();
    for i in 0..60 {
        let d = d.clone();
        tasks.push(tokio::spawn(async move {
            (i, d.classify(image(i), 5, |_| {}).await)
        }));
    }
    for t in tasks {
        let (i, r) = tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("in time")
            .expect("task");
        let c = r.unwrap_or_else(|e| panic!("image {i} failed: {e:?}"));
        assert_ne!(c.node, "rogue");
        let got: Vec<u32> = c.answer.top.iter().map(|l| l.index).collect();
        assert_eq!(got, expected_indices(&image(i), 5));
    }
    let stats = d.stats();
    let reset = rogue_resets.load(Ordering::SeqCst);
    assert!(reset >= 1, "the rogue node was never tried");
    assert!(stats.resets >= 1, "resets not counted: {stats:?}");
    assert!(
        stats.resets <= reset,
        "more resets counted than sent: {stats:?} vs {reset}"
    );
    assert_eq!(stats.succeeded, 60);
}
