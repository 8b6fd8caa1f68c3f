//! KServe v2 / Open Inference Protocol over HTTP, as Triton serves it, so Triton's clients
//! and tools can use Glimpse unchanged.
//!
//! The model takes encoded image files, not tensors: its one input `image` is BYTES (each
//! element one file: base64 in JSON, raw in the binary tensor data extension). It answers
//! the top-k classes per image as two outputs of shape `[batch, k]`: `labels` (BYTES,
//! class names) and `probabilities` (FP32). `k` is 5 unless the request asks otherwise,
//! through a `top_k` parameter, or Triton's classification extension (`classification: k`
//! on an output), which turns that output into `"score:index:label"` strings. A batch is
//! classified as a whole: if one image fails, the request fails with that image's status
//! and index, because a tensor cannot have holes.
//!
//! Each module has one job: [`model`] is the model as every protocol sees it; the caps on
//! its tensors (`glimpse_wire::shape`) and the parsers that read requests under limits
//! (`glimpse_wire::parse`, `glimpse_wire::binary`) come from the wire-format crate; `body` streams a request body into them off the
//! async runtime, `infer` answers inference, and this file assembles the routes.

mod body;
mod infer;
pub mod model;

use std::sync::Arc;

use serde_json::json;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::{Filter, Rejection};

use crate::access::caller::Caller;
use crate::api::upload::byte_stream;
use crate::http::error::respond;
use crate::http::filters::{caller, connection, same_origin, with_site};
use crate::http::health::{readiness, readiness_with};
use crate::http::reply::ok_json;
use crate::site::Site;

pub use model::{MODEL_NAME, MODEL_VERSION};

/// `v2/models/{name}` or `v2/models/{name}/versions/{version}`, with more path to come.
fn model_path() -> impl Filter<Extract = (String, Option<String>), Error = Rejection> + Clone {
    let versioned = warp::path!("v2" / "models" / String / "versions" / String / ..)
        .map(|name, version| (name, Some(version)));
    let plain = warp::path!("v2" / "models" / String / ..).map(|name| (name, None));
    versioned.or(plain).unify().untuple_one()
}

/// `GET v2/models/{name}[/versions/{version}]/{suffix}`, answered by `answer` once the model
/// (and version) is known.
fn model_get(
    site: &Arc<Site>,
    suffix: &'static str,
    answer: fn(&Site) -> Response,
) -> BoxedFilter<(Response,)> {
    model_path()
        .and(warp::path(suffix))
        .and(warp::path::end())
        .and(warp::get())
        .and(caller(site.clone()))
        .and(with_site(site.clone()))
        .map(
            move |name: String, version: Option<String>, _: Caller, site: Arc<Site>| {
                respond(model::check_model(&name, version.as_deref()).map(|()| answer(&site)))
            },
        )
        .boxed()
}

/// The `/v2/...` routes. Like `/api`, they need a key when the server has keys.
// Over 80 lines on purpose: the KServe v2 route table, one filter chain per endpoint, read top to bottom like a router.
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
                "name": model::SERVER_NAME,
                "version": env!("CARGO_PKG_VERSION"),
                "extensions": model::EXTENSIONS,
            }))
        })
        .boxed();
    // Before the model routes: `stats` here is not a model's name.
    let all_stats = warp::path!("v2" / "models" / "stats")
        .and(warp::get())
        .and(caller(site.clone()))
        .and(with_site(site.clone()))
        .map(|_: Caller, site: Arc<Site>| ok_json(&model::statistics(&site.stats.snapshot())))
        .boxed();
    let metadata = model_path()
        .and(warp::path::end())
        .and(warp::get())
        .and(caller(site.clone()))
        .map(|name: String, version: Option<String>, _: Caller| {
            respond(
                model::check_model(&name, version.as_deref()).map(|()| ok_json(&model::metadata())),
            )
        })
        .boxed();
    let model_ready = model_get(&site, "ready", |site| {
        readiness_with(
            site,
            json!({ "name": model::MODEL_NAME, "version": model::MODEL_VERSION }),
        )
    });
    let config = model_get(&site, "config", |site| ok_json(&model::config(site)));
    let stats = model_get(&site, "stats", |site| {
        ok_json(&model::statistics(&site.stats.snapshot()))
    });
    let infer = model_path()
        .and(warp::path!("infer"))
        .and(warp::post())
        .and(same_origin(origins))
        .and(caller(site.clone()))
        .and(with_site(site))
        .and(connection())
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::header::optional::<u64>(infer::HEADER_LENGTH))
        .and(warp::body::stream())
        .then(
            |name: String,
             version: Option<String>,
             caller: Caller,
             site: Arc<Site>,
             conn,
             content_length: Option<u64>,
             header_len: Option<u64>,
             body| async move {
                let body = Box::pin(byte_stream(body));
                let intake = site.intake().on(conn);
                let head = infer::BodyHead {
                    content_length,
                    header_len,
                };
                respond(infer::infer(name, version, site, &caller, &intake, head, body).await)
            },
        )
        .boxed();
    live.or(ready)
        .unify()
        .or(server)
        .unify()
        .or(all_stats)
        .unify()
        .or(metadata)
        .unify()
        .or(model_ready)
        .unify()
        .or(config)
        .unify()
        .or(stats)
        .unify()
        .or(infer)
        .unify()
        .boxed()
}
