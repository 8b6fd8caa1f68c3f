//! Replays the `model_decode` fuzz corpus (`fuzz/corpus/model_decode/`, and any regression
//! inputs in `fuzz/crashes-found/model_decode/`) through the very function the fuzz target
//! runs, so every CI run checks the seeds without AFL++. See fuzz/README.md.

#[path = "../../fuzz/targets/model_decode.rs"]
mod target;

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn model_decode_corpus_replays() {
    replay::replay("model_decode", target::run);
}
