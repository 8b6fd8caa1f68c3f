//! One request stream, node side: read the header and the image, run the [`Handler`], write
//! the final reply. When the header asks for it (`ack`), the handler's [`WorkStarted`] signal
//! becomes a `Reply::Started` frame, written while the handler keeps running. A stream the
//! front-end stops or resets drops the handler's future at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use quinn::{RecvStream, SendStream};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::shared::{InFlightGuard, Shared};
use crate::codec::{self, ErrorKind, ErrorReply, MAX_FRAME_BYTES, Reply, StreamCode};
use crate::stream::{self, FrameReadError};
use crate::types::{Handler, InferenceAnswer, InferenceError, InferenceRequest, WorkStarted};

/// Serves one request stream to its end. `_guard` counts it in flight until then.
pub(super) async fn serve_stream<H: Handler>(
    mut send: SendStream,
    mut recv: RecvStream,
    shared: Arc<Shared>,
    handler: Arc<H>,
    draining: bool,
    _guard: InFlightGuard,
) {
    if draining {
        let reply = ErrorReply::from(&InferenceError::Draining);
        refuse(&mut send, &mut recv, reply, StreamCode::Draining).await;
        return;
    }
    let Some((req, ack)) = read_request(&mut send, &mut recv, &shared).await else {
        return;
    };
    let Some((result, pending)) = run_handler(&mut send, req, ack, handler.as_ref()).await else {
        return;
    };
    drop(recv);
    let reply = match result {
        Ok(answer) => Reply::Answer(answer),
        Err(e) => Reply::Error(ErrorReply::from(&e)),
    };
    send_final(&mut send, &pending, &reply).await;
}

/// Reads and checks the header, then the image. `None` when the request was refused (the
/// reply is sent) or the stream failed; else the request and whether it asked for `Started`.
async fn read_request(
    send: &mut SendStream,
    recv: &mut RecvStream,
    shared: &Shared,
) -> Option<(InferenceRequest, bool)> {
    let read = tokio::time::timeout(
        shared.header_timeout,
        stream::read_frame(recv, MAX_FRAME_BYTES),
    );
    let header = match read.await {
        Err(_) => {
            let reply = ErrorReply {
                kind: ErrorKind::BadRequest,
                message: "no request header in time".into(),
            };
            refuse(send, recv, reply, StreamCode::BadRequest).await;
            return None;
        }
        Ok(Ok(Some(body))) => codec::decode_request_header(&body),
        Ok(Ok(None)) => Err(codec::CodecError::Truncated),
        Ok(Err(FrameReadError::Codec(e))) => Err(e),
        Ok(Err(e)) => {
            debug!(error = %e, "request stream failed before its header");
            return None;
        }
    };
    let header = match header {
        Ok(h) => h,
        Err(e) => {
            debug!(error = %e, "bad request frame");
            refuse(send, recv, e.to_reply(), StreamCode::BadRequest).await;
            return None;
        }
    };
    let received_at = Instant::now();
    let image_len = match usize::try_from(header.image_len) {
        Ok(n) if n <= shared.max_image_bytes => n,
        _ => {
            let reply = ErrorReply::from(&InferenceError::TooLarge(format!(
                "{} bytes exceeds this node's limit of {} bytes",
                header.image_len, shared.max_image_bytes
            )));
            refuse(send, recv, reply, StreamCode::BadRequest).await;
            return None;
        }
    };
    let image = read_image(send, recv, image_len).await?;
    let req = InferenceRequest {
        request_id: header.request_id,
        attempt: header.attempt,
        deadline: header
            .deadline_ms
            .map(|ms| received_at + Duration::from_millis(ms)),
        top_k: header.top_k,
        image,
        traceparent: header.traceparent,
    };
    Some((req, header.ack))
}

/// Reads exactly `len` raw image bytes; a stream that ends early is refused as truncated.
async fn read_image(send: &mut SendStream, recv: &mut RecvStream, len: usize) -> Option<Bytes> {
    let mut image = BytesMut::with_capacity(len);
    while image.len() < len {
        match recv.read_chunk(len - image.len(), true).await {
            Ok(Some(chunk)) => image.extend_from_slice(&chunk.bytes),
            Ok(None) => {
                let reply = ErrorReply {
                    kind: ErrorKind::BadRequest,
                    message: format!("image truncated: {} of {} bytes", image.len(), len),
                };
                refuse(send, recv, reply, StreamCode::BadRequest).await;
                return None;
            }
            Err(e) => {
                debug!(error = %e, "request stream failed while reading the image");
                return None;
            }
        }
    }
    Some(image.freeze())
}

