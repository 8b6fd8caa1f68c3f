//! `POST /v2/models/{m}[/versions/{v}]/infer` over HTTP: a JSON request, or one in the
//! binary tensor data extension's framing (what Triton's HTTP client sends by default),
//! answered in JSON, or with binary outputs when the request asks for them.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use warp::Reply;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

use super::body::{Framing, read_request};
use super::model::{self, OutputName, OutputSpec};
use crate::access::caller::Caller;
use crate::api::upload::{Intake, Upload};
use crate::http::error::ApiError;
use crate::http::reply::ok_json;
use crate::site::Site;
use glimpse_wire::parse::InferRequest;

/// The header that says how long the JSON part of a binary request or answer is.
pub(crate) const HEADER_LENGTH: &str = "inference-header-content-length";

/// What a request's headers say about its body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyHead {
    /// `Content-Length`, when sent.
    pub content_length: Option<u64>,
    /// `Inference-Header-Content-Length`: the binary extension's JSON header length.
    pub header_len: Option<u64>,
}

/// Answers one inference request.
pub(crate) async fn infer<S>(
    name: String,
    version: Option<String>,
    site: Arc<Site>,
    caller: &Caller,
    intake: &Intake,
    head: BodyHead,
    body: S,
) -> Result<Response, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    model::check_model(&name, version.as_deref())?;
    let BodyHead {
        content_length,
        header_len,
    } = head;
    let framing = match header_len {
        None => Framing::Json,
        Some(h) => {
            if let Some(len) = content_length
                && h > len
            {
                return Err(ApiError::bad_request(format!(
                    "Inference-Header-Content-Length is {h}, past the end of the {len}-byte body"
                )));
            }
            Framing::Binary { header_len: h }
        }
    };
    let slot = site.parse_slot(caller).await?;
    let req = read_request(&site, intake, content_length, framing, body).await?;
    drop(slot);
    let plan = Plan::of(req, &site)?;
    let answer = model::classify_batch(&site, caller, plan.uploads, plan.k).await?;
    let mut head = json!({
        "model_name": model::MODEL_NAME,
        "model_version": model::MODEL_VERSION,
    });
    if let (Some(id), Some(obj)) = (plan.id, head.as_object_mut()) {
        obj.insert("id".to_string(), Value::String(id));
    }
    let mut outputs = Vec::with_capacity(plan.outputs.len());
    let mut raw = Vec::new();
    for spec in &plan.outputs {
        let tensor = answer.output(spec);
        let mut out = json!({
            "name": tensor.name.as_str(),
            "datatype": tensor.values.datatype(),
            "shape": tensor.shape,
        });
        if spec.binary {
            let bytes = tensor.values.to_raw();
            out["parameters"] = json!({ "binary_data_size": bytes.len() });
            raw.extend_from_slice(&bytes);
        } else {
            out["data"] = tensor.values.to_json();
        }
        outputs.push(out);
    }
    head["outputs"] = Value::Array(outputs);
    if plan.outputs.iter().any(|o| o.binary) {
        Ok(binary_reply(&head, raw))
    } else {
        Ok(ok_json(&head))
    }
}

/// A JSON header followed by raw output bytes.
fn binary_reply(head: &Value, raw: Vec<u8>) -> Response {
    let mut body = serde_json::to_vec(head).unwrap_or_default();
    let header_len = body.len();
    body.extend_from_slice(&raw);
    let mut resp = warp::reply::with_status(body, StatusCode::OK).into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(HEADER_LENGTH, HeaderValue::from(header_len));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// What a parsed request asks of the model.
struct Plan {
    id: Option<String>,
    uploads: Vec<Upload>,
    k: u32,
    outputs: Vec<OutputSpec>,
}

impl Plan {
    /// Checks a parsed request against the model's one input and two outputs.
    fn of(req: InferRequest, site: &Site) -> Result<Plan, ApiError> {
        let bad = ApiError::bad_request;
        let count = req.inputs.len();
        let Ok([input]) = <[_; 1]>::try_from(req.inputs) else {
            return Err(bad(format!(
                "expected exactly one input named {:?}, got {count}",
                model::INPUT_NAME
            )));
        };
        if input.name != model::INPUT_NAME {
            return Err(bad(format!(
                "unknown input {:?}; the model's input is {:?}",
                input.name,
                model::INPUT_NAME
            )));
        }
        if input.datatype != "BYTES" {
            return Err(bad(format!(
                "input {:?} must be BYTES, got {:?}",
                model::INPUT_NAME,
                input.datatype
            )));
        }
        if !input.has_data {
            return Err(bad(format!(
                "missing field `data` (or a `binary_data_size` parameter) in input {:?}",
                model::INPUT_NAME
            )));
        }
        model::check_batch(input.shape.as_deref(), input.data.len(), site)?;
        let uploads = model::uploads(input.data);

        let all_binary = req.binary_data_output.unwrap_or(false);
        let mut top_k = req.top_k;
        let outputs = match req.outputs {
            None => OutputName::ALL
                .map(|name| OutputSpec {
                    name,
                    class_count: None,
                    binary: all_binary,
                })
                .to_vec(),
            Some(asked) => {
                let mut outputs = Vec::with_capacity(asked.len());
                for o in asked {
                    top_k = o.top_k.or(top_k);
                    outputs.push(OutputSpec {
                        name: OutputName::parse(&o.name)?,
                        class_count: o.class_count,
                        binary: o.binary.unwrap_or(all_binary),
                    });
                }
                outputs
            }
        };
        Ok(Plan {
            id: req.id,
            uploads,
            k: model::classes_wanted(top_k, &outputs)?,
            outputs,
        })
    }
}
