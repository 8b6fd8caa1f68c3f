//! Registers every `targets/<name>.rs` as a target of the `glimpse-fuzz` binary: adding a
//! target is adding a file there (and a corpus directory), nothing else.
//!
//! Writes `$OUT_DIR/targets.rs`: one `#[path] mod <name>;` per file and the `TARGETS` table
//! that `src/main.rs` dispatches on.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::{env, fs};

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let dir = manifest.join("targets");
    // A new or removed file changes the directory; edits to a target are tracked by rustc.
    println!("cargo::rerun-if-changed={}", dir.display());

    let mut names = Vec::new();
    for entry in fs::read_dir(&dir).expect("fuzz/targets/ is readable") {
        let path = entry.expect("fuzz/targets/ entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("target file names are UTF-8")
            .to_string();
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit(),
            "fuzz target {name:?}: names are Rust identifiers in [a-z0-9_] (they are module \
             names and corpus directory names)"
        );
        names.push((name, path));
    }
    assert!(!names.is_empty(), "no fuzz targets in {}", dir.display());
    names.sort();

    let mut out = String::new();
    for (name, path) in &names {
        let path = path.to_str().expect("UTF-8 path");
        writeln!(out, "#[path = {path:?}]\nmod {name};").unwrap();
    }
    out.push_str("\n/// Every target: its name (also its corpus directory) and its entry point.\n");
    out.push_str("const TARGETS: &[(&str, Target)] = &[\n");
    for (name, _) in &names {
        writeln!(out, "    ({name:?}, {name}::run),").unwrap();
    }
    out.push_str("];\n");

    let dest = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo")).join("targets.rs");
    fs::write(dest, out).expect("write targets.rs");
}
