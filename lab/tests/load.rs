//! `glimpse-lab load` end to end: a real `glimpse` front-end (one in-process synthetic worker,
//! its generated self-signed certificate) loaded through the `glimpse-lab` binary and its
//! `--json` report: over the JSON API, closed loop and open loop; over KServe v2 HTTP with
//! binary tensors; over KServe v2 gRPC; and the JSON API and v2 over HTTP/2 and HTTP/3.
//!
//! Needs the `glimpse` binary next to glimpse-lab (`cargo build -p glimpse-site`, or
//! `cargo nextest run --workspace`, which builds it) or in `GLIMPSE_LAB_BIN_DIR`; otherwise it
//! prints SKIPPED and returns, except under CI (`CI` set), where a missing binary fails.

use std::path::{Path, PathBuf};
use std::time::Duration;

use glimpse_lab::harness::procs::{FRONTEND_LISTEN, Proc, wait_frontend};

const LAB: &str = env!("CARGO_BIN_EXE_glimpse-lab");
/// Milliseconds per image of the front-end's synthetic worker.
const SERVICE_MS: f64 = 20.0;

/// `glimpse` in `GLIMPSE_LAB_BIN_DIR` (as for `glimpse-lab sweep --bin-dir`), else next to
/// glimpse-lab.
fn glimpse_binary() -> Option<PathBuf> {
    let dir = match std::env::var_os("GLIMPSE_LAB_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(LAB).parent()?.to_path_buf(),
    };
    let p = dir.join("glimpse");
    if p.is_file() {
        return Some(p);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no glimpse binary at {} under CI",
        p.display()
    );
    eprintln!("SKIPPED load test: no glimpse binary next to {LAB} (cargo build -p glimpse-site)");
    None
}