/// Runs the handler to its result, writing the Started frame (when asked for) while it runs.
/// `None` if the front-end cancelled (hedge lost, overdue and moved, client gone): the work is
/// dropped. Else the result and the part of the Started frame not yet written.
async fn run_handler<H: Handler>(
    send: &mut SendStream,
    req: InferenceRequest,
    ack: bool,
    handler: &H,
) -> Option<(Result<InferenceAnswer, InferenceError>, Vec<u8>)> {
    let request_id = req.request_id;
    // The handler's "work started" signal reaches this task only if the front-end asked.
    let (started, mut started_rx) = if ack {
        let (handle, rx) = WorkStarted::channel();
        (handle, Some(rx))
    } else {
        (WorkStarted::ignored(), None)
    };
    let work = handler.handle(req, started);
    tokio::pin!(work);
    let stopped = send.stopped();
    tokio::pin!(stopped);
    // The Started frame being written, and how much of it is out. It is written a piece at a
    // time inside this loop so the handler keeps being polled meanwhile: a slow write never
    // delays the work (a write future dropped half-way has written nothing more).
    let mut started_frame: Option<(Bytes, usize)> = None;
    let result = loop {
        tokio::select! {
            biased;
            r = &mut work => break r,
            expect = recv_started(&mut started_rx), if started_rx.is_some() => {
                started_rx = None;
                started_frame = expect.and_then(started_frame_for);
            }
            written = write_some(send, &started_frame), if started_frame.is_some() => {
                match written {
                    Ok(n) => advance(&mut started_frame, n),
                    // The peer stopped or reset: `stopped` reports it on the next turn.
                    Err(e) => {
                        debug!(request_id, error = %e, "could not write the started frame");
                        started_frame = None;
                    }
                }
            }
            stopped = &mut stopped => {
                debug!(request_id, ?stopped, "request cancelled by the front-end");
                return None;
            }
        }
    };
    let pending = started_frame.map_or(Vec::new(), |(f, done)| f[done..].to_vec());
    Some((result, pending))
}

/// The handler's Started signal; `None` if it dropped its handle without starting.
async fn recv_started(rx: &mut Option<oneshot::Receiver<Duration>>) -> Option<Duration> {
    match rx.as_mut() {
        Some(rx) => rx.await.ok(),
        None => std::future::pending().await,
    }
}

/// The Started frame for an estimate of `expect`.
fn started_frame_for(expect: Duration) -> Option<(Bytes, usize)> {
    let expect_ms = u32::try_from(expect.as_nanos().div_ceil(1_000_000)).unwrap_or(u32::MAX);
    match codec::encode_reply(&Reply::Started { expect_ms }) {
        Ok(frame) => Some((frame, 0)),
        Err(e) => {
            warn!(error = %e, "cannot encode started frame");
            None
        }
    }
}

/// Writes some of what is left of the Started frame.
async fn write_some(
    send: &mut SendStream,
    frame: &Option<(Bytes, usize)>,
) -> Result<usize, quinn::WriteError> {
    match frame {
        Some((frame, done)) => send.write(&frame[*done..]).await,
        None => std::future::pending().await,
    }
}

/// Counts `n` more bytes of the Started frame as written.
fn advance(frame: &mut Option<(Bytes, usize)>, n: usize) {
    if let Some((f, done)) = frame {
        *done += n;
        if *done >= f.len() {
            *frame = None;
        }
    }
}

/// Refuse a request with a typed reply and stop reading its (remaining) bytes.
async fn refuse(send: &mut SendStream, recv: &mut RecvStream, reply: ErrorReply, code: StreamCode) {
    let _ = recv.stop(code.varint());
    send_final(send, &[], &Reply::Error(reply)).await;
}

/// Write `pending` (the unwritten rest of a Started frame), then the final reply frame, and
/// finish the stream.
pub(super) async fn send_final(send: &mut SendStream, pending: &[u8], reply: &Reply) {
    if !pending.is_empty()
        && let Err(e) = send.write_all(pending).await
    {
        debug!(error = %e, "could not write the started frame");
        return;
    }
    match codec::encode_reply(reply) {
        Ok(frame) => {
            if let Err(e) = stream::write_frame(send, &frame).await {
                debug!(error = %e, "could not write reply");
                return;
            }
            let _ = send.finish();
            // Wait (bounded) until the peer has acknowledged the reply, so a draining shutdown
            // that closes the connection right after cannot discard it.
            let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
        }
        Err(e) => {
            warn!(error = %e, "cannot encode reply");
            let _ = send.reset(StreamCode::Internal.varint());
        }
    }
}
