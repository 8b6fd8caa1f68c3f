//! A cluster's certificates on disk, for tests that start real `glimpse-node` and `glimpse`
//! processes: a fresh CA, node certificates on demand and the front-end's client
//! certificate, written into one temporary folder.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// `glimpse-node`, built beside `glimpse` by a workspace build.
pub(crate) fn node_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_glimpse")).with_file_name("glimpse-node");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace (cargo build --workspace), not only glimpse-site",
        bin.display()
    );
    bin
}

/// The folder, the CA and the paths of what has been written into it.
pub(crate) struct ClusterFiles {
    dir: tempfile::TempDir,
    ca: glimpse_certs::ClusterCa,
    /// The CA certificate (PEM), for `--ca` on both sides.
    pub ca_path: String,
    fe_cert: String,
    fe_key: String,
}

impl ClusterFiles {
    /// A new CA named `name`, and a front-end client certificate it signed.
    pub(crate) fn new(name: &str) -> ClusterFiles {
        let dir = tempfile::tempdir().expect("temporary folder");
        let ca = glimpse_certs::ClusterCa::generate(name).expect("CA");
        let fe = ca
            .issue_client("glimpse-frontend")
            .expect("client certificate");
        let ca_path = write(dir.path(), "ca.pem", &ca.cert_pem());
        let fe_cert = write(dir.path(), "frontend.pem", &fe.cert_pem);
        let fe_key = write(dir.path(), "frontend.key", &fe.key_pem);
        ClusterFiles {
            dir,
            ca,
            ca_path,
            fe_cert,
            fe_key,
        }
    }

    /// The folder everything is written into.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `text` as `name` in the folder and returns its path.
    pub(crate) fn write(&self, name: &str, text: &str) -> String {
        write(self.dir.path(), name, text)
    }

    /// A node certificate for `name` (and `ips`), written as `NAME.pem` / `NAME.key`:
    /// returns (certificate path, key path).
    pub(crate) fn node(&self, name: &str, ips: &[IpAddr]) -> (String, String) {
        let issued = self.ca.issue_node(name, ips).expect("node certificate");
        (
            self.write(&format!("{name}.pem"), &issued.cert_pem),
            self.write(&format!("{name}.key"), &issued.key_pem),
        )
    }

    /// `--ca`, `--cert` and `--key` for a front-end that talks to these nodes.
    pub(crate) fn frontend_flags(&self) -> Vec<String> {
        [
            "--ca",
            &self.ca_path,
            "--cert",
            &self.fe_cert,
            "--key",
            &self.fe_key,
        ]
        .map(String::from)
        .to_vec()
    }
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test file");
    path.to_string_lossy().into_owned()
}
