//! Operating a real `glimpse-node serve` process: its settings from a `--config` TOML file,
//! the `--admin-listen` endpoints (`/healthz`, `/readyz`, `/metrics`) over real HTTP, readiness
//! failing once SIGTERM starts the drain while an image is still in flight, and
//! `--log-format json` writing one JSON object per log line.

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use common::{Cluster, NodeProc, http_get, metric};

use crate::common;

const LONG: Duration = Duration::from_secs(60);

fn free_tcp_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_from_a_config_file_and_readyz_fails_while_draining() {
    let cluster = Cluster::new();
    let admin = free_tcp_addr();
    let config = cluster.path("node.toml");
    std::fs::write(
        &config,
        format!(
            "admin-listen = \"{admin}\"\nlog-format = \"json\"\nextra-delay-ms = 2000\ncapacity = 7\n"
        ),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path").to_string();
    let mut node = NodeProc::spawn(
        &cluster,
        "n1",
        "127.0.0.1:0".parse().expect("addr"),
        1,
        &["--config", &config],
    );

    assert_eq!(http_get(admin, "/healthz").0, 200);
    let (status, body) = http_get(admin, "/readyz");
    assert_eq!((status, body.trim()), (200, "ready"));
    assert_eq!(http_get(admin, "/elsewhere").0, 404);
    let (status, page) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    // From the file: capacity 7.
    assert_eq!(
        metric(&page, "glimpse_worker_capacity"),
        Some(7.0),
        "{page}"
    );
    assert!(
        page.contains("glimpse_build_info{component=\"node\",version=\""),
        "{page}"
    );
    assert!(metric(&page, "process_resident_memory_bytes").is_some_and(|v| v > 0.0));

    let d = cluster.dispatcher(&[("n1", node.addr)]);
    assert!(d.wait_ready(1, LONG).await);
    let image = bytes::Bytes::from_static(b"synthetic nodes take any bytes");
    d.classify(image.clone(), 5, |_| {})
        .await
        .expect("classified");
    let page = http_get(admin, "/metrics").1;
    assert_eq!(metric(&page, "glimpse_worker_answered_total"), Some(1.0));
    assert_eq!(metric(&page, "glimpse_worker_batch_size_count"), Some(1.0));

    // A second image held 2 s by the node; SIGTERM while it is in flight.
    let pending = tokio::spawn({
        let d = d.clone();
        async move { d.classify(image, 5, |_| {}).await }
    });
    assert!(
        eventually(LONG, || metric(
            &http_get(admin, "/metrics").1,
            "glimpse_worker_in_flight"
        ) == Some(1.0))
        .await,
        "the image never showed as in flight"
    );
    node.signal(libc::SIGTERM);
    assert!(
        eventually(LONG, || http_get(admin, "/readyz").0 == 503).await,
        "readyz stayed 200 after SIGTERM"
    );
    let (status, body) = http_get(admin, "/readyz");
    assert_eq!((status, body.trim()), (503, "draining"));
    // Still alive while it drains.
    assert_eq!(http_get(admin, "/healthz").0, 200);
    pending
        .await
        .expect("task")
        .expect("the in-flight image is answered during the drain");
    assert!(node.wait_exit(LONG).success());

    // --log-format json from the file: every line one JSON object with a level and a time.
    let log = node.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{log}");
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v.get("level").is_some() && v.get("timestamp").is_some(),
            "{line}"
        );
    }
}
