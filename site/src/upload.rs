//! Reading request bodies under the size limits, without buffering past them.
//!
//! The body is consumed as a stream. A declared Content-Length over the limit is refused
//! before reading anything; otherwise bytes are counted as they arrive and reading stops
//! at the first byte over the limit (multer enforces the same per field and for the whole
//! stream in the multipart case). The caller then answers 413 and hyper closes the
//! connection or resets the HTTP/2 stream, so an oversized upload never sits in memory.

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt};

use crate::site::{Limits, Upload};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    TooLarge(String),
    #[error("too many files in one request (limit {0})")]
    TooManyFiles(usize),
    #[error(
        "unsupported content type {0:?}: send multipart/form-data with `file` parts, or a raw image body with an image/* content type"
    )]
    UnsupportedType(String),
    #[error("malformed request body: {0}")]
    Malformed(String),
    #[error("the request contains no file")]
    Empty,
}

impl UploadError {
    pub fn status(&self) -> u16 {
        match self {
            UploadError::TooLarge(_) | UploadError::TooManyFiles(_) => 413,
            UploadError::UnsupportedType(_) => 415,
            UploadError::Malformed(_) | UploadError::Empty => 400,
        }
    }

    /// Stable reason for the rejected-requests metric.
    pub fn reason(&self) -> &'static str {
        match self {
            UploadError::TooLarge(_) => "too_large",
            UploadError::TooManyFiles(_) => "too_many_files",
            UploadError::UnsupportedType(_) => "unsupported_type",
            UploadError::Malformed(_) => "malformed",
            UploadError::Empty => "empty",
        }
    }
}

/// Multipart field names accepted as files (`file` is the documented one).
const FILE_FIELDS: [&str; 3] = ["file", "files", "image"];

/// Turn warp's body stream into the `Bytes` stream multer and our reader use.
pub fn byte_stream<S, B>(
    body: S,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static
where
    S: Stream<Item = Result<B, warp::Error>> + Send + 'static,
    B: Buf + Send + 'static,
{
    body.map_ok(|mut buf| buf.copy_to_bytes(buf.remaining()))
        .map_err(std::io::Error::other)
}

/// Read a whole body, stopping with [`UploadError::TooLarge`] at the first byte past `limit`.
pub async fn read_limited<S>(
    body: S,
    content_length: Option<u64>,
    limit: usize,
    what: &str,
) -> Result<Bytes, UploadError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send,
{
    if let Some(len) = content_length
        && len > limit as u64
    {
        return Err(UploadError::TooLarge(format!(
            "{what} is {len} bytes; the limit is {limit} bytes"
        )));
    }
    let mut body = std::pin::pin!(body);
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| UploadError::Malformed(format!("reading body: {e}")))?;
        if buf.len() + chunk.len() > limit {
            return Err(UploadError::TooLarge(format!(
                "{what} exceeds the limit of {limit} bytes"
            )));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// Read the uploads of a `POST /api/v1/classify`: multipart `file` parts or one raw image.
pub async fn read_uploads<S>(
    body: S,
    content_type: Option<&str>,
    content_length: Option<u64>,
    raw_name: Option<String>,
    limits: &Limits,
) -> Result<Vec<Upload>, UploadError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let content_type = content_type.unwrap_or("").trim();
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "multipart/form-data" {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| UploadError::Malformed(format!("multipart boundary: {e}")))?;
        read_multipart(body, boundary, content_length, limits).await
    } else if essence.starts_with("image/") || essence == "application/octet-stream" {
        let limit = limits.max_file_bytes.min(limits.max_request_bytes);
        let bytes = read_limited(body, content_length, limit, "the image").await?;
        if bytes.is_empty() {
            return Err(UploadError::Empty);
        }
        let name = raw_name.unwrap_or_else(|| "upload".to_string());
        Ok(vec![Upload {
            name,
            content_type: Some(essence),
            bytes,
        }])
    } else {
        Err(UploadError::UnsupportedType(content_type.to_string()))
    }
}

async fn read_multipart<S>(
    body: S,
    boundary: String,
    content_length: Option<u64>,
    limits: &Limits,
) -> Result<Vec<Upload>, UploadError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    if let Some(len) = content_length
        && len > limits.max_request_bytes as u64
    {
        return Err(UploadError::TooLarge(format!(
            "the request is {len} bytes; the limit is {} bytes",
            limits.max_request_bytes
        )));
    }
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limits.max_request_bytes as u64)
            .per_field(limits.max_file_bytes as u64),
    );
    let mut multipart =
        multer::Multipart::with_constraints(DeferEof::new(Box::pin(body)), boundary, constraints);
    let mut uploads = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(multer_error(e, limits)),
        };
        let is_file = field
            .name()
            .map(|n| FILE_FIELDS.contains(&n))
            .unwrap_or(false);
        if !is_file {
            // Unknown fields are skipped (their bytes still count against the limits).
            field.bytes().await.map_err(|e| multer_error(e, limits))?;
            continue;
        }
        if uploads.len() >= limits.max_files {
            return Err(UploadError::TooManyFiles(limits.max_files));
        }
        let name = field
            .file_name()
            .map(str::to_string)
            .unwrap_or_else(|| format!("file-{}", uploads.len() + 1));
        let content_type = field.content_type().map(|m| m.essence_str().to_string());
        let bytes = field.bytes().await.map_err(|e| multer_error(e, limits))?;
        uploads.push(Upload {
            name,
            content_type,
            bytes,
        });
    }
    if uploads.is_empty() {
        return Err(UploadError::Empty);
    }
    Ok(uploads)
}

