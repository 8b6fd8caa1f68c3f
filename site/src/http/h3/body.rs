//! A request body read from an HTTP/3 request stream as it arrives: QUIC's flow control is
//! the back-pressure, so a body is never buffered whole here, and its bytes count toward the
//! connection's receive rate (what eviction ranks busy connections by).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use h3::error::StreamError;
use h3::server::RequestStream;
use hyper::body::{Body, Frame};
use sync_wrapper::SyncWrapper;

use crate::http::conn::ConnState;

/// The receiving half of one request stream, as an `http_body::Body`.
pub(crate) struct H3Body {
    /// warp wants a `Sync` body; the stream is only ever used through `&mut`.
    stream: SyncWrapper<RequestStream<h3_quinn::RecvStream, Bytes>>,
    state: Arc<ConnState>,
    data_done: bool,
    ended: bool,
}

impl H3Body {
    /// The body of a request on `stream`, on the connection whose slot is `state`.
    pub(crate) fn new(
        stream: RequestStream<h3_quinn::RecvStream, Bytes>,
        state: Arc<ConnState>,
    ) -> H3Body {
        H3Body {
            stream: SyncWrapper::new(stream),
            state,
            data_done: false,
            ended: false,
        }
    }
}

impl Body for H3Body {
    type Data = Bytes;
    type Error = StreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamError>>> {
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
                    return Poll::Ready(Some(Ok(Frame::data(bytes))));
                }
                Ok(None) => this.data_done = true,
                Err(e) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
        let trailers = ready!(stream.poll_recv_trailers(cx));
        this.ended = true;
        match trailers {
            Ok(Some(t)) => Poll::Ready(Some(Ok(Frame::trailers(t)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}
