//! KServe v2 / Open Inference Protocol endpoints, so tools that speak Triton's HTTP API can
//! use Glimpse.
//!
//! The model takes encoded image files, not tensors: its one input `image` is BYTES (each
//! element one file, base64 in JSON; a batch is several elements). It answers the top-k
//! classes per image as two outputs of shape `[batch, k]`: `labels` (BYTES, class names)
//! and `probabilities` (FP32). `k` is 5 unless the request asks otherwise, through Triton's
//! classification parameter on an output (`"parameters": {"classification": k}`) or a
//! `top_k` request parameter. A batch is classified as a whole: if one image fails, the
//! request fails with that image's status and index, because a tensor cannot have holes.
//!
//! Requests are parsed as they stream in ([`parse`]), off the async runtime, so a huge or
//! hostile body costs the server only as much as it has read when the first limit trips.

pub mod binary;
pub mod model;
pub mod parse;

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use warp::filters::BoxedFilter;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

use crate::caller::Caller;
use crate::error::{ApiError, respond};
use crate::filters::{caller, same_origin, with_site};
use crate::health::readiness;
use crate::inference::parse_top_k;
use crate::job::JobStatus;
use crate::reply::ok_json;
use crate::site::Site;
use crate::upload::{Metered, Upload, UploadError, byte_stream, read_error};
use parse::{InferRequest, ParseError, ParseLimits, parse_infer_request};

pub use model::{MODEL_NAME, MODEL_VERSION};

/// The `/v2/...` routes. Like `/api`, they need a key when the server has keys.
pub fn routes(site: Arc<Site>, origins: Arc<Vec<String>>) -> BoxedFilter<(Response,)> {
    let live = warp::path!("v2" / "health" / "live")
        .and(warp::get())
        .and(caller(site.clone()))
        .map(|_: Caller| ok_json(&json!({ "live": true })))
        .boxed();
    let ready = warp::path!("v2" / "health" / "ready")
        .and(warp::get())
        .and(caller(site.clone()))
        .and(with_site(site.clone()))
        .map(|_: Caller, site: Arc<Site>| readiness(&site))
        .boxed();
    let server = warp::path!("v2")
        .and(warp::get())
        .and(caller(site.clone()))
        .map(|_: Caller| {
            ok_json(&json!({
                "name": "glimpse",
                "version": env!("CARGO_PKG_VERSION"),
                "extensions": ["classification"],
            }))
        })
        .boxed();
    let model = warp::path!("v2" / "models" / String)
        .and(warp::get())
        .and(caller(site.clone()))
        .map(|name: String, _: Caller| {
            respond(known_model(&name).map(|()| ok_json(&model::metadata())))
        })
        .boxed();
    let model_ready = warp::path!("v2" / "models" / String / "ready")
        .and(warp::get())
        .and(caller(site.clone()))
        .and(with_site(site.clone()))
        .map(|name: String, _: Caller, site: Arc<Site>| {
            respond(known_model(&name).map(|()| readiness(&site)))
        })
        .boxed();
    let infer = warp::path!("v2" / "models" / String / "infer")
        .and(warp::post())
        .and(same_origin(origins))
        .and(caller(site.clone()))
        .and(with_site(site))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(
            |name: String, caller: Caller, site: Arc<Site>, cl: Option<u64>, body| async move {
                let body = Box::pin(byte_stream(body));
                respond(infer(name, site, &caller, cl, body).await)
            },
        )
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

fn known_model(name: &str) -> Result<(), ApiError> {
    model::check_model(name, None)
}

async fn infer<S>(
    name: String,
    site: Arc<Site>,
    caller: &Caller,
    content_length: Option<u64>,
    body: S,
) -> Result<Response, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    known_model(&name)?;
    let slot = site.parses.take(&caller.limit, 1).map_err(|refused| {
        site.metrics.request_rejected("parses_full");
        refused.into_api_error(
            "inference requests being received",
            site.limits.retry_after_s,
        )
    })?;
    let req = read_request(&site, content_length, body).await?;
    drop(slot);
    let id = req.id.clone();
    let (uploads, top_k, wanted) = to_uploads(req, &site)?;
    let submitted = site.submit(caller, uploads, top_k)?;
    let results = site.wait_all(submitted).await;
    if let Some((i, failed)) = results
        .iter()
        .enumerate()
        .find(|(_, j)| j.status != JobStatus::Ok)
    {
        let status = failed
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let msg = format!(
            "image[{i}]: {}",
            failed.error.clone().unwrap_or_else(|| "failed".to_string())
        );
        let err = ApiError::new(status, msg);
        return Err(if status == StatusCode::SERVICE_UNAVAILABLE {
            err.retry_after(site.limits.retry_after_s)
        } else {
            err
        });
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
    if let (Some(id), Some(obj)) = (id, answer.as_object_mut()) {
        obj.insert("id".to_string(), Value::String(id));
    }
    Ok(ok_json(&answer).into_response())
}

/// Stream the body into the parser on a blocking thread. The body is read here, on the
/// runtime, under its size limit and inactivity timeout, and handed over a few chunks at a
/// time; when the parser stops early (a limit, bad JSON) the rest of the body is not read.
async fn read_request<S>(
    site: &Arc<Site>,
    content_length: Option<u64>,
    body: S,
) -> Result<InferRequest, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    // Base64 grows data by 4/3; allow that plus some room for the JSON around it.
    let limit = site.limits.max_request_bytes.saturating_mul(4) / 3 + 64 * 1024;
    if let Some(len) = content_length
        && len > limit as u64
    {
        return Err(site.refuse_upload(UploadError::TooLarge(format!(
            "the request is {len} bytes; the limit is {limit} bytes"
        ))));
    }
    let limits = ParseLimits {
        max_images: site.limits.max_files,
        max_image_bytes: site.limits.max_file_bytes,
        budget: site.budget.clone(),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let parse = tokio::task::spawn_blocking(move || {
        parse_infer_request(
            ChannelReader {
                rx,
                cur: Bytes::new(),
            },
            &limits,
        )
    });
    let intake = site.intake();
    let pump = async move {
        let mut body = Metered::timed(body, &intake);
        let mut total = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| read_error(e, &intake))?;
            total += chunk.len();
            if total > limit {
                return Err(UploadError::TooLarge(format!(
                    "the request exceeds the limit of {limit} bytes"
                )));
            }
            if tx.send(chunk).await.is_err() {
                // The parser has stopped: it has its answer without the rest of the body.
                break;
            }
        }
        Ok(())
    };
    tokio::pin!(parse);
    // Whichever ends first: a parser that stops early leaves the rest of the body unread.
    let (parsed, pumped) = tokio::select! {
        parsed = &mut parse => (parsed, Ok(())),
        pumped = pump => (parse.await, pumped),
    };
    let parsed = parsed.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("parser task failed: {e}"),
        )
    })?;
    match (parsed, pumped) {
        (Ok(req), _) => Ok(req),
        // The body failed first (too large, stalled): that is the reason, not the parser's
        // "unexpected end of input".
        (Err(ParseError::Body(_) | ParseError::Invalid(_)), Err(e)) => Err(site.refuse_upload(e)),
        (Err(e), _) => Err(parse_error(site, e)),
    }
}

