//! Reading request bodies under the size, time and memory limits, without buffering past them.
//!
//! The body is consumed as a stream ([`Metered`]). A declared Content-Length over the limit is
//! refused before reading anything; otherwise bytes are counted as they arrive and reading
//! stops at the first byte over the limit (multer enforces the same per field and for the
//! whole stream in the multipart case). Every chunk is paid for from the front-end's
//! [`ByteBudget`] before it is buffered, and a body that falls behind its [`Pace`] (nothing
//! for the inactivity timeout, a trickle below the minimum rate, or past the total deadline)
//! ends with 408. The caller then answers
//! and hyper closes the connection or resets the HTTP/2 stream, so an oversized or stalled
//! upload never sits in memory or holds its connection.
//!
//! Multipart bodies also pass a [`PartScanner`] before multer sees them: multer rescans its
//! whole buffer for the end of a part's headers (and for the first boundary) on every chunk,
//! which costs time quadratic in their length, so the scanner refuses headers and preambles
//! longer than [`MAX_PART_HEADER_BYTES`] in one linear pass.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt, TryStreamExt};
use memchr::memmem;
use parking_lot::Mutex;
use tokio::time::Sleep;

use crate::access::limits::Limits;
use crate::api::job::display_name;
use crate::http::pace::{ConnProgress, Pace, PaceLimits, TooSlow};
use glimpse_wire::budget::{ByteBudget, Held};

/// Longest multipart part header section (and preamble before the first boundary), in
/// bytes. A browser's part header is a few hundred bytes; 8 KiB leaves room for long names.
pub const MAX_PART_HEADER_BYTES: usize = 8 * 1024;

/// One uploaded file before admission, holding its bytes' share of the byte budget.
#[derive(Debug)]
pub struct Upload {
    /// The file name as shown (see [`display_name`]).
    pub name: String,
    /// The part's declared Content-Type (the site sniffs the bytes regardless).
    pub content_type: Option<String>,
    /// The file's bytes.
    pub bytes: Bytes,
    /// The file's bytes in the front-end's byte budget; given back when the upload (or the
    /// job it becomes) is dropped.
    pub held: Held,
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("{0}")]
    /// A file or the whole body is over its limit (413).
    TooLarge(String),
    #[error("too many files in one request (limit {0})")]
    /// More files than allowed in one request (413).
    TooManyFiles(usize),
    #[error(
        "unsupported content type {0:?}: send multipart/form-data with `file` parts, or a raw image body with an image/* content type"
    )]
    /// The body is not `multipart/form-data` (415).
    UnsupportedType(String),
    #[error("malformed request body: {0}")]
    /// The multipart body is broken (400).
    Malformed(String),
    #[error("the request contains no file")]
    /// No file in the request (400).
    Empty,
    #[error("{0}")]
    /// The body fell behind its pace: stalled, too slow, or past its deadline (408).
    Slow(TooSlow),
    #[error("the server is holding as many uploaded bytes as it may; retry in {0} s")]
    /// The byte budget is spent; retry after this many seconds (503).
    Busy(u64),
}

impl UploadError {
    /// The HTTP status the client gets.
    pub fn status(&self) -> u16 {
        match self {
            UploadError::TooLarge(_) | UploadError::TooManyFiles(_) => 413,
            UploadError::UnsupportedType(_) => 415,
            UploadError::Malformed(_) | UploadError::Empty => 400,
            UploadError::Slow(_) => 408,
            UploadError::Busy(_) => 503,
        }
    }

    /// Seconds for `Retry-After`, when the same request may succeed later.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            UploadError::Busy(s) => Some(*s),
            _ => None,
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
            UploadError::Slow(slow) => slow.reason(),
            UploadError::Busy(_) => "bytes_busy",
        }
    }
}

/// What a body read is bound by besides its size limits: the byte budget it pays into, and
/// how fast it must arrive.
#[derive(Debug, Clone)]
pub struct Intake {
    /// What every byte read is paid from.
    pub budget: ByteBudget,
    /// How fast a body must arrive (see [`crate::http::pace`]).
    pub pace: PaceLimits,
    /// `Retry-After` seconds when the budget is spent.
    pub retry_after_s: u64,
    /// The connection the body arrives on, shared with its other requests: a body waiting
    /// behind its siblings is paced by its share (see [`crate::http::pace`]).
    pub conn: Option<Arc<dyn ConnProgress>>,
}

