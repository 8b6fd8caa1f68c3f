//! One request on one stream, front-end side. Used by the dispatcher, tests and benchmarks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{Connection, RecvStream, SendStream};
use tokio::sync::Notify;

use crate::codec::{self, CodecError, MAX_FRAME_BYTES, Reply, RequestHeader, StreamCode};
use crate::stream::{self, FrameReadError};
use crate::types::{InferenceAnswer, InferenceError};

/// How one attempt on one node failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttemptError {
    /// The node answered with a typed error.
    #[error("node replied: {0}")]
    Rejected(InferenceError),
    /// The node reset/stopped the stream without a reply.
    #[error("stream reset by node ({0:?})")]
    Reset(StreamCode),
    /// The connection to the node is gone.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// The node's reply could not be decoded.
    #[error("bad reply: {0}")]
    BadReply(CodecError),
    /// No answer within the per-attempt timeout.
    #[error("attempt timed out")]
    Timeout,
    /// Other stream failure.
    #[error("stream error: {0}")]
    Stream(String),
}

impl AttemptError {
    /// Whether the request may be retried on another node.
    pub fn is_retryable(&self) -> bool {
        match self {
            AttemptError::Rejected(e) => e.is_retryable(),
            AttemptError::Reset(code) => code.is_retryable(),
            // A garbled reply says the node is broken, not the image.
            AttemptError::BadReply(_) => true,
            AttemptError::ConnectionLost(_) | AttemptError::Timeout | AttemptError::Stream(_) => {
                true
            }
        }
    }
}

impl From<FrameReadError> for AttemptError {
    fn from(e: FrameReadError) -> Self {
        match e {
            FrameReadError::Codec(c) => AttemptError::BadReply(c),
            FrameReadError::Reset(code) => AttemptError::Reset(code),
            FrameReadError::ConnectionLost(m) => AttemptError::ConnectionLost(m),
            FrameReadError::Stream(m) => AttemptError::Stream(m),
        }
    }
}

/// Owns a request's two stream halves. If dropped before the reply was read (attempt timed
/// out, hedge lost, caller gave up) it resets the send half and stops the receive half with
/// [`StreamCode::Cancelled`], so the node drops the work. (A plain drop would *finish* the
/// send half: the node would then see a truncated image instead of a cancellation.)
struct StreamGuard {
    send: SendStream,
    recv: RecvStream,
    done: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.send.reset(StreamCode::Cancelled.varint());
            let _ = self.recv.stop(StreamCode::Cancelled.varint());
        }
    }
}

/// Where [`request_observed`] reports the node's `Started` frame: when it arrived and the
/// node's estimate of the work. Set at most once; `notify` wakes whoever watches the attempt
/// (the dispatcher shares one `Notify` among a request's attempts).
#[derive(Debug)]
pub struct StartedSignal {
    started: OnceLock<(Instant, Duration)>,
    notify: Arc<Notify>,
}

impl StartedSignal {
    /// A signal that wakes `notify` when the Started frame arrives.
    pub fn new(notify: Arc<Notify>) -> StartedSignal {
        StartedSignal {
            started: OnceLock::new(),
            notify,
        }
    }

    /// When the node said it started, and how long it expects the work to take.
    pub fn get(&self) -> Option<(Instant, Duration)> {
        self.started.get().copied()
    }

    fn set(&self, expect: Duration) {
        if self.started.set((Instant::now(), expect)).is_ok() {
            // notify_one keeps a permit when nobody waits yet: the signal is never lost.
            self.notify.notify_one();
        }
    }
}

/// Send one image on a new stream of `conn` and wait for the node's reply.
///
/// Waits for stream credit first (backpressure from the node's capacity). Cancel-safe: dropping
/// the future cancels the stream on the node. `bytes_sent` is increased by what was written.
pub async fn request(
    conn: &Connection,
    header: &RequestHeader,
    image: Bytes,
    bytes_sent: &AtomicU64,
) -> Result<InferenceAnswer, AttemptError> {
    request_observed(conn, header, image, bytes_sent, None).await
}

/// [`request`], reporting a `Reply::Started` frame (which the node sends only if
/// `header.ack` asked for it) to `started` as soon as it arrives, then reading on to the
/// final frame. A second Started frame breaks the protocol and fails the attempt.
pub async fn request_observed(
    conn: &Connection,
    header: &RequestHeader,
    image: Bytes,
    bytes_sent: &AtomicU64,
    started: Option<&StartedSignal>,
) -> Result<InferenceAnswer, AttemptError> {
    let frame = codec::encode_request_header(header).map_err(AttemptError::BadReply)?;
    let (send, recv) = conn
        .open_bi()
        .await
        .map_err(|e| AttemptError::ConnectionLost(e.to_string()))?;
    let mut g = StreamGuard {
        send,
        recv,
        done: false,
    };
    // If the node stops reading (refused: draining, too large, bad request) it has also
    // written a typed reply, which says more than the stop code: go read it.
    let write = async {
        stream::write_frame(&mut g.send, &frame).await?;
        bytes_sent.fetch_add(frame.len() as u64, Ordering::Relaxed);
        let n = image.len() as u64;
        g.send.write_chunk(image).await?;
        bytes_sent.fetch_add(n, Ordering::Relaxed);
        // finish() succeeds even on a dead connection (quinn #1926): the reply read below is
        // what tells us whether the node got it.
        let _ = g.send.finish();
        Ok::<(), quinn::WriteError>(())
    }
    .await;
    let stopped_with = match write {
        Ok(()) => None,
        Err(quinn::WriteError::Stopped(code)) => Some(StreamCode::from_varint(code)),
        Err(quinn::WriteError::ConnectionLost(e)) => {
            return Err(AttemptError::ConnectionLost(e.to_string()));
        }
        Err(e) => return Err(AttemptError::Stream(e.to_string())),
    };
    let mut seen_started = false;
    let reply = loop {
        let frame = stream::read_frame(&mut g.recv, MAX_FRAME_BYTES).await;
        if let Ok(Some(body)) = &frame
            && let Ok(Reply::Started { expect_ms }) = codec::decode_reply(body)
        {
            if seen_started {
                // The guard stops the stream: nothing more from this node is wanted.
                return Err(AttemptError::BadReply(CodecError::Malformed(
                    "second started frame".into(),
                )));
            }
            seen_started = true;
            if let Some(s) = started {
                s.set(Duration::from_millis(u64::from(expect_ms)));
            }
            continue;
        }
        break frame;
    };
    g.done = true;
    match reply {
        Ok(Some(body)) => match codec::decode_reply(&body).map_err(AttemptError::BadReply)? {
            Reply::Answer(a) => Ok(a),
            Reply::Error(e) => Err(AttemptError::Rejected(e.into())),
            Reply::Started { .. } => Err(AttemptError::BadReply(CodecError::Malformed(
                "second started frame".into(),
            ))),
        },
        Ok(None) => Err(match stopped_with {
            Some(code) => AttemptError::Reset(code),
            None => AttemptError::BadReply(CodecError::Truncated),
        }),
        Err(e) => Err(match (stopped_with, e) {
            (Some(code), FrameReadError::Reset(_)) => AttemptError::Reset(code),
            (_, e) => e.into(),
        }),
    }
}