/// Runs `glimpse-lab load --url URL --insecure ARGS --json FILE` and returns the parsed report.
async fn load(url: &str, dir: &Path, name: &str, args: &[&str]) -> serde_json::Value {
    let json = dir.join(format!("{name}.json"));
    let out = tokio::process::Command::new(LAB)
        .args(["load", "--url", url, "--insecure"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .await
        .expect("glimpse-lab runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "glimpse-lab load {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("p99 ms"),
        "the table is on stdout:\n{stdout}"
    );
    serde_json::from_slice(&std::fs::read(&json).expect("--json was written"))
        .expect("--json is JSON")
}

fn num(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Percentiles that are numbers, ordered, and at least the synthetic service time.
fn assert_sane_latency(step: &serde_json::Value) {
    let l = &step["latency_ms"];
    let (p50, p90, p95, p99) = (
        num(&l["p50"]),
        num(&l["p90"]),
        num(&l["p95"]),
        num(&l["p99"]),
    );
    let (min, max, mean) = (num(&l["min"]), num(&l["max"]), num(&l["mean"]));
    assert!(
        min <= p50 && p50 <= p90 && p90 <= p95 && p95 <= p99 && p99 <= max,
        "{l}"
    );
    assert!(min <= mean && mean <= max, "{l}");
    assert!(
        min >= SERVICE_MS * 0.9,
        "faster than the worker's service time: {l}"
    );
    assert!(p99 < 5_000.0, "{l}");
}

/// A running front-end: the process (killed on drop), its HTTPS base URL and its log folder.
struct Site {
    proc: Proc,
    base: String,
    dir: tempfile::TempDir,
}

/// Starts `glimpse --local-workers 1 --model synthetic` on ports of the kernel's choosing
/// (HTTPS, and gRPC beside it), plus `extra` arguments, and waits until its worker is ready.
async fn start_glimpse(glimpse: &Path, extra: &[String]) -> Site {
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = [
        "--listen",
        &FRONTEND_LISTEN.to_string(),
        "--local-workers",
        "1",
        "--model",
        "synthetic",
        "--service-ms",
        &SERVICE_MS.to_string(),
        "--rate-limit",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().cloned());
    let mut proc = Proc::spawn("glimpse", glimpse, &args, dir.path()).unwrap();
    let base = wait_frontend(&mut proc, 1, Duration::from_secs(60))
        .await
        .unwrap();
    Site { proc, base, dir }
}

/// `--protocol PROTOCOL --batch BATCH` at concurrency 2 for 1.5 s after 0.5 s of warm-up.
async fn batched(url: &str, dir: &Path, protocol: &str, batch: usize) -> serde_json::Value {
    let batch = batch.to_string();
    load(
        url,
        dir,
        protocol,
        &[
            "--protocol",
            protocol,
            "--batch",
            &batch,
            "--concurrency",
            "2",
            "--warmup",
            "0.5",
            "--duration",
            "1.5",
        ],
    )
    .await
}

/// The common checks of a step that should have gone perfectly.
fn assert_clean(step: &serde_json::Value) {
    let (sent, ok) = (num(&step["sent"]), num(&step["ok"]));
    assert!(ok > 0.0, "{step}");
    assert_eq!(sent, ok, "every request answered: {step}");
    assert_eq!(step["errors"], serde_json::json!({}), "{step}");
    assert_eq!(step["skipped"], 0);
    assert_sane_latency(step);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_measures_a_real_front_end_over_json() {
    let Some(glimpse) = glimpse_binary() else {
        return;
    };
    let site = start_glimpse(&glimpse, &[]).await;
    let (base, dir) = (&site.base, site.dir.path());

    // Closed loop, concurrency 2, ~2 s.
    let closed = load(
        base,
        dir,
        "closed",
        &[
            "--protocol",
            "json",
            "--concurrency",
            "2",
            "--warmup",
            "0.5",
            "--duration",
            "2",
        ],
    )
    .await;
    assert_eq!(closed["protocol"], "json");
    let step = &closed["steps"][0];
    assert_eq!(step["load"]["concurrency"], 2);
    assert_clean(step);
    // Two requests in flight on a worker that takes SERVICE_MS per image: at most
    // 2 × 1000 / SERVICE_MS answers per second.
    let rps = num(&step["throughput_rps"]);
    assert!(
        rps > 0.0 && rps <= 2.0 * 1000.0 / SERVICE_MS * 1.1,
        "{step}"
    );
    assert_eq!(num(&step["images_per_s"]), rps);

    // Open loop at 10 requests/s, well below capacity: about 15 arrivals in 1.5 s, all
    // answered, none skipped. The schedule is seeded, so the count is fixed by the seed;
    // Poisson counts at mean 15 are within 5..=30 with overwhelming probability anyway.
    let open = load(
        base,
        dir,
        "open",
        &[
            "--protocol",
            "json",
            "--rate",
            "10",
            "--warmup",
            "0",
            "--duration",
            "1.5",
        ],
    )
    .await;
    let step = &open["steps"][0];
    assert_eq!(step["load"]["rate"], 10.0);
    assert!((5.0..=30.0).contains(&num(&step["sent"])), "{step}");
    assert_clean(step);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_measures_a_real_front_end_over_grpc() {
    let Some(glimpse) = glimpse_binary() else {
        return;
    };
    let mut site = start_glimpse(&glimpse, &[]).await;
    // "KServe v2 gRPC (Triton clients) at localhost:PORT (TLS, the same certificate)"
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let grpc = site
        .proc
        .printed("KServe v2 gRPC (Triton clients) at ", deadline)
        .await
        .unwrap();
    let port = grpc
        .split_whitespace()
        .next()
        .and_then(|a| a.rsplit(':').next())
        .unwrap();
    let url = format!("https://127.0.0.1:{port}");
    let report = batched(&url, site.dir.path(), "grpc", 2).await;
    assert_eq!(report["protocol"], "grpc");
    let step = &report["steps"][0];
    assert_clean(step);
    assert_eq!(
        num(&step["images_per_s"]),
        2.0 * num(&step["throughput_rps"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_measures_a_real_front_end_over_v2_binary_tensors() {
    let Some(glimpse) = glimpse_binary() else {
        return;
    };
    let site = start_glimpse(&glimpse, &[]).await;
    let report = batched(&site.base, site.dir.path(), "v2", 3).await;
    assert_eq!(report["protocol"], "v2");
    let step = &report["steps"][0];
    assert_clean(step);
    assert_eq!(
        num(&step["images_per_s"]),
        3.0 * num(&step["throughput_rps"])
    );
}

/// The front-end's count of answered `POST /api/v1/classify` requests that came over
/// `protocol` (`h2`, `h3`), from its `/metrics`.
async fn classify_requests_over(base: &str, protocol: &str) -> f64 {
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!(
        "glimpse_http_request_duration_seconds_count{{route=\"/api/v1/classify\",code=\"200\",protocol=\"{protocol}\"}} "
    );
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_measures_a_real_front_end_over_http2_and_http3() {
    let Some(glimpse) = glimpse_binary() else {
        return;
    };
    let site = start_glimpse(&glimpse, &[]).await;
    let (base, dir) = (&site.base, site.dir.path());
    for (http, label) in [("2", "h2"), ("3", "h3")] {
        for (protocol, batch) in [("json", "2"), ("v2", "1")] {
            let name = format!("{protocol}-http{http}");
            let report = load(
                base,
                dir,
                &name,
                &[
                    "--protocol",
                    protocol,
                    "--http",
                    http,
                    "--batch",
                    batch,
                    "--concurrency",
                    "4",
                    "--warmup",
                    "0.2",
                    "--duration",
                    "1",
                ],
            )
            .await;
            assert_eq!(report["http"], label, "{name}");
            assert_clean(&report["steps"][0]);
        }
        // The front-end saw the json requests arrive over that protocol (its own label), so
        // the flag changed what went on the wire, not just the report.
        let seen = classify_requests_over(base, label).await;
        assert!(seen > 0.0, "no classify request over {label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_http3_is_refused_before_any_request() {
    let out = tokio::process::Command::new(LAB)
        .args(["load", "--url", "https://127.0.0.1:9", "--insecure"])
        .args(["--protocol", "grpc", "--http", "3", "--duration", "1"])
        .output()
        .await
        .expect("glimpse-lab runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rides HTTP/2"), "{stderr}");
}
