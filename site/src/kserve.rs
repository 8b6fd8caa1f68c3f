//! KServe v2 / Open Inference Protocol endpoints, so tools that speak Triton's HTTP API
//! (perf_analyzer, KServe clients) can use Glimpse unchanged.
//!
//! The model takes encoded image files, not tensors: its one input `image` is BYTES (each
//! element one file, base64 in JSON; a batch is several elements). It answers the top-k
//! classes per image as two outputs of shape `[batch, k]`: `labels` (BYTES, class names)
//! and `probabilities` (FP32). `k` is 5 unless the request asks otherwise, through Triton's
//! classification parameter on an output (`"parameters": {"classification": k}`) or a
//! `top_k` request parameter. A batch is classified as a whole: if one image fails, the
//! request fails with that image's status and index, because a tensor cannot have holes.

use std::sync::Arc;

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::api::{
    error_response, json_response, parse_top_k, readiness, with_retry_after, with_site,
};
use crate::jobs::JobStatus;
use crate::site::{Site, Upload};
use crate::upload::{byte_stream, read_limited};

/// The one model this server exposes.
pub const MODEL_NAME: &str = "googlenet";
const MODEL_VERSION: &str = "1";

#[derive(Debug, Deserialize)]
struct InferRequest {
    id: Option<String>,
    inputs: Vec<InferInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
}

#[derive(Debug, Deserialize)]
struct InferInput {
    name: String,
    #[serde(default)]
    shape: Vec<i64>,
    datatype: String,
    data: Value,
}

#[derive(Debug, Deserialize)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
}

/// The `/v2/...` routes.
pub fn routes(site: Arc<Site>) -> BoxedFilter<(Response,)> {
    let live = warp::path!("v2" / "health" / "live")
        .and(warp::get())
        .map(|| json_response(200, &json!({ "live": true })))
        .boxed();
    let ready = warp::path!("v2" / "health" / "ready")
        .and(warp::get())
        .and(with_site(site.clone()))
        .map(|site: Arc<Site>| readiness(&site))
        .boxed();
    let server = warp::path!("v2")
        .and(warp::get())
        .map(|| {
            json_response(
                200,
                &json!({
                    "name": "glimpse",
                    "version": env!("CARGO_PKG_VERSION"),
                    "extensions": ["classification"],
                }),
            )
        })
        .boxed();
    let model = warp::path!("v2" / "models" / String)
        .and(warp::get())
        .map(|name: String| {
            if name != MODEL_NAME {
                return unknown_model(&name);
            }
            json_response(200, &model_metadata())
        })
        .boxed();
    let model_ready = warp::path!("v2" / "models" / String / "ready")
        .and(warp::get())
        .and(with_site(site.clone()))
        .map(|name: String, site: Arc<Site>| {
            if name != MODEL_NAME {
                return unknown_model(&name);
            }
            readiness(&site)
        })
        .boxed();
    let infer = warp::path!("v2" / "models" / String / "infer")
        .and(warp::post())
        .and(with_site(site))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(|name: String, site: Arc<Site>, cl: Option<u64>, body| {
            infer(name, site, cl, byte_stream(body))
        })
        .boxed();
    live.or(ready)
        .unify()
        .or(server)
        .unify()
        .or(model)
        .unify()
        .or(model_ready)
        .unify()
        .or(infer)
        .unify()
        .boxed()
}

fn unknown_model(name: &str) -> Response {
    error_response(
        404,
        format!("unknown model {name:?}; this server serves {MODEL_NAME:?}"),
    )
}

/// Model metadata as the Open Inference Protocol defines it.
pub fn model_metadata() -> Value {
    json!({
        "name": MODEL_NAME,
        "versions": [MODEL_VERSION],
        "platform": "glimpse",
        "inputs": [
            { "name": "image", "datatype": "BYTES", "shape": [-1] }
        ],
        "outputs": [
            { "name": "labels", "datatype": "BYTES", "shape": [-1, -1] },
            { "name": "probabilities", "datatype": "FP32", "shape": [-1, -1] }
        ]
    })
}

