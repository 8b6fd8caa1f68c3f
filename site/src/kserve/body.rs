//! Reading a KServe v2 request body: streamed from the network into the parser ([`super::parse`])
//! on a blocking thread, as JSON or in the binary tensor data extension's framing.

use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use warp::http::StatusCode;

use crate::api::upload::{Intake, Metered, UploadError, read_error};
use crate::http::error::ApiError;
use crate::site::Site;
use glimpse_wire::binary::parse_binary_request;
use glimpse_wire::parse::{InferRequest, ParseError, ParseLimits, parse_infer_request};

/// How a request body is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// All JSON, images base64 in `data`.
    Json,
    /// A JSON header of `header_len` bytes (`Inference-Header-Content-Length`), then raw
    /// tensor bytes.
    Binary {
        /// The JSON header's length.
        header_len: u64,
    },
}

/// Stream the body into the parser on a blocking thread. The body is read here, on the
/// runtime, under its size limit and inactivity timeout, and handed over a few chunks at a
/// time; when the parser stops early (a limit, bad JSON) the rest of the body is not read.
pub(crate) async fn read_request<S>(
    site: &Arc<Site>,
    intake: &Intake,
    content_length: Option<u64>,
    framing: Framing,
    body: S,
) -> Result<InferRequest, ApiError>
where
    S: futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    // Base64 grows data by 4/3; allow that plus some room for the JSON around it.
    let limit = site.limits.max_request_bytes.saturating_mul(4) / 3 + 64 * 1024;
    if let Some(len) = content_length
        && len > limit as u64
    {
        return Err(site.refuse_upload(UploadError::TooLarge(format!(
            "the request is {len} bytes; the limit is {limit} bytes"
        ))));
    }
    let limits = ParseLimits {
        max_images: site.limits.max_files,
        max_image_bytes: site.limits.max_file_bytes,
        budget: site.budget.clone(),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let parse = tokio::task::spawn_blocking(move || {
        let reader = ChannelReader {
            rx,
            cur: Bytes::new(),
        };
        match framing {
            Framing::Json => parse_infer_request(reader, &limits),
            Framing::Binary { header_len } => parse_binary_request(reader, header_len, &limits),
        }
    });
    let intake = intake.clone();
    let pump = async move {
        let mut body = Metered::timed(body, &intake);
        let mut total = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| read_error(e, &intake))?;
            total += chunk.len();
            if total > limit {
                return Err(UploadError::TooLarge(format!(
                    "the request exceeds the limit of {limit} bytes"
                )));
            }
            if tx.send(chunk).await.is_err() {
                // The parser has stopped: it has its answer without the rest of the body.
                break;
            }
        }
        Ok(())
    };
    tokio::pin!(parse);
    // Whichever ends first: a parser that stops early leaves the rest of the body unread.
    let (parsed, pumped) = tokio::select! {
        parsed = &mut parse => (parsed, Ok(())),
        pumped = pump => (parse.await, pumped),
    };
    let parsed = parsed.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("parser task failed: {e}"),
        )
    })?;
    match (parsed, pumped) {
        (Ok(req), _) => Ok(req),
        // The body failed first (too large, stalled): that is the reason, not the parser's
        // "unexpected end of input".
        (Err(ParseError::Body(_) | ParseError::Invalid(_)), Err(e)) => Err(site.refuse_upload(e)),
        (Err(e), _) => Err(super::model::refuse_parse(site, e)),
    }
}

/// A blocking reader over body chunks sent from the runtime.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.cur = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}
