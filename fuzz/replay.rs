//! Corpus replay, shared by the crates' `tests/fuzz_corpus.rs` (included with `#[path]`, so
//! the workspace does not depend on anything in `fuzz/`).
//!
//! Runs a fuzz target's function on every file in `fuzz/corpus/<target>/` (the seeds) and in
//! `fuzz/crashes-found/<target>/` (inputs a fuzz run once crashed on, kept as regressions).
//! Fails when the corpus is missing or empty, so a moved directory cannot make it pass
//! vacuously. Seeds named `ok-*` must be accepted (the target returns `true`: a frame decoded,
//! an image decoded) and seeds named `bad-*` must be refused, so the corpus keeps covering
//! both sides of the limits; other names only must not panic.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

/// Replays `fuzz/{corpus,crashes-found}/<target>/*` through `run`; reports every failing
/// input at once.
pub(crate) fn replay(target: &str, run: fn(&[u8]) -> bool) {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let corpus = fuzz.join("corpus").join(target);
    let seeds = files(&corpus);
    assert!(
        !seeds.is_empty(),
        "no seeds in {}: the corpus must not be empty (regenerate it, see fuzz/README.md)",
        corpus.display()
    );
    let crashes = fuzz.join("crashes-found").join(target);
    let regressions = if crashes.is_dir() {
        files(&crashes)
    } else {
        Vec::new()
    };

    let mut failures = Vec::new();
    for path in seeds.iter().chain(&regressions) {
        let data = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        match catch_unwind(AssertUnwindSafe(|| run(&data))) {
            Err(_) => failures.push(format!("{}: panicked", path.display())),
            Ok(false) if name.starts_with("ok-") => {
                failures.push(format!("{}: an ok- seed was refused", path.display()));
            }
            Ok(true) if name.starts_with("bad-") => {
                failures.push(format!("{}: a bad- seed was accepted", path.display()));
            }
            Ok(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "fuzz target {target}: {} of {} inputs failed:\n{}",
        failures.len(),
        seeds.len() + regressions.len(),
        failures.join("\n")
    );
}

/// The plain files in `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}