impl Intake {
    /// The same intake for a body that arrives on `conn`.
    pub fn on(mut self, conn: Option<Arc<dyn ConnProgress>>) -> Intake {
        self.conn = conn;
        self
    }
}

/// Faults the body stream itself raises, carried inside `io::Error` through multer.
#[derive(Debug, thiserror::Error)]
enum BodyFault {
    #[error("{0}")]
    Slow(TooSlow),
    #[error("the byte budget is spent")]
    Budget,
    #[error("{0}")]
    PartHeader(String),
}

impl BodyFault {
    fn into_io(self) -> std::io::Error {
        std::io::Error::other(self)
    }

    /// The fault inside an error from the body stream, directly or through multer.
    fn find<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a BodyFault> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(f) = err.downcast_ref::<BodyFault>() {
                return Some(f);
            }
            if let Some(io) = err.downcast_ref::<std::io::Error>()
                && let Some(inner) = io.get_ref()
                && let Some(f) = inner.downcast_ref::<BodyFault>()
            {
                return Some(f);
            }
            cur = err.source();
        }
        None
    }

    fn to_upload_error(&self, intake: &Intake) -> UploadError {
        match self {
            BodyFault::Slow(slow) => UploadError::Slow(*slow),
            BodyFault::Budget => UploadError::Busy(intake.retry_after_s),
            BodyFault::PartHeader(m) => UploadError::TooLarge(m.clone()),
        }
    }
}

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

/// A body stream that pays for each chunk from the byte budget before passing it on, and
/// fails when the body falls behind its [`Pace`].
pub struct Metered<S> {
    inner: S,
    /// `None`: only the pace applies (the bytes are not kept).
    budget: Option<ByteBudget>,
    held: Arc<Mutex<Held>>,
    pace: Pace,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

impl<S> Metered<S> {
    /// Meter `inner`; the bytes taken accumulate in the returned holding.
    pub fn new(inner: S, intake: &Intake) -> (Metered<S>, Arc<Mutex<Held>>) {
        let held = Arc::new(Mutex::new(Held::none()));
        let pace = Pace::new(intake.pace, tokio::time::Instant::now()).sharing(intake.conn.clone());
        (
            Metered {
                inner,
                budget: Some(intake.budget.clone()),
                held: held.clone(),
                timer: Box::pin(tokio::time::sleep_until(pace.next_check())),
                pace,
                done: false,
            },
            held,
        )
    }

    /// Only hold `inner` to its pace (a body that is parsed as it streams and not kept whole).
    pub fn timed(inner: S, intake: &Intake) -> Metered<S> {
        let (mut m, _) = Metered::new(inner, intake);
        m.budget = None;
        m
    }
}

impl<S> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                let paid = match &this.budget {
                    Some(budget) => {
                        let mut held = this.held.lock();
                        budget.take(&mut held, chunk.len())
                    }
                    None => true,
                };
                if !paid {
                    this.done = true;
                    return Poll::Ready(Some(Err(BodyFault::Budget.into_io())));
                }
                this.pace.received(chunk.len(), tokio::time::Instant::now());
                this.timer.as_mut().reset(this.pace.next_check());
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(other) => {
                if other.is_none() {
                    this.done = true;
                }
                Poll::Ready(other)
            }
            Poll::Pending => loop {
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                if let Err(slow) = this.pace.check(tokio::time::Instant::now()) {
                    this.done = true;
                    return Poll::Ready(Some(Err(BodyFault::Slow(slow).into_io())));
                }
                this.timer.as_mut().reset(this.pace.next_check());
            },
        }
    }
}

/// Take what a metered read paid for out of its shared holding.
fn take_held(held: &Arc<Mutex<Held>>) -> Held {
    std::mem::replace(&mut *held.lock(), Held::none())
}

