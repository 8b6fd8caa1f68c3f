//! The workspace's integration tests are modules of one binary per crate (`tests/main.rs`,
//! with `autotests = false`), so cargo no longer finds a new `tests/*.rs` by itself: a file
//! that `main.rs` does not declare would never be compiled or run. This checks every crate.

use std::path::Path;

#[test]
fn every_test_file_is_a_module_of_its_crates_test_binary() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut crates = 0;
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(&repo).expect("the workspace folder") {
        let tests = entry.expect("a workspace entry").path().join("tests");
        let Ok(main) = std::fs::read_to_string(tests.join("main.rs")) else {
            continue;
        };
        crates += 1;
        for file in std::fs::read_dir(&tests).expect("a tests folder") {
            let path = file.expect("a tests entry").path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "rs")
                && stem != "main"
                && !main.lines().any(|l| l.trim() == format!("mod {stem};"))
            {
                missing.push(path.display().to_string());
            }
        }
    }
    assert!(crates >= 5, "found {crates} crates with tests/main.rs");
    assert!(
        missing.is_empty(),
        "not declared in their tests/main.rs, so never run: {missing:?}"
    );
}
