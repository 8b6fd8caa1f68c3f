//! Replays the `transport_frames` fuzz corpus (`fuzz/corpus/transport_frames/`, and any
//! regression inputs in `fuzz/crashes-found/transport_frames/`) through the very function
//! the fuzz target runs, so every CI run checks the seeds without AFL++. See fuzz/README.md.

#[path = "../../fuzz/targets/transport_frames.rs"]
mod target;

#[path = "../../fuzz/replay.rs"]
mod replay;

#[test]
fn transport_frames_corpus_replays() {
    replay::replay("transport_frames", target::run);
}
