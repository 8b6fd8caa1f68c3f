//! The `glimpse-certs` binary: files, permissions, overwrite protection, `issue`, and that the
//! certificates it writes actually verify against its CA.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use glimpse_certs::{load_certs_file, load_key_file};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{ServerName, UnixTime};

fn certs() -> Command {
    Command::new(env!("CARGO_BIN_EXE_glimpse-certs"))
}

fn verify_server(dir: &Path, cert_file: &str, name: &str) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for c in load_certs_file(&dir.join("ca.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let chain = load_certs_file(&dir.join(cert_file)).unwrap();
    verifier
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from(name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_every_file_with_private_keys_0600() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let out = certs()
        .args(["init", "--dir"])
        .arg(&dir)
        .args([
            "--node",
            "node-a=127.0.0.1",
            "--node",
            "node-b",
            "--site-name",
            "glimpse.test",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "ca.pem",
        "ca.key",
        "node-node-a.pem",
        "node-node-a.key",
        "node-node-b.pem",
        "node-node-b.key",
        "frontend.pem",
        "frontend.key",
        "https.pem",
        "https.key",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
        #[cfg(unix)]
        if f.ends_with(".key") {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
    }
    load_key_file(&dir.join("node-node-a.key")).unwrap();
    verify_server(&dir, "node-node-a.pem", "node-a").unwrap();
    verify_server(&dir, "node-node-a.pem", "127.0.0.1").unwrap();
    verify_server(&dir, "node-node-b.pem", "node-b").unwrap();
    // A node certificate is not valid for another node's name.
    assert!(verify_server(&dir, "node-node-b.pem", "node-a").is_err());
    verify_server(&dir, "https.pem", "glimpse.test").unwrap();
    verify_server(&dir, "https.pem", "127.0.0.1").unwrap();
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let run = |force: bool| {
        let mut c = certs();
        c.args(["init", "--dir"]).arg(dir).args(["--node", "a"]);
        if force {
            c.arg("--force");
        }
        c.output().unwrap()
    };
    assert!(run(false).status.success());
    let ca_before = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let again = run(false);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        ca_before,
        "CA overwritten"
    );
    assert!(run(true).status.success());
    assert_ne!(
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        ca_before
    );
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("ca.key")), 0o600);
}

#[test]
fn issue_adds_a_node_signed_by_the_existing_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(
        certs()
            .args(["init", "--dir"])
            .arg(dir)
            .output()
            .unwrap()
            .status
            .success()
    );
    let ca_before = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let out = certs()
        .args(["issue", "--dir"])
        .arg(dir)
        .args(["--node", "late=10.1.2.3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        ca_before
    );
    verify_server(dir, "node-late.pem", "late").unwrap();
    verify_server(dir, "node-late.pem", "10.1.2.3").unwrap();
    #[cfg(unix)]
    assert_eq!(mode(&dir.join("node-late.key")), 0o600);
    // Again without --force: refused.
    let again = certs()
        .args(["issue", "--dir"])
        .arg(dir)
        .args(["--node", "late"])
        .output()
        .unwrap();
    assert!(!again.status.success());
}

#[test]
fn bad_names_and_missing_ca_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let bad = certs()
        .args(["init", "--dir"])
        .arg(dir)
        .args(["--node", "../etc/passwd"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(!dir.join("ca.pem").exists());
    let no_ca = certs()
        .args(["issue", "--dir"])
        .arg(dir)
        .args(["--node", "x"])
        .output()
        .unwrap();
    assert!(!no_ca.status.success());
    assert!(String::from_utf8_lossy(&no_ca.stderr).contains("ca.pem"));
}

/// The PEM values of `glimpse-certs k8s` output, by (Secret name, key), read as a kubelet
/// would mount them: each `  key: |` line, then the lines indented by four spaces.
fn k8s_secret_files(yaml: &str) -> std::collections::BTreeMap<(String, String), String> {
    let mut files = std::collections::BTreeMap::new();
    let mut secret = String::new();
    let mut current: Option<(String, String)> = None;
    for line in yaml.lines() {
        if let Some(v) = line.strip_prefix("    ")
            && let Some(key) = &current
        {
            files
                .entry(key.clone())
                .or_insert_with(String::new)
                .push_str(&format!("{v}\n"));
            continue;
        }
        current = None;
        if let Some(name) = line.strip_prefix("  name: ") {
            secret = name.to_string();
        } else if let Some(key) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(": |")) {
            current = Some((secret.clone(), key.to_string()));
        }
    }
    files
}

#[test]
fn k8s_secrets_verify_for_the_service_names_and_reuse_the_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let ca_dir = tmp.path().join("ca");
    let run = || {
        let out = certs()
            .args(["k8s", "--namespace", "prod", "--node-service", "workers"])
            .args(["--site-name", "glimpse.example.com", "--ca-dir"])
            .arg(&ca_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        k8s_secret_files(&String::from_utf8(out.stdout).unwrap())
    };
    let first = run();
    let key = |s: &str, k: &str| (s.to_string(), k.to_string());
    let ca = &first[&key("glimpse-ca", "ca.crt")];
    assert_eq!(*ca, std::fs::read_to_string(ca_dir.join("ca.pem")).unwrap());
    #[cfg(unix)]
    assert_eq!(mode(&ca_dir.join("ca.key")), 0o600);
    assert_eq!(first[&key("glimpse-node-tls", "ca.crt")], *ca);
    assert_eq!(first[&key("glimpse-frontend-client", "ca.crt")], *ca);

    // Write them as files and verify them like the front-end and a browser would.
    let dir = tmp.path().join("mounted");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca).unwrap();
    std::fs::write(
        dir.join("node.pem"),
        &first[&key("glimpse-node-tls", "tls.crt")],
    )
    .unwrap();
    std::fs::write(
        dir.join("https.pem"),
        &first[&key("glimpse-https", "tls.crt")],
    )
    .unwrap();
    for name in [
        "workers",
        "workers.prod",
        "workers.prod.svc",
        "workers.prod.svc.cluster.local",
    ] {
        verify_server(&dir, "node.pem", name).unwrap();
    }
    assert!(verify_server(&dir, "node.pem", "workers.other.svc.cluster.local").is_err());
    assert!(verify_server(&dir, "node.pem", "glimpse.prod.svc").is_err());
    for name in [
        "glimpse.prod.svc",
        "glimpse.example.com",
        "localhost",
        "127.0.0.1",
    ] {
        verify_server(&dir, "https.pem", name).unwrap();
    }
    for (s, k) in [
        ("glimpse-node-tls", "tls.key"),
        ("glimpse-frontend-client", "tls.key"),
        ("glimpse-https", "tls.key"),
    ] {
        glimpse_certs::parse_key(&first[&key(s, k)], k).unwrap();
    }
    // The CA key stays in --ca-dir, never in the output.
    let ca_key = std::fs::read_to_string(ca_dir.join("ca.key")).unwrap();
    let ca_key_body = ca_key.lines().nth(1).unwrap();
    assert!(first.values().all(|pem| !pem.contains(ca_key_body)));

    // A second run signs new leaves with the same CA (the running cluster still trusts them).
    let second = run();
    assert_eq!(second[&key("glimpse-ca", "ca.crt")], *ca);
    assert_ne!(
        second[&key("glimpse-node-tls", "tls.key")],
        first[&key("glimpse-node-tls", "tls.key")]
    );
}

#[test]
fn k8s_refuses_half_a_ca_and_bad_names() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ca.pem"), "x").unwrap();
    let half = certs()
        .args(["k8s", "--ca-dir"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!half.status.success());
    assert!(String::from_utf8_lossy(&half.stderr).contains("ca.key"));
    let bad = certs()
        .args(["k8s", "--namespace", "Prod.x"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(bad.stdout.is_empty());
}
