//! The lab's namespace testbeds end to end, with the real binaries behind TUN links:
//! * `glimpse-lab sweep loss --net netns`: front-end, nodes and baseline workers in
//!   per-worker namespaces, packet loss on every link. The point of `--net netns` is that the
//!   baseline's TCP gets a number under packet loss too; the test fails if it does not, or
//!   if any image is lost.
//! * `glimpse-lab uplink`: a front-end in a namespace, bursts of uploads over HTTP/2 and
//!   HTTP/3 across a lossy link; every image answered, the loss really applied.
//!
//! Needs root, /dev/net/tun and `ip`, plus the workspace binaries next to glimpse-lab
//! (`cargo nextest run --workspace` builds them); otherwise it prints SKIPPED and returns.
#![cfg(target_os = "linux")]

use std::path::Path;
use std::process::Command;

use crate::common;

const LAB: &str = env!("CARGO_BIN_EXE_glimpse-lab");

/// A CSV report: a column's index by its header name, and the rows' fields.
fn csv(text: &str) -> (impl Fn(&str) -> usize + '_, Vec<Vec<&str>>) {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header line").split(',').collect();
    let rows = lines.map(|l| l.split(',').collect()).collect();
    let col = move |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name} in {header:?}"))
    };
    (col, rows)
}

#[test]
fn loss_sweep_in_namespaces_measures_both_systems() {
    if let Err(why) = glimpse_netem::tun::check_available() {
        eprintln!("SKIPPED lab netns test: {why} (needs root, /dev/net/tun and ip netns)");
        return;
    }
    let Some(bin_dir) = common::workspace_bins(LAB, "lab netns test") else {
        return;
    };
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
    let (col, rows) = csv(&raw);
    let (c_x, c_sys, c_lost, c_ips) = (col("x"), col("system"), col("lost"), col("images_per_s"));
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

#[test]
fn uplink_compares_http2_and_http3_across_a_lossy_link() {
    if let Err(why) = glimpse_netem::tun::check_available() {
        eprintln!("SKIPPED uplink test: {why} (needs root, /dev/net/tun and ip netns)");
        return;
    }
    let bin_dir = Path::new(LAB).parent().expect("binary has a directory");
    if !bin_dir.join("glimpse").is_file() {
        eprintln!("SKIPPED uplink test: no glimpse in {}", bin_dir.display());
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(LAB)
        .args(["uplink", "--loss", "0,5", "--runs", "1", "--burst", "6"])
        .args(["--congestion", "bbr"])
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("glimpse-lab runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        run.status.success(),
        "uplink failed (lost images?):\n{text}"
    );

    // uplink.csv: one row per (loss, protocol, run), every image answered, and the link
    // really dropped packets at 5% (and none at 0%).
    let text = std::fs::read_to_string(out.path().join("uplink.csv")).unwrap();
    let (col, rows) = csv(&text);
    assert_eq!(rows.len(), 4, "2 loss rates × 2 protocols:\n{text}");
    let mut protocols: Vec<&str> = rows.iter().map(|r| r[col("http")]).collect();
    protocols.sort_unstable();
    assert_eq!(protocols, ["h2", "h2", "h3", "h3"], "{text}");
    for r in &rows {
        assert_eq!(r[col("answered")], "6", "{r:?}");
        assert_eq!(r[col("failed")], "0", "{r:?}");
        let total: f64 = r[col("total_s")].parse().unwrap();
        // 50 ms of round trip: no burst can finish sooner.
        assert!(total >= 0.05, "{r:?}");
        let dropped: u64 = r[col("dropped_up")].parse().unwrap();
        let sent: u64 = r[col("packets_up")].parse().unwrap();
        assert!(
            sent >= 6 * 50,
            "six ~80 KB images are hundreds of packets: {r:?}"
        );
        if r[col("loss")] == "0" {
            assert_eq!(dropped, 0, "{r:?}");
        }
    }
    let dropped_at_5: u64 = rows
        .iter()
        .filter(|r| r[col("loss")] == "0.05")
        .map(|r| r[col("dropped_up")].parse::<u64>().unwrap())
        .sum();
    assert!(dropped_at_5 > 0, "5% loss dropped nothing:\n{text}");
    let md = std::fs::read_to_string(out.path().join("uplink.md")).unwrap();
    assert!(md.contains("| 5% |"), "{md}");
    for plot in ["uplink-total.png", "uplink-p99.svg"] {
        assert!(out.path().join(plot).is_file(), "{plot}");
    }
}
