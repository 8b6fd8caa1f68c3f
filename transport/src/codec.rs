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
//! Everything here is sans-IO: no `quinn`, no sockets, no async. Bytes go in, messages come
//! out, so the format is unit-tested (and fuzzed) without a network. Reading frames off a real
//! QUIC stream is [`crate::stream`]'s job, and it does so by feeding a [`FrameDecoder`], which
//! cuts frames with [`decode_frame`]: production, the unit tests below and the
//! `transport_frames` fuzz target all go through that one function.
//!
//! Names pair up, so each encoder's inverse is easy to find:
//! - frames: [`encode_frame`] (body → prefix + body) and [`decode_frame`] (bytes → body), with
//!   [`FrameDecoder`] as the incremental form of `decode_frame`;
//! - messages: `encode_X` turns a message into a whole frame (prefix included, ready to write)
//!   and `decode_X` turns a frame *body* (what `decode_frame` yields) back into the message,
//!   for X in `request_header`, `control` and `reply`. So `decode_X` of the body that
//!   `decode_frame` cuts from `encode_X(m)` is `m` again (the unit tests below check it).

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
    Oversized {
        /// The length the prefix announced.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// The body is not valid CBOR for the expected message.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// The peer speaks a protocol version we do not.
    #[error("unsupported protocol version {got} (this build speaks {supported})")]
    UnknownVersion {
        /// The version the peer sent.
        got: u16,
        /// The version this build speaks.
        supported: u16,
    },
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

/// CBOR-encode `msg` and frame it.
fn encode_body<T: Serialize>(msg: &T) -> Result<Bytes, CodecError> {
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

/// Frame `body`: its length as a big-endian `u32`, then the body. The inverse of
/// [`decode_frame`]. Refuses a body over [`MAX_FRAME_BYTES`], so we never send a frame that a
/// peer built like us would refuse to read (the decoders take `max` as a parameter only so
/// tests can use a small one).
pub fn encode_frame(body: &[u8]) -> Result<Bytes, CodecError> {
    if body.len() > MAX_FRAME_BYTES {
        return Err(CodecError::Oversized {
            len: body.len(),
            max: MAX_FRAME_BYTES,
        });
    }
    let mut out = BytesMut::with_capacity(LEN_PREFIX + body.len());
    // Fits: body.len() <= MAX_FRAME_BYTES < u32::MAX.
    out.put_u32(body.len() as u32);
    out.extend_from_slice(body);
    Ok(out.freeze())
}

/// Parse a length prefix, enforcing the frame limit before anything is buffered.
pub fn frame_len(prefix: [u8; LEN_PREFIX], max: usize) -> Result<usize, CodecError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > max {
        return Err(CodecError::Oversized { len, max });
    }
    Ok(len)
}

/// Sans-IO frame splitter, the inverse of [`encode_frame`]: if `buf` starts with a whole
/// frame, return its body and how many bytes of `buf` it used; `Ok(None)` means "need more
/// bytes". The prefix is checked against `max` (with [`frame_len`]) as soon as its four bytes
/// are there, so an oversized frame is refused before any of its body is waited for.
///
/// This is the one place frames are cut: [`FrameDecoder`] (and through it the QUIC reader in
/// [`crate::stream`]) calls it, as do the tests and the fuzz target.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, CodecError> {
    let Some(prefix) = buf.first_chunk::<LEN_PREFIX>() else {
        return Ok(None);
    };
    let len = frame_len(*prefix, max)?;
    match buf.get(LEN_PREFIX..LEN_PREFIX + len) {
        Some(body) => Ok(Some((body, LEN_PREFIX + len))),
        None => Ok(None),
    }
}

