//! What the lab's end-to-end tests share.

use std::path::Path;

/// The directory of the workspace binaries next to `lab` (the `glimpse-lab` under test),
/// when `glimpse`, `glimpse-node` and `glimpse-certs` are all there. Otherwise prints that
/// `test` is SKIPPED and returns `None`, except under CI (`CI` set), where a missing binary
/// fails: `cargo nextest run --workspace` builds them.
pub(crate) fn workspace_bins<'a>(lab: &'a str, test: &str) -> Option<&'a Path> {
    let dir = Path::new(lab).parent().expect("binary has a directory");
    let missing: Vec<&str> = ["glimpse", "glimpse-node", "glimpse-certs"]
        .into_iter()
        .filter(|b| !dir.join(b).is_file())
        .collect();
    if missing.is_empty() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} not built in {} under CI",
        missing.join(", "),
        dir.display()
    );
    eprintln!(
        "SKIPPED {test}: {} not built in {} (run `cargo build --workspace`)",
        missing.join(", "),
        dir.display()
    );
    None
}
