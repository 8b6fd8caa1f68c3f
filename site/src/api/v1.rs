//! The JSON API under `/api/v1`, health and metrics. Every error a client sees is
//! `{"error": "..."}` with a status that says what happened: 4xx for the client's doing,
//! 429 for its own limits, 503 + Retry-After for overload. Every `/api` route knows its
//! [`Caller`] and shows it only its own jobs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};
use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;
use warp::sse::Event;
use warp::{Filter, Reply};

use crate::access::caller::Caller;
use crate::access::throttle::Share;
use crate::api::events::{self, Subscription};
use crate::api::job::{JobStatus, JobView};
use crate::api::upload::{Intake, byte_stream, read_uploads};
use crate::fleet::inference::{is_ready, parse_top_k};
use crate::http::error::{ApiError, respond};
use crate::http::filters::{caller, connection, same_origin, with_site};
use crate::http::health::readiness;
use crate::http::reply::{json_response, ok_json, with_retry_after};
use crate::site::Site;

/// Who may read operator data (`/metrics`, `/api/v1/nodes`) on the public listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AdminAccess {
    /// Anyone who can reach the site (no keys, no admin listener: a local or trusted setup).
    Open,
    /// Callers with an admin key.
    AdminKey,
    /// Nobody: it is served on the separate `--admin-listen` address instead.
    Elsewhere,
}

/// The `/api/v1/...` routes.
// Over 80 lines on purpose: the /api/v1 route table, one filter chain per endpoint, read top to bottom like a router.
pub(crate) fn routes(
    site: Arc<Site>,
    admin: AdminAccess,
    origins: Arc<Vec<String>>,
) -> BoxedFilter<(Response,)> {
    let classify = warp::path!("api" / "v1" / "classify")
        .and(warp::post())
        .and(same_origin(origins))
        .and(caller(site.clone()))
        .and(with_site(site.clone()))
        .and(connection())
        .and(warp::query::<HashMap<String, String>>())
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(
            |caller: Caller, site: Arc<Site>, conn, query, ct, cl, body| async move {
                let intake = site.intake().on(conn);
                let body = Box::pin(byte_stream(body));
                let resp = respond(classify(site, &caller, &intake, query, ct, cl, body).await);
                caller.finish(resp)
            },
        )
        .boxed();

    // Authentication comes before routing: a job another front-end owns gets its 421
    // naming the owner (or 307 there) only once the caller is admitted here, like any other
    // answer. Without keys no client token is set for it: the caller belongs to the owner.
    let job = warp::path!("api" / "v1" / "jobs" / String)
        .and(warp::get())
        .and(warp::path::full())
        .and(caller(site.clone()))
        .and(with_site(site.clone()))
        .map(
            |id: String, path: warp::path::FullPath, caller: Caller, site: Arc<Site>| {
                if let Some(elsewhere) = site.frontend.misdirected(&id, path.as_str()) {
                    return elsewhere;
                }
                let resp = match site.jobs.get(&id, &caller.owner) {
                    Some(job) => ok_json(&job),
                    None => ApiError::not_found(format!(
                        "no job {:?} of yours (unknown, or finished long ago)",
                        crate::http::error::truncate(id, 64)
                    ))
                    .into_response(),
                };
                caller.finish(resp)
            },
        )
        .boxed();

    let events = warp::path!("api" / "v1" / "events")
        .and(warp::get())
        .and(caller(site.clone()))
        .and(with_site(site.clone()))
        .map(|caller: Caller, site: Arc<Site>| caller.finish(respond(events(&site, &caller))))
        .boxed();

    let session = warp::path!("api" / "v1" / "session")
        .and(warp::get())
        .and(caller(site.clone()))
        .and(with_site(site.clone()))
        .map(move |caller: Caller, site: Arc<Site>| {
            let body = json!({
                "auth": if site.identify.requires_keys() { "key" } else { "none" },
                "key": caller.key.as_ref().map(|k| k.name.to_string()),
                "admin": caller.is_admin(),
                "nodes": may_read_admin(admin, &caller),
            });
            caller.finish(ok_json(&body))
        })
        .boxed();

    let status = warp::path!("api" / "v1" / "status")
        .and(warp::get())
        .and(caller(site.clone()))
        .and(with_site(site.clone()))
        .map(|caller: Caller, site: Arc<Site>| caller.finish(ok_json(&status(&site))))
        .boxed();

    let nodes = warp::path!("api" / "v1" / "nodes")
        .and(warp::get())
        .and(caller(site.clone()))
        .and(with_site(site.clone()))
        .map(move |caller: Caller, site: Arc<Site>| {
            let resp = match admin_check(admin, &caller) {
                Ok(()) => ok_json(&nodes(&site)),
                Err(e) => e.into_response(),
            };
            caller.finish(resp)
        })
        .boxed();

    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(caller(site.clone()))
        .and(with_site(site))
        .map(
            move |caller: Caller, site: Arc<Site>| match admin_check(admin, &caller) {
                Ok(()) => metrics(&site),
                Err(e) => e.into_response(),
            },
        )
        .boxed();

    classify
        .or(job)
        .unify()
        .or(events)
        .unify()
        .or(session)
        .unify()
        .or(status)
        .unify()
        .or(nodes)
        .unify()
        .or(metrics)
        .unify()
        .boxed()
}