/// Incremental, sans-IO form of [`decode_frame`]: feed it bytes as they arrive, in chunks of
/// any size, and take whole frame bodies out.
///
/// It holds at most one frame (prefix and body, so at most `LEN_PREFIX + max` bytes) and never
/// takes bytes past the end of that frame: [`FrameDecoder::feed`] says how many of the offered
/// bytes it took, and the caller keeps the rest. Two things follow:
/// - memory stays bounded whatever a peer sends: a prefix over `max` is refused as soon as its
///   four bytes are in, before any of the body is buffered, and a stream of many small frames
///   in one chunk is taken one frame at a time;
/// - a reader that asks its stream for no more than [`FrameDecoder::wanted`] bytes never reads
///   past the frame it returns, so whatever follows on the stream (the raw image bytes after a
///   request header, or the next frame) is still in the stream for whoever reads it next,
///   however they read it. That is why [`crate::stream::read_frame`] needs no buffer that
///   outlives one call, and why it can take a plain `&mut quinn::RecvStream`.
///
/// Whole frames are cut by [`decode_frame`] itself, so the production reader and the tests of
/// `decode_frame` exercise the same code.
#[derive(Debug)]
pub struct FrameDecoder {
    /// The frame being assembled: never more than one, never past its end.
    buf: Vec<u8>,
    /// Largest body accepted.
    max: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frame bodies over `max` bytes.
    pub fn new(max: usize) -> FrameDecoder {
        FrameDecoder {
            buf: Vec::new(),
            max,
        }
    }

    /// How many more bytes the frame being assembled needs: the rest of the prefix while it is
    /// incomplete, then the rest of the body; 0 when a whole frame is buffered (take it with
    /// [`FrameDecoder::next_frame`]). Reading at most this many bytes never over-reads.
    /// Fails with [`CodecError::Oversized`] once a prefix over the limit is in.
    pub fn wanted(&self) -> Result<usize, CodecError> {
        match self.buf.first_chunk::<LEN_PREFIX>() {
            None => Ok(LEN_PREFIX - self.buf.len()),
            Some(prefix) => Ok(LEN_PREFIX + frame_len(*prefix, self.max)? - self.buf.len()),
        }
    }

