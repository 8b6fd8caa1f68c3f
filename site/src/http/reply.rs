//! Building responses: JSON bodies, and the headers every response of the site carries.
//!
//! Every handler ends in one of these helpers, so what a client sees has one shape: JSON with
//! `Cache-Control: no-store`, and, on the HTTPS listener, HSTS and `nosniff` (see
//! [`harden`]).

use serde::Serialize;
use warp::Reply;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reply::Response;

/// A JSON response with the given status.
pub(crate) fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    let mut resp = warp::reply::json(body).into_response();
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `200 OK` with a JSON body.
pub(crate) fn ok_json<T: Serialize>(body: &T) -> Response {
    json_response(StatusCode::OK, body)
}

/// Add `Retry-After` (seconds), as 429s and 503s carry.
pub(crate) fn with_retry_after(mut resp: Response, secs: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Headers every HTTPS response carries, whatever route produced it: HSTS (when
/// `hsts_max_age_s` is not 0), so a browser that once reached the site over HTTPS never
/// falls back to plain HTTP, and `nosniff`, so no response is ever run as a script or
/// rendered as HTML against its declared type. Browsers ignore HSTS received over a
/// connection with certificate errors (RFC 6797 §8.1), so it is harmless with the
/// self-signed development certificate.
pub(crate) fn harden(mut resp: Response, hsts_max_age_s: u64) -> Response {
    let h = resp.headers_mut();
    if hsts_max_age_s > 0
        && let Ok(v) = HeaderValue::from_str(&format!("max-age={hsts_max_age_s}"))
    {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}
