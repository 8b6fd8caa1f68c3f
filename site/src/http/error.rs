//! The one error type every handler and filter of the site answers with.
//!
//! An [`ApiError`] is a status, a message and the headers that status needs (`Retry-After`
//! on 429 and 503, `WWW-Authenticate` on 401). It is a warp [`Reply`], so handlers return
//! `Result<Response, ApiError>`, and a warp [`Reject`], so filters (authentication, rate
//! limits, origin checks) can refuse a request before its handler runs and still produce
//! the same JSON. Messages are capped in length: some echo what a client sent (a shape, a
//! file name), and an error must never be a way to make the server send back megabytes.

use std::convert::Infallible;

use serde_json::json;
use warp::http::{HeaderValue, StatusCode, header};
use warp::reject::Reject;
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::http::reply::{json_response, with_retry_after};

/// Longest error message sent to a client, in bytes; longer ones are cut with "…".
pub(crate) const MAX_MESSAGE_BYTES: usize = 1024;

/// An error answer: `{"error": message}` with `status` and the headers it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after_s: Option<u64>,
    www_authenticate: Option<&'static str>,
}

impl ApiError {
    /// An error with `status` and a message (cut to [`MAX_MESSAGE_BYTES`]).
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: truncate(message.into(), MAX_MESSAGE_BYTES),
            retry_after_s: None,
            www_authenticate: None,
        }
    }

    /// 400: the request itself is wrong.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 403: understood, and refused whoever asks (cross-origin, not an admin key).
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    /// 401 with `WWW-Authenticate: Bearer`, as RFC 6750 asks: no key, or a wrong one.
    pub fn unauthorized(message: impl Into<String>, invalid_token: bool) -> ApiError {
        let mut e = ApiError::new(StatusCode::UNAUTHORIZED, message);
        e.www_authenticate = Some(if invalid_token {
            "Bearer realm=\"glimpse\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"glimpse\""
        });
        e
    }

    /// 503 with `Retry-After`: the server is full for now, the same request may work later.
    pub fn unavailable(message: impl Into<String>, retry_after_s: u64) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).retry_after(retry_after_s)
    }

    /// 429 with `Retry-After`: this caller is over one of its own limits.
    pub fn too_many(message: impl Into<String>, retry_after_s: u64) -> ApiError {
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).retry_after(retry_after_s)
    }

    /// The same error with a `Retry-After` header (seconds, at least 1).
    pub fn retry_after(mut self, secs: u64) -> ApiError {
        self.retry_after_s = Some(secs.max(1));
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message as the client sees it.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Seconds the client should wait before retrying, when the error says.
    pub fn retry_after_s(&self) -> Option<u64> {
        self.retry_after_s
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl Reject for ApiError {}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let mut resp = json_response(self.status, &json!({ "error": self.message }));
        if let Some(secs) = self.retry_after_s {
            resp = with_retry_after(resp, secs);
        }
        if let Some(v) = self.www_authenticate {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        resp
    }
}

/// A handler's result as a response.
pub(crate) fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(Reply::into_response)
}

pub(crate) use glimpse_wire::text::truncate;

/// Turn every rejection, ours or warp's, into the same JSON error. Statuses that hyper or
/// warp would otherwise answer with an empty body (400, 405, 413, 414, 431) get a message too.
pub(crate) async fn recover(r: Rejection) -> Result<Response, Infallible> {
    let e = if let Some(e) = r.find::<ApiError>() {
        e.clone()
    } else if r.is_not_found() {
        ApiError::not_found("not found")
    } else if r.find::<warp::reject::MethodNotAllowed>().is_some() {
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
    } else if r.find::<warp::reject::InvalidQuery>().is_some() {
        ApiError::bad_request("invalid query string")
    } else if r.find::<warp::reject::InvalidHeader>().is_some() {
        ApiError::bad_request("invalid header")
    } else if r.find::<warp::reject::MissingHeader>().is_some() {
        ApiError::bad_request("missing header")
    } else if r.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload too large")
    } else if r.find::<warp::reject::UnsupportedMediaType>().is_some() {
        ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported media type")
    } else {
        tracing::debug!("unhandled rejection: {r:?}");
        ApiError::bad_request("bad request")
    };
    Ok(e.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let long = "é".repeat(2000);
        let e = ApiError::bad_request(long);
        assert!(e.message().len() <= MAX_MESSAGE_BYTES);
        assert!(e.message().ends_with('…'));
    }

    #[test]
    fn headers_follow_the_status() {
        let r = ApiError::unavailable("full", 0).into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let r = ApiError::unauthorized("no key", true).into_response();
        assert_eq!(r.status(), 401);
        assert!(
            r.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .contains("invalid_token")
        );
        assert_eq!(r.headers()["content-type"], "application/json");
    }
}
