//! Several front-ends sharing the same nodes, with real processes: two `glimpse` front-ends
//! behind a round-robin TCP proxy, three `glimpse-node` processes of small capacity, and a
//! thousand uploads spread over both (synchronous JSON, asynchronous JSON polled through the
//! proxy and sent on to the owning front-end when another one answers 421, KServe v2 over
//! HTTP and gRPC). Every image is answered once, both front-ends work, and no node ever
//! holds more than its capacity (the peak each node logs when it stops). Also: SIGTERM fails
//! `/readyz` first and keeps serving for the grace period, and a second signal skips it.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use common::cluster_files::{ClusterFiles, node_binary};
use common::{Spawned, client, png};
use glimpse_wire::proto::model_infer_request::InferInputTensor;
use glimpse_wire::proto::{ModelInferRequest, ModelInferResponse};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use crate::common;

/// Requests a node takes at once: small, so two front-ends pushing at once overrun it and
/// its admission has to refuse.
const CAPACITY: u32 = 4;
/// Uploads in the acceptance run.
const UPLOADS: usize = 1000;
/// Uploads in flight at once (each on a new connection through the proxy).
const CONCURRENCY: usize = 24;

/// A TCP proxy that hands each accepted connection to the next backend in turn.
struct RoundRobin {
    addr: SocketAddr,
    /// Connections given to each backend.
    given: Arc<Vec<AtomicUsize>>,
    task: tokio::task::JoinHandle<()>,
}

impl RoundRobin {
    async fn start(backends: Vec<SocketAddr>) -> RoundRobin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let given: Arc<Vec<AtomicUsize>> =
            Arc::new(backends.iter().map(|_| AtomicUsize::new(0)).collect());
        let counts = given.clone();
        let task = tokio::spawn(async move {
            let mut next = 0usize;
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    return;
                };
                let i = next % backends.len();
                next += 1;
                counts[i].fetch_add(1, Ordering::Relaxed);
                let backend = backends[i];
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(backend).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        RoundRobin { addr, given, task }
    }

    fn given(&self) -> Vec<usize> {
        self.given
            .iter()
            .map(|g| g.load(Ordering::Relaxed))
            .collect()
    }
}

impl Drop for RoundRobin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A `glimpse-node serve` process with its log in a file; killed on drop.
struct Node {
    child: std::process::Child,
    name: String,
    addr: SocketAddr,
    log: PathBuf,
}

