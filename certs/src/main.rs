//! `glimpse-certs`: create and extend a Glimpse cluster's certificates on disk.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use glimpse_certs::{NodeSpec, issue_node_files, write_cluster};

/// Create a cluster CA and the certificates nodes, the front-end and the HTTPS site need.
#[derive(Debug, Parser)]
#[command(name = "glimpse-certs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let written = match cli.command {
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
