//! `glimpse-fuzz TARGET`: the AFL++ entry point of every fuzz target in `fuzz/targets/`.
//!
//! Under `afl-fuzz` it runs the target in persistent mode on the inputs AFL++ hands it;
//! outside `afl-fuzz` it runs the target once on standard input, which is how a crash is
//! reproduced: `fuzz/target/debug/glimpse-fuzz model_decode < crash-input`.
//! `glimpse-fuzz --list` prints the target names, one a line.
//!
//! Only `cargo afl build` can link this binary (the `afl` crate needs AFL++'s runtime).

use std::process::ExitCode;

/// A target's entry point: `true` when the input was accepted (see fuzz/README.md).
type Target = fn(&[u8]) -> bool;

// The reader the KServe targets share (they name it `super::trickle`).
#[path = "../trickle.rs"]
mod trickle;

// `mod <target>;` for each file in targets/, and `TARGETS`, written by build.rs.
include!(concat!(env!("OUT_DIR"), "/targets.rs"));

fn main() -> ExitCode {
    let arg = std::env::args().nth(1).unwrap_or_default();
    if arg == "--list" {
        for (name, _) in TARGETS {
            println!("{name}");
        }
        return ExitCode::SUCCESS;
    }
    let Some(&(_, run)) = TARGETS.iter().find(|(name, _)| *name == arg) else {
        let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
        eprintln!(
            "usage: glimpse-fuzz TARGET  (under afl-fuzz, or with one input on stdin)\n       \
             glimpse-fuzz --list\ntargets: {}",
            names.join(", ")
        );
        return ExitCode::from(2);
    };
    // A panic that escapes the target aborts the process, which AFL++ records as a crash.
    // Not afl's own panic hook, which aborts on *every* panic: the production code catches a
    // codec's panic and reports a corrupt image (glimpse_model::decode), and that is correct
    // behaviour, not a crash.
    afl::fuzz_nohook!(|data: &[u8]| {
        if std::panic::catch_unwind(|| run(data)).is_err() {
            std::process::abort();
        }
    });
    ExitCode::SUCCESS
}
