//! The README is the newcomer's path: what it tells them to run must exist. Every file its
//! commands name ships with the repository, every relative link resolves, and every Glimpse
//! binary its commands call is one that its install step installs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).expect("README.md")
}

/// The lines inside ```sh fences.
fn shell_lines(text: &str) -> Vec<&str> {
    let mut inside = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        let fence = line.trim_start();
        if fence.starts_with("```") {
            inside = !inside && fence.trim_end() == "```sh";
            continue;
        }
        if inside {
            lines.push(line);
        }
    }
    lines
}

/// Shell variables the README assigns a repository path to (`S=model/tests/...`).
fn path_variables(lines: &[&str]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter_map(|l| {
            let (name, value) = l.split_once('=')?;
            let value = value.split_whitespace().next()?;
            let is_var = !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase());
            (is_var && repo().join(value).is_dir()).then(|| (name.to_string(), value.to_string()))
        })
        .collect()
}

#[test]
fn every_file_the_readme_commands_name_exists() {
    let text = readme();
    let lines = shell_lines(&text);
    let vars = path_variables(&lines);
    assert!(
        !vars.is_empty(),
        "the README names a folder of sample images"
    );
    let mut named = BTreeSet::new();
    for line in &lines {
        for (name, dir) in &vars {
            for part in line.split(&format!("${name}/")).skip(1) {
                let file: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
                    .collect();
                named.insert(Path::new(dir).join(file));
            }
        }
    }
    assert!(
        named.len() >= 2,
        "sample images used by the API examples: {named:?}"
    );
    for file in &named {
        assert!(
            repo().join(file).is_file(),
            "README names {} which does not exist",
            file.display()
        );
    }
    for word in ["cat.jpg", "dog.png"] {
        assert!(
            !text.contains(word),
            "README names {word}, which does not ship"
        );
    }
}

#[test]
fn every_relative_link_in_the_readme_resolves() {
    let text = readme();
    let mut checked = 0;
    for part in text.split("](").skip(1) {
        let target = part.split(')').next().unwrap_or_default();
        let path = target.split('#').next().unwrap_or_default();
        if path.is_empty() || path.contains("://") {
            continue;
        }
        assert!(
            repo().join(path).exists(),
            "README links to {path}, which does not exist"
        );
        checked += 1;
    }
    assert!(
        checked > 0,
        "no relative link found: the check would not catch anything"
    );
}

/// The binaries a package directory builds: its `[[bin]]` names and `src/bin/*.rs`.
fn binaries_of(dir: &Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
    let mut bins: Vec<String> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| {
            let line = section
                .lines()
                .find(|l| l.trim_start().starts_with("name"))?;
            Some(line.split('"').nth(1)?.to_string())
        })
        .collect();
    if let Ok(entries) = std::fs::read_dir(dir.join("src/bin")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(stem) = name.strip_suffix(".rs") {
                bins.push(stem.to_string());
            }
        }
    }
    bins
}

#[test]
fn every_glimpse_command_in_the_readme_is_installed_by_its_install_step() {
    let text = readme();
    let lines = shell_lines(&text);
    let mut installed = BTreeSet::new();
    for line in &lines {
        if let Some(rest) = line
            .trim_start()
            .strip_prefix("cargo install --locked --path ")
        {
            let dir = rest.split_whitespace().next().unwrap_or_default();
            installed.extend(binaries_of(&repo().join(dir)));
        }
    }
    assert!(
        installed.contains("glimpse"),
        "the install step installs glimpse: {installed:?}"
    );
    let mut called = BTreeSet::new();
    for line in &lines {
        // A command is the first word of a line or of a `|`/`;`/`&&` segment.
        for segment in line.split(['|', ';', '&']) {
            if let Some(word) = segment.split_whitespace().next()
                && word.starts_with("glimpse")
                && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            {
                called.insert(word.to_string());
            }
        }
    }
    assert!(called.len() >= 3, "commands found: {called:?}");
    for command in &called {
        assert!(
            installed.contains(command),
            "README calls {command}, which no `cargo install --path` line installs ({installed:?})"
        );
    }
}