/// Reports the end of a body only on a poll that yielded no data, one wake-up after the last
/// chunk.
///
/// multer 3.1 looks for the first boundary, polls the body again when it is not buffered yet,
/// and if that second poll brings the rest of the body *and* its end, reports
/// `IncompleteStream` without looking at what it just buffered. Over HTTP/2, where a client
/// sends the opening `--boundary` in its own small DATA frame, that happened to about one
/// upload in a hundred on a busy machine: a well-formed request got a 400. Deferring the end
/// of stream makes multer look at the buffered bytes first.
struct DeferEof<S> {
    inner: S,
    /// A chunk was yielded since the last Pending, so an end seen now is held back once.
    yielded: bool,
    ended: bool,
}

impl<S> DeferEof<S> {
    fn new(inner: S) -> Self {
        DeferEof {
            inner,
            yielded: false,
            ended: false,
        }
    }
}

impl<S> Stream for DeferEof<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(item)) => {
                this.yielded = true;
                Poll::Ready(Some(item))
            }
            Poll::Ready(None) if this.yielded => {
                this.ended = true;
                this.yielded = false;
                // Hold the end back for one turn; ask to be polled again at once.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                this.yielded = false;
                Poll::Pending
            }
        }
    }
}

fn multer_error(e: multer::Error, limits: &Limits) -> UploadError {
    match e {
        multer::Error::FieldSizeExceeded { field_name, .. } => UploadError::TooLarge(format!(
            "file {:?} exceeds the limit of {} bytes per file",
            field_name.unwrap_or_default(),
            limits.max_file_bytes
        )),
        multer::Error::StreamSizeExceeded { .. } => UploadError::TooLarge(format!(
            "the request exceeds the limit of {} bytes",
            limits.max_request_bytes
        )),
        other => UploadError::Malformed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(
        chunks: Vec<&'static [u8]>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))))
    }

    #[tokio::test]
    async fn raw_body_stops_at_limit() {
        let err = read_limited(body(vec![b"aaaa", b"bbbb", b"cc"]), None, 9, "x")
            .await
            .unwrap_err();
        assert_eq!(err.status(), 413);
        let ok = read_limited(body(vec![b"aaaa", b"bbbb"]), None, 8, "x")
            .await
            .unwrap();
        assert_eq!(ok.len(), 8);
        let early = read_limited(body(vec![]), Some(100), 8, "x")
            .await
            .unwrap_err();
        assert_eq!(early.status(), 413);
    }

    #[tokio::test]
    async fn multipart_reads_files_in_order_and_enforces_limits() {
        let payload: &'static [u8] = b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\nAAAA\r\n--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jpg\"\r\n\r\nBBBBBB\r\n--XX--\r\n";
        let limits = Limits::default();
        let ups = read_uploads(
            body(vec![payload]),
            Some("multipart/form-data; boundary=XX"),
            None,
            None,
            &limits,
        )
        .await
        .unwrap();
        assert_eq!(ups.len(), 2);
        assert_eq!(ups[0].name, "a.png");
        assert_eq!(&ups[1].bytes[..], b"BBBBBB");

        let small = Limits {
            max_file_bytes: 5,
            ..Limits::default()
        };
        let err = read_uploads(
            body(vec![payload]),
            Some("multipart/form-data; boundary=XX"),
            None,
            None,
            &small,
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 413, "{err}");

        let one = Limits {
            max_files: 1,
            ..Limits::default()
        };
        let err = read_uploads(
            body(vec![payload]),
            Some("multipart/form-data; boundary=XX"),
            None,
            None,
            &one,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, UploadError::TooManyFiles(1)));
    }

    #[tokio::test]
    async fn other_content_types_are_refused() {
        let err = read_uploads(
            body(vec![b"{}"]),
            Some("application/json"),
            None,
            None,
            &Limits::default(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 415);
    }

    /// A body whose opening `--boundary` arrives alone, with the rest and the end of the
    /// stream arriving together on the next poll: multer 3.1 alone answers IncompleteStream.
    #[tokio::test]
    async fn boundary_in_its_own_chunk_then_rest_with_the_end_parses() {
        use std::task::{Context, Poll};

        struct Scripted {
            steps: std::collections::VecDeque<Option<&'static [u8]>>,
        }
        impl Stream for Scripted {
            type Item = Result<Bytes, std::io::Error>;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Self::Item>> {
                match self.steps.pop_front() {
                    // `None` in the script: not ready yet (and wake, like a socket would).
                    Some(None) => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                    Some(Some(chunk)) => Poll::Ready(Some(Ok(Bytes::from_static(chunk)))),
                    None => Poll::Ready(None),
                }
            }
        }
        let rest: &'static [u8] = b"\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nAAAA\r\n--XX--\r\n";
        let body = Scripted {
            steps: [Some(&b"--"[..]), None, Some(&b"XX"[..]), Some(rest)]
                .into_iter()
                .collect(),
        };
        let ups = read_uploads(
            body,
            Some("multipart/form-data; boundary=XX"),
            None,
            None,
            &Limits::default(),
        )
        .await
        .expect("a well-formed body parses however it is chunked");
        assert_eq!(ups.len(), 1);
        assert_eq!(&ups[0].bytes[..], b"AAAA");
    }
}
