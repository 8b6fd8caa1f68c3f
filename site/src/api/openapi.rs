//! `GET /openapi.json`: the OpenAPI 3.1 description of `/api/v1` and `/v2`, checked in as
//! `site/openapi.json` and served as it is. `site/tests/openapi.rs` sends real requests to
//! every documented route and validates each answer against it, so it cannot drift from
//! what the server does.

use warp::filters::BoxedFilter;
use warp::http::{HeaderValue, header};
use warp::reply::Response;
use warp::{Filter, Reply};

/// The document.
pub const OPENAPI_JSON: &str = include_str!("../../openapi.json");

/// The route. Public: it describes the API, not anyone's data.
pub(crate) fn route() -> BoxedFilter<(Response,)> {
    warp::path!("openapi.json")
        .and(warp::get())
        .map(|| {
            let mut resp = OPENAPI_JSON.into_response();
            let headers = resp.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            resp
        })
        .boxed()
}
