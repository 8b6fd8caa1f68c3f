//! HTTP routes: the page, the JSON API, SSE, health and metrics (KServe lives in
//! [`crate::kserve`]). Every error a client sees is `{"error": "..."}` with a status that
//! says what happened: 4xx for the client's doing, 503 + Retry-After for overload.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Display;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::sse::Event;
use warp::{Filter, Rejection, Reply};

use crate::inference::is_ready;
use crate::jobs::{JobStatus, JobView};
use crate::page;
use crate::site::Site;
use crate::upload::{UploadError, byte_stream, read_uploads};

/// Default number of labels per image.
pub const DEFAULT_TOP_K: u32 = 5;
/// Largest `top_k` a client may ask for (all ImageNet classes).
pub const MAX_TOP_K: u32 = 1000;

/// A JSON response with the given status.
pub fn json_response<T: Serialize>(status: u16, body: &T) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = warp::reply::json(body).into_response();
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `{"error": message}` with the given status.
pub fn error_response(status: u16, message: impl Display) -> Response {
    json_response(status, &json!({ "error": message.to_string() }))
}

/// Add `Retry-After` (seconds) to a response, as 503s must carry.
pub fn with_retry_after(mut resp: Response, secs: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Parse `top_k` from a query or parameter value; `None` means the default.
pub fn parse_top_k(raw: Option<&str>) -> Result<u32, String> {
    match raw {
        None => Ok(DEFAULT_TOP_K),
        Some(s) => match s.trim().parse::<u32>() {
            Ok(k) if (1..=MAX_TOP_K).contains(&k) => Ok(k),
            _ => Err(format!(
                "top_k must be an integer from 1 to {MAX_TOP_K}, got {s:?}"
            )),
        },
    }
}

pub(crate) fn with_site(
    site: Arc<Site>,
) -> impl Filter<Extract = (Arc<Site>,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&site))
}

/// All routes of the site, with JSON errors for anything unmatched.
pub fn routes(site: Arc<Site>) -> BoxedFilter<(Response,)> {
    let page = page::routes();

    let classify = warp::path!("api" / "v1" / "classify")
        .and(warp::post())
        .and(with_site(site.clone()))
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(|site, query, ct, cl, body| classify(site, query, ct, cl, byte_stream(body)))
        .boxed();

    let job = warp::path!("api" / "v1" / "jobs" / String)
        .and(warp::get())
        .and(with_site(site.clone()))
        .map(|id: String, site: Arc<Site>| match site.jobs.get(&id) {
            Some(job) => json_response(200, &job),
            None => error_response(
                404,
                format!("no job {id:?} (unknown, or finished long ago)"),
            ),
        })
        .boxed();

    let events = warp::path!("api" / "v1" / "events")
        .and(warp::get())
        .and(with_site(site.clone()))
        .map(|site: Arc<Site>| events(&site))
        .boxed();

    let nodes = warp::path!("api" / "v1" / "nodes")
        .and(warp::get())
        .and(with_site(site.clone()))
        .map(|site: Arc<Site>| {
            let nodes = site.inference.nodes();
            let ready = nodes.iter().any(|n| n.can_serve());
            json_response(
                200,
                &json!({
                    "ready": ready,
                    "nodes": nodes,
                    "queued": site.queued(),
                    "in_flight": site.in_flight(),
                    "limits": {
                        "max_file_bytes": site.limits.max_file_bytes,
                        "max_request_bytes": site.limits.max_request_bytes,
                        "max_files": site.limits.max_files,
                        "max_queued": site.limits.max_queued,
                    },
                }),
            )
        })
        .boxed();

    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| json_response(200, &json!({ "status": "ok" })))
        .boxed();

    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_site(site.clone()))
        .map(|site: Arc<Site>| readiness(&site))
        .boxed();

    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_site(site.clone()))
        .map(|site: Arc<Site>| {
            let nodes = site.inference.nodes();
            let mut text = site.metrics.render(site.queued(), site.in_flight(), &nodes);
            text.push_str(&site.inference.metrics_text());
            let mut resp = text.into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        })
        .boxed();

    let kserve = crate::kserve::routes(site.clone());

    let counting = site.clone();
    page.or(classify)
        .unify()
        .or(job)
        .unify()
        .or(events)
        .unify()
        .or(nodes)
        .unify()
        .or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(kserve)
        .unify()
        .recover(handle_rejection)
        .unify()
        .with(warp::log::custom(move |info| {
            counting.metrics.response(info.status().as_u16());
            tracing::debug!(
                method = %info.method(),
                path = info.path(),
                status = info.status().as_u16(),
                elapsed_ms = info.elapsed().as_millis() as u64,
                "request"
            );
        }))
        .map(into_response)
        .boxed()
}

fn into_response<R: Reply>(reply: R) -> Response {
    reply.into_response()
}

/// `/readyz`: 200 only while a node with a loaded model is connected.
pub fn readiness(site: &Site) -> Response {
    let nodes = site.inference.nodes();
    let ready = nodes.iter().filter(|n| n.can_serve()).count();
    if ready > 0 {
        json_response(200, &json!({ "ready": true, "nodes_ready": ready }))
    } else {
        json_response(
            503,
            &json!({
                "ready": false,
                "nodes_ready": 0,
                "error": "no node with a loaded model is connected",
            }),
        )
    }
}

