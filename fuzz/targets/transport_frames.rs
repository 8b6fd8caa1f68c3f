//! Fuzz target `transport_frames`: every decoder in `glimpse_transport::codec` that reads
//! bytes a peer controls.
//!
//! The input is what arrives on a QUIC stream: a sequence of length-prefixed frames. It is cut
//! with the sans-IO splitter ([`codec::decode_frame`], which checks the prefix with
//! [`codec::frame_len`] before a body is buffered; the async `stream::read_frame` cuts
//! production frames with this same function, through `codec::FrameDecoder`), and each whole
//! frame body is fed to all three body decoders: the request header (what a node reads), the
//! reply (what the front-end reads) and the control message
//! (the node's control stream). The first eight bytes also go through
//! [`StreamCode::from_code`], the parser of a peer's RESET_STREAM / STOP_SENDING code.
//!
//! Beyond "no panic": the splitter never claims more bytes than it was given, the length
//! prefix limit holds, a decoded message encodes again, and that encoding decodes to a value
//! that encodes to the very same bytes (so decode and encode agree on every field, NaN
//! included), and decoders fail only with `Malformed` or a real `UnknownVersion`. Errors also
//! go through the mappings the node and the front-end apply to them (`to_reply`, then
//! `InferenceError`).
//!
//! Included with `#[path]` by `glimpse-fuzz` (under AFL++) and by
//! `transport/tests/fuzz_corpus.rs` (corpus replay): both run exactly this function.

use glimpse_transport::InferenceError;
use glimpse_transport::StreamCode;
use glimpse_transport::codec::{
    self, CodecError, LEN_PREFIX, MAX_FRAME_BYTES, Reply, RequestHeader,
};

/// Runs one input; `true` when at least one whole frame decoded as some message.
pub(crate) fn run(data: &[u8]) -> bool {
    if let Some(prefix) = data.first_chunk::<LEN_PREFIX>() {
        match codec::frame_len(*prefix, MAX_FRAME_BYTES) {
            Ok(len) => assert!(len <= MAX_FRAME_BYTES),
            Err(e) => assert!(matches!(e, CodecError::Oversized { len, max }
                if len > max && max == MAX_FRAME_BYTES)),
        }
    }
    if let Some(code) = data.first_chunk::<8>() {
        stream_code(u64::from_be_bytes(*code));
    }

    let mut accepted = false;
    let mut rest = data;
    loop {
        match codec::decode_frame(rest, MAX_FRAME_BYTES) {
            Ok(Some((body, used))) => {
                assert_eq!(used, LEN_PREFIX + body.len(), "frame length accounting");
                assert!(used <= rest.len() && body.len() <= MAX_FRAME_BYTES);
                accepted |= request_header(body);
                accepted |= reply(body);
                accepted |= control(body);
                rest = &rest[used..];
            }
            Ok(None) => {
                // "Need more bytes" only when the frame really is incomplete.
                if let Some(prefix) = rest.first_chunk::<LEN_PREFIX>() {
                    let len = u32::from_be_bytes(*prefix) as usize;
                    assert!(rest.len() < LEN_PREFIX + len, "a whole frame was not split");
                }
                break;
            }
            Err(e) => {
                assert!(matches!(e, CodecError::Oversized { .. }), "{e:?}");
                let _ = e.to_reply();
                break;
            }
        }
    }
    accepted
}

/// The body of a frame the encoder produced.
fn body_of(frame: &[u8]) -> &[u8] {
    match codec::decode_frame(frame, MAX_FRAME_BYTES) {
        Ok(Some((body, used))) if used == frame.len() => body,
        other => panic!("an encoded frame does not split back: {other:?}"),
    }
}

/// A decode error, turned into the typed reply a node sends and the error a front-end reports.
fn check_error(e: &CodecError) {
    match e {
        CodecError::UnknownVersion { got, supported } => assert_ne!(got, supported),
        CodecError::Malformed(_) => {}
        other => panic!("a body decoder returned {other:?}"),
    }
    let _ = InferenceError::from(e.to_reply()).is_retryable();
}

/// A re-encoding may only fail because it is longer than the frame limit: serde_cbor also
/// accepts the "packed" form (fields keyed by index) and other shorter spellings, which our
/// encoder writes out in full.
fn check_encode_error(e: &CodecError) {
    assert!(matches!(e, CodecError::Oversized { .. }), "{e:?}");
}

/// The request header a node reads on each stream (`server.rs`).
fn request_header(body: &[u8]) -> bool {
    let header: RequestHeader = match codec::decode_request_header(body) {
        Ok(h) => h,
        Err(e) => {
            check_error(&e);
            return false;
        }
    };
    assert_eq!(header.v, glimpse_transport::PROTOCOL_VERSION);
    match codec::encode_request_header(&header) {
        Ok(frame) => {
            let again = codec::decode_request_header(body_of(&frame)).expect("re-decodes");
            assert_eq!(again, header);
        }
        Err(e) => check_encode_error(&e),
    }
    true
}

/// The reply a front-end reads (`client.rs`), and the error it turns a typed failure into.
fn reply(body: &[u8]) -> bool {
    let reply = match codec::decode_reply(body) {
        Ok(r) => r,
        Err(e) => {
            check_error(&e);
            return false;
        }
    };
    match codec::encode_reply(&reply) {
        Ok(first) => {
            let again = codec::decode_reply(body_of(&first)).expect("re-decodes");
            let second = codec::encode_reply(&again).expect("re-encodes");
            assert_eq!(first, second, "reply: decode and encode disagree");
        }
        Err(e) => check_encode_error(&e),
    }
    if let Reply::Error(e) = reply {
        let _ = InferenceError::from(e).is_retryable();
    }
    true
}

/// A message on the node's control stream (read by `dispatcher/node.rs`).
fn control(body: &[u8]) -> bool {
    let msg = match codec::decode_control(body) {
        Ok(m) => m,
        Err(e) => {
            check_error(&e);
            return false;
        }
    };
    match codec::encode_control(&msg) {
        Ok(first) => {
            let again = codec::decode_control(body_of(&first)).expect("re-decodes");
            let second = codec::encode_control(&again).expect("re-encodes");
            assert_eq!(first, second, "control: decode and encode disagree");
        }
        Err(e) => check_encode_error(&e),
    }
    true
}

/// A RESET_STREAM / STOP_SENDING code from the peer.
fn stream_code(code: u64) {
    let parsed = StreamCode::from_code(code);
    assert_eq!(parsed.code(), code);
    assert_eq!(StreamCode::from_code(parsed.code()), parsed);
    let _ = parsed.is_retryable();
    let _ = parsed.to_error();
    let _ = parsed.varint();
}
