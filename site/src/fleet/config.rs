//! The cluster's configuration as the library takes it: a typed value built from the command
//! line in one place ([`crate::cli::Cli::cluster_config`]). Nothing under `fleet/` reads a
//! flag, and how flags combine (local workers or remote nodes, the certificates remote nodes
//! need, a model's parameters) is checked once, before anything starts.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use glimpse_transport::CongestionControl;
use glimpse_transport::dispatcher::Policy;

use crate::fleet::discovery::config::DiscoveryConfig;

/// Where the nodes are and how images are sent to them.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The nodes: in this process, or remote.
    pub fleet: Fleet,
    /// Attempts, deadline, hedging, placement and silence detection for every image (the
    /// dispatcher's own defaults for the rest).
    pub policy: Policy,
    /// The congestion controller of the connections to nodes.
    pub congestion: CongestionControl,
}

/// The nodes behind the front-end.
#[derive(Debug, Clone)]
pub enum Fleet {
    /// `--local-workers N`: nodes started in this process on loopback QUIC.
    Local(LocalWorkers),
    /// `--node`, `--node-dns`, `--nodes-file`: nodes elsewhere, reached with the cluster's
    /// certificates.
    Remote(RemoteFleet),
}

/// In-process workers.
#[derive(Debug, Clone)]
pub struct LocalWorkers {
    /// How many.
    pub count: NonZeroU32,
    /// What they run.
    pub model: LocalModel,
    /// Images each one takes at once; `None`: the node's default.
    pub capacity: Option<u32>,
}

/// The model of the local workers.
#[derive(Debug, Clone)]
pub enum LocalModel {
    /// The deterministic stand-in, taking `service` per image.
    Synthetic {
        /// Time per image.
        service: Duration,
    },
    /// torchvision's GoogLeNet.
    #[cfg(feature = "local-workers")]
    Googlenet {
        /// Where its weights come from.
        weights: glimpse_model::WeightsSource,
        /// The inference backend.
        backend: glimpse_model::Backend,
    },
}

/// Remote nodes and the files to reach them with.
#[derive(Debug, Clone)]
pub struct RemoteFleet {
    /// The cluster CA's certificate (PEM), which signed the nodes.
    pub ca: PathBuf,
    /// This front-end's client certificate (PEM) and its key.
    pub cert: PathBuf,
    /// The key of `cert` (PEM).
    pub key: PathBuf,
    /// Nodes named one by one, resolved once at start.
    pub nodes: Vec<NodeAddress>,
    /// Sources followed while running; `None`: the fixed nodes only.
    pub discovery: Option<DiscoveryConfig>,
}

/// `NAME=HOST:PORT`: a remote node, the name being what its certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAddress {
    /// The node's name: the DNS name its certificate must carry.
    pub name: String,
    /// `HOST:PORT`, resolved at start.
    pub target: String,
}

impl FromStr for NodeAddress {
    type Err = String;
    fn from_str(s: &str) -> Result<NodeAddress, String> {
        let (name, target) = s
            .split_once('=')
            .ok_or_else(|| format!("expected NAME=HOST:PORT, got {s:?}"))?;
        let (name, target) = (name.trim(), target.trim());
        if name.is_empty() {
            return Err(format!("empty node name in {s:?}"));
        }
        if !target
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
        {
            return Err(format!("expected HOST:PORT after '=', got {target:?}"));
        }
        Ok(NodeAddress {
            name: name.to_string(),
            target: target.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_parse() {
        let n: NodeAddress = "gpu-1=10.0.0.5:4433".parse().unwrap();
        assert_eq!(n.name, "gpu-1");
        assert_eq!(n.target, "10.0.0.5:4433");
        assert!("nodash".parse::<NodeAddress>().is_err());
        assert!("=1.2.3.4:1".parse::<NodeAddress>().is_err());
        assert!("a=host".parse::<NodeAddress>().is_err());
        assert!("a=host:99999".parse::<NodeAddress>().is_err());
    }
}