async fn infer<S>(name: String, site: Arc<Site>, content_length: Option<u64>, body: S) -> Response
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
{
    if name != MODEL_NAME {
        return unknown_model(&name);
    }
    // Base64 grows data by 4/3; allow that plus some room for the JSON around it.
    let limit = site.limits.max_request_bytes.saturating_mul(4) / 3 + 64 * 1024;
    let raw = match read_limited(body, content_length, limit, "the request").await {
        Ok(b) => b,
        Err(e) => {
            site.metrics.request_rejected(e.reason());
            return error_response(e.status(), e);
        }
    };
    let req: InferRequest = match serde_json::from_slice(&raw) {
        Ok(r) => r,
        Err(e) => return error_response(400, format!("invalid inference request: {e}")),
    };
    let (uploads, top_k, wanted) = match parse_request(&req, &site) {
        Ok(x) => x,
        Err((status, msg)) => return error_response(status, msg),
    };
    let submitted = match site.submit(uploads, top_k) {
        Ok(s) => s,
        Err(full) => {
            return with_retry_after(
                error_response(
                    503,
                    format!("the queue is full; retry in {} s", full.retry_after_s),
                ),
                full.retry_after_s,
            );
        }
    };
    let results = site.wait_all(submitted).await;
    if let Some((i, failed)) = results
        .iter()
        .enumerate()
        .find(|(_, j)| j.status != JobStatus::Ok)
    {
        let status = failed.code.unwrap_or(500);
        let msg = format!(
            "image[{i}]: {}",
            failed.error.clone().unwrap_or_else(|| "failed".to_string())
        );
        let resp = error_response(status, msg);
        return if status == 503 {
            with_retry_after(resp, site.limits.retry_after_s)
        } else {
            resp
        };
    }
    let k = results.iter().map(|j| j.top.len()).min().unwrap_or(0);
    let mut labels = Vec::with_capacity(results.len() * k);
    let mut probs = Vec::with_capacity(results.len() * k);
    for job in &results {
        for t in job.top.iter().take(k) {
            labels.push(Value::String(t.label.clone()));
            probs.push(json!(t.probability));
        }
    }
    let shape = json!([results.len(), k]);
    let mut outputs = Vec::new();
    if wanted.iter().any(|w| w == "labels") {
        outputs
            .push(json!({ "name": "labels", "datatype": "BYTES", "shape": shape, "data": labels }));
    }
    if wanted.iter().any(|w| w == "probabilities") {
        outputs.push(
            json!({ "name": "probabilities", "datatype": "FP32", "shape": shape, "data": probs }),
        );
    }
    let mut answer = json!({
        "model_name": MODEL_NAME,
        "model_version": MODEL_VERSION,
        "outputs": outputs,
    });
    if let (Some(id), Some(obj)) = (req.id, answer.as_object_mut()) {
        obj.insert("id".to_string(), Value::String(id));
    }
    json_response(200, &answer).into_response()
}

type Parsed = (Vec<Upload>, u32, Vec<String>);

fn parse_request(req: &InferRequest, site: &Site) -> Result<Parsed, (u16, String)> {
    let [input] = req.inputs.as_slice() else {
        return Err((
            400,
            format!(
                "expected exactly one input named \"image\", got {}",
                req.inputs.len()
            ),
        ));
    };
    if input.name != "image" {
        return Err((
            400,
            format!(
                "unknown input {:?}; the model's input is \"image\"",
                input.name
            ),
        ));
    }
    if input.datatype != "BYTES" {
        return Err((
            400,
            format!("input \"image\" must be BYTES, got {:?}", input.datatype),
        ));
    }
    let mut elements = Vec::new();
    flatten(&input.data, &mut elements).map_err(|e| (400, e))?;
    if elements.is_empty() {
        return Err((400, "input \"image\" has no data".to_string()));
    }
    if !input.shape.is_empty() {
        let product =
            input.shape.iter().try_fold(
                1i64,
                |acc, d| if *d >= 0 { acc.checked_mul(*d) } else { None },
            );
        if product != Some(elements.len() as i64) {
            return Err((
                400,
                format!(
                    "shape {:?} does not match {} data element(s)",
                    input.shape,
                    elements.len()
                ),
            ));
        }
    }
    if elements.len() > site.limits.max_files {
        return Err((
            413,
            format!(
                "batch of {} exceeds the limit of {} images",
                elements.len(),
                site.limits.max_files
            ),
        ));
    }
    let mut uploads = Vec::with_capacity(elements.len());
    for (i, b64) in elements.iter().enumerate() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64.trim()))
            .map_err(|e| (400, format!("image[{i}] is not valid base64: {e}")))?;
        if bytes.len() > site.limits.max_file_bytes {
            return Err((
                413,
                format!(
                    "image[{i}] is {} bytes; the limit is {}",
                    bytes.len(),
                    site.limits.max_file_bytes
                ),
            ));
        }
        uploads.push(Upload {
            name: format!("image[{i}]"),
            content_type: None,
            bytes: bytes.into(),
        });
    }

    let mut top_k = None;
    if let Some(v) = req.parameters.as_ref().and_then(|p| p.get("top_k")) {
        top_k = Some(param_k(v)?);
    }
    let mut wanted = Vec::new();
    match &req.outputs {
        None => wanted.extend(["labels".to_string(), "probabilities".to_string()]),
        Some(outs) => {
            for o in outs {
                if o.name != "labels" && o.name != "probabilities" {
                    return Err((
                        400,
                        format!(
                            "unknown output {:?}; outputs are \"labels\" and \"probabilities\"",
                            o.name
                        ),
                    ));
                }
                if let Some(v) = o
                    .parameters
                    .as_ref()
                    .and_then(|p| p.get("classification").or_else(|| p.get("top_k")))
                {
                    top_k = Some(param_k(v)?);
                }
                wanted.push(o.name.clone());
            }
        }
    }
    let top_k = match top_k {
        Some(k) => k,
        None => parse_top_k(None).map_err(|e| (400, e))?,
    };
    Ok((uploads, top_k, wanted))
}

fn param_k(v: &Value) -> Result<u32, (u16, String)> {
    let text = match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    parse_top_k(Some(&text)).map_err(|e| (400, e))
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a str>) -> Result<(), String> {
    match v {
        Value::Array(items) => items.iter().try_for_each(|i| flatten(i, out)),
        Value::String(s) => {
            out.push(s);
            Ok(())
        }
        other => Err(format!(
            "BYTES data must be base64 strings, found {}",
            kind(other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
