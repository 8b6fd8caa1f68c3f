//! The real `glimpse` binary: prints its URL and fingerprint, serves HTTPS, redirects plain
//! HTTP, and exits cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_https_redirects_http_and_stops_on_sigterm() {
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_glimpse"))
            .args([
                "--local-workers",
                "1",
                "--model",
                "synthetic",
                "--service-ms",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--http-redirect",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start glimpse"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut url = None;
    let mut fingerprint = None;
    let mut redirect = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while url.is_none() || fingerprint.is_none() || redirect.is_none() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("glimpse prints its URL, fingerprint and redirect");
        if let Some(rest) = line.strip_prefix("Glimpse is serving at ") {
            url = Some(rest.trim().replace("localhost", "127.0.0.1"));
        } else if let Some(rest) =
            line.strip_prefix("Self-signed certificate, SHA-256 fingerprint ")
        {
            fingerprint = Some(rest.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("Plain HTTP on ") {
            redirect = rest.split_whitespace().next().map(str::to_string);
        }
    }
    let url = url.unwrap_or_default();
    assert_eq!(fingerprint.unwrap_or_default().split(':').count(), 32);

    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let r = client.get(format!("{url}healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let plain = format!("http://{}/readyz?x=1", redirect.unwrap_or_default());
    let r = client.get(plain).send().await.unwrap();
    assert_eq!(r.status(), 308);
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let port = url
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap_or("")
        .to_string();
    assert_eq!(location, format!("https://127.0.0.1:{port}/readyz?x=1"));

    let pid = child.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let start = Instant::now();
    loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            assert!(status.success(), "clean exit after SIGTERM, got {status}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "glimpse did not stop after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
