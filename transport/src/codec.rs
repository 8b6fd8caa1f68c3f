//! The wire format, and the only module that knows it is CBOR.
//!
//! Every message is a *frame*: a big-endian `u32` length, then that many bytes of CBOR. Every
//! frame body is a CBOR map with a `v` (protocol version) field, checked before anything else
//! is decoded, so an unknown version is reported as such instead of as a confusing decode error.
//! Frames are capped at [`MAX_FRAME_BYTES`]: a peer cannot make us buffer more than that by
//! sending a large length. Image bytes are *not* framed: they follow the request header raw on
//! the same stream, delimited by the header's `image_len`, so they are never copied into CBOR.
//!
//! Streams:
//! - control (unidirectional, node → front-end, opened by the node on connect):
//!   `Hello(NodeInfo)`, then `Load(LoadReport)` periodically, then `Draining` on shutdown.
//!   `NodeInfo::acks` says whether the node sends `Started` frames (below).
//! - request (bidirectional, one per image, opened by the front-end):
//!   front-end sends `RequestHeader` frame + `image_len` raw bytes + FIN;
//!   node answers with at most one `Reply::Started` frame (only if the header's `ack` asked
//!   for it), then one final `Reply::Answer` or `Reply::Error` frame + FIN, or resets/stops
//!   with a [`StreamCode`].
//!
//! `Started` says the node has begun real work on the image (it left the node's queues) and
//! how long it expects that work to take, so the front-end can tell a request that waits at a
//! node (safe to move elsewhere) from one being worked on (moving it would do the work
//! twice). Both flags default to false and are left off the wire when false, so a node or a
//! front-end that predates them interoperates unchanged: an old node ignores `ack` and never
//! sends `Started`; an old front-end never sets `ack`, so it never sees one.
//!
//! Everything here is sans-IO except the two small quinn helpers at the end, so the format is
//! unit-tested without sockets.

use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::types::{InferenceAnswer, InferenceError, LoadReport, NodeInfo};

/// The one protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// TLS ALPN: a peer without it fails the handshake instead of speaking garbage to us.
pub const ALPN: &[u8] = b"glimpse/1";

/// Largest frame (header, reply, control message). Replies with 1000 labels are ~40 KiB;
/// 256 KiB leaves room while bounding what a broken peer can make us buffer.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// Length of the frame length prefix.
pub const LEN_PREFIX: usize = 4;

/// Application error codes for QUIC stream RESET_STREAM / STOP_SENDING (and what is
/// retryable), in the spirit of HTTP/3's H3_REQUEST_REJECTED. Code 0 is what quinn sends when
/// a stream is simply dropped, so it is never used for a meaningful condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum StreamCode {
    /// The front-end no longer wants the answer (hedge lost, client gone, deadline passed).
    Cancelled,
    /// The node is draining and did not process the request. Retryable.
    Draining,
    /// The node has no capacity for the request. Retryable.
    Overloaded,
    /// The request was malformed (bad frame, unknown version, too large). Not retryable.
    BadRequest,
    /// The node failed while handling the request. Retryable.
    Internal,
    /// A code this build does not know (a newer peer?): treated as retryable.
    Unknown(u64),
}

impl StreamCode {
    /// Numeric value on the wire.
    pub fn code(self) -> u64 {
        match self {
            StreamCode::Cancelled => 0x10,
            StreamCode::Draining => 0x11,
            StreamCode::Overloaded => 0x12,
            StreamCode::BadRequest => 0x13,
            StreamCode::Internal => 0x14,
            StreamCode::Unknown(c) => c,
        }
    }

    /// Parse a code received from the peer.
    pub fn from_code(code: u64) -> StreamCode {
        match code {
            0x10 => StreamCode::Cancelled,
            0x11 => StreamCode::Draining,
            0x12 => StreamCode::Overloaded,
            0x13 => StreamCode::BadRequest,
            0x14 => StreamCode::Internal,
            c => StreamCode::Unknown(c),
        }
    }

    /// As a quinn `VarInt` (all our codes are small).
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u64(self.code()).unwrap_or(quinn::VarInt::from_u32(0x14))
    }

    /// Whether a request that got this code may be retried on another node. A bad request
    /// would fail everywhere; everything else says something about the node, not the image.
    pub fn is_retryable(self) -> bool {
        !matches!(self, StreamCode::BadRequest)
    }

    /// The error to report when a stream ended with this code and no reply.
    pub fn to_error(self) -> InferenceError {
        match self {
            StreamCode::Draining => InferenceError::Draining,
            StreamCode::Overloaded => InferenceError::Overloaded,
            StreamCode::BadRequest => InferenceError::Protocol("node refused the request".into()),
            StreamCode::Cancelled => InferenceError::Internal("node cancelled the stream".into()),
            StreamCode::Internal => InferenceError::Internal("node reset the stream".into()),
            StreamCode::Unknown(c) => {
                InferenceError::Internal(format!("stream reset with code {c:#x}"))
            }
        }
    }
}

