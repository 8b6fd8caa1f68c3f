//! The real `glimpse` binary: prints its URL and fingerprint, serves HTTPS, redirects plain
//! HTTP, and exits cleanly on SIGTERM.

use std::time::Duration;

use common::Spawned;

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_https_redirects_http_and_stops_on_sigterm() {
    let mut child = Spawned::start(
        &[
            "--local-workers",
            "1",
            "--model",
            "synthetic",
            "--service-ms",
            "1",
            "--http-redirect",
            "127.0.0.1:0",
            // Drain at once on SIGTERM (the grace is tested in tests/frontends.rs).
            "--shutdown-grace-s",
            "0",
        ],
        None,
    );
    let fingerprint = child.printed("Self-signed certificate, SHA-256 fingerprint ");
    let redirect = child.printed("Plain HTTP on ");
    let redirect = redirect.split_whitespace().next().unwrap_or_default();
    let url = format!("{}/", child.base);
    assert_eq!(fingerprint.split(':').count(), 32);
    // Local workers bring a gRPC listener, on any free port here (HTTPS is on port 0).
    let grpc = child.printed("KServe v2 gRPC (Triton clients) at ");
    let grpc_port: u16 = grpc
        .split_whitespace()
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("gRPC address printed");
    assert_ne!(grpc_port, 0);

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = client.get(format!("{url}healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let plain = format!("http://{redirect}/readyz?x=1");
    let r = client.get(plain).send().await.unwrap();
    assert_eq!(r.status(), 308);
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let port = child.port();
    assert_eq!(location, format!("https://127.0.0.1:{port}/readyz?x=1"));

    let status = child.terminate();
    assert!(status.success(), "clean exit after SIGTERM, got {status}");
}
