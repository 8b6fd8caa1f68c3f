//! HTTP's "lingering close" for request bodies a handler did not read to the end.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};

/// How long a refused request's body is read and thrown away, at most.
pub const LINGER_TIME: Duration = Duration::from_secs(10);
/// A refused request's body that sends nothing for this long is no longer waited for.
pub const LINGER_IDLE: Duration = Duration::from_secs(2);

/// A request body that, if dropped before its end (the request was refused, or answered,
/// without reading all of it), is read to its end and thrown away in the background, within
/// `max_bytes`, [`LINGER_TIME`] and [`LINGER_IDLE`]. This is HTTP's "lingering close": many
/// clients (curl among them) send the whole body before they read the response, and would
/// otherwise see a broken pipe or a reset stream instead of the 401, 413 or 503 that explains
/// it. Nothing read is kept.
pub struct Lingering<B: Body + Send + Unpin + 'static> {
    inner: Option<B>,
    max_bytes: u64,
    ended: bool,
}

impl<B: Body + Send + Unpin + 'static> Lingering<B> {
    /// Wraps a refused request's body: reads and drops at most `max_bytes` of it.
    pub fn new(inner: B, max_bytes: u64) -> Lingering<B> {
        Lingering {
            inner: Some(inner),
            max_bytes,
            ended: false,
        }
    }
}

impl<B: Body + Send + Unpin + 'static> Body for Lingering<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.ended = true;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl<B: Body + Send + Unpin + 'static> Drop for Lingering<B> {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        if self.ended || inner.is_end_stream() {
            return;
        }
        // A body that says it is bigger than anything we would read is not waited for.
        if inner.size_hint().lower() > self.max_bytes {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(inner, self.max_bytes));
        }
    }
}

async fn drain<B: Body + Unpin>(mut body: B, max_bytes: u64) {
    use http_body_util::BodyExt;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut read = 0u64;
    while read <= max_bytes {
        let next = tokio::time::timeout_at(
            deadline.min(tokio::time::Instant::now() + LINGER_IDLE),
            body.frame(),
        );
        match next.await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    read += bytes::Buf::remaining(data) as u64;
                }
            }
            Ok(Some(Err(_)) | None) | Err(_) => return,
        }
    }
}
