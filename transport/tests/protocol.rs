//! Protocol-level behaviour over real QUIC on 127.0.0.1: mutual TLS, per-stream errors, no
//! head-of-line blocking.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use glimpse_certs::ClusterCa;
use glimpse_transport::client::{self, AttemptError};
use glimpse_transport::codec::{
    self, ControlMessage, ErrorKind, MAX_FRAME_BYTES, Reply, RequestHeader, decode_control,
    decode_reply,
};
use glimpse_transport::stream;
use glimpse_transport::{DispatchError, Dispatcher, InferenceError, NodeState};

use crate::common;

async fn read_reply(recv: &mut quinn::RecvStream) -> Reply {
    let body = tokio::time::timeout(LONG, stream::read_frame(recv, MAX_FRAME_BYTES))
        .await
        .expect("reply in time")
        .expect("reply frame")
        .expect("non-empty stream");
    decode_reply(&body).unwrap()
}

/// Send raw bytes on a new stream, then read the node's typed reply.
async fn raw_exchange(conn: &quinn::Connection, bytes: &[u8]) -> Reply {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    // The node may stop the stream early (that is the point): ignore write errors.
    let _ = send.write_all(bytes).await;
    let _ = send.finish();
    read_reply(&mut recv).await
}

fn expect_error(r: Reply, kind: ErrorKind) -> String {
    match r {
        Reply::Error(e) => {
            assert_eq!(e.kind, kind, "{e:?}");
            e.message
        }
        Reply::Answer(a) => panic!("expected {kind:?}, got answer {a:?}"),
        Reply::Started { expect_ms } => {
            panic!("expected {kind:?}, got started ({expect_ms} ms)")
        }
    }
}

