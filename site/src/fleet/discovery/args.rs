//! The discovery flags, one block flattened into the `glimpse` command line.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::config::DiscoveryConfig;
use super::dns::{DnsName, DnsServer};

const HEADING: &str = "Node discovery";

/// Where the front-end finds its nodes besides `--node`; all sources together (and
/// `--node`) make the membership, followed live.
#[derive(Debug, Clone, Default, Args)]
pub struct DiscoveryArgs {
    /// Nodes behind a DNS name, as NAME:PORT (repeatable): every A/AAAA address NAME has is
    /// a node, at PORT, whose certificate must name NAME (a DNS SAN, possibly a wildcard:
    /// one certificate for all of them, e.g. a headless Kubernetes Service's name). Looked
    /// up again every --discovery-interval-s and on SIGHUP: new addresses join, vanished
    /// ones drain (no new work; their images finish or move). A failed lookup keeps the
    /// last addresses; an answer with none (NXDOMAIN) removes them. Needs --ca, --cert and
    /// --key. Default: none.
    #[arg(
        long = "node-dns",
        env = "GLIMPSE_NODE_DNS",
        value_name = "NAME:PORT",
        value_delimiter = ',',
        conflicts_with = "local_workers",
        help_heading = HEADING
    )]
    pub node_dns: Vec<DnsName>,
    /// DNS server for --node-dns, as IP or IP:PORT (port 53 if omitted). Default: the
    /// system's resolvers (/etc/resolv.conf, with its search domains).
    #[arg(
        long,
        env = "GLIMPSE_DNS_SERVER",
        value_name = "ADDR",
        help_heading = HEADING
    )]
    pub dns_server: Option<DnsServer>,
    /// A file of nodes, one NAME=HOST:PORT per line (as --node; `#` comments), read again
    /// when it changes (checked every --discovery-interval-s) and on SIGHUP. A file that
    /// cannot be read or has a bad line keeps the last good list (the error is logged);
    /// at start it must be good. Needs --ca, --cert and --key. Default: none.
    #[arg(
        long,
        env = "GLIMPSE_NODES_FILE",
        value_name = "PATH",
        conflicts_with = "local_workers",
        help_heading = HEADING
    )]
    pub nodes_file: Option<PathBuf>,
    /// Seconds between discovery rounds (--node-dns lookups, --nodes-file checks).
    /// Default: 5 (a new pod takes work within about 5 s of its DNS record).
    #[arg(
        long = "discovery-interval-s",
        env = "GLIMPSE_DISCOVERY_INTERVAL_S",
        default_value_t = 5.0,
        value_parser = parse_interval,
        help_heading = HEADING
    )]
    pub discovery_interval_s: f64,
}

impl DiscoveryArgs {
    /// Whether any discovery source is configured.
    pub fn any(&self) -> bool {
        !self.node_dns.is_empty() || self.nodes_file.is_some()
    }

    /// The time between rounds.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(self.discovery_interval_s)
    }

    /// The sources as the library takes them; `None` when no source is set.
    pub fn config(&self) -> Option<DiscoveryConfig> {
        self.any().then(|| DiscoveryConfig {
            node_dns: self.node_dns.clone(),
            dns_server: self.dns_server,
            nodes_file: self.nodes_file.clone(),
            interval: self.interval(),
        })
    }
}

/// Seconds from 0.1 to a day: a tighter loop only loads the DNS server.
fn parse_interval(s: &str) -> Result<f64, String> {
    let v: f64 = s.trim().parse().map_err(|e| format!("{e}"))?;
    if (0.1..=86_400.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("expected seconds from 0.1 to 86400, got {s:?}"))
    }
}
