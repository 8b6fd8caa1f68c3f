//! Fuzz target `multipart_upload`: what `POST /api/v1/classify` does with a multipart body,
//! [`glimpse_site::api::upload::read_uploads`] (the part-header scanner, multer, the per-file,
//! per-request and file-count limits, the byte budget, file-name cleaning), with the body cut
//! into chunks of a size the input chooses, since where chunks end is what breaks parsers.
//!
//! Input: one byte choosing the chunk size, then the body (boundary `XB`). Beyond "no panic":
//! what is accepted is within the limits, every file's bytes are paid for from the byte
//! budget, and the budget is whole again once the uploads are dropped.
//!
//! Included with `#[path]` by `glimpse-fuzz` (under AFL++) and by `site/tests/fuzz_corpus.rs`
//! (corpus replay): both run exactly this function.

use glimpse_site::Limits;
use glimpse_site::api::job::MAX_NAME_BYTES;
use glimpse_site::api::upload::{Intake, read_uploads};
use glimpse_wire::budget::ByteBudget;

/// Small limits, so inputs reach them: 4 KiB per file, 16 KiB per request, 4 files.
fn limits() -> Limits {
    Limits {
        max_file_bytes: 4 << 10,
        max_request_bytes: 16 << 10,
        max_files: 4,
        ..Limits::default()
    }
}

/// Runs one input; `true` when the body was accepted.
pub(crate) fn run(data: &[u8]) -> bool {
    let Some((&chunk, body)) = data.split_first() else {
        return false;
    };
    let chunk = usize::from(chunk) * 8 + 1;
    let limits = limits();
    let budget = ByteBudget::new(1 << 20);
    let intake = Intake {
        budget: budget.clone(),
        pace: limits.pace(),
        retry_after_s: 1,
        conn: None,
    };
    let chunks: Vec<bytes::Bytes> = body
        .chunks(chunk)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let read = runtime.block_on(read_uploads(
        stream,
        Some("multipart/form-data; boundary=XB"),
        None,
        None,
        &limits,
        &intake,
    ));
    let accepted = match read {
        Ok(uploads) => {
            assert!(!uploads.is_empty() && uploads.len() <= limits.max_files);
            let mut total = 0;
            for u in &uploads {
                assert!(u.bytes.len() <= limits.max_file_bytes);
                assert_eq!(u.held.len(), u.bytes.len(), "every kept byte is paid for");
                assert!(!u.name.is_empty() && u.name.len() <= MAX_NAME_BYTES);
                total += u.bytes.len();
            }
            assert!(total <= limits.max_request_bytes);
            assert_eq!(budget.in_use(), total, "framing bytes were given back");
            true
        }
        Err(e) => {
            assert!([400, 408, 413, 503].contains(&e.status()), "{e}");
            false
        }
    };
    assert_eq!(budget.in_use(), 0, "the budget is whole again");
    accepted
}
