//! End-to-end tests of the HTTPS API against an in-process site whose nodes are real
//! glimpse-node workers (synthetic model) behind the real QUIC dispatcher.

use std::time::Duration;

use base64::Engine;
use common::{Harness, jpeg, metric, part, png};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common;

fn top_len(result: &Value) -> usize {
    result["top"].as_array().map(Vec::len).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_files_get_two_results_readyz_and_metrics_count_them() {
    let h = Harness::ready(2, 5, &[]).await;
    let (status, health) = h.get_json("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");

    let form = reqwest::multipart::Form::new()
        .part("file", part(jpeg(1), "a.jpg", "image/jpeg"))
        .part("file", part(png(2), "b.png", "image/png"));
    let (status, body) = h.classify_wait(form).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().expect("results array");
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["name"], "a.jpg", "results are in upload order");
    assert_eq!(results[1]["name"], "b.png");
    for res in results {
        assert_eq!(res["status"], "ok", "{res}");
        assert_eq!(top_len(res), 5, "{res}");
        assert!(
            res["node"]
                .as_str()
                .is_some_and(|n| n.starts_with("local-")),
            "{res}"
        );
        assert!(res["attempts"].as_u64().unwrap_or(0) >= 1);
        assert!(
            res["warning"].as_str().unwrap_or("").contains("synthetic"),
            "synthetic labels are marked: {res}"
        );
        assert!(res["latency_ms"].as_f64().is_some());
        let p0 = res["top"][0]["probability"].as_f64().unwrap();
        let p4 = res["top"][4]["probability"].as_f64().unwrap();
        assert!(p0 >= p4, "labels are sorted best first: {res}");
        assert!(
            res["top"][0]["label"]
                .as_str()
                .is_some_and(|l| !l.is_empty())
        );
        assert!(
            res.get("error").is_none(),
            "no error field on success: {res}"
        );
    }

    let (status, ready) = h.get_json("/readyz").await;
    assert_eq!(status, 200);
    assert_eq!(ready["ready"], true);

    let text = h.get_text("/metrics").await;
    assert_eq!(
        metric(&text, "glimpse_images_total{outcome=\"ok\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "glimpse_image_latency_seconds_count"),
        Some(2.0)
    );
    let uploaded = metric(&text, "glimpse_uploaded_bytes_total").unwrap_or(0.0);
    assert_eq!(uploaded as usize, jpeg(1).len() + png(2).len());
    assert!(
        text.contains("glimpse_node_in_flight{node=\"local-1\"}"),
        "{text}"
    );
    assert!(
        text.contains("glimpse_node_served_total{node=\"local-2\"}"),
        "{text}"
    );
    assert!(text.contains("glimpse_retries_total"));
    assert!(text.contains("glimpse_hedges_total"));
    assert!(
        metric(&text, "glimpse_dispatch_attempts_total").unwrap_or(0.0) >= 2.0,
        "{text}"
    );

    let (status, nodes) = h.get_json("/api/v1/nodes").await;
    assert_eq!(status, 200);
    let nodes = nodes["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 2);
    assert!(
        nodes
            .iter()
            .all(|n| n["state"] == "ready" && n["synthetic"] == true),
        "{nodes:?}"
    );
    // What placement sees of each node: its service time once it has answered, and its
    // share of this front-end's placements.
    for n in &nodes {
        let share = n["placement_share"].as_f64().expect("a share");
        assert!((0.0..=1.0).contains(&share), "{n}");
        if n["served"].as_u64().unwrap_or(0) > 0 {
            assert!(n["service_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{n}");
        }
    }
    let text = h.get_text("/metrics").await;
    assert!(text.contains("glimpse_node_placement_share{"), "{text}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_uploads_all_get_results() {
    let h = Harness::ready(2, 2, &[]).await;
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let client = h.client.clone();
        let url = h.url("/api/v1/classify?wait=true");
        let img = png((i % 250) as u8);
        tasks.push(tokio::spawn(async move {
            let form = reqwest::multipart::Form::new()
                .part("file", part(img, &format!("img-{i}.png"), "image/png"));
            let r = client
                .post(url)
                .multipart(form)
                .send()
                .await
                .expect("request");
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.expect("json"))
        }));
    }
    let mut ok = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "request {i}: {body}");
        let res = &body["results"][0];
        assert_eq!(res["name"], format!("img-{i}.png"));
        assert_eq!(res["status"], "ok", "{res}");
        assert_eq!(top_len(res), 5);
        ok += 1;
    }
    assert_eq!(ok, 100);
    let text = h.get_text("/metrics").await;
    assert_eq!(
        metric(&text, "glimpse_images_total{outcome=\"ok\"}"),
        Some(100.0)
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_503_with_retry_after_not_a_hang() {
    // Slow images (8 s each, so a loaded machine cannot finish one before the third request)
    // and room for two: the third request must be refused at once.
    let h = Harness::ready(2, 8000, &["--max-queued", "2", "--retry-after-s", "3"]).await;
    for i in 0..2u8 {
        let form =
            reqwest::multipart::Form::new().part("file", part(png(i), "slow.png", "image/png"));
        let r = h
            .client
            .post(h.url("/api/v1/classify"))
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "request {i} fits in the queue");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["jobs"][0]["status"], "queued");
    }
    let form = reqwest::multipart::Form::new().part("file", part(png(9), "third.png", "image/png"));
    let r = h
        .post_form_within(form, Duration::from_secs(20))
        .await
        .expect("a full queue answers, it does not block");
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("3")
    );
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("queue")),
        "{body}"
    );

    let text = h.get_text("/metrics").await;
    assert_eq!(
        metric(
            &text,
            "glimpse_requests_rejected_total{reason=\"queue_full\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(metric(&text, "glimpse_queued_images"), Some(2.0), "{text}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_uploads_get_413() {
    let h = Harness::ready(
        1,
        1,
        &["--max-file-bytes", "20000", "--max-request-bytes", "60000"],
    )
    .await;
    let big = {
        let mut v = png(1);
        v.resize(50_000, 0);
        v
    };
    // One file over the per-file limit, in a multipart body under the request limit.
    let form =
        reqwest::multipart::Form::new().part("file", part(big.clone(), "big.png", "image/png"));
    let (status, body) = h.classify_wait(form).await;
    assert_eq!(status, 413);
    // It names the file (not the form field) and says the limit as the page does.
    assert_eq!(
        body["error"], "\"big.png\" is larger than the limit of 19.5 KiB per file",
        "{body}"
    );

    // A raw body whose Content-Length is over the limit is refused before it is read.
    let r = h
        .client
        .post(h.url("/api/v1/classify?wait=true"))
        .header("content-type", "image/png")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    // A streamed body (no Content-Length) far over the request limit: reading stops at the
    // limit and the answer is still 413, not a hang or a buffer of the whole thing.
    let chunks =
        futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![0u8; 16 * 1024])));
    let r = h
        .client
        .post(h.url("/api/v1/classify"))
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    let (status, _) = h.get_json("/healthz").await;
    assert_eq!(status, 200, "the server is fine after refusing");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_image_fails_alone_and_the_other_files_are_classified() {
    let h = Harness::ready(2, 1, &[]).await;
    let form = reqwest::multipart::Form::new()
        .part("file", part(png(3), "cat.png", "image/png"))
        .part(
            "file",
            part(
                b"just some text, not a picture".to_vec(),
                "notes.png",
                "image/png",
            ),
        )
        .part("file", part(jpeg(4), "dog.jpg", "image/jpeg"));
    let (status, body) = h.classify_wait(form).await;
    assert_eq!(status, 200);
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["status"], "ok");
    assert_eq!(results[2]["status"], "ok");
    assert_eq!(top_len(&results[2]), 5);
    assert_eq!(results[1]["status"], "error");
    assert_eq!(results[1]["code"], 415);
    assert_eq!(results[1]["name"], "notes.png");
    assert!(
        results[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a supported image")),
        "{body}"
    );

    // Alone, the non-image makes the whole request 415, still with its result.
    let form = reqwest::multipart::Form::new().part(
        "file",
        part(b"%PDF-1.7".to_vec(), "doc.pdf", "application/pdf"),
    );
    let (status, body) = h.classify_wait(form).await;
    assert_eq!(status, 415);
    assert!(body["error"].is_string());
    assert_eq!(body["results"][0]["status"], "error");

    // A body that is neither multipart nor an image type.
    let r = h
        .client
        .post(h.url("/api/v1/classify"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // A raw image body works too.
    let r = h
        .client
        .post(h.url("/api/v1/classify?wait=true&name=raw.jpg&top_k=3"))
        .header("content-type", "image/jpeg")
        .body(jpeg(5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["results"][0]["name"], "raw.jpg");
    assert_eq!(top_len(&body["results"][0]), 3);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_v2_infer_round_trip() {
    let h = Harness::ready(2, 1, &[]).await;
    let (s, live) = h.get_json("/v2/health/live").await;
    assert_eq!((s, live["live"].clone()), (200, json!(true)));
    let (s, _) = h.get_json("/v2/health/ready").await;
    assert_eq!(s, 200);
    let (s, server) = h.get_json("/v2").await;
    assert_eq!(s, 200);
    assert_eq!(server["name"], "glimpse");
    let (s, meta) = h.get_json("/v2/models/googlenet").await;
    assert_eq!(s, 200);
    assert_eq!(meta["inputs"][0]["name"], "image");
    assert_eq!(meta["inputs"][0]["datatype"], "BYTES");
    assert_eq!(meta["outputs"][0]["name"], "labels");
    assert_eq!(meta["outputs"][1]["datatype"], "FP32");
    let (s, _) = h.get_json("/v2/models/googlenet/ready").await;
    assert_eq!(s, 200);
    let (s, err) = h.get_json("/v2/models/resnet").await;
    assert_eq!(s, 404);
    assert!(err["error"].is_string());

    let b64 = |v: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(v);
    let req = json!({
        "id": "req-7",
        "inputs": [{ "name": "image", "shape": [2], "datatype": "BYTES", "data": [b64(png(1)), b64(jpeg(2))] }]
    });
    let r = h
        .client
        .post(h.url("/v2/models/googlenet/infer"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["model_name"], "googlenet");
    assert_eq!(body["id"], "req-7");
    let outputs = body["outputs"].as_array().unwrap();
    let labels = outputs.iter().find(|o| o["name"] == "labels").unwrap();
    let probs = outputs
        .iter()
        .find(|o| o["name"] == "probabilities")
        .unwrap();
    assert_eq!(labels["shape"], json!([2, 5]));
    assert_eq!(labels["datatype"], "BYTES");
    assert_eq!(labels["data"].as_array().unwrap().len(), 10);
    assert_eq!(probs["datatype"], "FP32");
    assert_eq!(probs["data"].as_array().unwrap().len(), 10);

    // The same image through the JSON API gets the same labels (synthetic model is deterministic).
    let form = reqwest::multipart::Form::new().part("file", part(png(1), "a.png", "image/png"));
    let r: Value = h
        .client
        .post(h.url("/api/v1/classify?wait=true"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(labels["data"][0], r["results"][0]["top"][0]["label"]);

    // Triton's classification parameter picks k; only the requested output comes back.
    let req = json!({
        "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(png(3))] }],
        "outputs": [{ "name": "labels", "parameters": { "classification": 3 } }]
    });
    let (_, body) = h.post_json("/v2/models/googlenet/infer", &req).await;
    assert_eq!(body["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(body["outputs"][0]["shape"], json!([1, 3]));

    // Errors are JSON with a fitting status.
    let bad = json!({ "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"] }] });
    let r = h
        .client
        .post(h.url("/v2/models/googlenet/infer"))
        .json(&bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let not_image = json!({ "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES", "data": [b64(b"hello".to_vec())] }] });
    let r = h
        .client
        .post(h.url("/v2/models/googlenet/infer"))
        .json(&not_image)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("image[0]")),
        "{body}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_job_updates_and_jobs_can_be_polled() {
    let h = Harness::ready(1, 200, &[]).await;
    let events = h.client.get(h.url("/api/v1/events")).send().await.unwrap();
    assert_eq!(events.status(), 200);
    assert!(
        events
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"))
    );
    let mut stream = events.bytes_stream();
    let mut text = String::new();
    // The stream opens with a hello event, so we know we are subscribed before uploading.
    let hello = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = stream.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if text.contains("event:hello") || text.contains("event: hello") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(hello.ok(), Some(true), "got {text:?}");

    let form = reqwest::multipart::Form::new().part("file", part(png(7), "live.png", "image/png"));
    let r = h
        .client
        .post(h.url("/api/v1/classify"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: Value = r.json().await.unwrap();
    let id = body["jobs"][0]["id"].as_str().unwrap().to_string();

    let mut statuses = Vec::new();
    let done = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = String::new();
        while let Some(chunk) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            while let Some(end) = buf.find("\n\n") {
                let event: String = buf.drain(..end + 2).collect();
                let data = event
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .map(str::trim);
                if let Some(job) = data.and_then(|d| serde_json::from_str::<Value>(d).ok())
                    && job["id"] == id.as_str()
                {
                    statuses.push(job["status"].as_str().unwrap_or("").to_string());
                    if job["status"] == "ok" {
                        return Some(job);
                    }
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("the job's final update arrives over SSE");
    assert_eq!(top_len(&done), 5);
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("queued"),
        "{statuses:?}"
    );
    assert!(
        statuses.iter().any(|s| s == "running"),
        "SSE shows the node working: {statuses:?}"
    );

    let (s, job) = h.get_json(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(s, 200);
    assert_eq!(job["status"], "ok");
    assert_eq!(job["name"], "live.png");
    let (s, missing) = h.get_json("/api/v1/jobs/nope").await;
    assert_eq!(s, 404);
    assert!(missing["error"].is_string());
    let (s, nf) = h.get_json("/no/such/page").await;
    assert_eq!(s, 404);
    assert_eq!(nf["error"], "not found");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_served_with_a_strict_csp() {
    let h = Harness::ready(1, 1, &[]).await;
    let r = h.client.get(h.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.version(),
        reqwest::Version::HTTP_2,
        "ALPN negotiates HTTP/2"
    );
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(html.contains("<script src=\"/app.js\""));
    let js = h.get_text("/app.js").await;
    assert!(
        !js.contains("innerHTML"),
        "user data is never written as HTML"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reachable_node_readyz_is_503_and_uploads_fail_fast() {
    // A remote node that does not exist, with real certificate files.
    let dir = tempfile::tempdir().unwrap();
    let ca = glimpse_certs::ClusterCa::generate("test ca").unwrap();
    let client = ca.issue_client("glimpse-frontend").unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    let ca_path = write("ca.pem", &ca.cert_pem());
    let cert_path = write("frontend.pem", &client.cert_pem);
    let key_path = write("frontend.key", &client.key_pem);
    // Port 9 on loopback: nothing listens there, so the node never becomes ready.
    let h = Harness::start(&[
        "--node",
        "ghost=127.0.0.1:9",
        "--ca",
        &ca_path,
        "--cert",
        &cert_path,
        "--key",
        &key_path,
        "--request-timeout-s",
        "2",
    ])
    .await;
    let (status, body) = h.get_json("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].is_string());
    let (status, _) = h.get_json("/v2/health/ready").await;
    assert_eq!(status, 503);
    let (status, _) = h.get_json("/healthz").await;
    assert_eq!(status, 200, "the process itself is up");

    let form = reqwest::multipart::Form::new().part("file", part(png(1), "a.png", "image/png"));
    let r = h
        .post_form_within(form, Duration::from_secs(60))
        .await
        .expect("answers within the deadline, no hang");
    let status = r.status().as_u16();
    assert!(status == 503 || status == 504, "got {status}");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(body["results"][0]["status"], "error");
    let (_, nodes) = h.get_json("/api/v1/nodes").await;
    assert_eq!(nodes["ready"], false);
    assert_ne!(nodes["nodes"][0]["state"], "ready");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_from_random_weights_are_marked_untrained() {
    // Real GoogLeNet with seeded random weights on one local worker: labels are meaningless,
    // and every result must say so.
    let h = Harness::start(&["--local-workers", "1", "--weights", "random"]).await;
    h.wait_ready().await;
    let form = reqwest::multipart::Form::new().part("file", part(jpeg(3), "c.jpg", "image/jpeg"));
    let (status, body) = h.classify_wait(form).await;
    assert_eq!(status, 200);
    let res = &body["results"][0];
    assert_eq!(res["status"], "ok", "{res}");
    assert_eq!(top_len(res), 5, "{res}");
    let warning = res["warning"].as_str().unwrap_or("");
    assert!(
        warning.contains("untrained") && warning.contains("random"),
        "{res}"
    );
    // Local workers run the fast path (flex with the fused operators) by default.
    let (_, nodes) = h.get_json("/api/v1/nodes").await;
    let backends: Vec<&str> = nodes["nodes"]
        .as_array()
        .map(|a| a.iter().filter_map(|n| n["backend"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(backends, ["flex"], "{nodes}");
    h.stop().await;
}

/// A PNG of noise, `side` pixels square: about 3 × side² bytes, since noise does not compress.
fn noise_png(side: u32) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let img = image::RgbImage::from_fn(side, side, |_, _| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let b = state.to_le_bytes();
        image::Rgb([b[0], b[1], b[2]])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .expect("encode png");
    out.into_inner()
}

/// The request side of an HTTP/2 connection whose request bodies are streams of chunks.
type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::StreamBody<ChunkStream>>;
type ChunkStream = futures_util::stream::BoxStream<
    'static,
    Result<hyper::body::Frame<bytes::Bytes>, std::convert::Infallible>,
>;

/// Opens an HTTP/2 connection to the harness's HTTPS listener.
async fn h2_connection(h: &Harness) -> H2Sender {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let addr = h.site.as_ref().expect("site").addr;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let tls = common::tls_connector_for(b"h2")
        .connect(name, tcp)
        .await
        .expect("TLS");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("HTTP/2");
    tokio::spawn(conn);
    send
}

/// `POST /api/v1/classify?wait=true` of a raw PNG whose body is `chunks`, each sent after its
/// pause; the status of the answer.
async fn paced_upload(mut send: H2Sender, chunks: Vec<(Duration, bytes::Bytes)>) -> u16 {
    let len: usize = chunks.iter().map(|(_, c)| c.len()).sum();
    let frames = futures_util::stream::iter(chunks)
        .then(|(pause, chunk)| async move {
            tokio::time::sleep(pause).await;
            Ok(hyper::body::Frame::data(chunk))
        })
        .boxed();
    let req = hyper::Request::post("https://localhost/api/v1/classify?wait=true")
        .header("content-type", "image/png")
        .header("content-length", len)
        .body(http_body_util::StreamBody::new(frames))
        .expect("request");
    let resp = send.send_request(req).await.expect("an answer");
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_waiting_behind_its_siblings_on_one_connection_is_not_cut() {
    // Quick limits: 2 s without a byte is a stall; after 2 s a body must average 1 KB/s.
    let h = Harness::ready(1, 5, &["--body-timeout-s", "2", "--body-rate-grace-s", "2"]).await;
    let big = bytes::Bytes::from(noise_png(300));
    let small = bytes::Bytes::from(png(7));
    let (head, rest) = (small.slice(..20), small.slice(20..));
    // On one connection: a large upload at a steady 40 KB/s for ~6 s, and a small one that
    // sends 20 bytes and then nothing for 5 s (as a stream queued behind others on a slow
    // link), then the rest.
    let conn = h2_connection(&h).await;
    let steady: Vec<(Duration, bytes::Bytes)> = big
        .chunks(4_000)
        .map(|c| (Duration::from_millis(100), bytes::Bytes::copy_from_slice(c)))
        .collect();
    let waiting = vec![
        (Duration::ZERO, head.clone()),
        (Duration::from_secs(5), rest.clone()),
    ];
    // The same small upload alone on a connection of its own: nothing credits it.
    let lonely = h2_connection(&h).await;
    let alone = vec![(Duration::ZERO, head), (Duration::from_secs(5), rest)];
    let (steady, waiting, alone) = tokio::join!(
        paced_upload(conn.clone(), steady),
        paced_upload(conn, waiting),
        paced_upload(lonely, alone),
    );
    assert_eq!(steady, 200, "the steady upload");
    assert_eq!(
        waiting, 200,
        "the upload waiting behind a busy sibling was cut"
    );
    assert_eq!(alone, 408, "the same upload alone is a stalled body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_request_over_http2_gets_its_head_and_a_clean_end() {
    use http_body_util::BodyExt;
    let h = Harness::ready(1, 5, &[]).await;
    let mut send = h2_connection(&h).await;
    for path in ["/", "/healthz", "/api/v1/status"] {
        let req = hyper::Request::head(format!("https://localhost{path}"))
            .body(http_body_util::StreamBody::new(
                futures_util::stream::empty().boxed(),
            ))
            .expect("request");
        let resp = send.send_request(req).await.expect("an answer");
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap_or_else(|e| panic!("HEAD {path} ({status}): the stream was reset: {e}"));
        assert!(body.to_bytes().is_empty(), "HEAD {path} has content");
    }
}