/// Connection close code when a node closes after draining.
pub const CLOSE_DRAINED: u32 = 0x1;
/// Connection close code when the front-end shuts down.
pub const CLOSE_SHUTDOWN: u32 = 0x2;

/// Why a frame could not be read. Each ends only the stream it happened on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The length prefix announces more than the maximum frame size.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    Oversized { len: usize, max: usize },
    /// The body is not valid CBOR for the expected message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The peer speaks a protocol version we do not.
    #[error("unsupported protocol version {got} (this build speaks {supported})")]
    UnknownVersion { got: u16, supported: u16 },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// Encoding failed (should not happen for our own types).
    #[error("cannot encode frame: {0}")]
    Encode(String),
}

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
        }
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

fn encode_body<T: Serialize>(msg: &T) -> Result<Bytes, CodecError> {
    let body = serde_cbor::to_vec(msg).map_err(|e| CodecError::Encode(e.to_string()))?;
    if body.len() > MAX_FRAME_BYTES {
        return Err(CodecError::Oversized {
            len: body.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    let mut out = BytesMut::with_capacity(LEN_PREFIX + body.len());
    // Fits: body.len() <= MAX_FRAME_BYTES < u32::MAX.
    out.put_u32(body.len() as u32);
    out.extend_from_slice(&body);
    Ok(out.freeze())
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

/// Parse a length prefix, enforcing the frame limit before anything is buffered.
pub fn frame_len(prefix: [u8; LEN_PREFIX], max: usize) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(CodecError::Oversized { len, max });
    }
    Ok(len)
}

/// Sans-IO frame splitter: if `buf` holds a whole frame, return its body and how many bytes
/// it used; `Ok(None)` means "need more bytes".
pub fn split_frame(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, CodecError> {
    let Some(prefix) = buf.get(..LEN_PREFIX) else {
        return Ok(None);
    };
    let mut p = [0u8; LEN_PREFIX];
    p.copy_from_slice(prefix);
    let len = frame_len(p, max)?;
    match buf.get(LEN_PREFIX..LEN_PREFIX + len) {
        Some(body) => Ok(Some((body, LEN_PREFIX + len))),
        None => Ok(None),
    }
}

/// Why reading a frame from a QUIC stream failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FrameReadError {
    /// The bytes were wrong.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The peer reset the stream with this code.
    #[error("stream reset by peer ({0:?})")]
    Reset(StreamCode),
    /// The connection died.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// Any other stream error.
    #[error("stream error: {0}")]
    Stream(String),
}

impl From<quinn::ReadError> for FrameReadError {
    fn from(e: quinn::ReadError) -> Self {
        match e {
            quinn::ReadError::Reset(code) => {
                FrameReadError::Reset(StreamCode::from_code(code.into_inner()))
            }
            quinn::ReadError::ConnectionLost(c) => FrameReadError::ConnectionLost(c.to_string()),
            other => FrameReadError::Stream(other.to_string()),
        }
    }
}

/// Read one frame body from a quinn stream. `Ok(None)`: the stream finished cleanly before
/// the first byte of a frame (the normal end of a control stream).
pub async fn read_frame(
    recv: &mut quinn::RecvStream,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameReadError> {
    let mut prefix = [0u8; LEN_PREFIX];
    match recv.read_exact(&mut prefix).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(quinn::ReadExactError::FinishedEarly(_)) => return Err(CodecError::Truncated.into()),
        Err(quinn::ReadExactError::ReadError(e)) => return Err(e.into()),
    }
    let len = frame_len(prefix, max)?;
    let mut body = vec![0u8; len];
    match recv.read_exact(&mut body).await {
        Ok(()) => Ok(Some(body)),
        Err(quinn::ReadExactError::FinishedEarly(_)) => Err(CodecError::Truncated.into()),
        Err(quinn::ReadExactError::ReadError(e)) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Label, NodeInfo, Timings};

    fn answer() -> InferenceAnswer {
        InferenceAnswer {
            top: vec![Label {
                index: 7,
                label: "cock".into(),
                probability: 0.5,
            }],
            timings: Timings {
                queue_ms: 1.0,
                ..Default::default()
            },
            synthetic: true,
        }
    }

    fn body(frame: &[u8]) -> &[u8] {
        let (b, used) = split_frame(frame, MAX_FRAME_BYTES).unwrap().unwrap();
        assert_eq!(used, frame.len());
        b
    }

    #[test]
    fn request_header_round_trips() {
        let h = RequestHeader::new(42, 2, Some(1500), 5, 123_456);
        let f = encode_request_header(&h).unwrap();
        assert_eq!(decode_request_header(body(&f)).unwrap(), h);
    }

    /// A header from a front-end that predates `ack` (the field absent) decodes as not
    /// asking; a new header without `ack` puts nothing on the wire, so old nodes see exactly
    /// the old format; with `ack` it round-trips.
    #[test]
    fn request_header_ack_is_optional_on_the_wire() {
        #[derive(Serialize, Deserialize)]
        struct OldHeader {
            v: u16,
            request_id: u64,
            attempt: u32,
            deadline_ms: Option<u64>,
            top_k: u32,
            image_len: u64,
        }
        let old = encode_body(&OldHeader {
            v: PROTOCOL_VERSION,
            request_id: 7,
            attempt: 1,
            deadline_ms: None,
            top_k: 5,
            image_len: 10,
        })
        .unwrap();
        let h = decode_request_header(body(&old)).unwrap();
        assert_eq!(h, RequestHeader::new(7, 1, None, 5, 10));
        assert!(!h.ack);
        let plain = encode_request_header(&RequestHeader::new(7, 1, None, 5, 10)).unwrap();
        assert_eq!(plain, old, "ack=false must encode exactly as before");
        let asking = RequestHeader::new(7, 1, None, 5, 10).with_ack(true);
        let f = encode_request_header(&asking).unwrap();
        assert!(f.windows(3).any(|w| w == b"ack"));
        assert!(decode_request_header(body(&f)).unwrap().ack);
        // A node that predates `ack` ignores it (serde skips unknown fields).
        let seen_by_old: OldHeader = serde_cbor::from_slice(body(&f)).unwrap();
        assert_eq!((seen_by_old.request_id, seen_by_old.image_len), (7, 10));
    }

    #[test]
    fn started_frame_round_trips_and_is_not_final() {
        for expect_ms in [0, 1, 3000, u32::MAX] {
            let r = Reply::Started { expect_ms };
            let f = encode_reply(&r).unwrap();
            let back = decode_reply(body(&f)).unwrap();
            assert_eq!(back, r);
            assert!(!back.is_final());
        }
        assert!(Reply::Answer(answer()).is_final());
        assert!(
            Reply::Error(ErrorReply {
                kind: ErrorKind::BadImage,
                message: String::new()
            })
            .is_final()
        );
    }

    #[test]
    fn replies_and_control_round_trip() {
        for r in [
            Reply::Answer(answer()),
            Reply::Error(ErrorReply {
                kind: ErrorKind::Overloaded,
                message: "busy".into(),
            }),
        ] {
            let f = encode_reply(&r).unwrap();
            assert_eq!(decode_reply(body(&f)).unwrap(), r);
        }
        let m = ControlMessage::Load(LoadReport {
            in_flight: 3,
            queued: 1,
            recent_latency_ms: 2.5,
        });
        let f = encode_control(&m).unwrap();
        assert_eq!(decode_control(body(&f)).unwrap(), m);
        let f = encode_control(&ControlMessage::Draining).unwrap();
        assert_eq!(decode_control(body(&f)).unwrap(), ControlMessage::Draining);
    }

    /// A Hello from a node that predates `load_interval_ms` (the field absent) still decodes,
    /// and a new one carries the interval the front-end's silence timeout is based on.
    #[test]
    fn hello_with_and_without_load_interval_decodes() {
        let mut info = NodeInfo {
            node_id: "n1".into(),
            model: "synthetic".into(),
            weights: "none".into(),
            trained: false,
            synthetic: true,
            backend: "none".into(),
            capacity: 4,
            max_batch: 1,
            max_batch_wait_ms: 0,
            version: "0.1.0".into(),
            load_interval_ms: None,
            acks: false,
        };
        let old = encode_control(&ControlMessage::Hello(info.clone())).unwrap();
        assert!(
            !old.windows(b"load_interval_ms".len())
                .any(|w| w == b"load_interval_ms"),
            "an absent interval must not be on the wire (older nodes never send it)"
        );
        assert!(
            !old.windows(b"acks".len()).any(|w| w == b"acks"),
            "acks=false must not be on the wire (older nodes never send it)"
        );
        assert_eq!(
            decode_control(body(&old)).unwrap(),
            ControlMessage::Hello(info.clone())
        );
        info.load_interval_ms = Some(100);
        let new = encode_control(&ControlMessage::Hello(info.clone())).unwrap();
        assert_eq!(
            decode_control(body(&new)).unwrap(),
            ControlMessage::Hello(info.clone())
        );
        // A node that sends Started frames says so; an old Hello (no `acks`) reads as false.
        info.acks = true;
        let acking = encode_control(&ControlMessage::Hello(info.clone())).unwrap();
        assert_eq!(
            decode_control(body(&acking)).unwrap(),
            ControlMessage::Hello(info)
        );
        match decode_control(body(&old)).unwrap() {
            ControlMessage::Hello(i) => assert!(!i.acks),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_version_is_reported_as_such() {
        let mut h = RequestHeader::new(1, 1, None, 5, 10);
        h.v = 99;
        let f = encode_body(&h).unwrap();
        let err = decode_request_header(body(&f)).unwrap_err();
        assert_eq!(
            err,
            CodecError::UnknownVersion {
                got: 99,
                supported: PROTOCOL_VERSION
            }
        );
        assert_eq!(err.to_reply().kind, ErrorKind::UnsupportedVersion);
    }

    #[test]
    fn oversized_length_is_rejected_before_buffering() {
        let prefix = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
        assert!(matches!(
            split_frame(&prefix, MAX_FRAME_BYTES),
            Err(CodecError::Oversized { .. })
        ));
        assert!(matches!(
            frame_len([0xff; 4], MAX_FRAME_BYTES),
            Err(CodecError::Oversized { .. })
        ));
    }

    #[test]
    fn partial_frames_need_more_bytes() {
        let f = encode_request_header(&RequestHeader::new(1, 1, None, 5, 10)).unwrap();
        for cut in 0..f.len() {
            assert_eq!(
                split_frame(&f[..cut], MAX_FRAME_BYTES).unwrap(),
                None,
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn wrong_message_type_is_malformed() {
        let f = encode_control(&ControlMessage::Draining).unwrap();
        assert!(matches!(
            decode_request_header(body(&f)),
            Err(CodecError::Malformed(_))
        ));
    }

    /// Deterministic garbage (xorshift), so failures reproduce: no input may panic, and
    /// nothing that is not a valid header may decode as one.
    #[test]
    fn garbage_never_panics() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let valid = encode_request_header(&RequestHeader::new(9, 1, Some(10), 5, 100)).unwrap();
        for round in 0..5000 {
            let len = (next() % 96) as usize;
            let mut buf: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 3 == 0 && !valid.is_empty() {
                // Mutate a valid frame: flips and truncations exercise the decoder's edges.
                buf = valid.to_vec();
                let i = (next() as usize) % buf.len();
                buf[i] ^= (next() as u8) | 1;
                let keep = (next() as usize) % (buf.len() + 1);
                buf.truncate(keep);
            }
            let _ = decode_request_header(&buf);
            let _ = decode_reply(&buf);
            let _ = decode_control(&buf);
            if let Ok(Some((b, used))) = split_frame(&buf, MAX_FRAME_BYTES) {
                assert!(used <= buf.len());
                let _ = decode_request_header(b);
            }
        }
    }

    #[test]
    fn stream_codes_round_trip_and_retryability() {
        for c in [
            StreamCode::Cancelled,
            StreamCode::Draining,
            StreamCode::Overloaded,
            StreamCode::BadRequest,
            StreamCode::Internal,
            StreamCode::Unknown(0x99),
        ] {
            assert_eq!(StreamCode::from_code(c.code()), c);
        }
        assert!(StreamCode::Draining.is_retryable());
        assert!(StreamCode::Overloaded.is_retryable());
        assert!(!StreamCode::BadRequest.is_retryable());
        // 0 is what a dropped stream sends: never confused with a meaningful code.
        assert_eq!(StreamCode::from_code(0), StreamCode::Unknown(0));
    }

    #[test]
    fn error_replies_map_to_inference_errors() {
        for e in [
            InferenceError::BadImage("x".into()),
            InferenceError::TooLarge("y".into()),
            InferenceError::Overloaded,
            InferenceError::Draining,
            InferenceError::Internal("z".into()),
            InferenceError::Protocol("p".into()),
        ] {
            let back: InferenceError = ErrorReply::from(&e).into();
            assert_eq!(back, e);
        }
        assert!(!InferenceError::BadImage(String::new()).is_retryable());
        assert!(InferenceError::Overloaded.is_retryable());
    }
}
