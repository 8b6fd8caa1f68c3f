//! HTTP/3 on the front-end, with a real QUIC client (`h3` on quinn): the same routes as
//! HTTPS, advertised in `Alt-Svc`, many uploads on one connection, API keys, and `--no-h3`.
//! (Chromium's own HTTP/3 is checked by `site/browser-test`.)

use std::time::Duration;

use common::h3::H3Client;
use common::{Harness, metric, png};

use crate::common;

fn h3_addr(h: &Harness) -> std::net::SocketAddr {
    h.site
        .as_ref()
        .and_then(|s| s.h3_addr)
        .expect("an HTTP/3 listener")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_advertises_http3_which_serves_the_page_and_the_json_api() {
    let h = Harness::ready(1, 5, &[]).await;
    let at = h3_addr(&h);
    assert_eq!(at.ip(), std::net::Ipv4Addr::LOCALHOST, "beside HTTPS");

    let page = h.client.get(h.url("/")).send().await.expect("GET /");
    assert_eq!(
        page.headers()["alt-svc"],
        format!("h3=\":{}\"; ma=86400", at.port()).as_str()
    );

    let client = H3Client::connect(at).await;
    let page = client.get("/").await;
    assert_eq!(page.status, 200);
    assert!(
        String::from_utf8_lossy(&page.body).contains("<html"),
        "the upload page"
    );
    assert!(
        page.headers.contains_key("strict-transport-security")
            || page.headers.contains_key("content-security-policy"),
        "hardened like HTTPS: {:?}",
        page.headers
    );

    let answer = client
        .upload("/api/v1/classify?wait=true", &[png(1), png(2)], &[])
        .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let json = answer.json();
    let results = json["results"].as_array().expect("results");
    assert_eq!(results.len(), 2);
    for r in results {
        assert_eq!(r["status"], "ok", "{r}");
    }

    let health = client.get("/healthz").await;
    assert_eq!(health.status, 200);
    let missing = client.get("/no/such/route").await;
    assert_eq!(missing.status, 404);

    // Metrics tell the protocols apart: these came over h3, the page above over HTTPS.
    let text = h.get_text("/metrics").await;
    for (series, count) in [
        (
            "glimpse_http_request_duration_seconds_count{route=\"/api/v1/classify\",code=\"200\",protocol=\"h3\"}",
            1.0,
        ),
        (
            "glimpse_http_responses_total{code=\"404\",protocol=\"h3\"}",
            1.0,
        ),
        (
            "glimpse_http_request_duration_seconds_count{route=\"/\",code=\"200\",protocol=\"h3\"}",
            1.0,
        ),
    ] {
        assert_eq!(metric(&text, series), Some(count), "{series} in {text}");
    }
    assert!(
        text.contains("route=\"/\",code=\"200\",protocol=\"h2\"")
            || text.contains("route=\"/\",code=\"200\",protocol=\"http/1.1\""),
        "the HTTPS page request has its own protocol: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_uploads_share_one_connection_each_on_its_own_stream() {
    let h = Harness::ready(2, 5, &[]).await;
    let client = std::sync::Arc::new(H3Client::connect(h3_addr(&h)).await);
    let uploads: Vec<_> = (0..20u8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .upload("/api/v1/classify?wait=true", &[png(i)], &[])
                    .await
            })
        })
        .collect();
    for upload in uploads {
        let answer = upload.await.expect("upload task");
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        assert_eq!(answer.json()["results"][0]["status"], "ok");
    }
    assert_eq!(
        client.quic.stats().path.lost_packets,
        0,
        "loopback loses nothing"
    );
    let open = h
        .site
        .as_ref()
        .expect("site")
        .connections
        .open_on(glimpse_site::http::conn::Listener::Http3);
    assert_eq!(open, 1, "one QUIC connection carried all twenty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_guard_http3_as_they_guard_https() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let key = glimpse_site::access::auth::add_new_key(&keys, "ci", false).expect("a key");
    let keys = keys.to_string_lossy().into_owned();
    let h = Harness::ready(1, 5, &["--api-keys", &keys]).await;
    let client = H3Client::connect(h3_addr(&h)).await;
    let refused = client
        .upload("/api/v1/classify?wait=true", &[png(3)], &[])
        .await;
    assert_eq!(
        refused.status,
        401,
        "{}",
        String::from_utf8_lossy(&refused.body)
    );
    let allowed = client
        .upload(
            "/api/v1/classify?wait=true",
            &[png(3)],
            &[("authorization", &format!("Bearer {key}"))],
        )
        .await;
    assert_eq!(
        allowed.status,
        200,
        "{}",
        String::from_utf8_lossy(&allowed.body)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_h3_serves_https_alone_and_advertises_nothing() {
    let h = Harness::ready(1, 5, &["--no-h3"]).await;
    assert!(h.site.as_ref().and_then(|s| s.h3_addr).is_none());
    let page = h.client.get(h.url("/")).send().await.expect("GET /");
    assert!(page.headers().get("alt-svc").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_gets_as_many_request_streams_as_http2_and_no_more() {
    let h = Harness::ready(1, 5, &[]).await;
    let client = H3Client::connect(h3_addr(&h)).await;
    // Streams opened and left hanging: the server grants 128 at once, like HTTP/2's
    // max_concurrent_streams, and the next waits until one closes.
    let limit = glimpse_site::http::h3::MAX_STREAMS as usize;
    let mut open = Vec::new();
    for _ in 0..limit {
        let stream = tokio::time::timeout(Duration::from_secs(5), client.quic.open_bi())
            .await
            .expect("a stream within the limit opens at once")
            .expect("stream");
        open.push(stream);
    }
    let over = tokio::time::timeout(Duration::from_millis(300), client.quic.open_bi()).await;
    assert!(
        over.is_err(),
        "stream {} opened beyond the limit",
        limit + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_gets_its_share_of_connections_over_quic_too() {
    let h = Harness::ready(1, 5, &["--max-connections-per-ip", "2"]).await;
    let at = h3_addr(&h);
    let _first = H3Client::connect(at).await;
    let _second = H3Client::connect(at).await;
    let third = H3Client::try_connect(at).await;
    assert!(
        third.is_err(),
        "a third connection from one address was admitted"
    );
    let https = h.client.get(h.url("/healthz")).send().await;
    assert!(
        https.is_err() || https.is_ok_and(|r| r.status() == 429),
        "the address's share is spent over TCP too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_asks_is_closed_by_the_header_timeout() {
    let h = Harness::ready(1, 5, &["--header-timeout-s", "1"]).await;
    let client = H3Client::connect(h3_addr(&h)).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), client.quic.closed()).await;
    assert!(closed.is_ok(), "a silent connection still open after 10 s");
    let registry = &h.site.as_ref().expect("site").connections;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while registry.open_on(glimpse_site::http::conn::Listener::Http3) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "its slot was not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_trickled_over_http3_is_cut_for_its_rate() {
    use bytes::{Buf, Bytes};
    let h = Harness::ready(1, 5, &["--body-rate-grace-s", "2"]).await;
    let client = H3Client::connect(h3_addr(&h)).await;
    let request = hyper::http::Request::post("https://localhost/api/v1/classify?wait=true")
        .header("content-type", "multipart/form-data; boundary=b")
        .header("content-length", "100000")
        .body(())
        .expect("request");
    let stream = client.start(request).await;
    let (mut send, mut recv) = stream.split();
    // One byte every half second: far below any useful rate.
    let trickle = tokio::spawn(async move {
        let mut first = true;
        loop {
            let byte = if first { &b"-"[..] } else { &b"x"[..] };
            first = false;
            if send.send_data(Bytes::from_static(byte)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let started = std::time::Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(20), recv.recv_response())
        .await
        .expect("an answer within 20 s")
        .expect("a response");
    let took = started.elapsed();
    let mut body = Vec::new();
    while let Ok(Some(mut chunk)) = recv.recv_data().await {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    trickle.abort();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(response.status(), 408, "{body}");
    assert!(body.contains("bytes/s on average"), "{body}");
    assert!(took < Duration::from_secs(10), "cut after {took:?}");
}

/// The destination connection ID of a QUIC long-header packet, which names its connection.
fn long_header_dcid(packet: &[u8]) -> Option<&[u8]> {
    let len = usize::from(*packet.get(5)?);
    packet.get(6..6 + len)
}

/// `n` distinct client Initials (each a new connection), captured by aiming a real QUIC client
/// at a socket that never answers.
async fn captured_initials(n: usize) -> Vec<Vec<u8>> {
    let trap = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("trap socket");
    let at = trap.local_addr().expect("trap address");
    let endpoint = common::h3::client_endpoint();
    let mut pending = Vec::new();
    let mut initials: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; 4096];
    while initials.len() < n {
        pending.push(endpoint.connect(at, "localhost").expect("connect"));
        let len = tokio::time::timeout(Duration::from_secs(5), trap.recv(&mut buf))
            .await
            .expect("an Initial within 5 s")
            .expect("recv");
        let packet = buf[..len].to_vec();
        // A retransmission of an earlier Initial would name the same connection.
        if initials
            .iter()
            .all(|i| long_header_dcid(i) != long_header_dcid(&packet))
        {
            initials.push(packet);
        }
    }
    initials
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pile_of_handshakes_makes_new_clients_prove_their_address_first() {
    use glimpse_site::http::conn::Listener;
    use glimpse_site::http::h3::VALIDATE_ABOVE;
    let h = Harness::ready(1, 5, &[]).await;
    let at = h3_addr(&h);
    let registry = &h.site.as_ref().expect("site").connections;
    let events = |text: &str, event: &str| {
        metric(
            text,
            &format!("glimpse_connection_events_total{{event=\"{event}\"}}"),
        )
    };

    // VALIDATE_ABOVE handshakes that never finish: real Initials replayed from a socket that
    // ignores the server's answers (as a flood from spoofed addresses would).
    let initials = captured_initials(VALIDATE_ABOVE + 1).await;
    let silent = tokio::net::UdpSocket::bind("127.0.0.2:0")
        .await
        .expect("silent socket");
    for initial in &initials[..VALIDATE_ABOVE] {
        silent.send_to(initial, at).await.expect("send");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while registry.open_on(Listener::Http3) < VALIDATE_ABOVE {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} half-open handshakes admitted",
            registry.open_on(Listener::Http3)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        events(&h.get_text("/metrics").await, "retry_sent"),
        Some(0.0)
    );

    // A real client now gets a Retry first, comes back with its token, and is served.
    let client = H3Client::connect(at).await;
    assert_eq!(client.get("/healthz").await.status, 200);
    assert_eq!(
        events(&h.get_text("/metrics").await, "retry_sent"),
        Some(1.0)
    );

    // A spoofed source gets one Retry, smaller than the Initial it sent (no amplification),
    // and the server keeps nothing for it.
    let open_before = registry.open_on(Listener::Http3);
    let spoofed = &initials[VALIDATE_ABOVE];
    silent.send_to(spoofed, at).await.expect("send");
    let mut buf = vec![0u8; 4096];
    let retry = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let (len, _) = silent.recv_from(&mut buf).await.expect("recv");
            // Long header (0x80), type Retry (0x30 in QUIC v1); the half-open handshakes'
            // own Initial and Handshake packets arrive here too.
            if len > 0 && buf[0] & 0xb0 == 0xb0 {
                return len;
            }
        }
    })
    .await
    .expect("a Retry for the spoofed Initial");
    assert!(
        retry < spoofed.len(),
        "Retry of {retry} bytes for an Initial of {}",
        spoofed.len()
    );
    assert_eq!(
        events(&h.get_text("/metrics").await, "retry_sent"),
        Some(2.0)
    );
    assert_eq!(
        registry.open_on(Listener::Http3),
        open_before,
        "no slot for an address that did not prove itself"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_uploads_over_http3_pay_into_the_byte_budget_and_give_it_back() {
    use bytes::Bytes;
    const BUDGET: usize = 2 << 20;
    let h = Harness::ready(
        1,
        5,
        &[
            "--max-file-bytes",
            "1048576",
            "--max-request-bytes",
            "1048576",
            "--max-buffered-bytes",
            &BUDGET.to_string(),
        ],
    )
    .await;
    let client = H3Client::connect(h3_addr(&h)).await;
    // Four uploads of 1 MB each, on one connection; each sends 700 KB and then waits. Two
    // fit in the 2 MiB budget, the rest are refused as they cross it.
    let mut held = Vec::new();
    for _ in 0..4 {
        let request = hyper::http::Request::post("https://localhost/api/v1/classify?wait=true")
            .header("content-type", "multipart/form-data; boundary=b")
            .header("content-length", "1000000")
            .body(())
            .expect("request");
        let mut stream = client.start(request).await;
        let mut part = b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\nContent-Type: image/jpeg\r\n\r\n".to_vec();
        part.resize(700_000, b'x');
        // A refused upload may see its stream stopped while it sends.
        let _ = stream.send_data(Bytes::from(part)).await;
        held.push(stream);
    }
    let mut refused = 0;
    for stream in &mut held {
        if let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_secs(2), stream.recv_response()).await
        {
            assert_eq!(response.status(), 503, "an upload past the budget");
            assert!(response.headers().contains_key("retry-after"));
            refused += 1;
        }
    }
    assert!(
        (1..=2).contains(&refused),
        "{refused} of 4 refused: 2.8 MB against 2 MiB"
    );
    let text = h.get_text("/metrics").await;
    let in_use = metric(&text, "glimpse_buffered_bytes").expect("the gauge");
    assert!(
        in_use > 0.0 && in_use <= BUDGET as f64,
        "{in_use} bytes held"
    );
    let (status, _) = h.get_json("/healthz").await;
    assert_eq!(status, 200, "the front-end serves others meanwhile");

    // The client goes away mid-upload: everything its uploads held comes back.
    drop(held);
    drop(client);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let text = h.get_text("/metrics").await;
        let in_use = metric(&text, "glimpse_buffered_bytes").expect("the gauge");
        if in_use == 0.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{in_use} bytes still held after the client left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_must_be_as_long_as_its_content_length_says() {
    let h = Harness::ready(1, 5, &[]).await;
    let client = H3Client::connect(h3_addr(&h)).await;
    let image = png(3);
    let post = |declared: String| {
        hyper::http::Request::post("https://localhost/api/v1/classify?wait=true")
            .header("content-type", "image/png")
            .header("content-length", declared)
            .body(())
            .expect("request")
    };
    let exact = client
        .send(post(image.len().to_string()), image.clone().into())
        .await;
    assert_eq!(
        exact.status,
        200,
        "{}",
        String::from_utf8_lossy(&exact.body)
    );
    for declared in [image.len() - 10, image.len() + 10] {
        let wrong = client
            .send(post(declared.to_string()), image.clone().into())
            .await;
        assert_eq!(
            wrong.status,
            400,
            "{} bytes declared as {declared}: {}",
            image.len(),
            String::from_utf8_lossy(&wrong.body)
        );
        assert!(
            String::from_utf8_lossy(&wrong.body).contains("Content-Length"),
            "{}",
            String::from_utf8_lossy(&wrong.body)
        );
    }
    for garbage in ["12, 12", "-1", "ten", ""] {
        let bad = client
            .send(post(garbage.into()), image.clone().into())
            .await;
        assert_eq!(bad.status, 400, "Content-Length: {garbage:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_gets_a_head_and_no_content() {
    let h = Harness::ready(1, 5, &[]).await;
    let client = H3Client::connect(h3_addr(&h)).await;
    let request = hyper::http::Request::head("https://localhost/healthz")
        .body(())
        .expect("request");
    let head = client.send(request, bytes::Bytes::new()).await;
    let https = h
        .client
        .head(h.url("/healthz"))
        .send()
        .await
        .expect("HEAD over HTTPS");
    assert_eq!(head.status, https.status().as_u16(), "as over HTTPS");
    assert!(head.body.is_empty(), "{} bytes of content", head.body.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_an_http3_request_in_flight_finish_and_then_closes() {
    // Each image takes 400 ms on the worker, so the upload is in flight when shutdown begins.
    let h = Harness::ready(1, 400, &["--shutdown-grace-s", "0"]).await;
    let client = std::sync::Arc::new(H3Client::connect(h3_addr(&h)).await);
    let uploading = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .upload("/api/v1/classify?wait=true", &[png(9)], &[])
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    let stopping = tokio::spawn(h.stop());
    let answer = uploading.await.expect("upload task");
    assert_eq!(
        answer.status,
        200,
        "the request in flight at shutdown: {}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.json()["results"][0]["status"], "ok");
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("shutdown within 30 s")
        .expect("shutdown task");
    // GOAWAY, then the connection closes: nothing new is served.
    let closed = tokio::time::timeout(Duration::from_secs(10), client.quic.closed()).await;
    assert!(closed.is_ok(), "the QUIC connection outlived the server");
}
