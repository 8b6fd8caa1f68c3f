//! Replays the wire format's fuzz corpora (`fuzz/corpus/{kserve_request,kserve_binary,grpc_infer}/`,
//! and any regression inputs in `fuzz/crashes-found/`) through the very functions the fuzz
//! targets run, so every CI run checks the seeds without AFL++. See fuzz/README.md.

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