async fn classify<S>(
    site: Arc<Site>,
    query: HashMap<String, String>,
    content_type: Option<String>,
    content_length: Option<u64>,
    body: S,
) -> Response
where
    S: Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + 'static,
{
    let wait = matches!(
        query.get("wait").map(String::as_str),
        Some("true" | "1" | "yes")
    );
    let top_k = match parse_top_k(query.get("top_k").map(String::as_str)) {
        Ok(k) => k,
        Err(e) => return error_response(400, e),
    };
    let uploads = match read_uploads(
        body,
        content_type.as_deref(),
        content_length,
        query.get("name").cloned(),
        &site.limits,
    )
    .await
    {
        Ok(u) => u,
        Err(e) => return upload_error(&site, e),
    };
    let submitted = match site.submit(uploads, top_k) {
        Ok(s) => s,
        Err(full) => {
            return with_retry_after(
                error_response(
                    503,
                    format!(
                        "the queue is full ({} images waiting); retry in {} s",
                        site.limits.max_queued, full.retry_after_s
                    ),
                ),
                full.retry_after_s,
            );
        }
    };
    if wait {
        let results = site.wait_all(submitted).await;
        results_response(&site, "results", results)
    } else {
        let jobs: Vec<JobView> = submitted
            .iter()
            .filter_map(|s| site.jobs.get(&s.id))
            .collect();
        let accepted = jobs.iter().any(|j| !j.status.is_final());
        if accepted {
            json_response(202, &json!({ "jobs": jobs }))
        } else {
            results_response(&site, "jobs", jobs)
        }
    }
}

/// Status for a list of per-image results: 200 if any image succeeded (or is still
/// running); if every one failed, the first failure's status, so a single non-image upload
/// gets 415 and an all-overloaded request gets 503 + Retry-After.
fn results_response(site: &Site, key: &str, results: Vec<JobView>) -> Response {
    let failed: Vec<&JobView> = results
        .iter()
        .filter(|j| j.status == JobStatus::Error)
        .collect();
    if results.is_empty() || failed.len() < results.len() {
        return json_response(200, &json!({ key: results }));
    }
    let status = failed.first().and_then(|j| j.code).unwrap_or(500);
    let error = failed
        .first()
        .and_then(|j| j.error.clone())
        .unwrap_or_else(|| "every image failed".to_string());
    let resp = json_response(status, &json!({ "error": error, key: results }));
    if status == 503 {
        with_retry_after(resp, site.limits.retry_after_s)
    } else {
        resp
    }
}

fn upload_error(site: &Site, e: UploadError) -> Response {
    site.metrics.request_rejected(e.reason());
    error_response(e.status(), e)
}

fn events(site: &Site) -> Response {
    let rx = site.jobs.subscribe();
    let shutdown = site.shutdown_signal();
    let hello = Event::default()
        .event("hello")
        .json_data(json!({ "ready": is_ready(site.inference.as_ref()) }))
        .unwrap_or_else(|_| Event::default().event("hello").data("{}"));
    let updates = futures_util::stream::unfold(
        (rx, shutdown),
        |(mut rx, mut shutdown)| async move {
            loop {
                if *shutdown.borrow() {
                    return None;
                }
                tokio::select! {
                    changed = shutdown.changed() => {
                        if changed.is_err() || *shutdown.borrow() {
                            return None;
                        }
                    }
                    msg = rx.recv() => match msg {
                        Ok(job) => {
                            let event = Event::default().event("job").id(job.id.clone()).json_data(&job);
                            match event {
                                Ok(e) => return Some((Ok::<Event, Infallible>(e), (rx, shutdown))),
                                Err(err) => tracing::warn!("cannot encode job event: {err}"),
                            }
                        }
                        Err(RecvError::Lagged(n)) => {
                            let e = Event::default().event("lagged").data(n.to_string());
                            return Some((Ok(e), (rx, shutdown)));
                        }
                        Err(RecvError::Closed) => return None,
                    },
                }
            }
        },
    );
    let stream =
        futures_util::stream::once(async move { Ok::<Event, Infallible>(hello) }).chain(updates);
    let mut resp = warp::sse::reply(
        warp::sse::keep_alive()
            .interval(Duration::from_secs(15))
            .stream(stream),
    )
    .into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Map warp's rejections to JSON errors.
async fn handle_rejection(r: Rejection) -> Result<Response, Infallible> {
    let resp = if r.is_not_found() {
        error_response(404, "not found")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        error_response(405, "method not allowed")
    } else if r.find::<warp::reject::InvalidQuery>().is_some() {
        error_response(400, "invalid query string")
    } else if r.find::<warp::reject::InvalidHeader>().is_some() {
        error_response(400, "invalid header")
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        error_response(413, "payload too large")
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        error_response(415, "unsupported media type")
    } else {
        tracing::debug!("unhandled rejection: {r:?}");
        error_response(400, "bad request")
    };
    Ok(resp)
}
