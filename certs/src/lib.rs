//! Certificates for a Glimpse cluster.
//!
//! A Glimpse cluster trusts exactly one thing: its own certificate authority (CA). Every node
//! gets a server certificate for its name (and optionally IP addresses), the front-end gets a
//! client certificate, and the public HTTPS listener gets its own certificate. Nodes accept
//! only clients whose certificate the cluster CA signed; the front-end accepts only nodes whose
//! certificate the CA signed *and* whose name matches the configured one.
//!
//! Everything works in memory (tests, `glimpse --local-workers`) and on disk via
//! [`write_cluster`] / [`issue_node_files`] (the `glimpse-certs` binary).

#![forbid(unsafe_code)]

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub mod k8s;

/// Errors from generating, loading or writing certificates.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or could not sign.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A node name is not usable as a DNS subject alternative name (and file name), or a
    /// `NAME=IP,...` node spec has an IP address that does not parse.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name (or whole node spec) as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// PEM input contained no certificate or key, or could not be parsed.
    #[error("invalid PEM in {what}: {reason}")]
    Pem {
        /// The input that was being parsed: a file path, or a label such as "CA certificate".
        what: String,
        /// The parser's error, or which PEM block was missing.
        reason: String,
    },
    /// A file already exists and `--force` was not given.
    #[error("{0} already exists (use --force to overwrite)")]
    Exists(PathBuf),
    /// A CA directory holds the CA certificate or its key but not both.
    #[error(
        "{present} exists but {missing} does not: restore it, or use an empty directory for a new CA"
    )]
    HalfCa {
        /// The file that is there.
        present: PathBuf,
        /// The file that is missing.
        missing: PathBuf,
    },
    /// Filesystem error while reading or writing `path`.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory being read, written or created.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// A certificate with its private key, both PEM-encoded.
#[derive(Clone)]
pub struct CertifiedKey {
    /// The certificate (leaf only; the chain is just the leaf because the CA is the root).
    pub cert_pem: String,
    /// The PKCS#8 private key. Keep it secret: written with mode 0600.
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    // Never print private keys into logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

impl CertifiedKey {
    /// The certificate chain as rustls wants it.
    pub fn cert_chain(&self) -> Result<Vec<CertificateDer<'static>>, CertError> {
        parse_certs(&self.cert_pem, "certificate")
    }

    /// The private key as rustls wants it.
    pub fn private_key(&self) -> Result<PrivateKeyDer<'static>, CertError> {
        parse_key(&self.key_pem, "private key")
    }
}

