//! KServe v2 over HTTP as Triton's clients speak it: the binary tensor data extension both
//! ways, the `/versions/{v}` routes, model configuration, statistics and the
//! classification extension, against an in-process site with real nodes (synthetic model)
//! behind the real QUIC dispatcher. Triton's own Python client is exercised on top of this
//! by `scripts/tritonclient-check`.

use common::{Harness, jpeg, png};
use serde_json::{Value, json};

use crate::common;

/// Raw BYTES tensor: each element a 4-byte little-endian length, then its bytes.
fn bytes_tensor(elements: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

/// A binary-extension request body and its JSON header's length.
fn binary_request(header: &Value, tensor: &[u8]) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(header).unwrap();
    let len = body.len();
    body.extend_from_slice(tensor);
    (body, len)
}

async fn post_binary(
    h: &Harness,
    path: &str,
    body: Vec<u8>,
    header_len: usize,
) -> reqwest::Response {
    h.client
        .post(h.url(path))
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header_len.to_string())
        .body(body)
        .send()
        .await
        .unwrap()
}

/// Splits a binary answer into its JSON header and the raw bytes after it.
async fn split_answer(r: reqwest::Response) -> (Value, Vec<u8>) {
    let len: usize = r
        .headers()
        .get("inference-header-content-length")
        .expect("a binary answer says its header length")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = r.bytes().await.unwrap();
    let head = serde_json::from_slice(&body[..len]).unwrap();
    (head, body[len..].to_vec())
}

