//! The README is the newcomer's path: what it tells them to run must exist and work. Every
//! file its commands name ships with the repository, every relative link resolves, every Glimpse
//! binary its commands call is one its single build step makes, and its loopback cluster runs
//! as written: certificates, two nodes, a front-end with API keys, a classification with the key
//! and a refusal without it.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

/// The workspace's members, from the root Cargo.toml.
fn workspace_members() -> Vec<String> {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).expect("Cargo.toml");
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("a members line");
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The commands (first words of a line or of a `|`/`;`/`&&` segment) that look like ours.
fn glimpse_commands(lines: &[&str]) -> BTreeSet<String> {
    let mut called = BTreeSet::new();
    for line in lines {
        for segment in line.split(['|', ';', '&', '(']) {
            if let Some(word) = segment.split_whitespace().next()
                && word.starts_with("glimpse")
                && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
            {
                called.insert(word.to_string());
            }
        }
    }
    called
}

/// One `cargo build --release --locked` at the root builds every binary (one feature
/// resolution, so Burn is compiled once), one line puts them on PATH, and every Glimpse
/// command the README and EXPERIMENTS.md call is one of those binaries, by name.
#[test]
fn one_build_makes_every_command_the_docs_call() {
    let text = readme();
    let lines = shell_lines(&text);
    assert!(
        lines
            .iter()
            .any(|l| l.split('#').next().unwrap_or_default().trim()
                == "cargo build --release --locked"),
        "the README builds everything with one `cargo build --release --locked`"
    );
    assert!(
        lines.iter().any(|l| l
            .trim_start()
            .starts_with(r#"export PATH="$PWD/target/release:$PATH""#)),
        "the README puts target/release on PATH in one line"
    );
    // `-p`, `cargo run -p` or `cargo install` in a command block resolve features per package
    // and build Burn a second time; the README mentions `cargo install` only as the
    // alternative for a lone binary, in prose, with its cost.
    for line in &lines {
        let command = line.split('#').next().unwrap_or_default();
        let per_package = command.contains("cargo build") && command.contains(" -p ");
        let own_resolution = command.contains("cargo run") || command.contains("cargo install");
        assert!(
            !per_package && !own_resolution,
            "README command builds with its own feature resolution: {line}"
        );
    }
    assert!(
        text.contains("cargo install --locked --path") && text.contains("rebuilds Burn"),
        "the README keeps `cargo install` as the lone-binary alternative, with its cost"
    );

    let mut built = BTreeSet::new();
    for member in workspace_members() {
        built.extend(binaries_of(&repo().join(member)));
    }
    assert!(built.contains("glimpse"), "workspace binaries: {built:?}");
    let experiments =
        std::fs::read_to_string(repo().join("EXPERIMENTS.md")).expect("EXPERIMENTS.md");
    for (doc, text) in [("README.md", &text), ("EXPERIMENTS.md", &experiments)] {
        // Binaries are called by name, from PATH, in both documents: no target/…/glimpse-lab.
        for profile in ["target/debug/glimpse", "target/release/glimpse"] {
            for (at, _) in text.match_indices(profile) {
                let before = &text[..at];
                let line = before.rsplit('\n').next().unwrap_or_default();
                assert!(
                    line.contains("install "),
                    "{doc} calls a binary by its path instead of its name: {line}{profile}…"
                );
            }
        }
        let lines: Vec<&str> = if doc == "README.md" {
            shell_lines(text)
        } else {
            fenced_lines(text)
        };
        let called = glimpse_commands(&lines);
        assert!(!called.is_empty(), "{doc}: no Glimpse command found");
        for command in &called {
            assert!(
                built.contains(command),
                "{doc} calls {command}, which the workspace build does not make ({built:?})"
            );
        }
    }
}

/// The lines inside every ``` fence, whatever its language.
fn fenced_lines(text: &str) -> Vec<&str> {
    let mut inside = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            continue;
        }
        if inside {
            lines.push(line);
        }
    }
    lines
}

