//! Transport benchmark: what the QUIC transport adds per image, with a zero-work handler.
//!
//! `cargo bench -p glimpse-transport` prints a Markdown table: for 1 KiB, 100 KiB and 4 MiB
//! images, sequential round trips (p50/p99) and concurrent throughput through the Dispatcher to
//! 1 and 3 nodes on loopback, a raw one-connection quinn client (no dispatcher), and a baseline
//! measured in the same run: plain TCP request/response of the same bytes on one connection
//! (no TLS). Everything runs in one process on a 2-worker tokio runtime, so client and nodes
//! share the machine's cores, as they do in `glimpse --local-workers`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glimpse_certs::ClusterCa;
use glimpse_transport::client;
use glimpse_transport::codec::RequestHeader;
use glimpse_transport::config::{
    TransportTuning, bind_endpoint, frontend_quinn_config, frontend_tls_config,
};
use glimpse_transport::{
    Dispatcher, DispatcherConfig, Handler, InferenceAnswer, InferenceError, InferenceRequest,
    Label, LoadReport, NodeEndpoint, NodeInfo, NodeServer, NodeServerConfig, Timings, WorkStarted,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers at once with a fixed top-5: measures the transport alone.
struct ZeroWork;

impl Handler for ZeroWork {
    async fn handle(
        &self,
        req: InferenceRequest,
        started: WorkStarted,
    ) -> Result<InferenceAnswer, InferenceError> {
        // Like a real node, say the work started; yielding once lets the server write the
        // Started frame before the answer (an answer ready in the same poll skips it), so
        // every request here pays for the extra frame.
        started.send(Duration::ZERO);
        tokio::task::yield_now().await;
        Ok(InferenceAnswer {
            top: (0..req.top_k.min(5))
                .map(|i| Label {
                    index: i,
                    label: "tench".into(),
                    probability: 0.2,
                })
                .collect(),
            timings: Timings::default(),
            synthetic: true,
        })
    }

    fn load(&self) -> LoadReport {
        LoadReport::default()
    }
}

const CAPACITY: u32 = 256;

struct Row {
    path: String,
    size: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    rate: f64,
    concurrency: usize,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let idx = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[idx.min(v.len() - 1)]
}

fn info(name: &str) -> NodeInfo {
    NodeInfo {
        node_id: name.into(),
        model: "zero-work".into(),
        weights: "none".into(),
        trained: false,
        synthetic: true,
        backend: "none".into(),
        capacity: CAPACITY,
        max_batch: 1,
        max_batch_wait_ms: 0,
        version: env!("CARGO_PKG_VERSION").into(),
        load_interval_ms: None,
        acks: false,
    }
}

fn start_nodes(ca: &ClusterCa, n: usize) -> Vec<(String, SocketAddr)> {
    (0..n)
        .map(|i| {
            let name = format!("bench-{i}");
            let ck = ca.issue_node(&name, &[]).expect("issue node cert");
            let cfg = NodeServerConfig::new(
                "127.0.0.1:0".parse().expect("addr"),
                ck.cert_chain().expect("chain"),
                ck.private_key().expect("key"),
                vec![ca.cert_der()],
                info(&name),
            );
            let server = NodeServer::bind(cfg).expect("bind node");
            let addr = server.local_addr();
            tokio::spawn(server.run(Arc::new(ZeroWork), std::future::pending::<()>()));
            (name, addr)
        })
        .collect()
}

/// Sequential latency, then throughput with `concurrency` callers, for any request function.
async fn measure<F, Fut>(
    path: String,
    size: &'static str,
    seq: usize,
    total: usize,
    concurrency: usize,
    f: Arc<F>,
) -> Row
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    for _ in 0..(seq / 10).max(5) {
        f().await; // warm-up
    }
    let mut lat = Vec::with_capacity(seq);
    for _ in 0..seq {
        let t = Instant::now();
        f().await;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let done = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let f = f.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            while done.fetch_add(1, Ordering::Relaxed) < total {
                f().await;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    Row {
        path,
        size,
        p50_ms: percentile(&mut lat, 50.0),
        p99_ms: percentile(&mut lat, 99.0),
        rate,
        concurrency,
    }
}

/// Baseline: one TCP connection, u32 length + image, fixed 64-byte reply.
async fn tcp_baseline(size: &'static str, image: Bytes, seq: usize, total: usize) -> Row {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("tcp bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mut buf = Vec::new();
        loop {
            let Ok(len) = s.read_u32().await else { return };
            buf.resize(len as usize, 0);
            if s.read_exact(&mut buf).await.is_err() {
                return;
            }
            if s.write_all(&[7u8; 64]).await.is_err() {
                return;
            }
        }
    });
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("tcp connect");
    stream.set_nodelay(true).expect("nodelay");
    let stream = Arc::new(tokio::sync::Mutex::new(stream));
    let f = Arc::new(move || {
        let stream = stream.clone();
        let image = image.clone();
        async move {
            let mut s = stream.lock().await;
            s.write_u32(image.len() as u32).await.expect("tcp write");
            s.write_all(&image).await.expect("tcp write");
            let mut reply = [0u8; 64];
            s.read_exact(&mut reply).await.expect("tcp read");
        }
    });
    // One connection, strictly request/response: concurrency 1.
    measure(
        "TCP baseline (1 conn, no TLS)".into(),
        size,
        seq,
        total,
        1,
        f,
    )
    .await
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let ca = ClusterCa::generate("bench CA").expect("ca");
    let fe = ca.issue_client("bench-frontend").expect("client cert");
    let sizes: [(&'static str, usize, usize, usize, usize); 3] = [
        // (label, bytes, sequential samples, throughput total, concurrency)
        ("1 KiB", 1024, 2000, 20_000, 64),
        ("100 KiB", 100 * 1024, 1000, 4000, 32),
        ("4 MiB", 4 * 1024 * 1024, 60, 200, 4),
    ];
    let mut rows = Vec::new();
    let nodes1 = start_nodes(&ca, 1);
    let nodes3 = start_nodes(&ca, 3);

    for (label, bytes, seq, total, conc) in sizes {
        let image = Bytes::from(
            (0..bytes)
                .map(|i| (i * 31 % 251) as u8)
                .collect::<Vec<u8>>(),
        );
        rows.push(tcp_baseline(label, image.clone(), seq, total / 4).await);

        // Raw quinn: one connection, one stream per image, no dispatcher.
        let tuning = TransportTuning::default();
        let tls = frontend_tls_config(
            &[ca.cert_der()],
            fe.cert_chain().expect("c"),
            fe.private_key().expect("k"),
        )
        .expect("tls");
        let qcfg = frontend_quinn_config(tls, &tuning).expect("quinn cfg");
        let ep = bind_endpoint("127.0.0.1:0".parse().expect("a"), None, &tuning).expect("ep");
        let conn = ep
            .connect_with(qcfg, nodes1[0].1, &nodes1[0].0)
            .expect("connect")
            .await
            .expect("handshake");
        let sent = Arc::new(AtomicU64::new(0));
        let img = image.clone();
        let ids = Arc::new(AtomicU64::new(1));
        let f = Arc::new(move || {
            let conn = conn.clone();
            let img = img.clone();
            let sent = sent.clone();
            let id = ids.fetch_add(1, Ordering::Relaxed);
            async move {
                let h = RequestHeader::new(id, 1, None, 5, img.len() as u64);
                client::request(&conn, &h, img, &sent)
                    .await
                    .expect("raw request");
            }
        });
        rows.push(
            measure(
                "quinn, 1 conn, no dispatcher".into(),
                label,
                seq,
                total,
                conc,
                f,
            )
            .await,
        );

        for nodes in [&nodes1, &nodes3] {
            let mut cfg = DispatcherConfig::new(
                nodes
                    .iter()
                    .map(|(n, a)| NodeEndpoint {
                        name: n.clone(),
                        addr: *a,
                    })
                    .collect(),
                vec![ca.cert_der()],
                fe.cert_chain().expect("c"),
                fe.private_key().expect("k"),
            );
            cfg.policy.request_deadline = Duration::from_secs(60);
            let d = Dispatcher::start(cfg).expect("dispatcher");
            assert!(
                d.wait_ready(nodes.len(), Duration::from_secs(30)).await,
                "nodes not ready"
            );
            let img = image.clone();
            let dd = d.clone();
            let f = Arc::new(move || {
                let d = dd.clone();
                let img = img.clone();
                async move {
                    d.classify(img, 5, |_| {}).await.expect("classify");
                }
            });
            let path = format!(
                "Dispatcher → {} node{}",
                nodes.len(),
                if nodes.len() > 1 { "s" } else { "" }
            );
            rows.push(measure(path, label, seq, total, conc, f).await);
            let s = d.stats();
            assert_eq!(s.retries, 0, "unexpected retries in a benchmark: {s:?}");
            d.shutdown();
        }
    }

    println!(
        "| image | path | p50 ms | p99 ms | images/s | concurrency | p50 vs TCP | images/s vs TCP |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut base: Option<(f64, f64)> = None;
    for r in &rows {
        if r.path.starts_with("TCP") {
            base = Some((r.p50_ms, r.rate));
        }
        let (bp, br) = base.unwrap_or((r.p50_ms, r.rate));
        println!(
            "| {} | {} | {:.3} | {:.3} | {:.0} | {} | {:.2}× | {:.2}× |",
            r.size,
            r.path,
            r.p50_ms,
            r.p99_ms,
            r.rate,
            r.concurrency,
            r.p50_ms / bp,
            r.rate / br
        );
    }
}