/// The cluster certificate authority: signs node, front-end and HTTPS certificates.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    key_pem: String,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// Generate a fresh CA (ECDSA P-256: small, fast handshakes, supported by ring).
    pub fn generate(common_name: &str) -> Result<ClusterCa, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        dn.push(DnType::OrganizationName, "Glimpse cluster");
        params.distinguished_name = dn;
        // pathlen 0: this CA signs leaves only, never another CA.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let cert_pem = cert.pem();
        let key_pem = key.serialize_pem();
        Ok(ClusterCa {
            cert_pem,
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            key_pem,
        })
    }

    /// Load an existing CA from its certificate and key (as written by [`write_cluster`]).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<ClusterCa, CertError> {
        let cert_der = parse_certs(cert_pem, "CA certificate")?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::Pem {
                what: "CA certificate".into(),
                reason: "no certificate found".into(),
            })?;
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)?;
        Ok(ClusterCa {
            cert_pem: cert_pem.to_string(),
            cert_der,
            issuer,
            key_pem: key_pem.to_string(),
        })
    }

    /// The CA certificate in PEM (distribute it to every node and the front-end).
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The CA private key in PEM (only `glimpse-certs` needs it, to issue more certificates).
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// The CA certificate in DER, ready to be a rustls trust root.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert_der.clone()
    }

    /// A node's server certificate: DNS SAN = `name` (what the front-end verifies), plus IP SANs.
    pub fn issue_node(&self, name: &str, ips: &[IpAddr]) -> Result<CertifiedKey, CertError> {
        self.issue(
            name,
            &[name.to_string()],
            ips,
            &[ExtendedKeyUsagePurpose::ServerAuth],
        )
    }

    /// A node certificate with several DNS names: in Kubernetes, one certificate shared by
    /// every node pod, naming the headless Service in all its forms ([`k8s`]). The first name
    /// is the common name.
    pub fn issue_node_names(
        &self,
        names: &[String],
        ips: &[IpAddr],
    ) -> Result<CertifiedKey, CertError> {
        let cn = names.first().ok_or_else(|| CertError::InvalidName {
            name: String::new(),
            reason: "a node certificate needs at least one DNS name".into(),
        })?;
        self.issue(cn, names, ips, &[ExtendedKeyUsagePurpose::ServerAuth])
    }

    /// The front-end's client certificate (nodes refuse any client without one from this CA).
    pub fn issue_client(&self, name: &str) -> Result<CertifiedKey, CertError> {
        self.issue(
            name,
            &[name.to_string()],
            &[],
            &[ExtendedKeyUsagePurpose::ClientAuth],
        )
    }

    /// The public HTTPS listener's certificate. Browsers will not trust the cluster CA unless
    /// the operator imports it; this is for a self-contained default, not the public web.
    pub fn issue_https(&self, names: &[String], ips: &[IpAddr]) -> Result<CertifiedKey, CertError> {
        let cn = names.first().map(String::as_str).unwrap_or("glimpse");
        self.issue(cn, names, ips, &[ExtendedKeyUsagePurpose::ServerAuth])
    }

    fn issue(
        &self,
        common_name: &str,
        dns_names: &[String],
        ips: &[IpAddr],
        eku: &[ExtendedKeyUsagePurpose],
    ) -> Result<CertifiedKey, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, common_name);
        params.distinguished_name = dn;
        for name in dns_names {
            validate_dns_name(name)?;
            let ia5 =
                name.clone()
                    .try_into()
                    .map_err(|e: rcgen::Error| CertError::InvalidName {
                        name: name.clone(),
                        reason: e.to_string(),
                    })?;
            params.subject_alt_names.push(SanType::DnsName(ia5));
        }
        for ip in ips {
            params.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = eku.to_vec();
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertifiedKey {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Node names become DNS SANs and file names (`node-NAME.pem`), so keep them to a safe alphabet.
pub fn validate_dns_name(name: &str) -> Result<(), CertError> {
    let bad = |reason: &str| CertError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > 253 {
        return Err(bad("must be 1..=253 characters"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(bad(
            "use NAME=IP: a node name must be a DNS name, not an address",
        ));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each dot-separated label must be 1..=63 characters"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("labels may not start or end with '-'"));
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad("only ASCII letters, digits, '-' and '.' are allowed"));
        }
    }
    Ok(())
}

/// Parse every certificate in a PEM string.
pub fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::Pem {
            what: what.to_string(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// Parse the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM string.
pub fn parse_key(pem: &str, what: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| CertError::Pem {
        what: what.to_string(),
        reason: match e {
            pem::Error::NoItemsFound => "no PRIVATE KEY block found".into(),
            e => e.to_string(),
        },
    })
}

/// Read a PEM certificate file (e.g. `ca.pem`, `node-a.pem`) into DER certificates.
pub fn load_certs_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let text = read_to_string(path)?;
    parse_certs(&text, &path.display().to_string())
}

/// Read a PEM private key file (e.g. `node-a.key`).
pub fn load_key_file(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let text = read_to_string(path)?;
    parse_key(&text, &path.display().to_string())
}

fn read_to_string(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A node to issue a certificate for: `NAME` or `NAME=IP` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// DNS name the front-end will expect (`--node NAME=HOST:PORT` on the site).
    pub name: String,
    /// Extra IP SANs.
    pub ips: Vec<IpAddr>,
}

impl std::str::FromStr for NodeSpec {
    type Err = CertError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, ips) = match s.split_once('=') {
            Some((name, ips)) => {
                let ips = ips
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        p.parse::<IpAddr>().map_err(|e| CertError::InvalidName {
                            name: s.to_string(),
                            reason: format!("bad IP address {p:?}: {e}"),
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (name, ips)
            }
            None => (s, Vec::new()),
        };
        validate_dns_name(name)?;
        Ok(NodeSpec {
            name: name.to_string(),
            ips,
        })
    }
}

/// File names inside a certificate directory.
pub mod files {
    /// Cluster CA certificate.
    pub const CA_CERT: &str = "ca.pem";
    /// Cluster CA private key.
    pub const CA_KEY: &str = "ca.key";
    /// Front-end client certificate.
    pub const FRONTEND_CERT: &str = "frontend.pem";
    /// Front-end client key.
    pub const FRONTEND_KEY: &str = "frontend.key";
    /// HTTPS listener certificate.
    pub const HTTPS_CERT: &str = "https.pem";
    /// HTTPS listener key.
    pub const HTTPS_KEY: &str = "https.key";

    /// `node-NAME.pem`
    pub fn node_cert(name: &str) -> String {
        format!("node-{name}.pem")
    }

    /// `node-NAME.key`
    pub fn node_key(name: &str) -> String {
        format!("node-{name}.key")
    }
}

/// Create a whole cluster's certificates in `dir`: CA, one per node, front-end client, HTTPS.
///
/// Refuses to overwrite any existing file unless `force` (checked before anything is written,
/// so a refusal leaves the directory untouched). Returns the paths written.
pub fn write_cluster(
    dir: &Path,
    nodes: &[NodeSpec],
    site_names: &[String],
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    let mut names: Vec<String> = vec![
        files::CA_CERT.into(),
        files::CA_KEY.into(),
        files::FRONTEND_CERT.into(),
        files::FRONTEND_KEY.into(),
        files::HTTPS_CERT.into(),
        files::HTTPS_KEY.into(),
    ];
    for n in nodes {
        names.push(files::node_cert(&n.name));
        names.push(files::node_key(&n.name));
    }
    create_dir(dir)?;
    check_absent(dir, &names, force)?;

    let ca = ClusterCa::generate("Glimpse cluster CA")?;
    let mut written = Vec::new();
    written.push(write_file(dir, files::CA_CERT, &ca.cert_pem(), false)?);
    written.push(write_file(dir, files::CA_KEY, &ca.key_pem(), true)?);
    for n in nodes {
        let ck = ca.issue_node(&n.name, &n.ips)?;
        written.extend(write_pair(
            dir,
            &files::node_cert(&n.name),
            &files::node_key(&n.name),
            &ck,
        )?);
    }
    let client = ca.issue_client("glimpse-frontend")?;
    written.extend(write_pair(
        dir,
        files::FRONTEND_CERT,
        files::FRONTEND_KEY,
        &client,
    )?);
    let mut https_names: Vec<String> = site_names.to_vec();
    if https_names.is_empty() {
        https_names.push("localhost".into());
    }
    let loopback: Vec<IpAddr> = vec![
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    ];
    let https = ca.issue_https(&https_names, &loopback)?;
    written.extend(write_pair(
        dir,
        files::HTTPS_CERT,
        files::HTTPS_KEY,
        &https,
    )?);
    Ok(written)
}

/// The CA in `dir` (`ca.pem` + `ca.key`), or a new one written there when neither exists.
/// Returns the CA and whether it was created. Half a CA (one file without the other) is an
/// error rather than silently replaced: every certificate it signed would stop verifying.
pub fn load_or_create_ca(dir: &Path) -> Result<(ClusterCa, bool), CertError> {
    let cert = dir.join(files::CA_CERT);
    let key = dir.join(files::CA_KEY);
    match (cert.exists(), key.exists()) {
        (true, true) => Ok((
            ClusterCa::load(&read_to_string(&cert)?, &read_to_string(&key)?)?,
            false,
        )),
        (false, false) => {
            create_dir(dir)?;
            let ca = ClusterCa::generate("Glimpse cluster CA")?;
            write_file(dir, files::CA_CERT, &ca.cert_pem(), false)?;
            write_file(dir, files::CA_KEY, &ca.key_pem(), true)?;
            Ok((ca, true))
        }
        (true, false) => Err(CertError::HalfCa {
            present: cert,
            missing: key,
        }),
        (false, true) => Err(CertError::HalfCa {
            present: key,
            missing: cert,
        }),
    }
}

/// Issue one more node certificate with the CA already in `dir`.
pub fn issue_node_files(
    dir: &Path,
    node: &NodeSpec,
    force: bool,
) -> Result<Vec<PathBuf>, CertError> {
    let cert_name = files::node_cert(&node.name);
    let key_name = files::node_key(&node.name);
    check_absent(dir, &[cert_name.clone(), key_name.clone()], force)?;
    let ca = ClusterCa::load(
        &read_to_string(&dir.join(files::CA_CERT))?,
        &read_to_string(&dir.join(files::CA_KEY))?,
    )?;
    let ck = ca.issue_node(&node.name, &node.ips)?;
    write_pair(dir, &cert_name, &key_name, &ck)
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn check_absent(dir: &Path, names: &[String], force: bool) -> Result<(), CertError> {
    if force {
        return Ok(());
    }
    for name in names {
        let path = dir.join(name);
        if path.exists() {
            return Err(CertError::Exists(path));
        }
    }
    Ok(())
}

fn write_pair(
    dir: &Path,
    cert_name: &str,
    key_name: &str,
    ck: &CertifiedKey,
) -> Result<Vec<PathBuf>, CertError> {
    Ok(vec![
        write_file(dir, cert_name, &ck.cert_pem, false)?,
        write_file(dir, key_name, &ck.key_pem, true)?,
    ])
}

/// Write a file; secrets are created with mode 0600 from the start (never world-readable,
/// not even for an instant), and an overwritten secret is re-restricted too.
fn write_file(dir: &Path, name: &str, contents: &str, secret: bool) -> Result<PathBuf, CertError> {
    let path = dir.join(name);
    let io_err = |source| CertError::Io {
        path: path.clone(),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = opts.open(&path).map_err(io_err)?;
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err)?;
    }
    f.write_all(contents.as_bytes()).map_err(io_err)?;
    f.sync_all().map_err(io_err)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_spec_parses_name_and_ips() {
        let s: NodeSpec = "node-a=127.0.0.1,::1".parse().unwrap();
        assert_eq!(s.name, "node-a");
        assert_eq!(s.ips.len(), 2);
        let s: NodeSpec = "b".parse().unwrap();
        assert!(s.ips.is_empty());
        assert!("bad name".parse::<NodeSpec>().is_err());
        assert!("a=notanip".parse::<NodeSpec>().is_err());
        assert!("../evil".parse::<NodeSpec>().is_err());
        assert!("127.0.0.1".parse::<NodeSpec>().is_err());
    }

    #[test]
    fn issued_certs_parse_and_ca_round_trips() {
        let ca = ClusterCa::generate("test").unwrap();
        let node = ca
            .issue_node("node-a", &["127.0.0.1".parse().unwrap()])
            .unwrap();
        assert_eq!(node.cert_chain().unwrap().len(), 1);
        node.private_key().unwrap();
        let loaded = ClusterCa::load(&ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(loaded.cert_der(), ca.cert_der());
        let client = loaded.issue_client("fe").unwrap();
        assert!(client.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(format!("{client:?}").contains("redacted"));
        assert!(!format!("{client:?}").contains("PRIVATE KEY"));
    }

    #[test]
    fn load_rejects_garbage() {
        assert!(ClusterCa::load("nope", "nope").is_err());
        let ca = ClusterCa::generate("x").unwrap();
        assert!(ClusterCa::load(&ca.cert_pem(), "not a key").is_err());
    }
}