/// The upload error for a failed body read.
pub(crate) fn read_error(e: std::io::Error, intake: &Intake) -> UploadError {
    match BodyFault::find(&e) {
        Some(f) => f.to_upload_error(intake),
        None => UploadError::Malformed(format!("reading body: {e}")),
    }
}

/// Read a whole body, stopping with [`UploadError::TooLarge`] at the first byte past `limit`
/// (the per-file limit: the refusal names `what`, the file, and says its size in MiB).
/// Returns the bytes and what they hold of the byte budget.
pub async fn read_limited<S>(
    body: S,
    content_length: Option<u64>,
    limit: usize,
    what: &str,
    intake: &Intake,
) -> Result<(Bytes, Held), UploadError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin,
{
    if let Some(len) = content_length
        && len > limit as u64
    {
        return Err(UploadError::TooLarge(
            crate::access::limits::file_too_large(what, Some(len), limit),
        ));
    }
    let (mut body, held) = Metered::new(body, intake);
    let mut chunks = Chunks::default();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| read_error(e, intake))?;
        if chunks.len + chunk.len() > limit {
            return Err(UploadError::TooLarge(
                crate::access::limits::file_too_large(what, None, limit),
            ));
        }
        chunks.push(chunk);
    }
    Ok((chunks.concat(), take_held(&held)))
}

/// Chunks of a body, joined once at the end into a buffer of exactly their size. Growing one
/// buffer as chunks arrive would double its capacity each time (a 19 MiB file in a 32 MiB
/// allocation, and a copy per doubling); trusting a declared Content-Length to size it up
/// front would let a client that then sends nothing make the server reserve it.
#[derive(Default)]
struct Chunks {
    parts: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    fn push(&mut self, chunk: Bytes) {
        self.len += chunk.len();
        self.parts.push(chunk);
    }

    fn concat(mut self) -> Bytes {
        if self.parts.len() == 1 {
            return self.parts.pop().unwrap_or_default();
        }
        let mut buf = BytesMut::with_capacity(self.len);
        for p in self.parts {
            buf.extend_from_slice(&p);
        }
        buf.freeze()
    }
}

/// A multipart field's bytes (see [`Chunks`] for why not `Field::bytes`).
async fn field_bytes(mut field: multer::Field<'_>) -> Result<Bytes, multer::Error> {
    let mut chunks = Chunks::default();
    while let Some(chunk) = field.chunk().await? {
        chunks.push(chunk);
    }
    Ok(chunks.concat())
}

/// Read the uploads of a `POST /api/v1/classify`: multipart `file` parts or one raw image.
pub async fn read_uploads<S>(
    body: S,
    content_type: Option<&str>,
    content_length: Option<u64>,
    raw_name: Option<String>,
    limits: &Limits,
    intake: &Intake,
) -> Result<Vec<Upload>, UploadError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
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
        read_multipart(body, boundary, content_length, limits, intake).await
    } else if essence.starts_with("image/") || essence == "application/octet-stream" {
        let limit = limits.max_file_bytes.min(limits.max_request_bytes);
        // The refusal names the file: `?name=` when the caller gave one.
        let what = match &raw_name {
            Some(name) => format!("{:?}", display_name(name)),
            None => "the image".to_string(),
        };
        let (bytes, held) = read_limited(body, content_length, limit, &what, intake).await?;
        if bytes.is_empty() {
            return Err(UploadError::Empty);
        }
        Ok(vec![Upload {
            name: display_name(raw_name.as_deref().unwrap_or("upload")),
            content_type: Some(essence),
            bytes,
            held,
        }])
    } else {
        Err(UploadError::UnsupportedType(crate::http::error::truncate(
            content_type.to_string(),
            200,
        )))
    }
}

