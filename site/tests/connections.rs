//! The connection layer under attack, against the real `glimpse` binary in a process of its
//! own with a 1,024 file-descriptor limit (896 connection slots), over loopback from many
//! addresses (127.0.x.y): the rows of the denial-of-service run it once failed. Slow uploads
//! holding every slot, idle sockets on the redirect port, idle sockets on the admin and HTTPS
//! ports at once, and a hundred uploads from one address. These measure the process, so
//! nextest runs them alone (see .config/nextest.toml).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Spawned, metric, tls_connector_for};
use glimpse_site::http::conn::{EVICTION_GRACE, Shares, max_connections_for};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::common;

/// The descriptor limit the front-end runs under, as in the attack run.
const NOFILE: u64 = 1024;

/// The acceptance bound of the issue: a normal client is answered within this during an
/// attack.
const ANSWERED_WITHIN: Duration = Duration::from_secs(2);

/// Raises this test process's own descriptor limit: each test opens up to ~1,800 sockets.
fn enough_descriptors() {
    let own = glimpse_site::http::conn::raise_fd_limit().expect("fd limit");
    assert!(
        own >= 4096,
        "the test needs ~1,800 sockets of its own; the hard limit is {own}"
    );
}

/// `glimpse` with one synthetic worker (1 ms per image), `extra` flags, under [`NOFILE`].
async fn front_end(extra: &[&str]) -> Spawned {
    let mut args = vec![
        "--local-workers",
        "1",
        "--model",
        "synthetic",
        "--service-ms",
        "1",
    ];
    args.extend_from_slice(extra);
    let server = Spawned::start(&args, Some(NOFILE));
    server.wait_ready().await;
    server
}

fn https_addr(server: &Spawned) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), server.port())
}

/// The address printed after `prefix` (`HOST:PORT`, maybe followed by a path or words).
fn printed_addr(server: &Spawned, prefix: &str) -> SocketAddr {
    let rest = server.printed(prefix);
    let addr = rest
        .split(|c: char| c == '/' || c.is_whitespace())
        .next()
        .expect("an address");
    addr.replace("localhost", "127.0.0.1")
        .parse()
        .expect("HOST:PORT")
}

/// Counts a connection as open until dropped.
struct Open(Arc<AtomicUsize>);

