//! The quinn glue of the wire format: reading and writing [`codec`] frames on
//! QUIC streams, and stream error codes as quinn `VarInt`s.
//!
//! Kept apart from `codec` so that the format itself stays sans-IO and is tested without
//! sockets; everything here is thin. In particular [`read_frame`] does no parsing of its own:
//! it pulls bytes off the stream into a [`FrameDecoder`], which cuts the frame with
//! [`codec::decode_frame`], the function the unit tests and the fuzz target cover.

use quinn::{RecvStream, SendStream, VarInt};

use crate::codec::{self, CodecError, FrameDecoder, StreamCode};

impl StreamCode {
    /// As a quinn `VarInt`, for `SendStream::reset` and `RecvStream::stop`. All our codes are
    /// small; a peer's unknown code that does not fit (it came from a `VarInt`, so it cannot
    /// happen) would be sent as [`StreamCode::Internal`].
    pub fn varint(self) -> VarInt {
        VarInt::from_u64(self.code()).unwrap_or(VarInt::from_u32(0x14))
    }

    /// Parse a code a peer reset or stopped a stream with. The inverse of
    /// [`StreamCode::varint`].
    pub fn from_varint(code: VarInt) -> StreamCode {
        StreamCode::from_code(code.into_inner())
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
            quinn::ReadError::Reset(code) => FrameReadError::Reset(StreamCode::from_varint(code)),
            quinn::ReadError::ConnectionLost(c) => FrameReadError::ConnectionLost(c.to_string()),
            other => FrameReadError::Stream(other.to_string()),
        }
    }
}

/// Read one frame body from a quinn stream (bodies over `max` bytes are refused as soon as
/// their prefix arrives). `Ok(None)`: the stream finished cleanly before the first byte of a
/// frame (the normal end of a control stream); finishing inside a frame is
/// [`CodecError::Truncated`].
///
/// Never reads past the frame it returns: each read asks quinn for at most
/// [`FrameDecoder::wanted`] bytes (the rest of the prefix, then exactly the rest of the body).
/// So no bytes are left over in a buffer that would have to outlive this call: the caller may
/// go on reading the same stream any way it likes (the node reads the raw image bytes that
/// follow a request header with `read_chunk`; the front-end reads the next reply frame; the
/// dispatcher hands its control stream back and forth between calls). The price is two reads
/// per frame instead of one large one; both come from bytes quinn has already received.
///
/// Not cancel-safe (like `read_exact`): dropping it half-way loses the bytes of the frame read
/// so far. Callers that race it against other events keep the future alive across turns.
pub async fn read_frame(
    recv: &mut RecvStream,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameReadError> {
    let mut decoder = FrameDecoder::new(max);
    loop {
        if let Some(body) = decoder.next_frame()? {
            return Ok(Some(body));
        }
        let wanted = decoder.wanted()?;
        match recv.read_chunk(wanted, true).await? {
            Some(chunk) => {
                let taken = decoder.feed(&chunk.bytes)?;
                // read_chunk returns at most `wanted` bytes, all of which the frame needs.
                debug_assert_eq!(taken, chunk.bytes.len(), "read past the frame");
            }
            None => {
                decoder.finish()?;
                return Ok(None);
            }
        }
    }
}

/// Write one whole frame made by an `encode_*` function of [`codec`]: the writing twin of
/// [`read_frame`]. Completes when quinn has taken every byte (not when the peer has them).
pub async fn write_frame(send: &mut SendStream, frame: &[u8]) -> Result<(), quinn::WriteError> {
    debug_assert!(
        matches!(codec::decode_frame(frame, usize::MAX), Ok(Some((_, used))) if used == frame.len()),
        "write_frame takes exactly one encoded frame"
    );
    send.write_all(frame).await
}
