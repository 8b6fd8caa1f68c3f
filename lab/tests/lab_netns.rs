//! `glimpse-lab sweep loss --net netns` end to end: the real binaries (front-end, nodes,
//! baseline workers) in per-worker namespaces behind TUN links, with packet loss on every
//! link. The point of `--net netns` is that the baseline's TCP gets a number under packet
//! loss too; this test fails if it does not, or if any image is lost.
//!
//! Needs root, /dev/net/tun and `ip`, plus the workspace binaries next to glimpse-lab
//! (`cargo nextest run --workspace` builds them); otherwise it prints SKIPPED and returns.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;

const LAB: &str = env!("CARGO_BIN_EXE_glimpse-lab");

#[test]
fn loss_sweep_in_namespaces_measures_both_systems() {
    if let Err(why) = glimpse_netem::tun::check_available() {
        eprintln!("SKIPPED lab netns test: {why} (needs root, /dev/net/tun and ip netns)");
        return;
    }
    let bin_dir = Path::new(LAB).parent().expect("binary has a directory");
    let missing: Vec<&str> = ["glimpse", "glimpse-node", "glimpse-certs"]
        .into_iter()
        .filter(|b| !bin_dir.join(b).is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED lab netns test: {} not built in {} (run `cargo build --workspace`)",
            missing.join(", "),
            bin_dir.display()
        );
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(LAB)
        .args(["sweep", "loss", "--net", "netns", "--quick", "--runs", "1"])
        .args(["--images", "12", "--only", "loss-packet", "--points", "0,5"])
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("glimpse-lab runs");
    // Its namespaces are named after its pid: gl<pid>w<I>.
    let own_prefix = format!("gl{}w", run.id());
    let run = run.wait_with_output().expect("glimpse-lab finishes");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(run.status.success(), "sweep failed (lost images?):\n{text}");

    // raw.csv: one row per (point, system, run); the baseline at 5% must have a result.
    let raw = std::fs::read_to_string(out.path().join("raw.csv")).unwrap();
    let mut lines = raw.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    let (c_x, c_sys, c_lost, c_ips) = (col("x"), col("system"), col("lost"), col("images_per_s"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "2 points × 2 systems:\n{raw}");
    for r in &rows {
        assert_eq!(r[c_lost], "0", "no image lost: {r:?}");
        let ips: f64 = r[c_ips]
            .parse()
            .unwrap_or_else(|_| panic!("a throughput for every row, incl. baseline: {r:?}"));
        assert!(ips > 0.0, "{r:?}");
    }
    assert!(
        rows.iter()
            .any(|r| r[c_sys] == "baseline" && r[c_x].parse::<f64>() == Ok(5.0)),
        "baseline measured at 5% packet loss:\n{raw}"
    );
    let md = std::fs::read_to_string(out.path().join("loss-packet.md")).unwrap();
    assert!(
        md.contains("--net netns"),
        "report names the network mode:\n{md}"
    );
    assert!(!md.contains("n/a"), "no empty cells:\n{md}");

    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let leftover = String::from_utf8_lossy(&ns.stdout).to_string();
    assert!(
        !leftover.lines().any(|l| l.starts_with(&own_prefix)),
        "the lab left namespaces {own_prefix}* behind: {leftover}"
    );
}