impl Open {
    fn new(count: &Arc<AtomicUsize>) -> Open {
        count.fetch_add(1, Ordering::SeqCst);
        Open(count.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The `i`th attacking address of `group` (127.group.x.y, never 127.0.0.1, where the
/// normal client comes from).
fn attacker(group: u8, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        127,
        group,
        (i / 250) as u8,
        1 + (i % 250) as u8,
    ))
}

/// A TCP connection from `from` to `to`, or `None` if it could not be made within 10 s.
async fn connect_from(from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .ok()?
        .ok()
}

/// A TLS connection (ALPN `alpn`) from `from` to `to`.
async fn tls_from(
    from: IpAddr,
    to: SocketAddr,
    alpn: &[u8],
) -> Option<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = connect_from(from, to).await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    tokio::time::timeout(
        Duration::from_secs(10),
        tls_connector_for(alpn).connect(name, tcp),
    )
    .await
    .ok()?
    .ok()
}

/// Open descriptors of process `pid`.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// A normal client's `GET /healthz` on a new connection from 127.0.0.1: answered 200 (not
/// reset) within [`ANSWERED_WITHIN`]. Returns how long it took.
async fn healthy(server: &Spawned) -> Duration {
    let c = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let start = Instant::now();
    let r = c
        .get(server.url("/healthz"))
        .send()
        .await
        .expect("answered, not reset");
    let took = start.elapsed();
    assert_eq!(r.status(), 200);
    assert!(took < ANSWERED_WITHIN, "a normal client waited {took:?}");
    took
}

/// `/metrics`' `glimpse_connection_events_total{event=...}`.
fn events(text: &str, event: &str) -> f64 {
    metric(
        text,
        &format!("glimpse_connection_events_total{{event=\"{event}\"}}"),
    )
    .unwrap_or(0.0)
}

/// The start of a multipart upload of one PNG file, `length` bytes long in all: the request
/// head, the part's head and the PNG signature.
fn upload_head(length: usize) -> Vec<u8> {
    let head = format!(
        "POST /api/v1/classify HTTP/1.1\r\nHost: localhost\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {length}\r\n\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    );
    [head.as_bytes(), b"\x89PNG\r\n\x1a\n"].concat()
}

/// How the uploads of one group are doing.
#[derive(Clone, Default)]
struct Progress {
    /// Uploads whose request head is sent, or that could not connect.
    settled: Arc<AtomicUsize>,
    /// Uploads open now (head sent, not closed).
    open: Arc<AtomicUsize>,
}

/// An HTTPS upload from `from` that sends `chunk` body bytes every `period` until `stop`.
/// Returns whether the server closed it (or answered it) first; `None` if it never got
/// connected.
async fn upload(
    from: IpAddr,
    to: SocketAddr,
    period: Duration,
    chunk: usize,
    progress: Progress,
    mut stop: watch::Receiver<bool>,
) -> Option<bool> {
    let Some(mut tls) = tls_from(from, to, b"http/1.1").await else {
        progress.settled.fetch_add(1, Ordering::SeqCst);
        return None;
    };
    let sent = tls
        .write_all(&upload_head(10_000_000))
        .await
        .and(tls.flush().await);
    progress.settled.fetch_add(1, Ordering::SeqCst);
    sent.ok()?;
    let _open = Open::new(&progress.open);
    let body = vec![b'x'; chunk];
    let mut buf = [0u8; 512];
    loop {
        tokio::select! {
            _ = tls.read(&mut buf) => return Some(true),
            () = tokio::time::sleep(period) => {
                if tls.write_all(&body).await.and(tls.flush().await).is_err() {
                    return Some(true);
                }
            }
            _ = stop.changed() => return Some(false),
        }
    }
}

/// A gRPC `ModelInfer` call from `from` whose message (a declared 100,000 bytes) trickles in
/// one byte every 8 s until `stop`; as [`upload`].
async fn grpc_upload(
    from: IpAddr,
    to: SocketAddr,
    progress: Progress,
    mut stop: watch::Receiver<bool>,
) -> Option<bool> {
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    let connected = async {
        let tls = tls_from(from, to, b"h2").await?;
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .ok()
    };
    let Some((mut send, conn)) = connected.await else {
        progress.settled.fetch_add(1, Ordering::SeqCst);
        return None;
    };
    let mut conn = tokio::spawn(conn);
    let frames = futures_util::stream::unfold(0u32, |i| async move {
        let data = if i == 0 {
            // The gRPC message prefix: uncompressed, 100,000 bytes.
            Bytes::from_static(&[0, 0, 1, 0x86, 0xa0])
        } else {
            tokio::time::sleep(Duration::from_secs(8)).await;
            Bytes::from_static(b"\x0a")
        };
        Some((Ok::<_, Infallible>(Frame::data(data)), i + 1))
    });
    let req = hyper::Request::post("https://localhost/inference.GRPCInferenceService/ModelInfer")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(StreamBody::new(Box::pin(frames)))
        .ok()?;
    let answer = send.send_request(req);
    progress.settled.fetch_add(1, Ordering::SeqCst);
    let _open = Open::new(&progress.open);
    tokio::select! {
        _ = answer => Some(true),
        _ = &mut conn => Some(true),
        _ = stop.changed() => Some(false),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_uploads_on_every_slot_give_way_to_a_normal_client_slowest_first() {
    enough_descriptors();
    let server = front_end(&["--grpc-listen", "127.0.0.1:0"]).await;
    let https = https_addr(&server);
    let grpc = printed_addr(&server, "KServe v2 gRPC (Triton clients) at ");
    let public = Shares::of(max_connections_for(NOFILE)).public;
    let (stop_tx, stop) = watch::channel(false);

    // 20 fast uploads (10 KB/s each) from addresses of their own, then 1,000 slow ones
    // (one body byte every 8 s) from 18 addresses, 800 over HTTPS and 200 over gRPC.
    let fast_progress = Progress::default();
    let mut fast = tokio::task::JoinSet::new();
    for i in 0..20 {
        fast.spawn(upload(
            attacker(6, i),
            https,
            Duration::from_millis(200),
            2000,
            fast_progress.clone(),
            stop.clone(),
        ));
    }
    let settled = |p: &Progress, n: usize| {
        let p = p.clone();
        async move {
            let start = Instant::now();
            while p.settled.load(Ordering::SeqCst) < n && start.elapsed() < Duration::from_secs(30)
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    settled(&fast_progress, 20).await;
    assert_eq!(
        fast_progress.open.load(Ordering::SeqCst),
        20,
        "fast uploads started"
    );
    let slow_progress = Progress::default();
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let from = attacker(5, i % 18);
        if i % 5 == 4 {
            slow.spawn(grpc_upload(from, grpc, slow_progress.clone(), stop.clone()));
        } else {
            slow.spawn(upload(
                from,
                https,
                Duration::from_secs(8),
                1,
                slow_progress.clone(),
                stop.clone(),
            ));
        }
        if i % 50 == 49 {
            tokio::task::yield_now().await;
        }
    }
    settled(&slow_progress, 1000).await;
    // Every admitted upload is now past the grace period that protects newcomers.
    tokio::time::sleep(EVICTION_GRACE + Duration::from_millis(100)).await;
    let holding =
        slow_progress.open.load(Ordering::SeqCst) + fast_progress.open.load(Ordering::SeqCst);
    assert!(
        holding >= public,
        "the attack holds every one of the {public} slots: {holding} uploads open"
    );

    let mut took = Vec::new();
    for _ in 0..3 {
        took.push(healthy(&server).await);
    }
    let text = server.get_text("/metrics").await;
    let busy = events(&text, "evicted_busy");
    stop_tx.send(true).expect("uploads listen");
    let mut fast_closed = 0;
    while let Some(r) = fast.join_next().await {
        fast_closed += usize::from(r.expect("upload task") == Some(true));
    }
    let mut slow_closed = 0;
    while let Some(r) = slow.join_next().await {
        slow_closed += usize::from(r.expect("upload task") == Some(true));
    }
    println!(
        "{holding} uploads held {public} slots; /healthz answered in {took:?}; {busy} busy \
         connections reclaimed, {slow_closed} slow uploads closed, {fast_closed} fast ones"
    );
    // The first probe found every slot busy; later ones may find the slot a previous probe
    // left.
    assert!(busy >= 1.0, "a probe reclaimed a busy slot: {busy}");
    assert!(slow_closed >= 1, "{slow_closed}");
    assert_eq!(fast_closed, 0, "the fast uploads were never the slowest");
}

/// Opens `n` TCP connections to `to` from `addresses` addresses of `group`, and keeps them
/// open (sending nothing); the front-end's descriptors are sampled meanwhile. Returns the
/// sockets and the most descriptors seen.
async fn idle_sockets(
    pid: u32,
    group: u8,
    addresses: usize,
    n: usize,
    to: SocketAddr,
) -> (Vec<TcpStream>, usize) {
    let mut connects = tokio::task::JoinSet::new();
    for i in 0..n {
        connects.spawn(connect_from(attacker(group, i % addresses), to));
    }
    let mut sockets = Vec::new();
    let mut peak = descriptors(pid);
    while let Some(r) = connects.join_next().await {
        if let Some(s) = r.expect("connect task") {
            sockets.push(s);
        }
        if sockets.len() % 50 == 0 {
            peak = peak.max(descriptors(pid));
        }
    }
    (sockets, peak.max(descriptors(pid)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_on_the_redirect_port_leave_https_answering() {
    enough_descriptors();
    let server = front_end(&["--http-redirect", "127.0.0.1:0"]).await;
    let redirect = printed_addr(&server, "Plain HTTP on ");
    let (sockets, mut peak) = idle_sockets(server.pid, 7, 30, 1500, redirect).await;
    let mut took = Vec::new();
    for _ in 0..3 {
        took.push(healthy(&server).await);
        peak = peak.max(descriptors(server.pid));
    }
    // The redirect port still answers (its share is bounded, not zero).
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let r = plain
        .get(format!("http://{redirect}/x"))
        .send()
        .await
        .expect("redirect answered");
    assert_eq!(r.status(), 308);
    println!(
        "{} idle sockets on the redirect port; /healthz answered in {took:?}; the front-end \
         held at most {peak} descriptors",
        sockets.len()
    );
    assert!(
        peak < NOFILE as usize,
        "the front-end reached its descriptor limit"
    );
    drop(sockets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_on_the_admin_and_https_ports_stay_below_the_descriptor_limit() {
    enough_descriptors();
    let server = front_end(&["--admin-listen", "127.0.0.1:0", "--header-timeout-s", "30"]).await;
    let admin = printed_addr(&server, "Metrics and node list on http://");
    let https = https_addr(&server);
    let (admin_sockets, admin_peak) = idle_sockets(server.pid, 8, 16, 800, admin).await;
    // 900 HTTPS connections that finish their handshake and then send nothing: more than
    // the public slots, so the newest take the place of the oldest.
    let mut handshakes = tokio::task::JoinSet::new();
    for i in 0..900 {
        handshakes.spawn(tls_from(attacker(9, i % 15), https, b"http/1.1"));
    }
    let mut https_sockets = Vec::new();
    while let Some(r) = handshakes.join_next().await {
        if let Some(s) = r.expect("handshake task") {
            https_sockets.push(s);
        }
    }
    let mut peak = admin_peak.max(descriptors(server.pid));
    let mut took = Vec::new();
    for _ in 0..3 {
        took.push(healthy(&server).await);
        peak = peak.max(descriptors(server.pid));
    }
    // The admin listener has its own share: an operator still gets the metrics.
    let metrics = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .expect("admin answered");
    assert_eq!(metrics.status(), 200);
    let text = metrics.text().await.expect("metrics");
    println!(
        "{} idle admin sockets, {} idle HTTPS ones; /healthz answered in {took:?}; the \
         front-end held at most {peak} descriptors; {} idle connections evicted",
        admin_sockets.len(),
        https_sockets.len(),
        events(&text, "evicted"),
    );
    assert!(
        peak < NOFILE as usize,
        "the front-end reached its descriptor limit"
    );
    assert!(events(&text, "evicted") > 0.0, "the oldest idle gave way");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_uploads_from_one_address_are_each_answered() {
    enough_descriptors();
    let server = front_end(&["--grpc-listen", "127.0.0.1:0"]).await;
    let grpc = printed_addr(&server, "KServe v2 gRPC (Triton clients) at ");
    let per_ip = 64; // the default at 1,024 descriptors
    let from = attacker(10, 0);
    // Each upload's body waits at `gate` after its first bytes, so the admitted ones stay
    // busy until every refused one has its answer.
    let (open_gate, gate) = watch::channel(false);
    let answered = Arc::new(AtomicUsize::new(0));
    let http1 = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .local_address(from)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let mut uploads = tokio::task::JoinSet::new();
    for i in 0..100 {
        // 80 over HTTP/1.1 (one connection each), 20 over h2 (a client, so a connection,
        // each).
        let client = if i < 80 {
            http1.clone()
        } else {
            reqwest::Client::builder()
                .danger_accept_invalid_certs(true)
                .local_address(from)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client")
        };
        let gate = gate.clone();
        let answered = answered.clone();
        let url = server.url("/api/v1/classify?wait=true");
        uploads.spawn(async move {
            let png = common::png(i);
            let (first, rest) = png.split_at(16);
            let (first, rest) = (Bytes::copy_from_slice(first), Bytes::copy_from_slice(rest));
            let body = futures_util::stream::unfold(0, move |n| {
                let (first, rest) = (first.clone(), rest.clone());
                let mut gate = gate.clone();
                async move {
                    match n {
                        0 => Some((Ok::<_, Infallible>(first), 1)),
                        1 => {
                            let _ = gate.wait_for(|open| *open).await;
                            Some((Ok(rest), 2))
                        }
                        _ => None,
                    }
                }
            });
            let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(body))
                .file_name("a.png")
                .mime_str("image/png")
                .expect("mime");
            let form = reqwest::multipart::Form::new().part("file", part);
            let r = client.post(url).multipart(form).send().await;
            answered.fetch_add(1, Ordering::SeqCst);
            r.map(|r| {
                let retry = r.headers().get("retry-after").is_some();
                (r.status().as_u16(), retry)
            })
            .map_err(|e| format!("{e:?}"))
        });
    }
    let start = Instant::now();
    while answered.load(Ordering::SeqCst) < 100 - per_ip
        && start.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While the address holds its 64 busy connections, a gRPC call from it is told why.
    let grpc_status = grpc_call_from(from, grpc).await;
    open_gate.send(true).expect("uploads wait");
    let mut statuses = std::collections::BTreeMap::new();
    while let Some(r) = uploads.join_next().await {
        let r = r.expect("upload task");
        match &r {
            Ok((429, retry)) => assert!(retry, "a 429 without Retry-After"),
            Ok((200, _)) => {}
            other => panic!("an upload got {other:?}, not 200 or 429"),
        }
        *statuses.entry(r.map(|(s, _)| s).unwrap_or(0)).or_insert(0) += 1;
    }
    let text = server.get_text("/metrics").await;
    println!(
        "100 uploads from one address: {statuses:?}; gRPC status {grpc_status:?}; {} refusals answered",
        events(&text, "refusal_answered")
    );
    assert_eq!(statuses.get(&200), Some(&per_ip), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&(100 - per_ip)), "{statuses:?}");
    assert_eq!(grpc_status.as_deref(), Some("8"), "RESOURCE_EXHAUSTED");
    assert_eq!(events(&text, "refusal_dropped"), 0.0);
}

/// The `grpc-status` of a `ServerLive` call from `from` to `to` (in the headers, as a
/// trailers-only answer has it, or in the trailers).
async fn grpc_call_from(from: IpAddr, to: SocketAddr) -> Option<String> {
    use http_body_util::{BodyExt, Full};
    let tls = tls_from(from, to, b"h2").await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .ok()?;
    tokio::spawn(conn);
    let req = hyper::Request::post("https://localhost/inference.GRPCInferenceService/ServerLive")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])))
        .ok()?;
    let resp = send.send_request(req).await.ok()?;
    let status = |h: &hyper::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    if let Some(s) = status(resp.headers()) {
        return Some(s);
    }
    let body = resp.into_body().collect().await.ok()?;
    body.trailers().and_then(status)
}
