//! `stream::read_frame` over real QUIC on 127.0.0.1: it returns exactly one frame and leaves
//! whatever follows on the stream (more frames, raw image bytes) for the next reader, however
//! the sender cut its writes.

use std::time::Duration;

use common::*;
use glimpse_transport::StreamCode;
use glimpse_transport::codec::{
    CodecError, LEN_PREFIX, MAX_FRAME_BYTES, Reply, RequestHeader, decode_reply,
    decode_request_header, encode_reply, encode_request_header,
};
use glimpse_transport::stream::{self, FrameReadError};

use crate::common;

/// A connected pair: (front-end side connection, node side connection).
struct Pair {
    client: quinn::Connection,
    server: quinn::Connection,
    _endpoints: (quinn::Endpoint, quinn::Endpoint),
}

async fn pair() -> Pair {
    let pki = Pki::new();
    let (server_ep, addr) = pki.raw_node_endpoint("n");
    let (client_ep, cfg) = pki.raw_client();
    let accept = async {
        let inc = server_ep.accept().await.expect("incoming");
        inc.await.expect("server handshake")
    };
    let (client, server) = tokio::join!(raw_connect(&client_ep, &cfg, addr, "n"), accept);
    Pair {
        client: client.expect("client handshake"),
        server,
        _endpoints: (client_ep, server_ep),
    }
}

/// Open a stream, send `bytes` in writes of `chunk` bytes (each its own packet: a pause
/// between writes), optionally finish, and return the node side's receive half.
async fn send_in_chunks(
    p: &Pair,
    bytes: &[u8],
    chunk: usize,
    finish: bool,
) -> (quinn::SendStream, quinn::RecvStream) {
    let (mut send, _recv) = p.client.open_bi().await.unwrap();
    let bytes = bytes.to_vec();
    let writer = async move {
        for c in bytes.chunks(chunk) {
            send.write_all(c).await.unwrap();
            if chunk < bytes.len() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        if finish {
            send.finish().unwrap();
        }
        send
    };
    let (send, accepted) = tokio::join!(writer, p.server.accept_bi());
    let (_, recv) = accepted.expect("stream reaches the node");
    (send, recv)
}

async fn read(recv: &mut quinn::RecvStream) -> Result<Option<Vec<u8>>, FrameReadError> {
    tokio::time::timeout(LONG, stream::read_frame(recv, MAX_FRAME_BYTES))
        .await
        .expect("read_frame in time")
}

fn header() -> RequestHeader {
    RequestHeader::new(5, 1, Some(100), 3, 11)
}

/// What the node reads: a header frame, a reply-like frame, then raw bytes read another way.
/// Whether everything comes in one packet or a byte at a time, read_frame takes exactly its
/// frame and the raw tail is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_then_raw_bytes_are_read_without_over_reading() {
    init_tracing();
    let p = pair().await;
    let mut wire = encode_request_header(&header()).unwrap().to_vec();
    wire.extend_from_slice(&encode_reply(&Reply::Started { expect_ms: 9 }).unwrap());
    wire.extend_from_slice(b"hello image");
    for chunk in [wire.len(), 1, 3, LEN_PREFIX + 1] {
        let (_send, mut recv) = send_in_chunks(&p, &wire, chunk, true).await;
        let first = read(&mut recv).await.unwrap().expect("a header frame");
        assert_eq!(
            decode_request_header(&first).unwrap(),
            header(),
            "chunk {chunk}"
        );
        let second = read(&mut recv).await.unwrap().expect("a second frame");
        assert_eq!(
            decode_reply(&second).unwrap(),
            Reply::Started { expect_ms: 9 },
            "chunk {chunk}"
        );
        let rest = tokio::time::timeout(LONG, recv.read_to_end(1024))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest, b"hello image", "chunk {chunk}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_end_truncation_oversize_and_reset_are_told_apart() {
    init_tracing();
    let p = pair().await;
    let frame = encode_request_header(&header()).unwrap();

    // Finished before any byte: the normal end of a stream.
    let (_send, mut recv) = send_in_chunks(&p, b"", 1, true).await;
    assert!(read(&mut recv).await.unwrap().is_none());

    // Finished after one whole frame: the frame, then a clean end.
    let (_send, mut recv) = send_in_chunks(&p, &frame, 2, true).await;
    assert!(read(&mut recv).await.unwrap().is_some());
    assert!(read(&mut recv).await.unwrap().is_none());

    // Finished inside the prefix, and inside the body.
    for cut in [2, frame.len() - 1] {
        let (_send, mut recv) = send_in_chunks(&p, &frame[..cut], 1, true).await;
        assert!(
            matches!(
                read(&mut recv).await,
                Err(FrameReadError::Codec(CodecError::Truncated))
            ),
            "cut at {cut}"
        );
    }

    // A prefix over the limit is refused at once: the body it announces never comes (the
    // stream stays open), and read_frame does not wait for it.
    let prefix = ((MAX_FRAME_BYTES + 1) as u32).to_be_bytes();
    let (_send, mut recv) = send_in_chunks(&p, &prefix, LEN_PREFIX, false).await;
    assert!(matches!(
        read(&mut recv).await,
        Err(FrameReadError::Codec(CodecError::Oversized { len, max }))
            if len == MAX_FRAME_BYTES + 1 && max == MAX_FRAME_BYTES
    ));

    // Reset by the peer half-way: its code comes back through StreamCode::from_varint.
    let (mut send, mut recv) = send_in_chunks(&p, &frame[..3], 3, false).await;
    send.reset(StreamCode::Overloaded.varint()).unwrap();
    assert!(matches!(
        read(&mut recv).await,
        Err(FrameReadError::Reset(StreamCode::Overloaded))
    ));
}
