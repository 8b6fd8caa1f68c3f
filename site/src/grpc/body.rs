//! A gRPC request body under the same limits as an HTTP upload. tonic reads a unary
//! request's whole message into memory before the method runs, so the limits have to act
//! on the body as it arrives, not in the method:
//! - size: the message's declared length (its 5-byte gRPC frame header) is checked against
//!   the limit before any of it is read, and the body as a whole may not run past it, so a
//!   client cannot make the server buffer more than one largest request;
//! - memory: every chunk is paid for from the site's byte budget as it arrives (held until
//!   the body is dropped, once tonic has decoded the message); when the budget is spent
//!   the request fails at once with `UNAVAILABLE` and `retry-after`;
//! - time: a body that sends nothing for the site's body timeout is abandoned
//!   (`DEADLINE_EXCEEDED`), so a stalled sender does not hold its bytes.
//!
//! Refusals are [`tonic::Status`]es (boxed as the body's error), which tonic's decoder
//! finds and answers with as they are.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::Sleep;
use tonic::Status;

use crate::budget::Held;
use crate::site::Site;
use crate::upload::UploadError;

/// What a body's error is: a refusal ([`Status`]) or the connection's own failure.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Length of a gRPC message's frame header: a compression flag and a 4-byte big-endian
/// length.
const FRAME_HEADER: usize = 5;

/// The largest gRPC message the listener accepts: the HTTP body limit
/// (`--max-request-bytes`) plus room for the message's own fields around the images
/// (names, shapes, the length prefixes of a raw BYTES tensor).
pub(crate) fn message_limit(site: &Site) -> usize {
    site.limits.max_request_bytes.saturating_add(64 * 1024)
}

/// A request body paid for, size-checked and timed as it streams in (see the module doc).
pub(crate) struct Paid<B> {
    inner: B,
    site: Arc<Site>,
    held: Held,
    limit: usize,
    received: usize,
    header: [u8; FRAME_HEADER],
    inactivity: Duration,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl<B> Paid<B> {
    /// Wraps `inner`, a request body for `site`.
    pub(crate) fn new(inner: B, site: Arc<Site>) -> Paid<B> {
        let inactivity = site.limits.body_timeout;
        Paid {
            inner,
            limit: message_limit(&site),
            site,
            held: Held::none(),
            received: 0,
            header: [0; FRAME_HEADER],
            inactivity,
            timer: Box::pin(tokio::time::sleep(inactivity)),
            done: false,
        }
    }

    /// Count, check and pay for one chunk of the body.
    fn pay(&mut self, chunk: &[u8]) -> Result<(), Status> {
        let before = self.received;
        self.received = self.received.saturating_add(chunk.len());
        if before < FRAME_HEADER {
            let n = (FRAME_HEADER - before).min(chunk.len());
            self.header[before..before + n].copy_from_slice(&chunk[..n]);
            if before + n == FRAME_HEADER {
                let mut len = [0u8; 4];
                len.copy_from_slice(&self.header[1..]);
                let declared = u32::from_be_bytes(len);
                if u64::from(declared) > self.limit as u64 {
                    return Err(self.refuse(UploadError::TooLarge(format!(
                        "the request message is {declared} bytes; the limit is {} bytes",
                        self.limit
                    ))));
                }
            }
        }
        if self.received > self.limit.saturating_add(FRAME_HEADER) {
            return Err(self.refuse(UploadError::TooLarge(format!(
                "the request exceeds the limit of {} bytes",
                self.limit
            ))));
        }
        if !self.site.budget.take(&mut self.held, chunk.len()) {
            return Err(self.refuse(UploadError::Busy(self.site.limits.retry_after_s)));
        }
        Ok(())
    }

    fn refuse(&mut self, e: UploadError) -> Status {
        self.done = true;
        Status::from(self.site.refuse_upload(e))
    }
}

impl<B> Body for Paid<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(refused) = this.pay(data)
                {
                    return Poll::Ready(Some(Err(Box::new(refused))));
                }
                let next = tokio::time::Instant::now() + this.inactivity;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                this.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let stalled = this.refuse(UploadError::Stalled(this.inactivity));
                    Poll::Ready(Some(Err(Box::new(stalled))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
