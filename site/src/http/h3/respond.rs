//! A response written back on an HTTP/3 request stream as the routes produce it: the head,
//! then each body frame as it comes (an SSE stream stays open and flushes every event), then
//! trailers or the end of the stream.

use bytes::Bytes;
use h3::error::{Code, StreamError};
use h3::server::RequestStream;
use http_body_util::BodyExt;
use hyper::body::Body;
use warp::http::{HeaderName, Response, header};

/// Header fields HTTP/3 forbids in a message (RFC 9114, 4.2): they describe an HTTP/1.1
/// connection, which this is not.
const CONNECTION_SPECIFIC: [HeaderName; 4] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// Sends `response` on `stream` and finishes it. A body that fails midway resets the stream
/// (the client sees an incomplete response, never a truncated one that looks whole). The
/// answer to a `HEAD` request (`head_only`) is its head alone: a HEAD response has no
/// content (RFC 9110, 9.3.2), as hyper does over HTTP/1.1 and HTTP/2.
pub(crate) async fn send<B>(
    stream: &mut RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    response: Response<B>,
    head_only: bool,
) -> Result<(), StreamError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (mut parts, mut body) = response.into_parts();
    for name in &CONNECTION_SPECIFIC {
        parts.headers.remove(name);
    }
    stream
        .send_response(Response::from_parts(parts, ()))
        .await?;
    if head_only {
        return stream.finish().await;
    }
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                tracing::debug!("HTTP/3 response body failed: {e}");
                stream.stop_stream(Code::H3_INTERNAL_ERROR);
                return Ok(());
            }
        };
        match frame.into_data() {
            Ok(data) => {
                if !data.is_empty() {
                    stream.send_data(data).await?;
                }
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    stream.send_trailers(trailers).await?;
                    return Ok(());
                }
            }
        }
    }
    stream.finish().await
}
