//! `glimpse-certs`: create and extend a Glimpse cluster's certificates on disk.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use glimpse_certs::k8s::{K8sLayout, k8s_secrets};
use glimpse_certs::{ClusterCa, NodeSpec, issue_node_files, load_or_create_ca, write_cluster};

/// Create a cluster CA and the certificates nodes, the front-end and the HTTPS site need.
#[derive(Debug, Parser)]
#[command(name = "glimpse-certs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: glimpse_ops::LogArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a new CA plus node, front-end client and HTTPS certificates in DIR.
    ///
    /// Writes ca.pem ca.key node-NAME.pem node-NAME.key frontend.pem frontend.key https.pem
    /// https.key; private keys get mode 0600. Refuses to overwrite any of them unless --force.
    Init {
        /// Directory to write into (created if missing).
        #[arg(long, env = "GLIMPSE_CERTS_DIR")]
        dir: PathBuf,
        /// A node: NAME or NAME=IP[,IP...]. The front-end verifies the node's certificate against
        /// NAME, so use the same NAME in the site's --node NAME=HOST:PORT. Repeat per node; none
        /// by default (add them later with `issue`).
        #[arg(long = "node", env = "GLIMPSE_CERTS_NODES", value_delimiter = ' ')]
        nodes: Vec<NodeSpec>,
        /// DNS names for the site's HTTPS certificate. Default: localhost (the certificate
        /// always also covers 127.0.0.1 and ::1).
        #[arg(
            long = "site-name",
            env = "GLIMPSE_CERTS_SITE_NAMES",
            value_delimiter = ' '
        )]
        site_names: Vec<String>,
        /// Overwrite existing files. Default off: overwriting a CA invalidates every
        /// certificate it signed, so it must be deliberate.
        #[arg(long, env = "GLIMPSE_CERTS_FORCE")]
        force: bool,
    },
    /// Issue a certificate for one more node, signed by the CA already in DIR.
    Issue {
        /// Directory holding ca.pem and ca.key.
        #[arg(long, env = "GLIMPSE_CERTS_DIR")]
        dir: PathBuf,
        /// The node: NAME or NAME=IP[,IP...].
        #[arg(long, env = "GLIMPSE_CERTS_NODE")]
        node: NodeSpec,
        /// Overwrite node-NAME.pem/.key if present. Default off.
        #[arg(long, env = "GLIMPSE_CERTS_FORCE")]
        force: bool,
    },
    /// Print Kubernetes Secrets (YAML, to stdout) for deploy/k8s: the CA certificate
    /// (glimpse-ca), one node certificate shared by every node pod and naming the nodes'
    /// headless Service (glimpse-node-tls), the front-ends' client certificate
    /// (glimpse-frontend-client) and their HTTPS certificate (glimpse-https).
    ///
    /// Usage: glimpse-certs k8s --ca-dir ./glimpse-ca > secrets.yaml && kubectl apply -f
    /// secrets.yaml. The output holds private keys: apply it, then delete it.
    K8s {
        /// Namespace of the Secrets and Services. Default: glimpse (as in deploy/k8s).
        #[arg(long, env = "GLIMPSE_CERTS_NAMESPACE", default_value = "glimpse")]
        namespace: String,
        /// The nodes' headless Service, whose names the node certificate carries (short,
        /// NAME.NAMESPACE, NAME.NAMESPACE.svc and the FQDN). Default: glimpse-node.
        #[arg(
            long,
            env = "GLIMPSE_CERTS_NODE_SERVICE",
            default_value = "glimpse-node"
        )]
        node_service: String,
        /// The front-ends' Service, whose names the HTTPS certificate carries (plus localhost
        /// for kubectl port-forward). Default: glimpse.
        #[arg(
            long,
            env = "GLIMPSE_CERTS_FRONTEND_SERVICE",
            default_value = "glimpse"
        )]
        frontend_service: String,
        /// The cluster's DNS domain. Default: cluster.local (kubelet's default).
        #[arg(
            long,
            env = "GLIMPSE_CERTS_CLUSTER_DOMAIN",
            default_value = "cluster.local"
        )]
        cluster_domain: String,
        /// Extra DNS names for the HTTPS certificate (a public host name); repeatable.
        /// Default: none.
        #[arg(
            long = "site-name",
            env = "GLIMPSE_CERTS_SITE_NAMES",
            value_delimiter = ' '
        )]
        site_names: Vec<String>,
        /// Keep the CA here: reuse ca.pem/ca.key if present, else create them (so later runs
        /// issue certificates the running cluster still trusts). Default: none, a throwaway
        /// CA whose key is discarded (re-run to rotate everything at once).
        #[arg(long, env = "GLIMPSE_CERTS_CA_DIR")]
        ca_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The error once, on one line, for people; details and a stack trace with --verbose.
    let reporter = cli.log.init("glimpse-certs", "info");
    reporter.finish(run(cli))
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let written = match cli.command {
        Command::K8s {
            namespace,
            node_service,
            frontend_service,
            cluster_domain,
            site_names,
            ca_dir,
        } => {
            let ca = match &ca_dir {
                Some(dir) => {
                    let (ca, created) = load_or_create_ca(dir)
                        .with_context(|| format!("the CA in {}", dir.display()))?;
                    let verb = if created { "created" } else { "reused" };
                    tracing::info!(dir = %dir.display(), "{verb} the cluster CA");
                    ca
                }
                None => {
                    tracing::warn!("no --ca-dir: the CA key is discarded after signing");
                    ClusterCa::generate("Glimpse cluster CA")?
                }
            };
            let layout = K8sLayout {
                namespace,
                node_service,
                frontend_service,
                cluster_domain,
                site_names,
            };
            print!("{}", k8s_secrets(&ca, &layout)?);
            return Ok(());
        }
        Command::Init {
            dir,
            nodes,
            site_names,
            force,
        } => write_cluster(&dir, &nodes, &site_names, force)
            .with_context(|| format!("creating certificates in {}", dir.display()))?,
        Command::Issue { dir, node, force } => {
            issue_node_files(&dir, &node, force).with_context(|| {
                format!(
                    "issuing a certificate for {} in {}",
                    node.name,
                    dir.display()
                )
            })?
        }
    };
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