    /// Offer `bytes`; returns how many were taken. Takes bytes only up to the end of the
    /// current frame (so fewer than offered once a frame is whole: take it with
    /// [`FrameDecoder::next_frame`], then offer the rest again). Fails as soon as the prefix
    /// announces a body over the limit, having buffered nothing but the prefix.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<usize, CodecError> {
        let mut taken = 0;
        // At most three turns: finish the prefix, then the body, then see the frame is whole.
        loop {
            let wanted = self.wanted()?;
            let n = wanted.min(bytes.len() - taken);
            if n == 0 {
                return Ok(taken);
            }
            // Exactly what this frame still needs (bounded by `max`), not a doubling guess.
            self.buf.reserve_exact(wanted);
            self.buf.extend_from_slice(&bytes[taken..taken + n]);
            taken += n;
        }
    }

    /// The body of the buffered frame once it is whole (cut by [`decode_frame`]), leaving the
    /// decoder empty for the next one; `Ok(None)` while bytes are missing.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        let Some((body, used)) = decode_frame(&self.buf, self.max)? else {
            return Ok(None);
        };
        let body = body.to_vec();
        self.buf.drain(..used);
        Ok(Some(body))
    }

    /// Bytes held: those of the frame being assembled.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The stream ended. Fine between frames (nothing buffered: a clean end, like a control
    /// stream closing); [`CodecError::Truncated`] if it ended inside one. Call it after
    /// [`FrameDecoder::next_frame`] has taken any whole frame.
    pub fn finish(&self) -> Result<(), CodecError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Truncated)
        }
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
        let (b, used) = decode_frame(frame, MAX_FRAME_BYTES).unwrap().unwrap();
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
            decode_frame(&prefix, MAX_FRAME_BYTES),
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
                decode_frame(&f[..cut], MAX_FRAME_BYTES).unwrap(),
                None,
                "cut at {cut}"
            );
        }
    }

    /// Two encoded frames back to back, as a peer would send them.
    fn two_frames() -> (Bytes, Bytes, Vec<u8>) {
        let a = encode_request_header(&RequestHeader::new(1, 1, Some(5), 5, 10)).unwrap();
        let b = encode_reply(&Reply::Started { expect_ms: 77 }).unwrap();
        let both = [&a[..], &b[..]].concat();
        (a, b, both)
    }

    /// Feed `bytes` to `d` in chunks of `size`, the way a stream reader would (offering again
    /// what a full decoder did not take); returns every body that came out.
    fn feed_in_chunks(d: &mut FrameDecoder, bytes: &[u8], size: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in bytes.chunks(size) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let taken = d.feed(rest).unwrap();
                rest = &rest[taken..];
                if let Some(body) = d.next_frame().unwrap() {
                    out.push(body);
                }
            }
        }
        out
    }

    #[test]
    fn encode_frame_and_decode_frame_are_inverses() {
        for body in [&b""[..], b"x", &[7u8; 300][..]] {
            let f = encode_frame(body).unwrap();
            assert_eq!(&f[..LEN_PREFIX], (body.len() as u32).to_be_bytes());
            assert_eq!(
                decode_frame(&f, MAX_FRAME_BYTES).unwrap(),
                Some((body, f.len()))
            );
        }
        assert!(matches!(
            encode_frame(&vec![0u8; MAX_FRAME_BYTES + 1]),
            Err(CodecError::Oversized { .. })
        ));
        // The message encoders are encode_frame over CBOR: same bytes as before the split.
        let h = RequestHeader::new(3, 1, None, 5, 9);
        assert_eq!(
            encode_request_header(&h).unwrap(),
            encode_frame(&serde_cbor::to_vec(&h).unwrap()).unwrap()
        );
    }

    #[test]
    fn decoder_reassembles_a_frame_from_tiny_chunks() {
        let (a, _, both) = two_frames();
        for size in [1, 2, 3, 5] {
            let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
            let bodies = feed_in_chunks(&mut d, &a, size);
            assert_eq!(bodies, vec![body(&a).to_vec()], "chunks of {size}");
            assert_eq!(d.buffered(), 0);
            assert_eq!(d.finish(), Ok(()));
            let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
            assert_eq!(
                feed_in_chunks(&mut d, &both, size).len(),
                2,
                "chunks of {size}"
            );
        }
    }

    /// Byte by byte, `wanted` is exactly what is missing (of the prefix, then of the whole
    /// frame): a reader that asks for no more never reads past the frame.
    #[test]
    fn decoder_wants_exactly_the_rest_of_the_frame() {
        let (a, _, _) = two_frames();
        let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
        for (i, byte) in a.iter().enumerate() {
            let missing = if i < LEN_PREFIX { LEN_PREFIX } else { a.len() } - i;
            assert_eq!(d.wanted().unwrap(), missing, "at byte {i}");
            assert_eq!(d.next_frame().unwrap(), None);
            assert_eq!(d.feed(&[*byte]).unwrap(), 1);
        }
        assert_eq!(d.wanted().unwrap(), 0);
        assert_eq!(
            d.feed(b"more").unwrap(),
            0,
            "a whole frame takes nothing more"
        );
        assert_eq!(d.next_frame().unwrap().unwrap(), body(&a));
        assert_eq!(d.wanted().unwrap(), LEN_PREFIX);
    }

    #[test]
    fn decoder_takes_two_frames_in_one_chunk_one_at_a_time() {
        let (a, b, mut both) = two_frames();
        both.extend_from_slice(b"raw image bytes");
        let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
        let taken = d.feed(&both).unwrap();
        assert_eq!(taken, a.len(), "stops at the end of the first frame");
        assert_eq!(d.next_frame().unwrap().unwrap(), body(&a));
        let rest = &both[taken..];
        let taken = d.feed(rest).unwrap();
        assert_eq!(taken, b.len());
        let second = d.next_frame().unwrap().unwrap();
        assert_eq!(
            decode_reply(&second).unwrap(),
            Reply::Started { expect_ms: 77 }
        );
        assert_eq!(
            &rest[taken..],
            b"raw image bytes",
            "what follows is left to the caller"
        );
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn decoder_refuses_a_too_large_prefix_without_buffering_its_body() {
        let max = 16;
        let mut input = ((max + 1) as u32).to_be_bytes().to_vec();
        input.extend_from_slice(&[0xaa; 64]);
        // All at once, and with the prefix split across chunks.
        let mut d = FrameDecoder::new(max);
        assert_eq!(
            d.feed(&input),
            Err(CodecError::Oversized { len: max + 1, max })
        );
        assert!(d.buffered() <= LEN_PREFIX, "buffered {}", d.buffered());
        assert!(
            d.wanted().is_err() && d.feed(&input[LEN_PREFIX..]).is_err(),
            "stays refused"
        );
        assert_eq!(d.buffered(), LEN_PREFIX);
        let mut d = FrameDecoder::new(max);
        assert_eq!(d.feed(&input[..3]), Ok(3));
        assert!(matches!(
            d.feed(&input[3..]),
            Err(CodecError::Oversized { .. })
        ));
        assert_eq!(d.buffered(), LEN_PREFIX);
        // A body of exactly `max` is fine.
        let mut d = FrameDecoder::new(max);
        let f = encode_frame(&[1u8; 16]).unwrap();
        assert_eq!(d.feed(&f), Ok(f.len()));
        assert_eq!(d.next_frame().unwrap().unwrap(), vec![1u8; 16]);
    }

    #[test]
    fn decoder_reports_a_stream_that_ends_inside_a_frame() {
        let (a, _, _) = two_frames();
        // Inside the prefix and inside the body.
        for cut in [1, LEN_PREFIX - 1, LEN_PREFIX, LEN_PREFIX + 1, a.len() - 1] {
            let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
            assert_eq!(d.feed(&a[..cut]), Ok(cut));
            assert_eq!(d.next_frame().unwrap(), None);
            assert_eq!(d.finish(), Err(CodecError::Truncated), "cut at {cut}");
        }
    }

    #[test]
    fn decoder_accepts_a_clean_end_between_frames() {
        let d = FrameDecoder::new(MAX_FRAME_BYTES);
        assert_eq!(d.finish(), Ok(()), "no byte at all");
        let mut d = FrameDecoder::new(MAX_FRAME_BYTES);
        let empty = encode_frame(b"").unwrap();
        assert_eq!(d.feed(&empty), Ok(LEN_PREFIX));
        assert_eq!(
            d.next_frame().unwrap(),
            Some(Vec::new()),
            "an empty body is a frame"
        );
        assert_eq!(d.finish(), Ok(()), "after a whole frame");
    }

    /// The decoder and `decode_frame` agree on every input, whatever the chunking: garbage
    /// included (deterministic xorshift, as in `garbage_never_panics`).
    #[test]
    fn decoder_agrees_with_decode_frame_on_garbage() {
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let max = 64;
        for _ in 0..2000 {
            let len = (next() % 160) as usize;
            // Small lengths so that whole frames occur often.
            let buf: Vec<u8> = (0..len)
                .map(|i| if i % 8 < 3 { 0 } else { next() as u8 })
                .collect();
            let mut expected = Vec::new();
            let mut rest = &buf[..];
            let expected_err = loop {
                match decode_frame(rest, max) {
                    Ok(Some((b, used))) => {
                        expected.push(b.to_vec());
                        rest = &rest[used..];
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(e),
                }
            };
            let size = 1 + (next() % 9) as usize;
            let mut d = FrameDecoder::new(max);
            let mut got = Vec::new();
            let mut err = None;
            'outer: for chunk in buf.chunks(size) {
                let mut c = chunk;
                while !c.is_empty() {
                    match d.feed(c) {
                        Ok(n) => c = &c[n..],
                        Err(e) => {
                            err = Some(e);
                            break 'outer;
                        }
                    }
                    if let Some(b) = d.next_frame().unwrap() {
                        got.push(b);
                    }
                }
            }
            assert_eq!(got, expected);
            assert_eq!(err, expected_err);
            assert!(d.buffered() <= LEN_PREFIX + max);
            if err.is_none() {
                assert_eq!(d.buffered(), rest.len());
            }
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
            if let Ok(Some((b, used))) = decode_frame(&buf, MAX_FRAME_BYTES) {
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
