//! Frames and the incremental decoder.

use super::*;
use crate::codec::MAX_FRAME_BYTES;

fn body(frame: &[u8]) -> &[u8] {
    let (b, used) = decode_frame(frame, MAX_FRAME_BYTES).unwrap().unwrap();
    assert_eq!(used, frame.len());
    b
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