fn parse_error(site: &Site, e: ParseError) -> ApiError {
    let (status, reason) = match &e {
        ParseError::Invalid(_) | ParseError::Body(_) => (StatusCode::BAD_REQUEST, "malformed"),
        ParseError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ParseError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "bytes_busy"),
    };
    site.metrics.request_rejected(reason);
    let err = ApiError::new(status, e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        err.retry_after(site.limits.retry_after_s)
    } else {
        err
    }
}

/// A blocking reader over body chunks sent from the runtime.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.cur = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

type Parsed = (Vec<Upload>, u32, Vec<String>);

/// Check a parsed request against the model's one input and two outputs.
fn to_uploads(req: InferRequest, site: &Site) -> Result<Parsed, ApiError> {
    let bad = ApiError::bad_request;
    let count = req.inputs.len();
    let Ok([input]) = <[_; 1]>::try_from(req.inputs) else {
        return Err(bad(format!(
            "expected exactly one input named \"image\", got {count}"
        )));
    };
    if input.name != "image" {
        return Err(bad(format!(
            "unknown input {:?}; the model's input is \"image\"",
            input.name
        )));
    }
    if input.datatype != "BYTES" {
        return Err(bad(format!(
            "input \"image\" must be BYTES, got {:?}",
            input.datatype
        )));
    }
    if input.data.is_empty() {
        return Err(bad(if input.has_data {
            "input \"image\" has no data"
        } else {
            "missing field `data` in input \"image\""
        }
        .to_string()));
    }
    if let Some(shape) = &input.shape
        && !shape.is_empty()
    {
        let product = shape.iter().try_fold(
            1i64,
            |acc, d| {
                if *d >= 0 { acc.checked_mul(*d) } else { None }
            },
        );
        if product != Some(input.data.len() as i64) {
            return Err(bad(format!(
                "shape {shape:?} does not match {} data element(s)",
                input.data.len()
            )));
        }
    }
    if input.data.len() > site.limits.max_files {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "batch of {} exceeds the limit of {} images",
                input.data.len(),
                site.limits.max_files
            ),
        ));
    }
    let uploads = input
        .data
        .into_iter()
        .enumerate()
        .map(|(i, (bytes, held))| Upload {
            name: format!("image[{i}]"),
            content_type: None,
            bytes,
            held,
        })
        .collect();

    let mut top_k = req.top_k;
    let mut wanted = Vec::new();
    match req.outputs {
        None => wanted.extend(["labels".to_string(), "probabilities".to_string()]),
        Some(outs) => {
            for o in outs {
                if o.name != "labels" && o.name != "probabilities" {
                    return Err(bad(format!(
                        "unknown output {:?}; outputs are \"labels\" and \"probabilities\"",
                        o.name
                    )));
                }
                if o.class_count.is_some() {
                    top_k = o.class_count;
                }
                wanted.push(o.name);
            }
        }
    }
    let top_k = match top_k {
        Some(k) => k,
        None => parse_top_k(None).map_err(bad)?,
    };
    Ok((uploads, top_k, wanted))
}