/// The first fenced block after the HTML comment that starts with `<!-- MARKER`.
fn marked_block(text: &str, marker: &str) -> String {
    let start = text
        .find(&format!("<!-- {marker}"))
        .unwrap_or_else(|| panic!("README.md has no `<!-- {marker}` comment"));
    let rest = &text[start..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("a fence line") + 1..];
    let close = body.find("\n```").expect("the block's closing fence");
    body[..=close].to_string()
}

/// A port nobody holds right now (TCP or UDP as asked), on loopback.
fn free_port(udp: bool) -> u16 {
    let any = "127.0.0.1:0";
    if udp {
        let s = std::net::UdpSocket::bind(any).expect("a UDP port");
        s.local_addr().expect("its address").port()
    } else {
        let s = std::net::TcpListener::bind(any).expect("a TCP port");
        s.local_addr().expect("its address").port()
    }
}

/// A process group (the recipe's shell and everything it started in the background), killed
/// when this is dropped: on success, on a failed assertion and on a timeout alike.
struct Group(u32);

impl Drop for Group {
    fn drop(&mut self) {
        if let Ok(pgid) = i32::try_from(self.0) {
            // SAFETY: kill(2) with a negative pid signals the group the shell leads.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

/// Collects a pipe on a thread, so neither side can block the other.
fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// The README's one-machine cluster, run with bash exactly as written (from the root of the
/// clone, the binaries of this build on PATH), on free ports passed through the variables the
/// README sets its defaults with. The key classifies; no key is a 401.
#[test]
fn the_loopback_cluster_recipe_runs_as_written() {
    let block = marked_block(&readme(), "readme-test: loopback-cluster");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_glimpse"))
        .parent()
        .expect("the binaries' folder")
        .to_path_buf();
    for bin in ["glimpse", "glimpse-node", "glimpse-certs"] {
        assert!(
            bin_dir.join(bin).is_file(),
            "{bin} is not in {} (build the workspace: cargo build --workspace)",
            bin_dir.display()
        );
    }
    let path = std::env::join_paths(
        std::iter::once(bin_dir.clone()).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )),
    )
    .expect("PATH");
    let (n1, n2, web) = (free_port(true), free_port(true), free_port(false));
    let mut child = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", &block])
        .current_dir(repo())
        .env("PATH", path)
        .env("N1", format!("127.0.0.1:{n1}"))
        .env("N2", format!("127.0.0.1:{n2}"))
        .env("WEB", format!("127.0.0.1:{web}"))
        .env("GLIMPSE_LOG", "warn")
        .env_remove("RUST_LOG")
        .env_remove("GLIMPSE_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("bash runs");
    let group = Group(child.id());
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    // Two nodes make random weights and a front-end starts: seconds, more on a busy machine.
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for bash") {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The nodes and the front-end are still running in the background: stop them all, which
    // also closes the pipes the readers wait on.
    drop(group);
    let _ = child.wait();
    let (out, err) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    let Some(status) = status else {
        panic!("the recipe did not finish within 300 s\nstdout:\n{out}\nstderr:\n{err}")
    };
    assert!(
        status.success(),
        "the recipe failed ({status})\nstdout:\n{out}\nstderr:\n{err}"
    );
    let answer: serde_json::Value = out
        .lines()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON answer to the upload with the key:\n{out}\n{err}"));
    let result = &answer["results"][0];
    assert_eq!(result["status"], "ok", "{answer}");
    assert_eq!(
        result["top"].as_array().map(Vec::len),
        Some(5),
        "five labels: {answer}"
    );
    assert!(
        result["node"] == "n1" || result["node"] == "n2",
        "answered by one of the two nodes: {answer}"
    );
    assert!(
        out.contains("HTTP 401"),
        "without the key the upload is refused with 401:\n{out}"
    );
}
