//! The messages: the request header, the control stream's messages, the node's replies, and
//! their encoders and decoders (`encode_X` gives a whole frame, `decode_X` takes a frame body).

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{CodecError, PROTOCOL_VERSION, encode_frame};
use crate::types::{InferenceAnswer, InferenceError, LoadReport, NodeInfo};

impl CodecError {
    /// The typed reply a node sends back for this error.
    pub fn to_reply(&self) -> ErrorReply {
        let kind = match self {
            CodecError::UnknownVersion { .. } => ErrorKind::UnsupportedVersion,
            _ => ErrorKind::BadRequest,
        };
        ErrorReply {
            kind,
            message: self.to_string(),
        }
    }
}

/// Sent by the front-end at the start of each request stream, followed by `image_len` raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHeader {
    /// Protocol version ([`PROTOCOL_VERSION`]).
    pub v: u16,
    /// Request id, the same for every attempt of one request.
    pub request_id: u64,
    /// Attempt number, starting at 1.
    pub attempt: u32,
    /// Remaining time budget in ms when sent (relative, so clocks need not be in sync).
    pub deadline_ms: Option<u64>,
    /// Number of labels wanted.
    pub top_k: u32,
    /// Number of image bytes following the header.
    pub image_len: u64,
    /// This front-end understands `Reply::Started` frames: the node may send one before the
    /// final reply. Absent (false) from front-ends that predate it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ack: bool,
    /// W3C trace context (`traceparent`, e.g. `00-<trace id>-<span id>-01`) of the
    /// front-end's span for this image, so the node's span joins the same trace. Absent when
    /// the front-end does not trace and from front-ends that predate it; nodes that predate it
    /// ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl RequestHeader {
    /// A header for the current protocol version.
    pub fn new(
        request_id: u64,
        attempt: u32,
        deadline_ms: Option<u64>,
        top_k: u32,
        image_len: u64,
    ) -> Self {
        RequestHeader {
            v: PROTOCOL_VERSION,
            request_id,
            attempt,
            deadline_ms,
            top_k,
            image_len,
            ack: false,
            traceparent: None,
        }
    }

    /// The same header, carrying (or not) the trace context of the image's span.
    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// The same header, asking for (or not) a `Reply::Started` frame.
    pub fn with_ack(mut self, ack: bool) -> Self {
        self.ack = ack;
        self
    }
}

/// Messages on the node's control stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControlMessage {
    /// First message: who the node is.
    Hello(NodeInfo),
    /// Periodic load.
    Load(LoadReport),
    /// The node is shutting down: send it nothing new.
    Draining,
}

/// A typed error kind on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// See [`InferenceError::BadImage`].
    BadImage,
    /// See [`InferenceError::TooLarge`].
    TooLarge,
    /// See [`InferenceError::Overloaded`].
    Overloaded,
    /// See [`InferenceError::Draining`].
    Draining,
    /// See [`InferenceError::Internal`].
    Internal,
    /// Malformed or oversized frame, truncated image.
    BadRequest,
    /// The header's protocol version is not supported.
    UnsupportedVersion,
}

/// A typed error reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
}

impl From<&InferenceError> for ErrorReply {
    fn from(e: &InferenceError) -> Self {
        let (kind, message) = match e {
            InferenceError::BadImage(m) => (ErrorKind::BadImage, m.clone()),
            InferenceError::TooLarge(m) => (ErrorKind::TooLarge, m.clone()),
            InferenceError::Overloaded => (ErrorKind::Overloaded, String::new()),
            InferenceError::Draining => (ErrorKind::Draining, String::new()),
            InferenceError::Internal(m) => (ErrorKind::Internal, m.clone()),
            InferenceError::Protocol(m) => (ErrorKind::BadRequest, m.clone()),
        };
        ErrorReply { kind, message }
    }
}

impl From<ErrorReply> for InferenceError {
    fn from(r: ErrorReply) -> Self {
        match r.kind {
            ErrorKind::BadImage => InferenceError::BadImage(r.message),
            ErrorKind::TooLarge => InferenceError::TooLarge(r.message),
            ErrorKind::Overloaded => InferenceError::Overloaded,
            ErrorKind::Draining => InferenceError::Draining,
            ErrorKind::Internal => InferenceError::Internal(r.message),
            ErrorKind::BadRequest | ErrorKind::UnsupportedVersion => {
                InferenceError::Protocol(r.message)
            }
        }
    }
}

/// A frame the node sends on a request stream: at most one `Started`, then exactly one
/// final `Answer` or `Error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Success. Final.
    Answer(InferenceAnswer),
    /// Typed failure. Final.
    Error(ErrorReply),
    /// Not final: the node has started real work on the image (it is no longer queued) and
    /// expects that work to take about `expect_ms` (0: no estimate). Sent only when the
    /// request header's `ack` asked for it, at most once, before the final frame.
    Started {
        /// The node's estimate of the work it just started, in milliseconds.
        expect_ms: u32,
    },
}

impl Reply {
    /// Whether this frame ends the reply (`Answer` or `Error`).
    pub fn is_final(&self) -> bool {
        !matches!(self, Reply::Started { .. })
    }
}

#[derive(Serialize, Deserialize)]
struct ControlFrame {
    v: u16,
    msg: ControlMessage,
}

#[derive(Serialize, Deserialize)]
struct ReplyFrame {
    v: u16,
    reply: Reply,
}

/// Decoded first, alone, so the version is checked before the rest of the body.
#[derive(Deserialize)]
struct VersionProbe {
    v: u16,
}

/// CBOR-encode `msg` and frame it.
pub(super) fn encode_body<T: Serialize>(msg: &T) -> Result<Bytes, CodecError> {
    let body = serde_cbor::to_vec(msg).map_err(|e| CodecError::Encode(e.to_string()))?;
    encode_frame(&body)
}

fn decode_versioned<T: DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let probe: VersionProbe =
        serde_cbor::from_slice(body).map_err(|e| CodecError::Malformed(e.to_string()))?;
    if probe.v != PROTOCOL_VERSION {
        return Err(CodecError::UnknownVersion {
            got: probe.v,
            supported: PROTOCOL_VERSION,
        });
    }
    serde_cbor::from_slice(body).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Encode a request header as a frame (length prefix included).
pub fn encode_request_header(h: &RequestHeader) -> Result<Bytes, CodecError> {
    encode_body(h)
}

/// Decode a request header frame body.
pub fn decode_request_header(body: &[u8]) -> Result<RequestHeader, CodecError> {
    decode_versioned(body)
}

/// Encode a control message as a frame.
pub fn encode_control(msg: &ControlMessage) -> Result<Bytes, CodecError> {
    encode_body(&ControlFrame {
        v: PROTOCOL_VERSION,
        msg: msg.clone(),
    })
}

/// Decode a control frame body.
pub fn decode_control(body: &[u8]) -> Result<ControlMessage, CodecError> {
    decode_versioned::<ControlFrame>(body).map(|f| f.msg)
}

/// Encode a reply as a frame.
pub fn encode_reply(reply: &Reply) -> Result<Bytes, CodecError> {
    encode_body(&ReplyFrame {
        v: PROTOCOL_VERSION,
        reply: reply.clone(),
    })
}

/// Decode a reply frame body.
pub fn decode_reply(body: &[u8]) -> Result<Reply, CodecError> {
    decode_versioned::<ReplyFrame>(body).map(|f| f.reply)
}
