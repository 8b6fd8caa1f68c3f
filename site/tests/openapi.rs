//! `site/openapi.json` against the real server: every documented route is called, and every
//! answer's status, content type and JSON body must be what the document says. A route
//! added to the document but never called here, or an answer the document does not
//! describe, fails the test.

use std::collections::BTreeSet;

use base64::Engine;
use common::{Harness, part, png};
use serde_json::{Value, json};

use crate::common;

struct Spec {
    doc: Value,
    called: BTreeSet<(String, String)>,
}

impl Spec {
    fn load() -> Spec {
        let doc: Value = serde_json::from_str(glimpse_site::api::openapi::OPENAPI_JSON).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        Spec {
            doc,
            called: BTreeSet::new(),
        }
    }

    /// The documented path template a concrete path falls under: literal segments win
    /// over `{parameters}` (`/v2/models/stats` is not the model "stats").
    fn template(&self, path: &str) -> String {
        let segments: Vec<&str> = path.split('/').collect();
        let mut best: Option<(usize, &String)> = None;
        for template in self.doc["paths"].as_object().unwrap().keys() {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut literal = 0;
            let fits = parts.iter().zip(&segments).all(|(t, s)| {
                if t.starts_with('{') {
                    true
                } else {
                    literal += 1;
                    t == s
                }
            });
            if fits && best.is_none_or(|(n, _)| literal > n) {
                best = Some((literal, template));
            }
        }
        best.unwrap_or_else(|| panic!("{path} is not in openapi.json"))
            .1
            .clone()
    }

    /// Follows a `$ref` inside the document.
    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => self
                .doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("dangling {r}")),
            None => v,
        }
    }

    /// Checks one real answer against the document.
    fn check(&mut self, method: &str, path: &str, status: u16, content_type: &str, body: &[u8]) {
        let template = self.template(path.split('?').next().unwrap());
        let op = &self.doc["paths"][&template][method];
        assert!(op.is_object(), "{method} {template} is not documented");
        self.called.insert((template.clone(), method.to_string()));
        let response = op["responses"]
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{method} {path}: status {status} is not documented"));
        let response = self.resolve(response);
        let media = content_type.split(';').next().unwrap().trim();
        let content = response["content"]
            .get(media)
            .unwrap_or_else(|| panic!("{method} {path} {status}: {media} is not documented"));
        if media != "application/json" {
            return;
        }
        let mut schema = content["schema"].clone();
        // `$ref`s point into the document's components.
        schema["components"] = self.doc["components"].clone();
        let validator = jsonschema::draft202012::new(&schema)
            .unwrap_or_else(|e| panic!("schema of {method} {template} {status}: {e}"));
        let value: Value = serde_json::from_slice(body).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {path} {status} does not match openapi.json: {errors:?}\n{value}"
        );
    }

    fn documented(&self) -> BTreeSet<(String, String)> {
        let mut all = BTreeSet::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for method in ["get", "post", "put", "delete", "patch"] {
                if item.get(method).is_some() {
                    all.insert((path.clone(), method.to_string()));
                }
            }
        }
        all
    }
}

