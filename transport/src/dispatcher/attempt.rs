//! One attempt carried out over quinn: the async half of [`super::Action::Open`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::Connection;

use super::action::{Cause, Failure};
use super::shared::Credit;
use crate::client::{self, AttemptError, StartedSignal};
use crate::codec::RequestHeader;
use crate::types::InferenceAnswer;

/// How an attempt's task ended.
pub(super) struct AttemptOutcome {
    pub(super) attempt: u32,
    pub(super) elapsed: Duration,
    pub(super) result: Result<InferenceAnswer, AttemptError>,
}

/// Sends the image on a new stream and waits for the reply, for at most `remaining` (the
/// request's deadline). `credit` is given back when the task ends or is aborted; aborting
/// drops the stream guard, which resets the stream so the node drops the work.
pub(super) async fn run(
    conn: Option<Connection>,
    header: RequestHeader,
    image: Bytes,
    remaining: Duration,
    credit: Credit,
    started: Arc<StartedSignal>,
) -> AttemptOutcome {
    let attempt = header.attempt;
    let t0 = Instant::now();
    let result = match conn {
        None => Err(AttemptError::ConnectionLost("not connected".into())),
        Some(conn) => {
            let bytes_sent = credit.bytes_sent();
            let request =
                client::request_observed(&conn, &header, image, bytes_sent, Some(&started));
            match tokio::time::timeout(remaining, request).await {
                Ok(r) => r,
                Err(_) => Err(AttemptError::Timeout),
            }
        }
    };
    drop(credit);
    AttemptOutcome {
        attempt,
        elapsed: t0.elapsed(),
        result,
    }
}

impl From<&AttemptError> for Failure {
    fn from(e: &AttemptError) -> Failure {
        let cause = match e {
            AttemptError::Rejected(crate::types::InferenceError::Overloaded)
            | AttemptError::Reset(crate::codec::StreamCode::Overloaded) => Cause::Overloaded,
            AttemptError::Reset(_) => Cause::Reset,
            AttemptError::Timeout => Cause::Timeout,
            AttemptError::ConnectionLost(_) => Cause::ConnectionLost,
            AttemptError::Rejected(r) if r.is_retryable() => Cause::NodeError,
            _ => Cause::Other,
        };
        let fatal = (!e.is_retryable()).then(|| match e {
            AttemptError::Rejected(r) => r.clone(),
            AttemptError::Reset(code) => code.to_error(),
            other => crate::types::InferenceError::Protocol(other.to_string()),
        });
        Failure {
            cause,
            fatal,
            message: e.to_string(),
        }
    }
}
