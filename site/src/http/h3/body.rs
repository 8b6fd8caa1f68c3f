//! A request body read from an HTTP/3 request stream as it arrives: QUIC's flow control is
//! the back-pressure, so a body is never buffered whole here, and its bytes count toward the
//! connection's receive rate (what eviction ranks busy connections by).
//!
//! A body must be as long as its `Content-Length` says (RFC 9114, 4.1.2: otherwise the
//! request is malformed); HTTP/3 frames its data itself, so nothing else checks it. A body
//! that runs past it or ends short fails, and the upload with it, as hyper fails an HTTP/1.1
//! or HTTP/2 body whose length is wrong.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h3::error::StreamError;
use h3::server::RequestStream;
use hyper::body::{Body, Frame};
use sync_wrapper::SyncWrapper;
use warp::http::{HeaderMap, header};

use crate::http::conn::ConnState;
use crate::http::error::ApiError;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// The stream failed (reset by the client, the connection lost).
    #[error("HTTP/3 request stream: {0}")]
    Stream(#[from] StreamError),
    /// More or fewer bytes than `Content-Length` declared.
    #[error("the request body is {received}{more} bytes, but its Content-Length says {declared}", more = if *.past { " or more" } else { "" })]
    Length {
        /// What the header said.
        declared: u64,
        /// What arrived (so far, when `past`).
        received: u64,
        /// The body ran past the declared length (it was not read to its end).
        past: bool,
    },
}

/// The request's `Content-Length`, if it has one: one field, a decimal number. Anything else
/// is a 400, as hyper answers it over HTTP/1.1 and HTTP/2.
pub(crate) fn declared_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let bad = || ApiError::bad_request("the Content-Length header is not one decimal number");
    if values.next().is_some() {
        return Err(bad());
    }
    let text = first.to_str().map_err(|_| bad())?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse().map(Some).map_err(|_| bad())
}

/// The receiving half of one request stream, as an `http_body::Body`.
pub(crate) struct H3Body {
    /// warp wants a `Sync` body; the stream is only ever used through `&mut`.
    stream: SyncWrapper<RequestStream<h3_quinn::RecvStream, Bytes>>,
    state: Arc<ConnState>,
    /// `Content-Length`, when the request has one.
    declared: Option<u64>,
    received: u64,
    data_done: bool,
    ended: bool,
}

impl H3Body {
    /// The body of a request on `stream`, on the connection whose slot is `state`, that must
    /// be `declared` bytes long when its `Content-Length` says so.
    pub(crate) fn new(
        stream: RequestStream<h3_quinn::RecvStream, Bytes>,
        state: Arc<ConnState>,
        declared: Option<u64>,
    ) -> H3Body {
        H3Body {
            stream: SyncWrapper::new(stream),
            state,
            declared,
            received: 0,
            data_done: false,
            ended: false,
        }
    }

    /// Fails the body with `e`: nothing more is read from it.
    fn fail(&mut self, e: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.ended = true;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let stream = this.stream.get_mut();
        if !this.data_done {
            match ready!(stream.poll_recv_data(cx)) {
                Ok(Some(mut chunk)) => {
                    let bytes = chunk.copy_to_bytes(chunk.remaining());
                    this.state.add_received(bytes.len());
                    this.received = this.received.saturating_add(bytes.len() as u64);
                    if let Some(declared) = this.declared
                        && this.received > declared
                    {
                        let received = this.received;
                        return this.fail(BodyError::Length {
                            declared,
                            received,
                            past: true,
                        });
                    }
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Ok(None) => {
                    this.data_done = true;
                    if let Some(declared) = this.declared
                        && this.received != declared
                    {
                        let received = this.received;
                        return this.fail(BodyError::Length {
                            declared,
                            received,
                            past: false,
                        });
                    }
                }
                Err(e) => return this.fail(e.into()),
            }
        }
        let trailers = ready!(stream.poll_recv_trailers(cx));
        this.ended = true;
        match trailers {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e.into()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