/// `/healthz` and `/readyz`: no authentication (load balancers and Kubernetes probe them),
/// and nothing in them about anyone's data.
pub(crate) fn health(site: Arc<Site>) -> BoxedFilter<(Response,)> {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .map(|| ok_json(&json!({ "status": "ok" })));
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_site(site))
        .map(|site: Arc<Site>| readiness(&site));
    healthz.or(readyz).unify().boxed()
}

/// The routes of the `--admin-listen` address: health, `/metrics` and `/api/v1/nodes`,
/// without authentication (bind it to an address only operators reach).
pub(crate) fn admin_routes(site: Arc<Site>) -> BoxedFilter<(Response,)> {
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_site(site.clone()))
        .map(|site: Arc<Site>| metrics(&site));
    let nodes = warp::path!("api" / "v1" / "nodes")
        .and(warp::get())
        .and(with_site(site.clone()))
        .map(|site: Arc<Site>| ok_json(&nodes(&site)));
    health(site)
        .or(metrics)
        .unify()
        .or(nodes)
        .unify()
        .recover(crate::http::error::recover)
        .unify()
        .boxed()
}

fn may_read_admin(admin: AdminAccess, caller: &Caller) -> bool {
    admin_check(admin, caller).is_ok()
}

fn admin_check(admin: AdminAccess, caller: &Caller) -> Result<(), ApiError> {
    match admin {
        AdminAccess::Open => Ok(()),
        AdminAccess::AdminKey if caller.is_admin() => Ok(()),
        AdminAccess::AdminKey => Err(ApiError::forbidden("this needs an admin key")),
        AdminAccess::Elsewhere => Err(ApiError::not_found(
            "not found (served on the admin address)",
        )),
    }
}

/// The full node list for operators.
fn nodes(site: &Site) -> Value {
    let nodes = site.inference.nodes();
    let ready = nodes.iter().any(|n| n.can_serve());
    json!({
        "ready": ready,
        "nodes": nodes,
        "queued": site.queued(),
        "in_flight": site.in_flight(),
        "limits": limits(site),
    })
}

/// What the page shows everyone: whether the cluster can serve, how much of it, and whether
/// its answers are real predictions. No addresses, no load.
fn status(site: &Site) -> Value {
    let nodes = site.inference.nodes();
    let serving: Vec<_> = nodes.iter().filter(|n| n.can_serve()).collect();
    json!({
        "ready": !serving.is_empty(),
        "nodes_ready": serving.len(),
        "nodes": nodes.len(),
        "synthetic": serving.iter().any(|n| n.synthetic == Some(true)),
        "untrained": serving.iter().any(|n| n.trained == Some(false) && n.synthetic != Some(true)),
        "limits": limits(site),
    })
}

fn limits(site: &Site) -> Value {
    let l = &site.limits;
    json!({
        "max_file_bytes": l.max_file_bytes,
        "max_request_bytes": l.max_request_bytes,
        "max_files": l.max_files,
        "max_queued": l.max_queued,
        "max_queued_per_caller": l.max_queued_per_caller,
    })
}

fn metrics(site: &Site) -> Response {
    let mut live = prometheus_client::registry::Registry::default();
    crate::observe::metrics::register_live(
        &mut live,
        site.queued(),
        site.in_flight(),
        &site.inference.nodes(),
    );
    site.inference.register_metrics(&mut live);
    crate::http::guards::register_guards(site, &mut live);
    let mut resp = site.metrics.page(&live).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(glimpse_ops::exposition::CONTENT_TYPE),
    );
    resp
}

