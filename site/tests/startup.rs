//! Start-up, as a person meets it, with the real binaries: a busy port fails at once (before
//! any model loads) with a message that names the flag to change, and a start-up error is one
//! line without a stack trace whatever RUST_BACKTRACE says, unless `--verbose` or
//! `GLIMPSE_LOG=debug` asks for the details.

use std::net::{IpAddr, Ipv4Addr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster_files::{ClusterFiles, node_binary};

use crate::common;

/// Far above what a start that binds first needs (milliseconds), far below what loading a
/// model first and then failing would risk on a busy machine; the model-load log line is the
/// real check.
const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// What GoogLeNet logs once its weights are loaded (glimpse-model's classifier).
const MODEL_LOADED: &str = "GoogLeNet loaded";

struct Exit {
    success: bool,
    stderr: String,
}

/// Runs `cmd` to its end (killed and failed after [`EXIT_WITHIN`]), with the log at info so a
/// model load would show, and RUST_BACKTRACE=1 as on a developer's machine.
fn run(mut cmd: Command) -> Exit {
    let mut child = cmd
        .env("RUST_BACKTRACE", "1")
        .env("GLIMPSE_LOG", "info")
        .env_remove("RUST_LOG")
        .env_remove("GLIMPSE_CONFIG")
        .env_remove("GLIMPSE_VERBOSE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let started = Instant::now();
    loop {
        if let Some(_status) = child.try_wait().expect("waiting") {
            break;
        }
        if started.elapsed() > EXIT_WITHIN {
            let _ = child.kill();
            let out = child.wait_with_output().expect("its output");
            panic!(
                "still running after {EXIT_WITHIN:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("its output");
    Exit {
        success: out.status.success(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn glimpse() -> Command {
    Command::new(env!("CARGO_BIN_EXE_glimpse"))
}

fn certs_binary() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_glimpse")).with_file_name("glimpse-certs")
}

/// The error is there once, on one line, and nothing else looks like a stack trace.
fn assert_one_error_line(program: &str, exit: &Exit) {
    assert!(!exit.success, "it should fail:\n{}", exit.stderr);
    let errors: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| l.contains("error"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line:\n{}", exit.stderr);
    assert!(
        errors[0].starts_with(&format!("{program}: error: ")),
        "{}",
        exit.stderr
    );
    assert!(
        !exit.stderr.contains("backtrace") && !exit.stderr.contains("Details"),
        "no stack trace without --verbose, even with RUST_BACKTRACE=1:\n{}",
        exit.stderr
    );
}

fn held_tcp() -> (TcpListener, String) {
    let held = TcpListener::bind("127.0.0.1:0").expect("a TCP port");
    let addr = held.local_addr().expect("its address").to_string();
    (held, addr)
}

/// `program` stopped with one error line naming `flag` and the busy address, before its
/// model loaded.
fn assert_refused_before_loading(program: &str, exit: Exit, flag: &str, busy: &str) {
    assert_one_error_line(program, &exit);
    let expected = format!("{flag} {busy}: address in use; pick another with {flag}");
    assert!(
        exit.stderr.contains(&expected),
        "{expected:?} in:\n{}",
        exit.stderr
    );
    assert!(
        !exit.stderr.contains(MODEL_LOADED),
        "the model loaded before {flag} was bound:\n{}",
        exit.stderr
    );
}

#[test]
fn a_busy_front_end_port_fails_before_the_model_loads_and_names_its_flag() {
    for flag in ["--listen", "--grpc-listen", "--admin-listen"] {
        let (_held, busy) = held_tcp();
        let mut cmd = glimpse();
        cmd.args(["--local-workers", "1", "--weights", "random"]);
        if flag != "--listen" {
            cmd.args(["--listen", "127.0.0.1:0"]);
        }
        cmd.args([flag, busy.as_str()]);
        assert_refused_before_loading("glimpse", run(cmd), flag, &busy);
    }
}

#[test]
fn a_busy_node_port_fails_before_the_model_loads_and_names_its_flag() {
    let files = ClusterFiles::new("startup test CA");
    let (cert, key) = files.node("n1", &[IpAddr::V4(Ipv4Addr::LOCALHOST)]);
    let held_udp = UdpSocket::bind("127.0.0.1:0").expect("a UDP port");
    let busy_udp = held_udp.local_addr().expect("its address").to_string();
    let (_held_tcp, busy_tcp) = held_tcp();
    for (flag, listen, admin) in [
        ("--listen", busy_udp.as_str(), None),
        ("--admin-listen", "127.0.0.1:0", Some(busy_tcp.as_str())),
    ] {
        let mut cmd = Command::new(node_binary());
        cmd.args(["serve", "--node-id", "n1", "--weights", "random"])
            .args(["--listen", listen, "--cert", &cert, "--key", &key])
            .args(["--ca", &files.ca_path]);
        if let Some(admin) = admin {
            cmd.args(["--admin-listen", admin]);
        }
        assert_refused_before_loading("glimpse-node", run(cmd), flag, admin.unwrap_or(listen));
    }
}

#[test]
fn verbose_or_a_debug_log_shows_the_details_and_the_stack_trace() {
    for (flag, log) in [(Some("--verbose"), "info"), (None, "debug")] {
        let (_held, busy) = held_tcp();
        let mut cmd = glimpse();
        cmd.args(["--local-workers", "1", "--model", "synthetic"])
            .args(["--listen", busy.as_str()]);
        if let Some(flag) = flag {
            cmd.arg(flag);
        }
        let out = cmd
            .env("GLIMPSE_LOG", log)
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .env_remove("RUST_LOG")
            .env_remove("GLIMPSE_CONFIG")
            .env_remove("GLIMPSE_VERBOSE")
            .stdin(Stdio::null())
            .output()
            .expect("glimpse runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("glimpse: error: --listen")),
            "{stderr}"
        );
        assert!(
            stderr.contains("Details (--verbose)") && stderr.contains("Stack backtrace"),
            "{flag:?} / GLIMPSE_LOG={log}: the details and a stack trace, without RUST_BACKTRACE:\n{stderr}"
        );
    }
}

#[test]
fn a_certs_error_is_one_line_too() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let init = || {
        let mut cmd = Command::new(certs_binary());
        cmd.args(["init", "--dir"])
            .arg(dir.path())
            .args(["--node", "n1=127.0.0.1"]);
        cmd
    };
    let first = run(init());
    assert!(first.success, "{}", first.stderr);
    // A second init would overwrite the CA: refused, in one line, naming the way out.
    let again = run(init());
    assert_one_error_line("glimpse-certs", &again);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
}
