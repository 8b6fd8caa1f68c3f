//! Replays the site's fuzz corpora (`fuzz/corpus/{multipart_upload,kserve_request,kserve_binary,grpc_infer}/`, and any
//! regression inputs in `fuzz/crashes-found/`) through the very functions the fuzz targets
//! run, so every CI run checks the seeds without AFL++. See fuzz/README.md.

#[path = "../../fuzz/targets/multipart_upload.rs"]
mod multipart_upload;

// The reader the KServe targets share (they name it `super::trickle`).
#[path = "../../fuzz/trickle.rs"]
mod trickle;

#[path = "../../fuzz/targets/kserve_request.rs"]
mod kserve_request;

#[path = "../../fuzz/targets/kserve_binary.rs"]
mod kserve_binary;

#[path = "../../fuzz/targets/grpc_infer.rs"]
mod grpc_infer;

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn multipart_upload_corpus_replays() {
    replay::replay("multipart_upload", multipart_upload::run);
}

#[test]
fn kserve_request_corpus_replays() {
    replay::replay("kserve_request", kserve_request::run);
}

#[test]
fn kserve_binary_corpus_replays() {
    replay::replay("kserve_binary", kserve_binary::run);
}

#[test]
fn grpc_infer_corpus_replays() {
    replay::replay("grpc_infer", grpc_infer::run);
}