// Over 80 lines on purpose: the multipart loop: one branch per part kind and per limit, in the order a body meets them.
async fn read_multipart<S>(
    body: S,
    boundary: String,
    content_length: Option<u64>,
    limits: &Limits,
    intake: &Intake,
) -> Result<Vec<Upload>, UploadError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static,
{
    if let Some(len) = content_length
        && len > limits.max_request_bytes as u64
    {
        return Err(UploadError::TooLarge(
            crate::access::limits::request_too_large(Some(len), limits.max_request_bytes),
        ));
    }
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limits.max_request_bytes as u64)
            .per_field(limits.max_file_bytes as u64),
    );
    let (metered, held) = Metered::new(body, intake);
    let scanned = PartScanned::new(metered, &boundary);
    let mut multipart = multer::Multipart::with_constraints(
        DeferEof::new(Box::pin(scanned)),
        boundary,
        constraints,
    );
    let mut files: Vec<(String, Option<String>, Bytes)> = Vec::new();
    let fail = |e: multer::Error| multer_error(e, limits, intake);
    loop {
        let mut field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(fail(e)),
        };
        let is_file = field
            .name()
            .map(|n| FILE_FIELDS.contains(&n))
            .unwrap_or(false);
        if !is_file {
            // Unknown fields are skipped (their bytes still count against the limits).
            while field.chunk().await.map_err(fail)?.is_some() {}
            continue;
        }
        if files.len() >= limits.max_files {
            return Err(UploadError::TooManyFiles(limits.max_files));
        }
        let name = field
            .file_name()
            .map(display_name)
            .unwrap_or_else(|| format!("file-{}", files.len() + 1));
        let content_type = field.content_type().map(|m| m.essence_str().to_string());
        // A part over the per-file limit is refused by its file name, not its form field's.
        let bytes = field_bytes(field).await.map_err(|e| match e {
            multer::Error::FieldSizeExceeded { .. } => {
                UploadError::TooLarge(crate::access::limits::file_too_large(
                    &format!("{name:?}"),
                    None,
                    limits.max_file_bytes,
                ))
            }
            e => fail(e),
        })?;
        files.push((name, content_type, bytes));
    }
    if files.is_empty() {
        return Err(UploadError::Empty);
    }
    // The request paid for everything it sent; each file keeps its own bytes' share and the
    // framing is given back when `paid` drops.
    let mut paid = take_held(&held);
    Ok(files
        .into_iter()
        .map(|(name, content_type, bytes)| Upload {
            held: paid.split(bytes.len()),
            name,
            content_type,
            bytes,
        })
        .collect())
}

/// Multipart field names accepted as files (`file` is the documented one).
const FILE_FIELDS: [&str; 3] = ["file", "files", "image"];

/// Finds where each multipart part's headers end, in one pass over the body, and refuses a
/// part header section or preamble longer than [`MAX_PART_HEADER_BYTES`]. Sans-IO: it sees
/// chunks and keeps only the last few bytes of the previous one.
#[derive(Debug, Clone)]
pub struct PartScanner {
    /// `--BOUNDARY`: the first delimiter.
    first: Vec<u8>,
    /// `\r\nBOUNDARY`: every later delimiter.
    next: Vec<u8>,
    state: ScanState,
    /// The tail of what was fed before, so a pattern split across chunks is found.
    carry: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    /// Before the first delimiter: `seen` bytes so far.
    Preamble { seen: usize },
    /// After a delimiter: `seen` bytes of headers so far.
    Headers { seen: usize },
    /// In a part's data.
    Data,
    /// After the closing delimiter.
    Epilogue,
}

const CRLF_CRLF: &[u8] = b"\r\n\r\n";

impl PartScanner {
    /// A scanner for bodies delimited by `boundary`.
    pub fn new(boundary: &str) -> PartScanner {
        PartScanner {
            first: format!("--{boundary}").into_bytes(),
            next: format!("\r\n--{boundary}").into_bytes(),
            state: ScanState::Preamble { seen: 0 },
            carry: Vec::new(),
        }
    }

