//! The discovery sources as the library takes them, built from the flags
//! ([`super::args::DiscoveryArgs::config`]).

use std::path::PathBuf;
use std::time::Duration;

use super::dns::{DnsName, DnsServer};

/// Where to find nodes besides the fixed ones, and how often to look again. At least one
/// source is set (otherwise there is no `DiscoveryConfig`).
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Names whose every address is a node (at the name's port).
    pub node_dns: Vec<DnsName>,
    /// The DNS server to ask; `None`: the system's resolvers.
    pub dns_server: Option<DnsServer>,
    /// A file of `NAME=HOST:PORT` lines.
    pub nodes_file: Option<PathBuf>,
    /// The time between rounds.
    pub interval: Duration,
}