fn read_bytes_tensor(mut raw: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let n = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
        out.push(String::from_utf8(raw[4..4 + n].to_vec()).unwrap());
        raw = &raw[4 + n..];
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_tensors_both_ways_match_the_json_answer() {
    let h = Harness::ready(2, 1, &[]).await;
    let images = vec![png(1), jpeg(2)];
    let tensor = bytes_tensor(&images);
    let header = json!({
        "id": "bin-1",
        "inputs": [{ "name": "image", "shape": [2], "datatype": "BYTES",
                     "parameters": { "binary_data_size": tensor.len() } }],
        "outputs": [
            { "name": "labels", "parameters": { "binary_data": true } },
            { "name": "probabilities", "parameters": { "binary_data": true } }
        ]
    });
    let (body, len) = binary_request(&header, &tensor);
    let r = post_binary(&h, "/v2/models/googlenet/versions/1/infer", body, len).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    let (head, raw) = split_answer(r).await;
    assert_eq!(head["id"], "bin-1");
    assert_eq!(head["model_version"], "1");
    let outs = head["outputs"].as_array().unwrap();
    assert_eq!(outs[0]["shape"], json!([2, 5]));
    assert!(
        outs[0].get("data").is_none(),
        "binary outputs carry no data"
    );
    let labels_len = outs[0]["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
    let probs_len = outs[1]["parameters"]["binary_data_size"].as_u64().unwrap() as usize;
    assert_eq!(labels_len + probs_len, raw.len());
    assert_eq!(probs_len, 2 * 5 * 4, "ten little-endian f32s");
    let labels = read_bytes_tensor(&raw[..labels_len]);
    let probs: Vec<f32> = raw[labels_len..]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(probs.windows(2).take(4).all(|w| w[0] >= w[1]), "{probs:?}");

    // The same images as base64 JSON get the same answer, in JSON.
    let b64 = |v: &Vec<u8>| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v);
    let req = json!({ "inputs": [{ "name": "image", "shape": [2], "datatype": "BYTES",
                                   "data": [b64(&images[0]), b64(&images[1])] }] });
    let r = h
        .client
        .post(h.url("/v2/models/googlenet/infer"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("inference-header-content-length").is_none());
    let body: Value = r.json().await.unwrap();
    let json_labels: Vec<String> =
        serde_json::from_value(body["outputs"][0]["data"].clone()).unwrap();
    assert_eq!(labels, json_labels);

    // Binary in, JSON out (no output asks for binary data).
    let header = json!({ "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES",
                                      "parameters": { "binary_data_size": 4 + images[0].len() } }] });
    let (body, len) = binary_request(&header, &bytes_tensor(&images[..1]));
    let r = post_binary(&h, "/v2/models/googlenet/infer", body, len).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["outputs"][0]["data"][0], json_labels[0]);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classification_extension_answers_score_index_label_strings() {
    let h = Harness::ready(1, 1, &[]).await;
    let tensor = bytes_tensor(&[png(4)]);
    let header = json!({
        "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES",
                     "parameters": { "binary_data_size": tensor.len() } }],
        "outputs": [{ "name": "probabilities", "parameters": { "classification": 3, "binary_data": true } }]
    });
    let (body, len) = binary_request(&header, &tensor);
    let r = post_binary(&h, "/v2/models/googlenet/infer", body, len).await;
    assert_eq!(r.status(), 200);
    let (head, raw) = split_answer(r).await;
    assert_eq!(head["outputs"][0]["datatype"], "BYTES");
    assert_eq!(head["outputs"][0]["shape"], json!([1, 3]));
    let classes = read_bytes_tensor(&raw);
    assert_eq!(classes.len(), 3);
    let mut last = f32::INFINITY;
    for c in &classes {
        let mut parts = c.splitn(3, ':');
        let score: f32 = parts.next().unwrap().parse().unwrap();
        let index: u32 = parts.next().unwrap().parse().unwrap();
        let label = parts.next().unwrap();
        assert!(score <= last && (0.0..=1.0).contains(&score), "{c}");
        assert!(index < 1000 && !label.is_empty(), "{c}");
        last = score;
    }
    // The same through JSON.
    let req = json!({
        "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES",
                     "data": [base64::Engine::encode(&base64::engine::general_purpose::STANDARD, png(4))] }],
        "outputs": [{ "name": "labels", "parameters": { "classification": 3 } }]
    });
    let (_, body) = h.post_json("/v2/models/googlenet/infer", &req).await;
    assert_eq!(body["outputs"][0]["data"], json!(classes));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_binary_framing_is_a_clear_400_and_the_server_goes_on() {
    let h = Harness::ready(1, 1, &[]).await;
    let image = png(5);
    let tensor = bytes_tensor(std::slice::from_ref(&image));
    let header = |size: usize| {
        json!({ "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES",
                             "parameters": { "binary_data_size": size } }] })
    };
    let cases: Vec<(Vec<u8>, usize, &str)> = {
        // A header length past the body.
        let (body, _) = binary_request(&header(tensor.len()), &tensor);
        let past = body.len() + 10;
        // An element length past the tensor: 4 GB declared.
        let mut lying = tensor.clone();
        lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let (lie, lie_len) = binary_request(&header(lying.len()), &lying);
        // binary_data_size past the body.
        let (short, short_len) = binary_request(&header(tensor.len() + 100), &tensor);
        // Bytes after the declared tensor.
        let (mut long, long_len) = binary_request(&header(tensor.len()), &tensor);
        long.extend_from_slice(b"junk");
        vec![
            (body, past, "past the end"),
            (lie, lie_len, "declares 4294967295 bytes"),
            (short, short_len, "shorter than declared"),
            (long, long_len, "goes on past"),
        ]
    };
    for (body, len, says) in cases {
        let r = post_binary(&h, "/v2/models/googlenet/infer", body, len).await;
        assert_eq!(r.status(), 400, "{says}");
        let err: Value = r.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains(says), "{err}");
    }
    let (body, len) = binary_request(&header(tensor.len()), &tensor);
    let r = post_binary(&h, "/v2/models/googlenet/infer", body, len).await;
    assert_eq!(r.status(), 200, "still serving");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_config_and_statistics_routes_answer_what_clients_expect() {
    let h = Harness::ready(1, 1, &["--max-files", "16"]).await;
    for path in ["/v2/models/googlenet/versions/1", "/v2/models/googlenet"] {
        let (s, meta) = h.get_json(path).await;
        assert_eq!(s, 200, "{path}");
        assert_eq!(meta["name"], "googlenet");
        assert_eq!(meta["versions"], json!(["1"]));
    }
    let (s, ready) = h.get_json("/v2/models/googlenet/versions/1/ready").await;
    assert_eq!(s, 200);
    assert_eq!(
        (&ready["name"], &ready["version"], &ready["ready"]),
        (&json!("googlenet"), &json!("1"), &json!(true))
    );
    let (s, err) = h.get_json("/v2/models/googlenet/versions/2").await;
    assert_eq!(s, 404);
    assert!(err["error"].as_str().unwrap().contains("version"), "{err}");
    let (s, _) = h.get_json("/v2/models/googlenet/versions/2/ready").await;
    assert_eq!(s, 404);

    let (s, config) = h.get_json("/v2/models/googlenet/config").await;
    assert_eq!(s, 200);
    assert_eq!(config["name"], "googlenet");
    assert_eq!(config["max_batch_size"], 16);
    assert_eq!(config["input"][0]["name"], "image");
    assert_eq!(config["input"][0]["data_type"], "TYPE_STRING");
    assert_eq!(config["output"][1]["data_type"], "TYPE_FP32");

    let (s, server) = h.get_json("/v2").await;
    assert_eq!(s, 200);
    assert!(
        server["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("statistics"))
    );

    let stats = |v: &Value| v["model_stats"][0]["inference_stats"].clone();
    let (s, before) = h.get_json("/v2/models/googlenet/stats").await;
    assert_eq!(s, 200);
    assert_eq!(before["model_stats"][0]["name"], "googlenet");
    assert_eq!(before["model_stats"][0]["version"], "1");
    assert_eq!(before["model_stats"][0]["inference_count"], 0);
    let tensor = bytes_tensor(&[png(6), png(7), jpeg(8)]);
    let header = json!({ "inputs": [{ "name": "image", "shape": [3], "datatype": "BYTES",
                                      "parameters": { "binary_data_size": tensor.len() } }] });
    let (body, len) = binary_request(&header, &tensor);
    assert_eq!(
        post_binary(&h, "/v2/models/googlenet/infer", body, len)
            .await
            .status(),
        200
    );
    let (_, after) = h.get_json("/v2/models/googlenet/versions/1/stats").await;
    let m = &after["model_stats"][0];
    assert_eq!(m["inference_count"], 3);
    assert_eq!(m["execution_count"], 3);
    assert!(m["last_inference"].as_u64().unwrap() > 0);
    let s = stats(&after);
    assert_eq!(s["success"]["count"], 3);
    for stage in [
        "success",
        "queue",
        "compute_input",
        "compute_infer",
        "compute_output",
    ] {
        assert_eq!(s[stage]["count"], 3, "{stage}: {s}");
    }
    // The synthetic model decodes nothing, so compute-input may be 0 here.
    for stage in ["success", "queue", "compute_infer"] {
        assert!(s[stage]["ns"].as_u64().unwrap() > 0, "{stage}: {s}");
    }
    // The synthetic model takes 1 ms per image: the forward pass is at least that.
    assert!(
        s["compute_infer"]["ns"].as_u64().unwrap() >= 3_000_000,
        "{s}"
    );
    assert!(
        s["success"]["ns"].as_u64().unwrap() >= s["compute_infer"]["ns"].as_u64().unwrap(),
        "{s}"
    );
    let (_, all) = h.get_json("/v2/models/stats").await;
    assert_eq!(all["model_stats"][0]["inference_count"], 3);
    let (s, _) = h.get_json("/v2/models/resnet/stats").await;
    assert_eq!(s, 404);
    h.stop().await;
}