    /// Look at the next chunk of the body.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            match self.state {
                ScanState::Epilogue => return Ok(()),
                ScanState::Preamble { seen } => {
                    let pat = self.first.clone();
                    match self.find(&pat, data) {
                        Some(end) => {
                            self.check(seen + end, "the bytes before the first boundary")?;
                            data = &data[end..];
                            self.state = ScanState::Headers { seen: 0 };
                        }
                        None => {
                            self.check(seen + data.len(), "the bytes before the first boundary")?;
                            self.state = ScanState::Preamble {
                                seen: seen + data.len(),
                            };
                            return Ok(());
                        }
                    }
                }
                ScanState::Headers { seen } => {
                    // `--` right after a delimiter closes the body.
                    if seen < 2 {
                        let mut lead: Vec<u8> = self.carry.clone();
                        lead.extend_from_slice(&data[..data.len().min(2 - seen)]);
                        if lead.len() >= 2 && lead.starts_with(b"--") {
                            self.state = ScanState::Epilogue;
                            return Ok(());
                        }
                    }
                    match self.find(CRLF_CRLF, data) {
                        Some(end) => {
                            self.check(seen + end, "a part's headers")?;
                            data = &data[end..];
                            self.state = ScanState::Data;
                        }
                        None => {
                            self.check(seen + data.len(), "a part's headers")?;
                            self.state = ScanState::Headers {
                                seen: seen + data.len(),
                            };
                            return Ok(());
                        }
                    }
                }
                ScanState::Data => {
                    let pat = self.next.clone();
                    match self.find(&pat, data) {
                        Some(end) => {
                            data = &data[end..];
                            self.state = ScanState::Headers { seen: 0 };
                        }
                        None => return Ok(()),
                    }
                }
            }
        }
        Ok(())
    }

    fn check(&self, seen: usize, what: &str) -> Result<(), String> {
        if seen > MAX_PART_HEADER_BYTES {
            Err(format!("{what} exceed {MAX_PART_HEADER_BYTES} bytes"))
        } else {
            Ok(())
        }
    }

    /// The index just past the first match of `pat` in what was carried plus `data`
    /// (counted in `data`), or `None` after remembering the tail for the next chunk. The
    /// carry is consumed either way.
    fn find(&mut self, pat: &[u8], data: &[u8]) -> Option<usize> {
        let keep = pat.len().saturating_sub(1);
        let carry = std::mem::take(&mut self.carry);
        if !carry.is_empty() {
            let mut joined = carry.clone();
            joined.extend_from_slice(&data[..data.len().min(keep)]);
            if let Some(i) = memmem::find(&joined, pat) {
                return Some(i + pat.len() - carry.len());
            }
        }
        if let Some(i) = memmem::find(data, pat) {
            return Some(i + pat.len());
        }
        // Remember the last `keep` bytes of everything seen so far.
        self.carry = if data.len() >= keep {
            data[data.len() - keep..].to_vec()
        } else {
            let mut tail = carry;
            tail.extend_from_slice(data);
            let excess = tail.len().saturating_sub(keep);
            tail.drain(..excess);
            tail
        };
        None
    }
}

/// A body stream checked by a [`PartScanner`] as it passes.
struct PartScanned<S> {
    inner: S,
    scanner: PartScanner,
}

impl<S> PartScanned<S> {
    fn new(inner: S, boundary: &str) -> Self {
        PartScanned {
            inner,
            scanner: PartScanner::new(boundary),
        }
    }
}

impl<S> Stream for PartScanned<S>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.poll_next_unpin(cx) {
            Poll::Ready(Some(Ok(chunk))) => match this.scanner.feed(&chunk) {
                Ok(()) => Poll::Ready(Some(Ok(chunk))),
                Err(why) => Poll::Ready(Some(Err(BodyFault::PartHeader(why).into_io()))),
            },
            other => other,
        }
    }
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

