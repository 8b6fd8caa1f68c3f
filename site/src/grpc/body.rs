//! A gRPC request body under the same limits as an HTTP upload. tonic reads a unary
//! request's whole message into memory before the method runs, so the limits have to act
//! on the body as it arrives, not in the method:
//! - size: the message's declared length (its 5-byte gRPC frame header) is checked against
//!   the method's limit before any of it is read (`ModelInfer`: what the largest legal
//!   batch needs; every other method: [`SMALL_MESSAGE`]), and the body as a whole may not
//!   run past it, so a client cannot make the server buffer more than one largest request;
//! - memory: tonic allocates the whole declared message as soon as it reads the frame
//!   header, so that is what is paid for from the site's byte budget, at once, before tonic
//!   sees the header (and anything past it as it arrives). When the budget is spent the
//!   request fails at once with `UNAVAILABLE` and `retry-after`. The payment outlives the
//!   body: it is handed to the method through the request's extensions ([`PaidBytes`]),
//!   which moves it to the images, because the decoded images are slices of the received
//!   message (see [`super::scan`]);
//! - time: the body is held to the site's [`Pace`] (inactivity, minimum rate after a
//!   grace, total deadline), so a slow sender does not hold its bytes (`DEADLINE_EXCEEDED`).
//!
//! Refusals are [`tonic::Status`]es (boxed as the body's error), which tonic's decoder
//! finds and answers with as they are.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use tokio::time::Sleep;
use tonic::Status;

use crate::api::upload::UploadError;
use crate::http::pace::{ConnProgress, Pace};
use crate::site::Site;
use glimpse_wire::budget::Held;
use glimpse_wire::codec::SMALL_MESSAGE;

/// What a body's error is: a refusal ([`Status`]) or the connection's own failure.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Length of a gRPC message's frame header: a compression flag and a 4-byte big-endian
/// length.
const FRAME_HEADER: usize = 5;

/// Room in a `ModelInfer` message for what surrounds the images: names, shapes,
/// parameters, field tags and lengths.
const ENVELOPE: usize = 64 * 1024;

/// The path of the one method whose messages carry images.
pub(crate) const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// The largest `ModelInfer` message the listener accepts: what the largest legal batch
/// needs (`--max-files` images of `--max-file-bytes`, each with a few bytes of framing, and
/// no more than `--max-request-bytes` of images in all) plus [`ENVELOPE`].
pub(crate) fn message_limit(site: &Site) -> usize {
    let l = &site.limits;
    let batch = l
        .max_files
        .saturating_mul(l.max_file_bytes.saturating_add(8));
    batch.min(l.max_request_bytes).saturating_add(ENVELOPE)
}

/// The largest message of the method at `path`.
pub(crate) fn limit_for(path: &str, site: &Site) -> usize {
    if path == MODEL_INFER {
        message_limit(site)
    } else {
        SMALL_MESSAGE
    }
}

/// What a request paid for its body, handed to the method in the request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct PaidBytes(Arc<Mutex<Held>>);

impl PaidBytes {
    /// Take the payment (once; later calls get nothing).
    pub(crate) fn take(&self) -> Held {
        std::mem::replace(&mut *self.0.lock(), Held::none())
    }
}

/// A request body paid for, size-checked and paced as it streams in (see the module doc).
pub(crate) struct Paid<B> {
    inner: B,
    site: Arc<Site>,
    held: PaidBytes,
    /// Bytes paid for so far: the declared message once its header is in.
    charged: usize,
    limit: usize,
    received: usize,
    header: [u8; FRAME_HEADER],
    pace: Pace,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl<B> Paid<B> {
    /// Wraps `inner`, a request body for `site` whose message may be `limit` bytes, and
    /// what it pays (for the request's extensions).
    /// `conn` is the connection it arrives on: HTTP/2 carries many calls on one, and a body
    /// waiting behind the others is paced by its share (see [`crate::http::pace`]).
    pub(crate) fn new(
        inner: B,
        site: Arc<Site>,
        limit: usize,
        conn: Arc<dyn ConnProgress>,
    ) -> (Paid<B>, PaidBytes) {
        let held = PaidBytes(Arc::new(Mutex::new(Held::none())));
        let pace = Pace::new(site.limits.pace(), tokio::time::Instant::now()).sharing(Some(conn));
        let paid = Paid {
            inner,
            site,
            held: held.clone(),
            charged: 0,
            limit,
            received: 0,
            header: [0; FRAME_HEADER],
            timer: Box::pin(tokio::time::sleep_until(pace.next_check())),
            pace,
            done: false,
        };
        (paid, held)
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
                // tonic reserves the whole message when it reads this header.
                self.charge(FRAME_HEADER + declared as usize)?;
            }
        }
        if self.received > self.limit.saturating_add(FRAME_HEADER) {
            return Err(self.refuse(UploadError::TooLarge(format!(
                "the request exceeds the limit of {} bytes",
                self.limit
            ))));
        }
        self.charge(self.received)
    }

    /// Pay for the body's first `upto` bytes, if not yet paid for.
    fn charge(&mut self, upto: usize) -> Result<(), Status> {
        if upto <= self.charged {
            return Ok(());
        }
        let paid = {
            let mut held = self.held.0.lock();
            self.site.budget.take(&mut held, upto - self.charged)
        };
        if !paid {
            return Err(self.refuse(UploadError::Busy(self.site.limits.retry_after_s)));
        }
        self.charged = upto;
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
                if let Some(data) = frame.data_ref() {
                    if let Err(refused) = this.pay(data) {
                        return Poll::Ready(Some(Err(Box::new(refused))));
                    }
                    this.pace.received(data.len(), tokio::time::Instant::now());
                    this.timer.as_mut().reset(this.pace.next_check());
                }
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
            Poll::Pending => loop {
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Err(slow) = this.pace.check(tokio::time::Instant::now()) {
                    let refused = this.refuse(UploadError::Slow(slow));
                    return Poll::Ready(Some(Err(Box::new(refused))));
                }
                this.timer.as_mut().reset(this.pace.next_check());
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