async fn classify<S>(
    site: Arc<Site>,
    caller: &Caller,
    intake: &Intake,
    query: HashMap<String, String>,
    content_type: Option<String>,
    content_length: Option<u64>,
    body: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    let wait = matches!(
        query.get("wait").map(String::as_str),
        Some("true" | "1" | "yes")
    );
    let top_k =
        parse_top_k(query.get("top_k").map(String::as_str)).map_err(ApiError::bad_request)?;
    let uploads = read_uploads(
        body,
        content_type.as_deref(),
        content_length,
        query.get("name").cloned(),
        &site.limits,
        intake,
    )
    .await
    .map_err(|e| site.refuse_upload(e))?;
    let submitted = site.submit(caller, uploads, top_k)?;
    let token = caller.token.as_deref();
    if wait {
        let results = site.wait_all(submitted).await;
        Ok(results_response(&site, "results", results, token))
    } else {
        let jobs: Vec<JobView> = submitted
            .iter()
            .filter_map(|s| site.jobs.get(&s.id, &caller.owner))
            .collect();
        let accepted = jobs.iter().any(|j| !j.status.is_final());
        if accepted {
            Ok(json_response(
                StatusCode::ACCEPTED,
                &with_token(json!({ "jobs": jobs }), token),
            ))
        } else {
            Ok(results_response(&site, "jobs", jobs, token))
        }
    }
}

/// Adds `client_token` to an upload's answer (without keys), so an API client can follow
/// its jobs later with the `x-glimpse-client` header.
fn with_token(mut body: Value, token: Option<&str>) -> Value {
    if let (Some(t), Some(obj)) = (token, body.as_object_mut()) {
        obj.insert("client_token".into(), Value::String(t.to_string()));
    }
    body
}

/// Status for a list of per-image results: 200 if any image succeeded (or is still
/// running); if every one failed, the first failure's status, so a single non-image upload
/// gets 415 and an all-overloaded request gets 503 + Retry-After.
fn results_response(
    site: &Site,
    key: &str,
    results: Vec<JobView>,
    token: Option<&str>,
) -> Response {
    let failed: Vec<&JobView> = results
        .iter()
        .filter(|j| j.status == JobStatus::Error)
        .collect();
    if results.is_empty() || failed.len() < results.len() {
        return ok_json(&with_token(json!({ key: results }), token));
    }
    let status = failed
        .first()
        .and_then(|j| j.code)
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let error = failed
        .first()
        .and_then(|j| j.error.clone())
        .unwrap_or_else(|| "every image failed".to_string());
    let resp = json_response(
        status,
        &with_token(json!({ "error": error, key: results }), token),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        with_retry_after(resp, site.limits.retry_after_s)
    } else {
        resp
    }
}

/// `GET /api/v1/events`: the caller's job updates as Server-Sent Events, opening with a
/// `hello`. Streams are capped per caller (429) and overall (503).
fn events(site: &Site, caller: &Caller) -> Result<Response, ApiError> {
    let share = site.streams.take(&caller.limit, 1).map_err(|refused| {
        site.metrics.request_rejected("event_streams_full");
        refused.into_api_error("event streams open", site.limits.retry_after_s)
    })?;
    let sub = site.jobs.subscribe(caller.owner.clone());
    let hello = Event::default()
        .event("hello")
        .json_data(json!({ "ready": is_ready(site.inference.as_ref()) }))
        .unwrap_or_else(|_| Event::default().event("hello").data("{}"));
    let updates = updates(sub, share, site.shutdown_signal());
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
    Ok(resp)
}

/// The SSE events of one subscription, until the server shuts down. The stream's share of
/// the stream caps is held for as long as the stream lives.
fn updates(
    sub: Subscription,
    share: Share,
    shutdown: glimpse_transport::Shutdown,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold(
        (sub, share, shutdown),
        |(sub, share, mut shutdown)| async move {
            loop {
                if shutdown.is_triggered() {
                    return None;
                }
                let event = tokio::select! {
                    () = shutdown.recv() => return None,
                    event = sub.next() => event,
                };
                let sse = match event {
                    events::Event::Job(job) => {
                        match Event::default()
                            .event("job")
                            .id(job.id.clone())
                            .json_data(&*job)
                        {
                            Ok(e) => e,
                            Err(err) => {
                                tracing::warn!("cannot encode job event: {err}");
                                continue;
                            }
                        }
                    }
                    events::Event::Lagged(n) => {
                        Event::default().event("lagged").data(n.to_string())
                    }
                };
                return Some((Ok(sse), (sub, share, shutdown)));
            }
        },
    )
}
