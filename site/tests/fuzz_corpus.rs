//! Replays the site's fuzz corpus (`fuzz/corpus/multipart_upload/`, and any regression inputs
//! in `fuzz/crashes-found/multipart_upload/`) through the very function the fuzz target runs,
//! so every CI run checks the seeds without AFL++. See fuzz/README.md. The KServe and gRPC
//! targets replay in `wire/tests/fuzz_corpus.rs`, beside the parsers they drive.

#[path = "../../fuzz/targets/multipart_upload.rs"]
mod multipart_upload;

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn multipart_upload_corpus_replays() {
    replay::replay("multipart_upload", multipart_upload::run);
}
