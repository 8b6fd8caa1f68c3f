//! `glimpse-lab placement` end to end: real `glimpse-node` processes (one of them 5× slower)
//! behind a real `glimpse` front-end started once with `--placement least-outstanding` and
//! once with `--placement expected-finish`, open-loop load through the JSON API, the
//! simulated twin beside it, and the report's files.
//!
//! What it checks is what the experiment exists to show, with margins a loaded machine keeps:
//! every request answered under both placements; the slow node's share of the images at most
//! a quarter of a full-speed node's under expected-finish (about 0.1 with these 4 nodes and
//! short runs on a quiet machine), and under two thirds of its share under least-outstanding
//! (about 0.25: blind to speed). No latency is asserted: timing is for the experiment's
//! report, not for a test.
//!
//! Needs the workspace binaries next to glimpse-lab (`cargo nextest run --workspace` builds
//! them); otherwise it prints SKIPPED and returns, except under CI (`CI` set), where a
//! missing binary fails.

use std::process::Command;

use crate::common;

const LAB: &str = env!("CARGO_BIN_EXE_glimpse-lab");

#[test]
fn a_slow_node_loses_its_share_under_expected_finish_but_not_least_outstanding() {
    let Some(bin_dir) = common::workspace_bins(LAB, "placement test") else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let run = Command::new(LAB)
        .args([
            "placement",
            "--nodes",
            "4",
            "--runs",
            "1",
            "--sim-runs",
            "2",
        ])
        .args(["--warmup", "2", "--duration", "8"])
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "glimpse-lab placement failed:\n{stderr}"
    );

    let text = std::fs::read_to_string(out.path().join("placement.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 2, "one run per placement:\n{text}");
    let share = |placement: &str| -> f64 {
        let row = rows
            .iter()
            .find(|r| r[col("placement")] == placement)
            .unwrap_or_else(|| panic!("no {placement} run:\n{text}"));
        let sent: u64 = row[col("sent")].parse().unwrap();
        assert!(
            sent > 100,
            "{placement}: only {sent} requests sent:\n{text}"
        );
        assert_eq!(row[col("ok")], row[col("sent")], "{placement}:\n{text}");
        assert_eq!(row[col("failed")], "0", "{placement}:\n{text}");
        // The front-end placed something on every node, and the CSV lists all four.
        let served: Vec<u64> = row[col("served_per_node")]
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        assert_eq!(served.len(), 4, "{placement}:\n{text}");
        assert!(served[..3].iter().all(|&n| n > 0), "{placement}:\n{text}");
        row[col("slow_share")].parse().unwrap()
    };
    let (blind, seeing) = (share("least-outstanding"), share("expected-finish"));
    assert!(
        seeing <= 0.25,
        "expected-finish gave the slow node {seeing}:\n{text}"
    );
    // A broken expected-finish that placed like least-outstanding would give the same share.
    assert!(
        seeing * 1.5 < blind,
        "expected-finish ({seeing}) should give the slow node well under least-outstanding's share ({blind}):\n{text}"
    );

    let md = std::fs::read_to_string(out.path().join("placement.md")).unwrap();
    assert!(md.contains("## The simulated twin"), "{md}");
    for p in ["least-outstanding", "expected-finish"] {
        assert!(md.matches(&format!("| {p} |")).count() >= 3, "{p}:\n{md}");
    }
    for plot in ["placement.png", "placement.svg"] {
        assert!(
            out.path().join(plot).metadata().unwrap().len() > 1000,
            "{plot}"
        );
    }
}