/// Accepts the node's control stream and reads its first frame, which must be the Hello.
async fn read_hello(conn: &quinn::Connection) -> (quinn::RecvStream, glimpse_transport::NodeInfo) {
    let mut ctl = conn.accept_uni().await.unwrap();
    let hello = stream::read_frame(&mut ctl, MAX_FRAME_BYTES)
        .await
        .unwrap()
        .unwrap();
    match decode_control(&hello).unwrap() {
        ControlMessage::Hello(info) => (ctl, info),
        other => panic!("expected hello, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_connection_starts_with_the_configured_congestion_window() {
    // Images go one per stream on a mostly idle connection: the sender is application-limited
    // and its window does not grow, so the initial window is what every image gets.
    init_tracing();
    let pki = Pki::new();
    let node = start_node(pki.node_config("a", 4), TestHandler::new("a"));
    let (ep, cfg) = pki.raw_client();
    let conn = raw_connect(&ep, &cfg, node.addr, "a").await.unwrap();
    let configured = glimpse_transport::TransportTuning::default().initial_window;
    assert!(configured >= 256 * 1024);
    assert!(
        conn.stats().path.cwnd >= configured,
        "cwnd {} < configured initial window {configured}",
        conn.stats().path.cwnd
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_announces_itself_on_the_control_stream() {
    init_tracing();
    let pki = Pki::new();
    let node = start_node(pki.node_config("a", 7), TestHandler::new("a"));
    let (ep, cfg) = pki.raw_client();
    let conn = raw_connect(&ep, &cfg, node.addr, "a").await.unwrap();
    assert_eq!(
        conn.handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol),
        Some(glimpse_transport::ALPN.to_vec())
    );
    let (mut ctl, info) = read_hello(&conn).await;
    assert_eq!(info.node_id, "a");
    assert_eq!(info.capacity, 7);
    let load = stream::read_frame(&mut ctl, MAX_FRAME_BYTES)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        decode_control(&load).unwrap(),
        ControlMessage::Load(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_from_another_ca_is_refused() {
    init_tracing();
    let pki = Pki::new();
    let h = TestHandler::new("a");
    let node = start_node(pki.node_config("a", 8), h.clone());
    let rogue = ClusterCa::generate("rogue").unwrap();
    // Trusts the right CA (so the client side is happy) but presents a rogue identity.
    let (ep, cfg) = client_with(&pki.ca, &rogue.issue_client("frontend").unwrap());
    let refused = match raw_connect(&ep, &cfg, node.addr, "a").await {
        Err(e) => e,
        // TLS 1.3: the client may finish first; the node's refusal then closes the connection
        // before any stream or hello.
        Ok(conn) => match tokio::time::timeout(LONG, conn.accept_uni()).await.unwrap() {
            Ok(_) => panic!("node accepted a client certificate from another CA"),
            Err(e) => e.to_string(),
        },
    };
    assert!(
        refused.to_lowercase().contains("certificate")
            || refused.contains("handshake")
            || refused.contains("crypto"),
        "{refused}"
    );
    assert_eq!(h.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_without_certificate_is_refused() {
    init_tracing();
    let pki = Pki::new();
    let node = start_node(pki.node_config("a", 8), TestHandler::new("a"));
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.cert_der()).unwrap();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![glimpse_transport::ALPN.to_vec()];
    let cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap(),
    ));
    let (ep, _) = pki.raw_client();
    let outcome = match raw_connect(&ep, &cfg, node.addr, "a").await {
        Err(e) => Err(e),
        Ok(conn) => tokio::time::timeout(LONG, conn.accept_uni())
            .await
            .unwrap()
            .map(|_| ())
            .map_err(|e| e.to_string()),
    };
    assert!(
        outcome.is_err(),
        "node accepted a client without certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_refuses_node_from_another_ca_or_with_the_wrong_name() {
    init_tracing();
    let pki = Pki::new();
    // Node certificate from another CA (the node itself trusts our front-end).
    let rogue = ClusterCa::generate("rogue").unwrap();
    let ck = rogue
        .issue_node("a", &["127.0.0.1".parse().unwrap()])
        .unwrap();
    let mut cfg = pki.node_config("a", 8);
    cfg.cert_chain = ck.cert_chain().unwrap();
    cfg.key = ck.private_key().unwrap();
    let h_rogue = TestHandler::new("a");
    let rogue_node = start_node(cfg, h_rogue.clone());
    // A genuine node, but the front-end expects a different name.
    let h_named = TestHandler::new("b");
    let named = start_node(pki.node_config("b", 8), h_named.clone());

    let mut dcfg = pki.dispatcher_config(&[("a", rogue_node.addr), ("not-b", named.addr)]);
    dcfg.policy.request_deadline = Duration::from_millis(1500);
    let d = Dispatcher::start(dcfg).unwrap();
    // Let both fail their handshakes at least once.
    let deadline = Instant::now() + LONG;
    while d.nodes().iter().any(|n| n.last_error.is_none()) {
        assert!(Instant::now() < deadline, "{:?}", d.nodes());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for n in d.nodes() {
        assert_ne!(n.state, NodeState::Ready, "{n:?}");
        let err = n.last_error.unwrap();
        assert!(
            err.contains("certificate") || err.contains("Certificate"),
            "{}: {err}",
            n.name
        );
    }
    assert_eq!(
        d.classify(image(1, 10), 5, |_| {}).await.unwrap_err(),
        DispatchError::NoNodes
    );
    assert_eq!(
        h_rogue.calls.load(Ordering::SeqCst) + h_named.calls.load(Ordering::SeqCst),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_streams_get_typed_errors_while_other_streams_complete() {
    init_tracing();
    let pki = Pki::new();
    let mut cfg = pki.node_config("a", 64);
    cfg.max_image_bytes = 1 << 20;
    let h = TestHandler::with_delay("a", 20);
    let node = start_node(cfg, h.clone());
    let (ep, ccfg) = pki.raw_client();
    let conn = raw_connect(&ep, &ccfg, node.addr, "a").await.unwrap();
    let sent = Arc::new(AtomicU64::new(0));

    // Good requests run concurrently with the bad ones, on the same connection.
    let mut good = Vec::new();
    for i in 0..20u8 {
        let conn = conn.clone();
        let sent = sent.clone();
        good.push(tokio::spawn(async move {
            let img = image(i, 2000);
            let header = RequestHeader::new(u64::from(i), 1, Some(30_000), 5, img.len() as u64);
            let a = client::request(&conn, &header, img.clone(), &sent)
                .await
                .unwrap();
            assert_eq!(a.top[0].index, checksum(&img));
        }));
    }

    // Garbage inside a well-formed length prefix.
    let mut garbage = 10u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0xff, 0x13, 0x00, 0x42, 0x99, 0x01, 0x02, 0x03, 0x04, 0x05]);
    expect_error(raw_exchange(&conn, &garbage).await, ErrorKind::BadRequest);
    // Pure noise.
    expect_error(
        raw_exchange(&conn, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await,
        ErrorKind::BadRequest,
    );
    // Oversized frame: refused from the prefix alone.
    let mut oversized = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes().to_vec();
    oversized.extend(std::iter::repeat_n(0u8, 4096));
    let msg = expect_error(raw_exchange(&conn, &oversized).await, ErrorKind::BadRequest);
    assert!(msg.contains("exceeds"), "{msg}");
    // Unknown protocol version.
    let mut h99 = RequestHeader::new(1, 1, None, 5, 3);
    h99.v = 99;
    let mut bytes = codec::encode_request_header(&h99).unwrap().to_vec();
    bytes.extend_from_slice(b"abc");
    let msg = expect_error(
        raw_exchange(&conn, &bytes).await,
        ErrorKind::UnsupportedVersion,
    );
    assert!(msg.contains("99"), "{msg}");
    // Truncated image.
    let mut bytes = codec::encode_request_header(&RequestHeader::new(2, 1, None, 5, 100))
        .unwrap()
        .to_vec();
    bytes.extend_from_slice(&[1u8; 40]);
    let msg = expect_error(raw_exchange(&conn, &bytes).await, ErrorKind::BadRequest);
    assert!(msg.contains("truncated"), "{msg}");
    // Image over the node's limit: refused from the header, not read.
    let header = RequestHeader::new(3, 1, None, 5, 2 << 20);
    let r = client::request(&conn, &header, Bytes::from(vec![0u8; 2 << 20]), &sent).await;
    match r {
        Err(AttemptError::Rejected(InferenceError::TooLarge(_))) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // A stream that ends before its header.
    let (mut s, mut r) = conn.open_bi().await.unwrap();
    s.write_all(&[0, 0]).await.unwrap();
    s.finish().unwrap();
    expect_error(read_reply(&mut r).await, ErrorKind::BadRequest);

    for g in good {
        tokio::time::timeout(LONG, g).await.unwrap().unwrap();
    }
    // The connection survived all of it.
    let img = image(200, 10);
    let header = RequestHeader::new(99, 1, None, 5, img.len() as u64);
    client::request(&conn, &header, img, &sent).await.unwrap();
    assert!(conn.close_reason().is_none());
    assert_eq!(h.completed.load(Ordering::SeqCst), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_head_of_line_blocking_behind_a_slow_large_upload() {
    init_tracing();
    let pki = Pki::new();
    let h = TestHandler::new("a");
    let node = start_node(pki.node_config("a", 64), h.clone());
    let (ep, ccfg) = pki.raw_client();
    let conn = raw_connect(&ep, &ccfg, node.addr, "a").await.unwrap();

    const BIG: usize = 16 << 20;
    const CHUNK: usize = 64 << 10;
    let big_img = image(9, BIG);
    let big_sum = checksum(&big_img);
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let big = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            let header = RequestHeader::new(1, 1, None, 5, BIG as u64);
            send.write_all(&codec::encode_request_header(&header).unwrap())
                .await
                .unwrap();
            let mut started = Some(started_tx);
            // Rate-limited writer: 64 KiB every 10 ms (~6.5 MB/s), at least 2.5 s in total.
            for chunk in big_img.chunks(CHUNK) {
                send.write_all(chunk).await.unwrap();
                if let Some(tx) = started.take() {
                    let _ = tx.send(());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            send.finish().unwrap();
            let reply = read_reply(&mut recv).await;
            (Instant::now(), reply)
        })
    };
    started_rx.await.unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let mut small = Vec::new();
    for i in 0..50u8 {
        let conn = conn.clone();
        let sent = sent.clone();
        small.push(tokio::spawn(async move {
            let img = image(i, 1024);
            let header = RequestHeader::new(100 + u64::from(i), 1, None, 5, img.len() as u64);
            let a = client::request(&conn, &header, img.clone(), &sent)
                .await
                .unwrap();
            assert_eq!(a.top[0].index, checksum(&img));
            Instant::now()
        }));
    }
    let mut last_small = None;
    for s in small {
        let t = tokio::time::timeout(LONG, s).await.unwrap().unwrap();
        last_small = Some(last_small.map_or(t, |l: Instant| l.max(t)));
    }
    let (big_done, reply) = tokio::time::timeout(Duration::from_secs(120), big)
        .await
        .unwrap()
        .unwrap();
    match reply {
        Reply::Answer(a) => assert_eq!(a.top[0].index, big_sum),
        Reply::Error(e) => panic!("big image failed: {e:?}"),
        Reply::Started { .. } => panic!("a raw request without ack got a started frame"),
    }
    assert!(
        last_small.unwrap() < big_done,
        "small images waited behind the large one"
    );
}

/// A node grants each connection twice its capacity in stream credit, so a new request need
/// not wait the round trip it takes QUIC to return a finished stream's credit; a raw client
/// can open exactly that many streams at once, and not one more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_grants_twice_its_capacity_in_stream_credit() {
    init_tracing();
    let pki = Pki::new();
    let h = TestHandler::new("a");
    h.stall.store(true, Ordering::SeqCst);
    let node = start_node(pki.node_config("a", 3), h.clone());
    let (ep, cfg) = pki.raw_client();
    let conn = raw_connect(&ep, &cfg, node.addr, "a").await.unwrap();
    assert_eq!(glimpse_transport::config::stream_credit(3), 6);
    let mut open = Vec::new();
    for i in 0..6 {
        let (mut send, recv) = tokio::time::timeout(Duration::from_secs(5), conn.open_bi())
            .await
            .unwrap_or_else(|_| panic!("stream {i} had no credit"))
            .unwrap();
        // A stream exists for the peer only once something is sent on it.
        send.write_all(&[0]).await.unwrap();
        open.push((send, recv));
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(500), conn.open_bi())
            .await
            .is_err(),
        "a seventh stream was granted"
    );
    drop(open);
    conn.close(0u32.into(), b"done");
}

/// The node announces that it sends Started frames; a request whose header asks gets one
/// (with the handler's estimate) before its answer, and one that does not ask (an older
/// front-end) gets only the answer, as before. The client reports the frame as it arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_frame_precedes_the_answer_only_when_asked() {
    init_tracing();
    let pki = Pki::new();
    let h = TestHandler::with_delay("a", 200);
    h.started_expect_ms.store(1234, Ordering::SeqCst);
    let node = start_node(pki.node_config("a", 8), h.clone());
    let (ep, cfg) = pki.raw_client();
    let conn = raw_connect(&ep, &cfg, node.addr, "a").await.unwrap();
    let (_ctl, info) = read_hello(&conn).await;
    assert!(info.acks, "{info:?}");

    let img = image(4, 1000);
    let mut frame = codec::encode_request_header(
        &RequestHeader::new(1, 1, None, 5, img.len() as u64).with_ack(true),
    )
    .unwrap()
    .to_vec();
    frame.extend_from_slice(&img);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    assert_eq!(
        read_reply(&mut recv).await,
        Reply::Started { expect_ms: 1234 }
    );
    match read_reply(&mut recv).await {
        Reply::Answer(a) => assert_eq!(a.top[0].index, checksum(&img)),
        other => panic!("expected the answer, got {other:?}"),
    }
    assert!(
        stream::read_frame(&mut recv, MAX_FRAME_BYTES)
            .await
            .unwrap()
            .is_none(),
        "nothing after the final frame"
    );

    // Without `ack`: the answer alone.
    let mut frame =
        codec::encode_request_header(&RequestHeader::new(2, 1, None, 5, img.len() as u64))
            .unwrap()
            .to_vec();
    frame.extend_from_slice(&img);
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(&frame).await.unwrap();
    send.finish().unwrap();
    assert!(matches!(read_reply(&mut recv).await, Reply::Answer(_)));

    // The client reads past the Started frame and reports it.
    let notify = Arc::new(tokio::sync::Notify::new());
    let signal = client::StartedSignal::new(notify.clone());
    let sent = AtomicU64::new(0);
    let t = Instant::now();
    let header = RequestHeader::new(3, 1, None, 5, img.len() as u64).with_ack(true);
    let answer = client::request_observed(&conn, &header, img.clone(), &sent, Some(&signal))
        .await
        .unwrap();
    assert_eq!(answer.top[0].index, checksum(&img));
    let (at, expect) = signal.get().expect("started reported");
    assert!(at >= t);
    assert_eq!(expect, Duration::from_millis(1234));
    tokio::time::timeout(LONG, notify.notified()).await.unwrap();
    assert_eq!(h.started.load(Ordering::SeqCst), 3);
}
