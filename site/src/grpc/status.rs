//! The site's errors as gRPC statuses. Every refusal is built once, as an [`ApiError`] with
//! an HTTP status, whichever protocol the request came in on; this maps that status to the
//! gRPC code a client's retry logic understands, keeps the message, and carries
//! `Retry-After` as `retry-after` metadata (seconds), since gRPC has no header of its own
//! for it.
//!
//! Choices where HTTP and gRPC do not line up one to one:
//! - 413 (too many images, an image or the message too large) is `RESOURCE_EXHAUSTED`,
//!   which is what gRPC itself answers for a message over the receive limit: the request
//!   is well formed, it asks for more than this server allows.
//! - 502 (every node that tried the image failed) is `UNAVAILABLE`, as in gRPC's own
//!   HTTP-to-gRPC mapping: the same request may succeed on a retry, which is what
//!   `UNAVAILABLE` tells clients. Other 5xx are `INTERNAL`.
//! - 415 and 422 (not an image, an image that does not decode) are `INVALID_ARGUMENT`: the
//!   request's data is wrong, and retrying it will not help.

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use warp::http::StatusCode;

use crate::http::error::ApiError;

/// The metadata key that carries [`ApiError::retry_after_s`].
pub(crate) const RETRY_AFTER: &str = "retry-after";

/// The gRPC code for an HTTP status (see the module doc for the choices).
pub(crate) fn code_for(status: StatusCode) -> Code {
    match status.as_u16() {
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        408 | 504 => Code::DeadlineExceeded,
        413 | 429 => Code::ResourceExhausted,
        499 => Code::Cancelled,
        501 => Code::Unimplemented,
        502 | 503 => Code::Unavailable,
        400..=499 => Code::InvalidArgument,
        _ => Code::Internal,
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Status {
        let mut status = Status::new(code_for(e.status()), e.message());
        if let Some(secs) = e.retry_after_s()
            && let Ok(value) = MetadataValue::try_from(secs.to_string())
        {
            status.metadata_mut().insert(RETRY_AFTER, value);
        }
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(status: u16) -> Code {
        code_for(StatusCode::from_u16(status).unwrap())
    }

    #[test]
    fn http_statuses_map_to_the_grpc_codes_clients_retry_on() {
        assert_eq!(code(400), Code::InvalidArgument);
        assert_eq!(code(401), Code::Unauthenticated);
        assert_eq!(code(403), Code::PermissionDenied);
        assert_eq!(code(404), Code::NotFound);
        assert_eq!(code(408), Code::DeadlineExceeded);
        assert_eq!(code(413), Code::ResourceExhausted);
        assert_eq!(code(415), Code::InvalidArgument);
        assert_eq!(code(422), Code::InvalidArgument);
        assert_eq!(code(429), Code::ResourceExhausted);
        assert_eq!(code(500), Code::Internal);
        assert_eq!(code(502), Code::Unavailable);
        assert_eq!(code(503), Code::Unavailable);
        assert_eq!(code(504), Code::DeadlineExceeded);
        assert_eq!(code(507), Code::Internal);
    }

    #[test]
    fn the_message_and_retry_after_travel_with_the_status() {
        let status = Status::from(ApiError::unavailable("the queue is full", 3));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "the queue is full");
        assert_eq!(
            status
                .metadata()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("3")
        );
        let status = Status::from(ApiError::unauthorized("no key", false));
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.metadata().get(RETRY_AFTER).is_none());
    }
}
