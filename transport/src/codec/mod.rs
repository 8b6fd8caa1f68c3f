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
use serde::Serialize;

use crate::types::InferenceError;

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

mod message;

pub use message::{
    ControlMessage, ErrorKind, ErrorReply, Reply, RequestHeader, decode_control, decode_reply,
    decode_request_header, encode_control, encode_reply, encode_request_header,
};

#[cfg(test)]
mod frame_tests;
#[cfg(test)]
mod message_tests;
