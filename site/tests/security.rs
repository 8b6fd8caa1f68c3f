//! The front-end's protections, attacked the way a stranger would, against an in-process site
//! with real synthetic workers behind the real QUIC dispatcher: API keys, per-caller
//! isolation, cross-origin refusal, rate and share limits, JSON errors for malformed
//! requests, the admin listener, and the headers every response carries.

use std::time::{Duration, Instant};

use common::{Harness, client, metric, part, png};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common;

/// A key file with an admin key and two user keys.
struct Keys {
    _dir: tempfile::TempDir,
    path: String,
    admin: String,
    alice: String,
    bob: String,
}

fn keys() -> Keys {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let admin = glimpse_site::access::auth::add_new_key(&path, "ops", true).unwrap();
    let alice = glimpse_site::access::auth::add_new_key(&path, "alice", false).unwrap();
    let bob = glimpse_site::access::auth::add_new_key(&path, "bob", false).unwrap();
    Keys {
        path: path.to_string_lossy().into_owned(),
        _dir: dir,
        admin,
        alice,
        bob,
    }
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn status_and_json(r: reqwest::Response) -> (u16, reqwest::header::HeaderMap, Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

/// Reads SSE `job` events from `stream` for `window`, returning every event's data text.
async fn collect_events(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    window: Duration,
) -> String {
    let mut text = String::new();
    let _ = tokio::time::timeout(window, async {
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    text
}

async fn open_events(
    client: &reqwest::Client,
    url: &str,
    auth: Option<&str>,
) -> impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin + use<> {
    let mut req = client.get(url);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    // Wait for the hello, so we are subscribed before anything is uploaded.
    let hello = collect_until(&mut stream, "hello", Duration::from_secs(30)).await;
    assert!(hello, "the stream says hello");
    stream
}

async fn collect_until(
    stream: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    needle: &str,
    limit: Duration,
) -> bool {
    let mut text = String::new();
    tokio::time::timeout(limit, async {
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains(needle) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_required_checked_reloaded_and_revoked() {
    let k = keys();
    let h = Harness::ready(1, 1, &["--api-keys", &k.path]).await;
    let c = client();

    // No key, a wrong key: 401 JSON with WWW-Authenticate.
    for auth in [
        None,
        Some(bearer("glk_wrong")),
        Some("Basic Zm9vOmJhcg==".into()),
    ] {
        for path in [
            "/api/v1/session",
            "/v2/health/live",
            "/v2/models/googlenet",
            "/api/v1/status",
        ] {
            let mut req = c.get(h.url(path));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let (s, headers, body) = status_and_json(req.send().await.unwrap()).await;
            assert_eq!(s, 401, "{path} with {auth:?}: {body}");
            assert!(body["error"].is_string(), "{body}");
            assert!(
                headers["www-authenticate"]
                    .to_str()
                    .unwrap()
                    .starts_with("Bearer"),
                "{headers:?}"
            );
        }
    }
    let form = reqwest::multipart::Form::new().part("file", part(png(1), "a.png", "image/png"));
    let r = c
        .post(h.url("/api/v1/classify?wait=true"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "uploads need a key too");

    // The right key: 200, and the upload works.
    let (s, _, session) = status_and_json(
        c.get(h.url("/api/v1/session"))
            .header("authorization", bearer(&k.alice))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        session,
        json!({"auth": "key", "key": "alice", "admin": false, "nodes": false})
    );
    let form = reqwest::multipart::Form::new().part("file", part(png(1), "a.png", "image/png"));
    let r = c
        .post(h.url("/api/v1/classify?wait=true"))
        .header("authorization", bearer(&k.alice))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Health probes need no key; operator data needs an admin key.
    assert_eq!(c.get(h.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(c.get(h.url("/readyz")).send().await.unwrap().status(), 200);
    for path in ["/metrics", "/api/v1/nodes"] {
        let r = c
            .get(h.url(path))
            .header("authorization", bearer(&k.bob))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path} with a user key");
        let r = c
            .get(h.url(path))
            .header("authorization", bearer(&k.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path} with the admin key");
    }

    // A key added to the file works within the reload interval; a removed one stops.
    let carol =
        glimpse_site::access::auth::add_new_key(std::path::Path::new(&k.path), "carol", false)
            .unwrap();
    let text = std::fs::read_to_string(&k.path).unwrap();
    let without_bob: String = text
        .lines()
        .filter(|l| !l.starts_with("bob "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&k.path, without_bob).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let carol_ok = c
            .get(h.url("/api/v1/session"))
            .header("authorization", bearer(&carol))
            .send()
            .await
            .unwrap()
            .status()
            == 200;
        let bob_refused = c
            .get(h.url("/api/v1/session"))
            .header("authorization", bearer(&k.bob))
            .send()
            .await
            .unwrap()
            .status()
            == 401;
        if carol_ok && bob_refused {
            break;
        }
        assert!(Instant::now() < deadline, "the key file was not reloaded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_keys_one_callers_jobs_never_reach_another() {
    let k = keys();
    let h = Harness::ready(1, 300, &["--api-keys", &k.path]).await;
    let c = client();
    let mut bob_events = open_events(&c, &h.url("/api/v1/events"), Some(&bearer(&k.bob))).await;
    let mut alice_events = open_events(&c, &h.url("/api/v1/events"), Some(&bearer(&k.alice))).await;

    let secret = "patient-4711-jane-doe-mri.png";
    let form = reqwest::multipart::Form::new().part("file", part(png(4), secret, "image/png"));
    let r = c
        .post(h.url("/api/v1/classify"))
        .header("authorization", bearer(&k.alice))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    let id = body["jobs"][0]["id"].as_str().unwrap().to_string();
    assert!(
        body.get("client_token").is_none(),
        "keys identify callers; no token needed"
    );

    // Alice sees her job finish on her stream; Bob's stream carries nothing of it.
    assert!(
        collect_until(
            &mut alice_events,
            "\"status\":\"ok\"",
            Duration::from_secs(60)
        )
        .await
    );
    let form =
        reqwest::multipart::Form::new().part("file", part(png(5), "bobs-own.png", "image/png"));
    let r = c
        .post(h.url("/api/v1/classify"))
        .header("authorization", bearer(&k.bob))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let seen = collect_events(&mut bob_events, Duration::from_secs(3)).await;
    assert!(seen.contains("bobs-own.png"), "Bob's stream works: {seen}");
    assert!(
        !seen.contains(secret) && !seen.contains(&id),
        "Bob saw Alice's job: {seen}"
    );

    // Lookups: Alice finds her job, Bob gets the same 404 as for a job that never existed.
    let r = c
        .get(h.url(&format!("/api/v1/jobs/{id}")))
        .header("authorization", bearer(&k.alice))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(h.url(&format!("/api/v1/jobs/{id}")))
        .header("authorization", bearer(&k.bob))
        .send()
        .await
        .unwrap();
    let (s, _, body) = status_and_json(r).await;
    assert_eq!(s, 404);
    assert!(!body.to_string().contains(secret));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_keys_a_fresh_client_sees_nothing_of_anyone_elses() {
    let h = Harness::ready(1, 300, &[]).await;
    let first = client();
    let stranger = client();
    let mut stranger_events = open_events(&stranger, &h.url("/api/v1/events"), None).await;

    let secret = "patient-4711-jane-doe-mri.png";
    let form = reqwest::multipart::Form::new().part("file", part(png(6), secret, "image/png"));
    let r = first
        .post(h.url("/api/v1/classify"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let cookie = r
        .headers()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Secure"),
        "{cookie}"
    );
    let body: Value = r.json().await.unwrap();
    let id = body["jobs"][0]["id"].as_str().unwrap().to_string();
    let token = body["client_token"]
        .as_str()
        .expect("API clients get their token")
        .to_string();

    let seen = collect_events(&mut stranger_events, Duration::from_secs(3)).await;
    assert!(
        !seen.contains(secret) && !seen.contains(&id),
        "the stranger saw it: {seen}"
    );
    let r = stranger
        .get(h.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = first
        .get(h.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the uploader's cookie finds it");

    // An API client without cookies follows its jobs with the token it was given.
    let bare = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let r = bare
        .get(h.url(&format!("/api/v1/jobs/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = bare
        .get(h.url(&format!("/api/v1/jobs/{id}")))
        .header("x-glimpse-client", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A token this server did not sign is ignored (a new identity is made instead). One
    // character in the middle changes (to one it is not: replacing the last one with "A"
    // left 1 token in 64 unchanged), so the signature no longer matches.
    let mut forged = token.clone().into_bytes();
    forged[10] = if forged[10] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    assert_ne!(forged, token);
    let r = bare
        .get(h.url(&format!("/api/v1/jobs/{id}")))
        .header("x-glimpse-client", forged)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_origin_posts_are_refused() {
    let h = Harness::ready(1, 1, &["--allowed-origin", "https://app.example"]).await;
    let c = client();
    let origin = h.base.clone();
    let post = |origin: &str, site: &str| {
        let form = reqwest::multipart::Form::new().part("file", part(png(1), "a.png", "image/png"));
        c.post(h.url("/api/v1/classify?wait=true"))
            .header("origin", origin)
            .header("sec-fetch-site", site)
            .multipart(form)
            .send()
    };
    let (s, _, body) =
        status_and_json(post("https://evil.example", "cross-site").await.unwrap()).await;
    assert_eq!(s, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("cross-origin"),
        "{body}"
    );
    let (s, _, _) = status_and_json(post(&origin, "same-origin").await.unwrap()).await;
    assert_eq!(s, 200, "our own page may post");
    let (s, _, _) = status_and_json(post("https://app.example", "cross-site").await.unwrap()).await;
    assert_eq!(s, 200, "an allowed origin may post");
    let r = c
        .post(h.url("/v2/models/googlenet/infer"))
        .header("origin", "https://evil.example")
        .header("content-type", "text/plain")
        .body(r#"{"inputs":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "KServe too");
    let text = h.get_text("/metrics").await;
    assert!(
        text.contains("glimpse_images_total{outcome=\"ok\"} 2"),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_and_share_limits_answer_429_with_retry_after() {
    let h = Harness::ready(
        1,
        4000,
        &[
            "--rate-limit",
            "1:4",
            "--max-queued-per-caller",
            "2",
            "--max-event-streams-per-caller",
            "1",
        ],
    )
    .await;
    let c = client();
    // Two slow images fill this caller's share of the queue: the third is 429.
    let mut statuses = Vec::new();
    for i in 0..3u8 {
        let form =
            reqwest::multipart::Form::new().part("file", part(png(i), "slow.png", "image/png"));
        let r = c
            .post(h.url("/api/v1/classify"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        statuses.push((
            r.status().as_u16(),
            r.headers().get("retry-after").is_some(),
        ));
    }
    assert_eq!(statuses, [(202, false), (202, false), (429, true)]);
    // One event stream is allowed; the second is refused while the first is open.
    let first = c.get(h.url("/api/v1/events")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    // That was the 4th request of a burst of 4: the 5th is over the rate.
    let r = c.get(h.url("/api/v1/events")).send().await.unwrap();
    let (s, headers, body) = status_and_json(r).await;
    assert_eq!(s, 429, "{body}");
    let after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&after), "{after}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("too many requests")
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = c.get(h.url("/api/v1/events")).send().await.unwrap();
    let (s, _, body) = status_and_json(r).await;
    assert_eq!(s, 429, "the stream cap: {body}");
    assert!(
        body["error"].as_str().unwrap().contains("event streams"),
        "{body}"
    );
    drop(first);
    // Health probes are never rate limited.
    for _ in 0..10 {
        assert_eq!(c.get(h.url("/healthz")).send().await.unwrap().status(), 200);
    }
    let text = h.get_text("/healthz").await;
    assert!(text.contains("ok"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_json_errors_and_every_response_is_hardened() {
    let h = Harness::ready(1, 1, &[]).await;
    let c = client();
    let long_uri = format!("/api/v1/jobs/{}", "x".repeat(10_000));
    let (s, headers, body) = status_and_json(c.get(h.url(&long_uri)).send().await.unwrap()).await;
    assert_eq!(s, 414, "{body}");
    assert!(body["error"].is_string());
    assert_eq!(headers["content-type"], "application/json");
    let (s, _, body) = status_and_json(
        c.get(h.url("/healthz"))
            .header("x-junk", "j".repeat(20_000))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 431, "{body}");
    assert!(body["error"].is_string());
    // Too many header fields, over HTTP/1.1 and HTTP/2: JSON too, not hyper's empty 431.
    let h1 = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .http1_only()
        .build()
        .unwrap();
    for c in [&c, &h1] {
        let mut req = c.get(h.url("/healthz"));
        for i in 0..150 {
            req = req.header(format!("x-h{i}"), "v");
        }
        let (s, _, body) = status_and_json(req.send().await.unwrap()).await;
        assert_eq!(s, 431, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("header fields"),
            "{body}"
        );
    }
    for path in ["/", "/healthz", "/api/v1/status", "/nope"] {
        let r = c.get(h.url(path)).send().await.unwrap();
        assert_eq!(
            r.headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            Some("max-age=31536000"),
            "{path}"
        );
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{path}");
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_takes_metrics_and_nodes_off_the_public_one() {
    let h = Harness::ready(1, 1, &["--admin-listen", "127.0.0.1:0"]).await;
    let admin = h
        .site
        .as_ref()
        .and_then(|s| s.admin_addr)
        .expect("admin address");
    let c = client();
    for path in ["/metrics", "/api/v1/nodes"] {
        let r = c.get(h.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path} is not public");
        let r = c.get(format!("http://{admin}{path}")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} on the admin address");
    }
    let text = c
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metric(&text, "glimpse_connections").is_some(), "{text}");
    assert!(
        metric(&text, "glimpse_buffered_bytes_limit") == Some((512u64 << 20) as f64),
        "{text}"
    );
    // The page still learns whether the cluster is ready, without node details.
    let (s, status) = h.get_json("/api/v1/status").await;
    assert_eq!(s, 200);
    assert_eq!(status["ready"], true);
    assert!(status.get("nodes").is_some_and(|n| n.is_u64()), "{status}");
    assert!(
        !status.to_string().contains("127.0.0.1"),
        "no addresses: {status}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_is_read_to_its_end_so_the_client_sees_why() {
    // Like curl, this client writes its whole body before it reads anything (and, like curl
    // with a large body, says `Expect: 100-continue`). The server refuses the request after
    // its first 60 bytes (the spaces after them are not parsed: see glimpse-wire's
    // `a_refused_request_is_not_read_past_the_refusal`); unless it keeps reading (and
    // discarding) the rest, the client's writes fail and it never sees the answer.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::ready(1, 1, &[]).await;
    let mut tls = h.raw_tls().await;
    let body = {
        let mut b = br#"{"inputs":[{"name":"image","datatype":"BYTES","data":["","#.to_vec();
        b.resize(8 << 20, b' ');
        b
    };
    let head = format!(
        "POST /v2/models/googlenet/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    // The flush matters: tokio-rustls's `write_all` can return with the last records still
    // in its buffer, and a server waiting for them would answer only at its body timeout.
    tls.write_all(&body)
        .await
        .and(tls.flush().await)
        .expect("the server reads the whole refused body");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    let text = text.trim_start_matches("HTTP/1.1 100 Continue\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("image[0] is empty"), "{text}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_png_that_panics_the_decoder_is_a_422_answered_once_not_retried() {
    // Found by fuzzing: png 0.18.1 panics on this 55-byte palette. Real GoogLeNet nodes
    // (random weights) decode it; the answer is "corrupt", from the first node, not a
    // retryable node fault tried on every node.
    let crash = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/crashes-found/model_decode/png-palette-of-55-bytes"
    ))
    .unwrap();
    let h = Harness::start(&["--local-workers", "2", "--weights", "random"]).await;
    h.wait_ready().await;
    let form = reqwest::multipart::Form::new().part("file", part(crash, "bad.png", "image/png"));
    let (status, body) = h.classify_wait(form).await;
    assert_eq!(status, 422, "{body}");
    let res = &body["results"][0];
    assert_eq!(res["attempts"], 1, "{res}");
    assert!(
        res["error"].as_str().unwrap().contains("decoder failed"),
        "{res}"
    );
    let text = h.get_text("/metrics").await;
    assert_eq!(
        metric(&text, "glimpse_dispatch_retries_total"),
        Some(0.0),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_whose_length_lies_then_stalls_gets_408_and_its_connection_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::ready(1, 1, &["--body-timeout-s", "1"]).await;
    let mut tls = h.raw_tls().await;
    tls.write_all(
        b"POST /api/v1/classify HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n\x89PNG\r\n\x1a\n",
    )
    .await
    .unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(20), tls.read(&mut answer))
        .await
        .expect("answered, not held forever")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("no request body data arrived"), "{text}");
    h.stop().await;
}

/// Opens one KServe request per parse slot of a client address, each stalled after the start of its
/// body, and returns once the server holds every one of the caller's slots. Probing before
/// that would race: a probe read first takes a slot itself, and a stalled request is the one
/// refused.
async fn hold_every_parse_slot(
    h: &Harness,
) -> Vec<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    use tokio::io::AsyncWriteExt;
    let mut stalled = Vec::new();
    for _ in 0..glimpse_site::PARSES_PER_ADDRESS {
        let mut tls = h.raw_tls().await;
        tls.write_all(
            b"POST /v2/models/googlenet/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{\"inputs\":[",
        )
        .await
        .unwrap();
        tls.flush().await.unwrap();
        stalled.push(tls);
    }
    let parses = &h.site.as_ref().expect("running").site.parses;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while parses.total() < glimpse_site::PARSES_PER_ADDRESS {
        assert!(
            std::time::Instant::now() < deadline,
            "the stalled requests hold {} parse slots after 20 s",
            parses.total()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stalled
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_past_its_parse_share_waits_for_a_slot_instead_of_being_refused() {
    // A client with more requests in flight than its share of parsing threads (Triton's
    // perf_analyzer at concurrency 16, say) queues for a slot: here four requests hold the
    // share until their connections drop, and the fifth, sent meanwhile, then gets its answer.
    let h = Harness::ready(1, 1, &[]).await;
    let holding = hold_every_parse_slot(&h).await;
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png(1));
    let body = json!({ "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES", "data": [b64] }] });
    let request = h
        .client
        .post(h.url("/v2/models/googlenet/infer"))
        .json(&body)
        .send();
    let waiting = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "queued while the share is held");
    drop(holding);
    let r = waiting.await.unwrap().unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_kserve_senders_cannot_take_every_parsing_thread() {
    // Each KServe body is parsed on a blocking thread while it streams in: one client
    // address gets at most 4 of those at once.
    let h = Harness::ready(1, 1, &[]).await;
    let stalled = hold_every_parse_slot(&h).await;
    let body = json!({ "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGk="] }] });
    let r = h
        .client
        .post(h.url("/v2/models/googlenet/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (s, _, err) = status_and_json(r).await;
    assert_eq!(s, 429, "{err}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains("inference requests being received"),
        "{err}"
    );
    drop(stalled);
    h.stop().await;
}

/// A raw TLS connection to `h`'s HTTPS listener from the loopback address `from`.
async fn raw_tls_from(
    h: &Harness,
    from: std::net::IpAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let port: u16 = h.base.rsplit(':').next().unwrap().parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::new(from, 0)).unwrap();
    let tcp = socket
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    common::tls_connector().connect(name, tcp).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_trickling_kserve_bodies_from_sixteen_addresses_leave_kserve_working() {
    // The attack that once made every KServe call fail: 16 addresses x 4 KServe JSON bodies,
    // one byte every 2 s. Each address holds only its own share of the parse slots, so the
    // rest serve everyone else; and once the grace is over, each trickle is cut for its rate.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::ready(1, 1, &["--body-rate-grace-s", "3"]).await;
    let mut tricklers = tokio::task::JoinSet::new();
    for i in 0..64u8 {
        let from = std::net::IpAddr::from([127, 0, 3, 1 + i / 4]);
        let mut tls = raw_tls_from(&h, from).await;
        tricklers.spawn(async move {
            tls.write_all(
                b"POST /v2/models/googlenet/infer HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
            )
            .await
            .unwrap();
            let started = Instant::now();
            let mut answer = Vec::new();
            let mut buf = [0u8; 1024];
            loop {
                tokio::select! {
                    r = tls.read(&mut buf) => match r {
                        Ok(0) | Err(_) => break,
                        Ok(n) => answer.extend_from_slice(&buf[..n]),
                    },
                    () = tokio::time::sleep(Duration::from_secs(2)) => {
                        if tls.write_all(b" ").await.and(tls.flush().await).is_err() {
                            break;
                        }
                    }
                }
            }
            (started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
        });
    }
    let parses = &h.site.as_ref().expect("running").site.parses;
    let deadline = Instant::now() + Duration::from_secs(20);
    while parses.total() < 64 {
        assert!(
            Instant::now() < deadline,
            "the trickles hold {} parse slots",
            parses.total()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While they hold 64 slots, a normal KServe call is parsed and answered.
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png(2));
    let body = json!({ "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES", "data": [b64] }] });
    let start = Instant::now();
    let r = h
        .client
        .post(h.url("/v2/models/googlenet/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let took = start.elapsed();
    let (s, _, answer) = status_and_json(r).await;
    assert_eq!(s, 200, "{answer}");
    assert!(
        took < Duration::from_secs(2),
        "a normal KServe call took {took:?}"
    );
    // Every trickle is answered 408 for its rate, soon after the grace.
    let mut cut = 0;
    while let Some(r) = tricklers.join_next().await {
        let (after, answer) = r.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("bytes/s on average"), "{answer}");
        assert!(after < Duration::from_secs(15), "cut after {after:?}");
        cut += 1;
    }
    assert_eq!(cut, 64);
    assert_eq!(parses.total(), 0, "every slot is free again");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_keys_are_limited_per_address_before_the_key_is_checked() {
    let k = keys();
    let h = Harness::ready(1, 1, &["--api-keys", &k.path]).await;
    let from = |last: u8| {
        reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .local_address(std::net::IpAddr::from([127, 0, 4, last]))
            .build()
            .unwrap()
    };
    let guesser = from(1);
    let url = h.url("/api/v1/session");
    let start = Instant::now();
    let (mut unauthorized, mut limited) = (0u32, 0u32);
    let mut retry_after = None;
    for i in 0..300 {
        let r = guesser
            .get(&url)
            .header("authorization", bearer(&format!("guess-{i}")))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            401 => unauthorized += 1,
            429 => {
                limited += 1;
                retry_after = r.headers().get("retry-after").cloned();
            }
            other => panic!("a wrong key got {other}"),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    // 50 at once, then 10 a second.
    let allowed = 50.0 + 10.0 * secs + 1.0;
    assert!(
        f64::from(unauthorized) <= allowed,
        "{unauthorized} wrong keys checked in {secs:.1} s"
    );
    assert!(
        limited >= 300 - allowed as u32,
        "{limited} refused with 429"
    );
    assert!(retry_after.is_some(), "429 says when to retry");
    // While throttled, even its valid key is not looked at; another address's is.
    let r = guesser
        .get(&url)
        .header("authorization", bearer(&k.alice))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let r = from(2)
        .get(&url)
        .header("authorization", bearer(&k.alice))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = h
        .client
        .get(h.url("/metrics"))
        .header("authorization", bearer(&k.admin))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(
            &text,
            "glimpse_requests_rejected_total{reason=\"auth_throttled\"}"
        )
        .is_some_and(|n| n >= f64::from(limited)),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_of_another_frontend_is_named_only_to_an_admitted_caller() {
    let k = keys();
    let h = Harness::ready(1, 1, &["--api-keys", &k.path, "--frontend-id", "web-1"]).await;
    let url = h.url("/api/v1/jobs/web-9.0123abcd");
    let r = h.client.get(&url).send().await.unwrap();
    let (s, headers, body) = status_and_json(r).await;
    assert_eq!(s, 401, "{body}");
    assert!(headers.get("x-glimpse-frontend").is_none());
    assert!(!body.to_string().contains("web-9"), "{body}");
    let r = h
        .client
        .get(&url)
        .header("authorization", bearer(&k.bob))
        .send()
        .await
        .unwrap();
    let (s, headers, body) = status_and_json(r).await;
    assert_eq!(s, 421, "{body}");
    assert_eq!(headers["x-glimpse-frontend"], "web-9");
    h.stop().await;
}
