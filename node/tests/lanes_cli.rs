//! `--threads` and `--lanes` on real `glimpse-node` processes: both subcommands document them
//! with their environment variables, refuse impossible combinations with a clear one-line
//! error, take them from the environment and a `--config` file, and a GoogLeNet node with two
//! lanes answers real images over QUIC and reports its lanes on `/metrics`.

use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Cluster, NodeProc, http_get, metric};

use crate::common;

const BIN: &str = env!("CARGO_BIN_EXE_glimpse-node");
const LONG: Duration = Duration::from_secs(120);

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("GLIMPSE_NODE_THREADS")
        .env_remove("GLIMPSE_NODE_LANES")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run glimpse-node")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixture(name: &str) -> String {
    format!(
        "{}/../model/tests/fixtures/images/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn help_lists_threads_and_lanes_with_their_environment_variables() {
    for sub in ["serve", "classify"] {
        let out = run(&[sub, "--help"], &[]);
        assert!(out.status.success(), "{sub} --help failed");
        let help = text(&out.stdout);
        for needle in [
            "--threads <N>",
            "GLIMPSE_NODE_THREADS",
            "available_parallelism",
            "--lanes <L>",
            "GLIMPSE_NODE_LANES",
            "Default: one lane per thread",
        ] {
            assert!(
                help.contains(needle),
                "{sub} --help lacks {needle:?}:\n{help}"
            );
        }
    }
}

/// Flags, environment, and the message expected on stderr.
type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn impossible_combinations_are_refused_with_a_clear_message() {
    let cluster = Cluster::new();
    let (cert, key) = cluster.node_files("n1");
    let ca = cluster.path("ca.pem");
    let (cert, key, ca) = (
        cert.to_str().expect("utf-8"),
        key.to_str().expect("utf-8"),
        ca.to_str().expect("utf-8"),
    );
    let image = fixture("landscape.jpg");
    let serve = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--cert",
            cert,
            "--key",
            key,
            "--ca",
            ca,
            "--model",
            "synthetic",
        ];
        args.extend_from_slice(extra);
        run(&args, env)
    };
    let classify = |extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["classify", "--weights", "random"];
        args.extend_from_slice(extra);
        args.push(&image);
        run(&args, env)
    };
    let cases: [Case; 4] = [
        (&["--lanes", "0"], &[], "--lanes must be at least 1"),
        (&["--threads", "0"], &[], "--threads must be at least 1"),
        (
            &["--lanes", "3", "--threads", "2"],
            &[],
            "--lanes 3 is more than --threads 2",
        ),
        (
            &[],
            &[("GLIMPSE_NODE_LANES", "3"), ("GLIMPSE_NODE_THREADS", "2")],
            "--lanes 3 is more than --threads 2",
        ),
    ];
    for (extra, env, message) in cases {
        for (sub, out) in [
            ("serve", serve(extra, env)),
            ("classify", classify(extra, env)),
        ] {
            let stderr = text(&out.stderr);
            assert!(
                !out.status.success(),
                "{sub} {extra:?} {env:?} succeeded: {stderr}"
            );
            assert!(
                stderr.contains(message),
                "{sub} {extra:?} {env:?}: expected {message:?} in:\n{stderr}"
            );
            assert_eq!(
                stderr.trim().lines().count(),
                1,
                "{sub}: not one line:\n{stderr}"
            );
        }
    }
    // Not a number: clap's own error names the flag.
    let out = serve(&["--lanes", "two"], &[]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--lanes"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn classify_runs_batches_on_every_lane() {
    // Eight copies of one image in batches of one on two lanes: every image is answered, each
    // by lane 0 or 1, and the same image gets the same labels whichever lane ran it.
    let image = fixture("landscape.jpg");
    let mut args = vec![
        "classify",
        "--weights",
        "random:3",
        "--json",
        "--max-batch",
        "1",
    ];
    args.extend(std::iter::repeat_n(image.as_str(), 8));
    let out = run(
        &args,
        &[("GLIMPSE_NODE_THREADS", "2"), ("GLIMPSE_NODE_LANES", "2")],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("JSON");
    let entries = v.as_array().expect("array");
    assert_eq!(entries.len(), 8);
    let first_top = &entries[0]["top"];
    for e in entries {
        let t = &e["timings_ms"];
        assert!(t["lane"].as_u64().expect("lane") < 2, "{e}");
        assert_eq!(t["batch_size"], 1);
        assert!(t["batch_started"].as_f64().expect("batch_started") >= 0.0);
        assert_eq!(&e["top"], first_top);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_lane_googlenet_node_from_a_config_file_answers_and_reports_its_lanes() {
    let cluster = Cluster::new();
    let admin = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let config = cluster.path("node.toml");
    std::fs::write(
        &config,
        format!("admin-listen = \"{admin}\"\nthreads = 2\nlanes = 2\nmax-batch = 2\n"),
    )
    .expect("write config");
    let config = config.to_str().expect("utf-8 path").to_string();
    let node = NodeProc::spawn_googlenet(
        &cluster,
        "n1",
        "127.0.0.1:0".parse().expect("addr"),
        &["--config", &config],
    );
    let page = http_get(admin, "/metrics").1;
    assert_eq!(metric(&page, "glimpse_worker_lanes"), Some(2.0), "{page}");
    assert_eq!(metric(&page, "glimpse_worker_threads"), Some(2.0), "{page}");
    let log = node.log_text();
    assert!(
        log.contains("threads=2") && log.contains("lanes=2") && log.contains("[1, 1]"),
        "start line lacks the lanes:\n{log}"
    );

    let d = cluster.dispatcher(&[("n1", node.addr)]);
    assert!(d.wait_ready(1, LONG).await);
    let image = bytes::Bytes::from(std::fs::read(fixture("landscape.jpg")).expect("fixture"));
    let mut pending = Vec::new();
    for _ in 0..6 {
        let d = d.clone();
        let image = image.clone();
        pending.push(tokio::spawn(
            async move { d.classify(image, 5, |_| {}).await },
        ));
    }
    let mut answers = Vec::new();
    for p in pending {
        let answer = p.await.expect("task").expect("classified");
        answers.push(
            answer
                .answer
                .top
                .iter()
                .map(|l| l.index)
                .collect::<Vec<_>>(),
        );
    }
    // The same image gets the same labels from either lane.
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(
        metric(
            &http_get(admin, "/metrics").1,
            "glimpse_worker_answered_total"
        ),
        Some(6.0)
    );
}
