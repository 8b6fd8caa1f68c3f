//! The namespace testbed end to end: `testbed.sh up`, `impair.sh` (tc netem where the kernel
//! has it, otherwise the iptables + relay fallback), `impair.sh clear`, `testbed.sh down`.
//!
//! Needs root, `ip netns` and iptables; where any is missing the test says so and returns
//! (it cannot be run meaningfully there). Addresses are only those inside the namespaces it
//! creates, and a guard tears the testbed down even when an assertion fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

fn scripts() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts")
}

const RELAY: &str = env!("CARGO_BIN_EXE_glimpse-relay");

fn sh(prefix: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("bash")
        .args(args)
        .env("GLIMPSE_NETNS_PREFIX", prefix)
        .env("GLIMPSE_RELAY_BIN", RELAY)
        .current_dir(scripts())
        .output()
        .expect("bash runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `glimpse-relay probe` inside a namespace; returns (loss, median rtt ms).
fn probe(ns: &str, target: &str, count: u32) -> (f64, f64) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, RELAY, "probe", "--target", target])
        .args(["--count", &count.to_string(), "--timeout-ms", "700"])
        .output()
        .expect("ip netns exec runs");
    let line = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |k: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no {k} in {line:?} / {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
    };
    (field("loss="), field("median_rtt_ms="))
}

struct Teardown {
    prefix: String,
    echo: Option<Child>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(mut c) = self.echo.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let (ok, text) = sh(&self.prefix, &["testbed.sh", "down"]);
        if !ok {
            eprintln!("teardown: {text}");
        }
    }
}

fn usable() -> Result<(), String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| e.to_string())?;
    if String::from_utf8_lossy(&root.stdout).trim() != "0" {
        return Err("not root".into());
    }
    for (cmd, args) in [
        ("ip", &["netns", "list"][..]),
        ("iptables", &["--version"][..]),
    ] {
        let ok = Command::new(cmd)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(format!("`{cmd}` unavailable"));
        }
    }
    Ok(())
}

#[test]
fn testbed_impair_fallback_and_teardown() {
    if let Err(why) = usable() {
        eprintln!("SKIPPED testbed test: {why} (needs root, ip netns and iptables)");
        return;
    }
    let prefix = format!("gt{}", std::process::id());
    let fe = format!("{prefix}-fe");
    let w1 = format!("{prefix}-w1");
    let mut guard = Teardown {
        prefix: prefix.clone(),
        echo: None,
    };
    let (ok, text) = sh(&prefix, &["testbed.sh", "up", "2"]);
    assert!(ok, "testbed up: {text}");

    guard.echo = Some(
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &w1,
                RELAY,
                "echo",
                "--listen",
                "10.10.1.2:9000",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("echo server starts"),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (loss, _) = probe(&fe, "10.10.1.2:9000", 20);
    assert_eq!(loss, 0.0, "clean link");

    let (_, check) = sh(&prefix, &["impair.sh", "check"]);
    let netem = check.contains("available");
    let (ok, text) = sh(
        &prefix,
        &[
            "impair.sh",
            "set",
            "1",
            "delay",
            "100",
            "loss",
            "30",
            "--udp-port",
            "9000",
        ],
    );
    assert!(ok, "impair: {text}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // 30% on each end: a round trip survives with probability 0.7² = 0.49.
    let target = if netem {
        "10.10.1.2:9000"
    } else {
        "127.0.0.1:9001"
    };
    if !netem {
        assert!(text.contains("no sch_netem"), "fallback announced: {text}");
    }
    let (loss, rtt) = probe(&fe, target, 120);
    assert!(
        (0.30..=0.72).contains(&loss),
        "round-trip loss {loss} ({text})"
    );
    assert!(rtt >= 195.0, "median rtt {rtt} ms with 100 ms each way");

    let (ok, text) = sh(&prefix, &["impair.sh", "clear", "1"]);
    assert!(ok, "clear: {text}");
    let (loss, rtt) = probe(&fe, "10.10.1.2:9000", 30);
    assert_eq!(loss, 0.0, "cleared link");
    assert!(rtt < 100.0);

    drop(guard);
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip runs");
    assert!(
        !String::from_utf8_lossy(&list.stdout).contains(&prefix),
        "namespaces removed"
    );
}