async fn call(
    spec: &mut Spec,
    req: reqwest::RequestBuilder,
    method: &str,
    path: &str,
) -> (u16, Vec<u8>) {
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    if ct.starts_with("text/event-stream") {
        // A stream does not end: its head is what there is to check.
        spec.check(method, path, status, &ct, b"");
        return (status, Vec::new());
    }
    let body = r.bytes().await.unwrap().to_vec();
    spec.check(method, path, status, &ct, &body);
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_answers_as_documented() {
    let h = Harness::ready(2, 1, &[]).await;
    let mut spec = Spec::load();
    let served = h.client.get(h.url("/openapi.json")).send().await.unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.text().await.unwrap(),
        glimpse_site::api::openapi::OPENAPI_JSON
    );

    let gets = [
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/metrics",
        "/api/v1/nodes",
        "/api/v1/session",
        "/api/v1/status",
        "/api/v1/events",
        "/api/v1/jobs/no-such-job",
        "/v2/health/live",
        "/v2/health/ready",
        "/v2",
        "/v2/models/stats",
        "/v2/models/googlenet",
        "/v2/models/googlenet/versions/1",
        "/v2/models/googlenet/versions/7",
        "/v2/models/resnet",
        "/v2/models/googlenet/ready",
        "/v2/models/googlenet/versions/1/ready",
        "/v2/models/googlenet/config",
        "/v2/models/googlenet/versions/1/config",
        "/v2/models/googlenet/stats",
        "/v2/models/googlenet/versions/1/stats",
        "/v2/models/resnet/stats",
    ];
    for path in gets {
        let req = h.client.get(h.url(path));
        call(&mut spec, req, "get", path).await;
    }

    // The JSON API: wait, accepted, a job by id, a refused non-image.
    let form = reqwest::multipart::Form::new().part("file", part(png(1), "a.png", "image/png"));
    let path = "/api/v1/classify?wait=true";
    let req = h.client.post(h.url(path)).multipart(form);
    let (s, _) = call(&mut spec, req, "post", path).await;
    assert_eq!(s, 200);
    let path = "/api/v1/classify?name=b.png";
    let req = h
        .client
        .post(h.url(path))
        .header("content-type", "image/png")
        .body(png(2));
    let (s, body) = call(&mut spec, req, "post", path).await;
    assert!(s == 202 || s == 200, "{s}");
    let body: Value = serde_json::from_slice(&body).unwrap();
    let id = body["jobs"][0]["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/jobs/{id}");
    let req = h.client.get(h.url(&path));
    assert_eq!(call(&mut spec, req, "get", &path).await.0, 200);
    let path = "/api/v1/classify";
    let req = h
        .client
        .post(h.url(path))
        .header("content-type", "text/plain")
        .body("hello");
    assert_eq!(call(&mut spec, req, "post", path).await.0, 415);

    // KServe v2 inference: JSON, binary, and refusals.
    let b64 = base64::engine::general_purpose::STANDARD.encode(png(3));
    let infer = |data: Value| json!({ "id": "o-1", "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES", "data": data }] });
    for (path, body, want) in [
        ("/v2/models/googlenet/infer", infer(json!([b64])), 200),
        (
            "/v2/models/googlenet/versions/1/infer",
            infer(json!([b64])),
            200,
        ),
        ("/v2/models/googlenet/infer", infer(json!(["%%%"])), 400),
        (
            "/v2/models/googlenet/infer",
            infer(json!(["aGVsbG8="])),
            415,
        ),
        ("/v2/models/resnet/infer", infer(json!([b64])), 404),
    ] {
        let req = h.client.post(h.url(path)).json(&body);
        assert_eq!(call(&mut spec, req, "post", path).await.0, want, "{path}");
    }
    let image = png(4);
    let header = json!({
        "inputs": [{ "name": "image", "shape": [1], "datatype": "BYTES",
                     "parameters": { "binary_data_size": 4 + image.len() } }],
        "parameters": { "binary_data_output": true }
    });
    let mut raw = serde_json::to_vec(&header).unwrap();
    let header_len = raw.len();
    raw.extend_from_slice(&(image.len() as u32).to_le_bytes());
    raw.extend_from_slice(&image);
    let path = "/v2/models/googlenet/infer";
    let req = h
        .client
        .post(h.url(path))
        .header("content-type", "application/octet-stream")
        .header("inference-header-content-length", header_len.to_string())
        .body(raw);
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let len: usize = r.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    let body = r.bytes().await.unwrap();
    spec.check("post", path, 200, &ct, &body);
    // The JSON header of a binary answer is an InferResponse too.
    spec.check("post", path, 200, "application/json", &body[..len]);

    // A job of another front-end: 421 naming it; with --peer-url-template, a 307 there.
    let path = "/api/v1/jobs/another-frontend.00ff";
    let req = h.client.get(h.url(path));
    assert_eq!(call(&mut spec, req, "get", path).await.0, 421);
    let peered = Harness::ready(
        1,
        1,
        &[
            "--frontend-id",
            "web-1",
            "--peer-url-template",
            "https://{frontend}.glimpse-frontend.test:8443",
        ],
    )
    .await;
    let no_follow = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let path = "/api/v1/jobs/web-2.00ff";
    let req = no_follow.get(peered.url(path));
    assert_eq!(call(&mut spec, req, "get", path).await.0, 307);
    peered.stop().await;

    let missing: Vec<_> = spec
        .documented()
        .difference(&spec.called)
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "documented but never called: {missing:?}"
    );
    h.stop().await;
}
