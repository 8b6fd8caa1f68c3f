//! `--node-dns NAME:PORT`: a DNS name whose every A/AAAA address is a node (a headless
//! Kubernetes Service has one record per ready pod), and the resolver that asks for it.
//! Every lookup goes to the DNS server (no answer is cached between rounds), so a pod that
//! appears or goes is seen at the next round, whatever TTL the zone gives.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;

/// `NAME:PORT`: the name to resolve (also the TLS name every node behind it must carry)
/// and the nodes' QUIC port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    /// DNS name, without a trailing dot.
    pub name: String,
    /// The nodes' UDP port.
    pub port: u16,
}

impl FromStr for DnsName {
    type Err = String;
    fn from_str(s: &str) -> Result<DnsName, String> {
        let s = s.trim();
        let (name, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("expected NAME:PORT, got {s:?}"))?;
        let name = name.trim_end_matches('.');
        let valid = !name.is_empty()
            && name.len() <= 253
            && name.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !valid {
            return Err(format!("expected a DNS name before ':' in {s:?}"));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("expected a port after ':' in {s:?}"))?;
        Ok(DnsName {
            name: name.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.port)
    }
}

/// `--dns-server`: `IP` (port 53) or `IP:PORT` (`[IPv6]:PORT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsServer(pub SocketAddr);

impl FromStr for DnsServer {
    type Err = String;
    fn from_str(s: &str) -> Result<DnsServer, String> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(DnsServer(addr));
        }
        s.parse::<IpAddr>()
            .map(|ip| DnsServer(SocketAddr::new(ip, 53)))
            .map_err(|_| format!("expected IP or IP:PORT, got {s:?}"))
    }
}

/// What one lookup of a name said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsAnswer {
    /// The name's addresses now; empty when it has none (NXDOMAIN, or no A/AAAA record):
    /// its nodes are gone.
    Addresses(Vec<IpAddr>),
    /// No answer (timeout, unreachable server, SERVFAIL, ...): nothing is known, so the
    /// last addresses stand. A DNS blip must not drain a fleet.
    Failed(String),
}

/// A stub resolver for the discovery rounds.
#[derive(Clone)]
pub struct DnsResolver {
    inner: TokioResolver,
}

impl DnsResolver {
    /// Asks `server` (UDP, then TCP for long answers), or the system's resolvers
    /// (`/etc/resolv.conf`: its servers, search domains and `ndots`) when `None`.
    pub fn new(server: Option<DnsServer>) -> Result<DnsResolver, String> {
        let mut builder = match server {
            Some(DnsServer(addr)) => {
                let mut ns = NameServerConfig::udp_and_tcp(addr.ip());
                for conn in &mut ns.connections {
                    conn.port = addr.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![ns]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()
                .map_err(|e| format!("reading the system's DNS configuration: {e}"))?,
        };
        let opts = builder.options_mut();
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        // Every round asks the server: membership follows the zone, not a cache.
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        if server.is_some() {
            // A chosen server is the one source of truth.
            opts.use_hosts_file = ResolveHosts::Never;
        }
        let inner = builder
            .build()
            .map_err(|e| format!("building the DNS resolver: {e}"))?;
        Ok(DnsResolver { inner })
    }

    /// Looks `name` up (A and AAAA).
    pub async fn lookup(&self, name: &DnsName) -> DnsAnswer {
        // A trailing dot: the name is absolute, so no search domain is tried first.
        let fqdn = format!("{}.", name.name);
        match self.inner.lookup_ip(fqdn.as_str()).await {
            Ok(lookup) => {
                let mut ips: Vec<IpAddr> = lookup.iter().collect();
                ips.sort();
                ips.dedup();
                DnsAnswer::Addresses(ips)
            }
            Err(e) => classify(&e),
        }
    }
}

/// An error that says the name has no address is an answer; any other is a failure.
fn classify(e: &NetError) -> DnsAnswer {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no))
            if matches!(
                no.response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            ) =>
        {
            DnsAnswer::Addresses(Vec::new())
        }
        other => DnsAnswer::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_servers_parse() {
        let n: DnsName = "Nodes.Glimpse.svc.cluster.local.:4433".parse().unwrap();
        assert_eq!(n.name, "nodes.glimpse.svc.cluster.local");
        assert_eq!(n.port, 4433);
        assert_eq!(n.to_string(), "nodes.glimpse.svc.cluster.local:4433");
        for bad in ["nodes", "nodes:", ":4433", "no des:1", "a..b:1", "a:99999"] {
            assert!(bad.parse::<DnsName>().is_err(), "{bad}");
        }
        let s: DnsServer = "10.0.0.10".parse().unwrap();
        assert_eq!(s.0, "10.0.0.10:53".parse().unwrap());
        let s: DnsServer = "127.0.0.1:5353".parse().unwrap();
        assert_eq!(s.0.port(), 5353);
        let s: DnsServer = "[::1]:5353".parse().unwrap();
        assert!(s.0.is_ipv6());
        let s: DnsServer = "::1".parse().unwrap();
        assert_eq!(s.0.port(), 53);
        assert!("dns.example".parse::<DnsServer>().is_err());
    }
}