impl Node {
    fn start(bin: &Path, dir: &Path, name: &str, ca: &str, cert: &str, key: &str) -> Node {
        let log = dir.join(format!("node-{name}.log"));
        let mut child = std::process::Command::new(bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--node-id", name])
            .args(["--cert", cert, "--key", key, "--ca", ca])
            .args(["--model", "synthetic", "--service-ms", "5"])
            .args(["--capacity", &CAPACITY.to_string()])
            .env("GLIMPSE_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("node log"))
            .spawn()
            .expect("start glimpse-node");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(addr) = line.strip_prefix("glimpse-node listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(common::READY_TIMEOUT)
            .expect("glimpse-node printed its address")
            .parse()
            .expect("a socket address");
        Node {
            child,
            name: name.to_string(),
            addr,
            log,
        }
    }

    /// SIGTERM, a clean exit, and what its "node stopped" line says: the most requests it
    /// held at once, and how many it refused as overloaded.
    fn stop(&mut self) -> (u64, u64) {
        let pid = self.child.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "node {} did not stop",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(
            status.success(),
            "node {} exited {status}:\n{log}",
            self.name
        );
        let field = |name: &str| {
            log.lines()
                .filter(|l| l.contains("node stopped"))
                .find_map(|l| {
                    let rest = &l[l.find(&format!("{name}: "))? + name.len() + 2..];
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse::<u64>().ok()
                })
                .unwrap_or_else(|| panic!("no {name} in node {}'s log:\n{log}", self.name))
        };
        (field("held_peak"), field("overloaded"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ModelInfer` of one image on a new TLS connection to `addr`.
async fn grpc_infer(addr: SocketAddr, image: Vec<u8>) -> ModelInferResponse {
    let mut client = common::grpc::connect(addr).await;
    let mut raw = (image.len() as u32).to_le_bytes().to_vec();
    raw.extend_from_slice(&image);
    let request = ModelInferRequest {
        model_name: "googlenet".into(),
        inputs: vec![InferInputTensor {
            name: "image".into(),
            datatype: "BYTES".into(),
            shape: vec![1],
            parameters: Default::default(),
            contents: None,
        }],
        raw_input_contents: vec![raw.into()],
        ..Default::default()
    };
    client
        .model_infer(request)
        .await
        .expect("ModelInfer answered")
        .into_inner()
}

/// What one upload came back as.
#[derive(Debug)]
enum Answer {
    /// A JSON job (sync or async): its id and final status.
    Job { id: String, status: String },
    /// A KServe v2 answer (HTTP or gRPC) with this many output rows.
    Infer { rows: usize },
}

/// Where the test can reach each front-end directly, by id.
struct Frontends {
    proxy: String,
    direct: HashMap<String, String>,
    misdirected: AtomicUsize,
}

/// Polls async job `id` through the proxy until it is final; a 421 names the owner, which
/// is then asked directly, as a client that follows it would.
async fn poll(
    http: &reqwest::Client,
    fronts: &Frontends,
    id: &str,
    token: &str,
) -> (String, Value) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = http
            .get(format!("{}/api/v1/jobs/{id}", fronts.proxy))
            .header("x-glimpse-client", token)
            .send()
            .await
            .expect("poll sent");
        let mut status = r.status().as_u16();
        let mut body: Value = r.json().await.expect("JSON body");
        if status == 421 {
            fronts.misdirected.fetch_add(1, Ordering::Relaxed);
            let owner = body["frontend"].as_str().expect("421 names the owner");
            assert!(id.starts_with(&format!("{owner}.")), "{id} vs {body}");
            let base = &fronts.direct[owner];
            let r = http
                .get(format!("{base}/api/v1/jobs/{id}"))
                .header("x-glimpse-client", token)
                .send()
                .await
                .expect("poll sent to the owner");
            status = r.status().as_u16();
            body = r.json().await.expect("JSON body");
        }
        assert_eq!(status, 200, "job {id}: {body}");
        let s = body["status"].as_str().unwrap_or_default().to_string();
        if s == "ok" || s == "error" {
            return (s, body);
        }
        assert!(Instant::now() < deadline, "job {id} never finished: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Upload number `i` through the proxy, in one of four ways.
async fn upload(http: &reqwest::Client, fronts: &Frontends, grpc: SocketAddr, i: usize) -> Answer {
    let image = png((i % 251) as u8);
    let name = format!("img-{i}.png");
    match i % 10 {
        // Synchronous JSON.
        0..=3 => {
            let r = http
                .post(format!(
                    "{}/api/v1/classify?wait=true&name={name}",
                    fronts.proxy
                ))
                .header("content-type", "image/png")
                .body(image)
                .send()
                .await
                .expect("upload sent");
            let code = r.status().as_u16();
            let body: Value = r.json().await.expect("JSON body");
            assert_eq!(code, 200, "upload {i}: {body}");
            let results = body["results"].as_array().expect("results");
            assert_eq!(results.len(), 1, "{body}");
            Answer::Job {
                id: results[0]["id"].as_str().unwrap().to_string(),
                status: results[0]["status"].as_str().unwrap().to_string(),
            }
        }
        // Asynchronous JSON, then polling.
        4..=7 => {
            let r = http
                .post(format!("{}/api/v1/classify?name={name}", fronts.proxy))
                .header("content-type", "image/png")
                .body(image)
                .send()
                .await
                .expect("upload sent");
            let code = r.status().as_u16();
            let body: Value = r.json().await.expect("JSON body");
            assert!(code == 202 || code == 200, "upload {i}: {code} {body}");
            let id = body["jobs"][0]["id"].as_str().expect("job id").to_string();
            let token = body["client_token"].as_str().expect("client token");
            let (status, _) = poll(http, fronts, &id, token).await;
            Answer::Job { id, status }
        }
        // KServe v2 over HTTP.
        8 => {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&image);
            let r = http
                .post(format!("{}/v2/models/googlenet/infer", fronts.proxy))
                .json(&json!({ "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES", "data": [b64] }] }))
                .send()
                .await
                .expect("infer sent");
            let code = r.status().as_u16();
            let body: Value = r.json().await.expect("JSON body");
            assert_eq!(code, 200, "infer {i}: {body}");
            let rows = body["outputs"][0]["shape"][0].as_u64().unwrap_or(0) as usize;
            Answer::Infer { rows }
        }
        // KServe v2 over gRPC.
        _ => {
            let answer = grpc_infer(grpc, image).await;
            let rows = answer
                .outputs
                .first()
                .and_then(|o| o.shape.first().copied())
                .unwrap_or(0) as usize;
            Answer::Infer { rows }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frontends_behind_a_round_robin_proxy_share_three_nodes() {
    let node_bin = node_binary();
    let files = ClusterFiles::new("two front-ends test");
    let mut nodes = Vec::new();
    let mut flags: Vec<String> = Vec::new();
    for name in ["a", "b", "c"] {
        let (cert, key) = files.node(name, &[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let node = Node::start(&node_bin, files.dir(), name, &files.ca_path, &cert, &key);
        flags.push("--node".into());
        flags.push(format!("{name}={}", node.addr));
        nodes.push(node);
    }
    flags.extend(files.frontend_flags());
    // Every request comes from 127.0.0.1 here: one caller for the per-caller limits.
    flags.extend(["--rate-limit", "off", "--shutdown-grace-s", "0"].map(String::from));

    let mut fronts = Vec::new();
    let mut grpc = Vec::new();
    for id in ["fe-one", "fe-two"] {
        let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
        // Port 0: a port picked free beforehand could be taken before glimpse binds it.
        args.extend(["--frontend-id", id, "--grpc-listen", "127.0.0.1:0"]);
        let front = Spawned::start(&args, None);
        // "localhost:PORT (TLS, the same certificate)"
        let at = front.printed("KServe v2 gRPC (Triton clients) at ");
        let port = at
            .split_whitespace()
            .next()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok())
            .expect("the gRPC port glimpse printed");
        grpc.push(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        fronts.push((id, front));
    }
    for (_, f) in &fronts {
        f.wait_ready().await;
    }
    let http_proxy = RoundRobin::start(
        fronts
            .iter()
            .map(|(_, f)| ([127, 0, 0, 1], f.port()).into())
            .collect(),
    )
    .await;
    let grpc_proxy = RoundRobin::start(grpc.clone()).await;
    let shared = Arc::new(Frontends {
        proxy: format!("https://127.0.0.1:{}", http_proxy.addr.port()),
        direct: fronts
            .iter()
            .map(|(id, f)| (id.to_string(), f.base.clone()))
            .collect(),
        misdirected: AtomicUsize::new(0),
    });
    // A new connection for every request (no pool, HTTP/1.1): each is the proxy's to place.
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .pool_max_idle_per_host(0)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (http, fronts, next) = (http.clone(), shared.clone(), next.clone());
        let grpc = grpc_proxy.addr;
        workers.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= UPLOADS {
                    return answers;
                }
                answers.push((i, upload(&http, &fronts, grpc, i).await));
            }
        }));
    }
    let mut answers = Vec::new();
    for w in workers {
        answers.extend(w.await.expect("an upload task panicked"));
    }
    let took = started.elapsed();

    // Every upload answered once, with a result.
    assert_eq!(answers.len(), UPLOADS);
    let uploads: HashSet<usize> = answers.iter().map(|(i, _)| *i).collect();
    assert_eq!(uploads.len(), UPLOADS, "an upload answered twice");
    let mut ids = HashSet::new();
    let mut jobs_by_frontend: HashMap<String, usize> = HashMap::new();
    for (i, answer) in &answers {
        match answer {
            Answer::Job { id, status } => {
                assert_eq!(status, "ok", "upload {i} (job {id})");
                assert!(ids.insert(id.clone()), "job id {id} twice");
                let owner = id.split_once('.').expect("owner.random").0;
                *jobs_by_frontend.entry(owner.to_string()).or_default() += 1;
            }
            Answer::Infer { rows } => assert_eq!(*rows, 1, "upload {i}"),
        }
    }
    // Both front-ends worked: the proxy spread the connections, and each owns jobs.
    let given = http_proxy.given();
    let grpc_given = grpc_proxy.given();
    let misdirected = shared.misdirected.load(Ordering::Relaxed);
    println!(
        "{UPLOADS} uploads in {took:?}: jobs by front-end {jobs_by_frontend:?}, HTTPS connections per front-end {given:?}, gRPC {grpc_given:?}, polls answered 421 {misdirected}"
    );
    for (id, _) in &fronts {
        let jobs = jobs_by_frontend.get(*id).copied().unwrap_or(0);
        assert!(jobs >= UPLOADS / 5, "front-end {id} owns only {jobs} jobs");
    }
    assert!(grpc_given.iter().all(|&n| n > 0), "gRPC {grpc_given:?}");
    assert!(misdirected > 0, "no poll reached the wrong front-end");

    // No node ever held more than its capacity, and each took work.
    for (_, f) in &mut fronts {
        assert!(f.terminate().success());
    }
    let mut refused = 0;
    for node in &mut nodes {
        let (peak, overloaded) = node.stop();
        println!(
            "node {}: held at most {peak} at once (capacity {CAPACITY}), refused {overloaded} as overloaded",
            node.name
        );
        assert!(peak >= 1, "node {} took no work", node.name);
        assert!(
            peak <= u64::from(CAPACITY),
            "node {} held {peak} > {CAPACITY}",
            node.name
        );
        refused += overloaded;
    }
    println!("admission refused {refused} attempts in all (retried elsewhere)");
}

/// The real binary and real signals: SIGTERM fails `/readyz` at once, everything else is
/// still served during the grace period, then the process drains and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_fails_readiness_first_and_serves_through_the_grace_period() {
    let mut fe = Spawned::start(
        &[
            "--local-workers",
            "1",
            "--model",
            "synthetic",
            "--service-ms",
            "1",
            "--frontend-id",
            "fe-grace",
            "--shutdown-grace-s",
            "4",
        ],
        None,
    );
    fe.wait_ready().await;
    let http = client();
    fe.signal("TERM");
    let start = Instant::now();
    loop {
        let r = http.get(fe.url("/readyz")).send().await.expect("readyz");
        if r.status() == 503 {
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["ready"], false);
            assert!(
                body["error"].as_str().unwrap().contains("shutting down"),
                "{body}"
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/readyz still 200"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Liveness holds, uploads are served, and jobs are still named after this front-end.
    let r = http.get(fe.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(fe.url("/api/v1/classify?wait=true&name=a.png"))
        .header("content-type", "image/png")
        .body(png(7))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["results"][0]["status"], "ok", "{body}");
    assert!(
        body["results"][0]["id"]
            .as_str()
            .unwrap()
            .starts_with("fe-grace.")
    );
    assert!(!fe.has_exited(), "exited during the grace period");
    let status = fe.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "clean exit after the grace, got {status}");
}

/// A second signal during the grace period skips the rest of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_skips_the_grace_period() {
    let mut fe = Spawned::start(
        &[
            "--local-workers",
            "1",
            "--model",
            "synthetic",
            "--service-ms",
            "1",
            "--shutdown-grace-s",
            "3600",
        ],
        None,
    );
    fe.wait_ready().await;
    fe.signal("TERM");
    let http = client();
    let start = Instant::now();
    while http
        .get(fe.url("/readyz"))
        .send()
        .await
        .expect("readyz")
        .status()
        != 503
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "/readyz still 200"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fe.signal("INT");
    let status = fe.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "clean exit, got {status}");
}

/// A job another front-end owns: 421 naming it, or with `--peer-url-template` a 307 there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_another_frontend_is_answered_with_where_it_lives() {
    let fe = Spawned::start(
        &[
            "--local-workers",
            "1",
            "--model",
            "synthetic",
            "--frontend-id",
            "web-1",
            "--peer-url-template",
            "https://{frontend}.glimpse-frontend.test:8443",
            "--shutdown-grace-s",
            "0",
        ],
        None,
    );
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .get(fe.url("/api/v1/jobs/web-2.0123abcd"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 307);
    assert_eq!(
        r.headers()["location"],
        "https://web-2.glimpse-frontend.test:8443/api/v1/jobs/web-2.0123abcd"
    );
    assert_eq!(r.headers()["x-glimpse-frontend"], "web-2");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["frontend"], "web-2");
    // Its own ids, and ids that name no front-end, are looked up here: unknown is 404.
    for id in ["web-1.0123abcd", "0123abcd", "Web-2.01"] {
        let r = http
            .get(fe.url(&format!("/api/v1/jobs/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{id}");
    }
    // An id that is not valid refuses to start.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_glimpse"))
        .args(["--frontend-id", "Web_1", "--local-workers", "1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a valid front-end id"), "{err}");
}