fn multer_error(e: multer::Error, limits: &Limits, intake: &Intake) -> UploadError {
    if let Some(fault) = BodyFault::find(&e) {
        return fault.to_upload_error(intake);
    }
    match e {
        // Only a part read without its file name known gets here (the loop above names it).
        multer::Error::FieldSizeExceeded { .. } => UploadError::TooLarge(
            crate::access::limits::file_too_large("a file", None, limits.max_file_bytes),
        ),
        multer::Error::StreamSizeExceeded { .. } => UploadError::TooLarge(
            crate::access::limits::request_too_large(None, limits.max_request_bytes),
        ),
        other => UploadError::Malformed(crate::http::error::truncate(other.to_string(), 300)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn body(
        chunks: Vec<&'static [u8]>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Unpin + 'static {
        futures_util::stream::iter(chunks.into_iter().map(|c| Ok(Bytes::from_static(c))))
    }

    fn intake() -> Intake {
        intake_with(ByteBudget::new(1 << 30), Duration::from_secs(30))
    }

    fn intake_with(budget: ByteBudget, inactivity: Duration) -> Intake {
        Intake {
            budget,
            pace: PaceLimits {
                inactivity,
                grace: Duration::from_secs(10),
                min_rate: 0,
                deadline: Duration::from_secs(300),
            },
            retry_after_s: 2,
            conn: None,
        }
    }

    #[tokio::test]
    async fn raw_body_stops_at_limit() {
        let err = read_limited(body(vec![b"aaaa", b"bbbb", b"cc"]), None, 9, "x", &intake())
            .await
            .unwrap_err();
        assert_eq!(err.status(), 413);
        let (ok, _) = read_limited(body(vec![b"aaaa", b"bbbb"]), None, 8, "x", &intake())
            .await
            .unwrap();
        assert_eq!(ok.len(), 8);
        let early = read_limited(body(vec![]), Some(100), 8, "x", &intake())
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
            &intake(),
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
            &intake(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 413, "{err}");
        // The refusal names the file, not the form field, and counts in MiB like the page.
        assert_eq!(
            err.to_string(),
            "\"b.jpg\" is larger than the limit of 5 bytes per file",
            "{err}"
        );
        let big = Limits {
            max_file_bytes: 3 << 20,
            ..Limits::default()
        };
        let mut huge =
            b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n\r\n"
                .to_vec();
        huge.extend(std::iter::repeat_n(b'A', 4 << 20));
        huge.extend(b"\r\n--XX--\r\n");
        let err = read_uploads(
            body(vec![Box::leak(huge.into_boxed_slice())]),
            Some("multipart/form-data; boundary=XX"),
            None,
            None,
            &big,
            &intake(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"big.jpg\" is larger than the limit of 3.0 MiB per file"
        );
        // A raw image with a Content-Length over the limit: its name (?name=) and its size.
        let err = read_uploads(
            body(vec![]),
            Some("image/jpeg"),
            Some(30 << 20),
            Some("big.jpg".into()),
            &Limits::default(),
            &intake(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"big.jpg\" is 30.0 MiB; the limit is 20.0 MiB per file"
        );

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
            &intake(),
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
            &intake(),
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
            &intake(),
        )
        .await
        .expect("a well-formed body parses however it is chunked");
        assert_eq!(ups.len(), 1);
        assert_eq!(&ups[0].bytes[..], b"AAAA");
    }

    const PAYLOAD: &[u8] = b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\nAAAA\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.jpg\"\r\n\r\nBBBBBB\r\n--XX--\r\n";

    #[test]
    fn the_part_scanner_accepts_real_bodies_however_they_are_chunked() {
        for size in [1, 2, 3, 5, 7, 64, PAYLOAD.len()] {
            let mut s = PartScanner::new("XX");
            for chunk in PAYLOAD.chunks(size) {
                s.feed(chunk).unwrap();
            }
            assert_eq!(s.state, ScanState::Epilogue, "chunks of {size}");
        }
    }

    #[test]
    fn the_part_scanner_refuses_long_headers_and_preambles() {
        let mut s = PartScanner::new("XX");
        s.feed(b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"")
            .unwrap();
        let long = vec![b'a'; 1024];
        let mut refused = None;
        for i in 0..16 {
            if let Err(e) = s.feed(&long) {
                refused = Some((i, e));
                break;
            }
        }
        let (i, why) = refused.expect("an unterminated header is refused");
        assert_eq!(i, 7, "refused as soon as it passes 8 KiB");
        assert!(why.contains("headers"), "{why}");

        let mut s = PartScanner::new("XX");
        let junk = vec![b'x'; MAX_PART_HEADER_BYTES + 1];
        assert!(
            s.feed(&junk)
                .unwrap_err()
                .contains("before the first boundary")
        );

        // Long file data is fine: only headers are bounded.
        let mut s = PartScanner::new("XX");
        s.feed(b"--XX\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n")
            .unwrap();
        for _ in 0..100 {
            s.feed(&long).unwrap();
        }
        s.feed(b"\r\n--XX--\r\n").unwrap();
        assert_eq!(s.state, ScanState::Epilogue);
    }

    #[tokio::test]
    async fn an_unterminated_part_header_is_refused_after_reading_little() {
        // 2 x 64 MiB of header without its end took 70 CPU-seconds in multer alone: the
        // request must be refused as soon as the header passes its limit, long before the
        // 64 MiB have been read (and rescanned).
        static A: [u8; 65536] = [b'a'; 65536];
        let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = read.clone();
        let head: &'static [u8] =
            b"--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"";
        let chunks = futures_util::stream::iter(
            std::iter::once(head).chain(std::iter::repeat_n(&A[..], 1024)),
        )
        .map(move |c| {
            counter.fetch_add(c.len(), std::sync::atomic::Ordering::Relaxed);
            Ok(Bytes::from_static(c))
        });
        let limits = Limits {
            max_request_bytes: 200 << 20,
            max_file_bytes: 100 << 20,
            ..Limits::default()
        };
        let err = read_uploads(
            chunks,
            Some("multipart/form-data; boundary=XX"),
            None,
            None,
            &limits,
            &intake(),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 413, "{err}");
        assert!(err.to_string().contains("headers"), "{err}");
        let consumed = read.load(std::sync::atomic::Ordering::Relaxed);
        assert!(consumed <= head.len() + A.len(), "read {consumed} bytes");
    }

    #[tokio::test]
    async fn every_byte_read_is_paid_for_and_files_keep_their_share() {
        let budget = ByteBudget::new(1 << 20);
        let ups = read_uploads(
            body(vec![PAYLOAD]),
            Some("multipart/form-data; boundary=XX"),
            None,
            None,
            &Limits::default(),
            &intake_with(budget.clone(), Duration::from_secs(30)),
        )
        .await
        .unwrap();
        assert_eq!(ups.iter().map(|u| u.held.len()).collect::<Vec<_>>(), [4, 6]);
        assert_eq!(budget.in_use(), 10, "framing bytes were given back");
        drop(ups);
        assert_eq!(budget.in_use(), 0);

        // A budget smaller than the body: refused with 503 and nothing kept.
        let tight = ByteBudget::new(100);
        let err = read_uploads(
            body(vec![PAYLOAD, PAYLOAD]),
            Some("multipart/form-data; boundary=XX"),
            None,
            None,
            &Limits::default(),
            &intake_with(tight.clone(), Duration::from_secs(30)),
        )
        .await
        .unwrap_err();
        assert_eq!((err.status(), err.retry_after()), (503, Some(2)), "{err}");
        assert_eq!(tight.in_use(), 0);
    }

    #[tokio::test]
    async fn a_body_that_stops_sending_times_out() {
        let stalled = futures_util::stream::iter([Ok(Bytes::from_static(b"--XX\r\n"))])
            .chain(futures_util::stream::pending());
        let start = std::time::Instant::now();
        let err = read_uploads(
            Box::pin(stalled),
            Some("multipart/form-data; boundary=XX"),
            Some(1 << 20),
            None,
            &Limits::default(),
            &intake_with(ByteBudget::new(1 << 20), Duration::from_millis(200)),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 408, "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
        let raw = futures_util::stream::pending();
        let err = read_limited(
            Box::pin(raw),
            Some(10),
            100,
            "x",
            &intake_with(ByteBudget::new(1 << 20), Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
        assert_eq!(err.status(), 408);
    }

    #[tokio::test]
    async fn long_file_names_are_cut() {
        let long = format!(
            "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}.png\"\r\n\r\nAAAA\r\n--XX--\r\n",
            "n".repeat(4000)
        );
        let ups = read_uploads(
            body(vec![Box::leak(long.into_bytes().into_boxed_slice())]),
            Some("multipart/form-data; boundary=XX"),
            None,
            None,
            &Limits::default(),
            &intake(),
        )
        .await
        .unwrap();
        assert!(ups[0].name.len() <= crate::api::job::MAX_NAME_BYTES);
        assert!(ups[0].name.ends_with('…'));
    }
}
