//! How the lab builds the links between the front-end and its workers (`--net`).
//!
//! * `relay` — a userspace UDP relay per link ([`glimpse_netem::relay`]). Unprivileged and portable,
//!   but UDP only: the baseline's TCP links get no packet loss, and their delay comes from a
//!   TCP proxy that terminates connections on loopback.
//! * `netns` — each worker runs in its own network namespace behind a [`TunLink`]
//!   (`glimpse_netem::tun`, Linux, root): the impairment applies to IP packets, so Glimpse's QUIC and
//!   the baseline's TCP cross exactly the same impaired path.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::LabError;
use glimpse_netem::link::LinkControl;
#[cfg(target_os = "linux")]
use glimpse_netem::tun::{TunConfig, TunLink};

/// Which kind of link the lab puts between the front-end and each worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum NetMode {
    /// `--net relay`: a userspace UDP relay per link. Unprivileged, but the baseline's TCP
    /// links only get delay, from a TCP proxy, and no packet loss.
    Relay,
    /// `--net netns`: every worker in its own network namespace behind a TUN link that
    /// impairs IP packets, TCP and UDP alike (Linux, root).
    Netns,
}

impl std::fmt::Display for NetMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetMode::Relay => "relay",
            NetMode::Netns => "netns",
        })
    }
}

impl NetMode {
    /// One sentence for the reports: which path the measurements crossed.
    pub fn describe(self) -> &'static str {
        match self {
            NetMode::Relay => {
                "Network `--net relay`: one userspace UDP relay per front-end↔worker link (Glimpse only); the baseline's TCP links get delay from a TCP proxy and no packet loss."
            }
            NetMode::Netns => {
                "Network `--net netns`: every worker runs in its own network namespace behind a TUN link that impairs IP packets, so Glimpse's QUIC and the baseline's TCP cross the same impaired path."
            }
        }
    }

    /// Fails with a clear message when the mode cannot run here.
    pub fn check(self) -> Result<(), LabError> {
        match self {
            NetMode::Relay => Ok(()),
            #[cfg(target_os = "linux")]
            NetMode::Netns => glimpse_netem::tun::check_available()
                .map_err(|e| LabError::Setup(format!("--net netns: {e}"))),
            #[cfg(not(target_os = "linux"))]
            NetMode::Netns => Err(LabError::Setup(
                "--net netns needs Linux (TUN devices and network namespaces)".into(),
            )),
        }
    }
}

/// One worker's namespace and its TUN link (`--net netns`). Removed by [`NsLink::close`], or
/// by `Drop` when a run fails half-way.
pub struct NsLink {
    #[cfg(target_os = "linux")]
    tun: Arc<TunLink>,
    #[cfg(not(target_os = "linux"))]
    never: std::convert::Infallible,
}

impl NsLink {
    /// Creates namespace `gl{pid}w{index}` with a transparent link; the lab impairs it once the
    /// system under test is connected.
    #[cfg(target_os = "linux")]
    pub async fn create(index: usize, seed: u64) -> Result<NsLink, LabError> {
        let index = u8::try_from(index)
            .ok()
            .filter(|i| (1..=glimpse_netem::tun::MAX_INDEX).contains(i))
            .ok_or_else(|| LabError::Setup(format!("no TUN link index for worker {index}")))?;
        let mut config = TunConfig::new(index);
        config.seed = seed;
        let tun = TunLink::create(config)
            .await
            .map_err(|e| LabError::Setup(e.to_string()))?;
        Ok(NsLink { tun: Arc::new(tun) })
    }

    /// Always fails: namespaces and TUN links need Linux.
    #[cfg(not(target_os = "linux"))]
    pub async fn create(_index: usize, _seed: u64) -> Result<NsLink, LabError> {
        Err(LabError::Setup("--net netns needs Linux".into()))
    }

    /// The worker's address inside its namespace (`10.77.I.2`).
    pub fn addr(&self) -> IpAddr {
        #[cfg(target_os = "linux")]
        return self.tun.worker_addr().into();
        #[cfg(not(target_os = "linux"))]
        match self.never {}
    }

    /// The link's control surface, for impairing and flapping it.
    pub fn control(&self) -> Arc<dyn LinkControl> {
        #[cfg(target_os = "linux")]
        return self.tun.clone();
        #[cfg(not(target_os = "linux"))]
        match self.never {}
    }

    /// `program args...` run inside the namespace: `ip netns exec NS program args...`.
    /// `ip netns exec` execs the program, so its pid is the program's and the lab's signals
    /// (crash cycles) reach it directly.
    pub fn wrap(&self, program: &Path, args: &[String]) -> (PathBuf, Vec<String>) {
        #[cfg(target_os = "linux")]
        {
            let mut a = vec![
                "netns".to_string(),
                "exec".into(),
                self.tun.namespace().to_string(),
                program.display().to_string(),
            ];
            a.extend(args.iter().cloned());
            (PathBuf::from("ip"), a)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = (program, args);
            match self.never {}
        }
    }

    /// Stops the link and removes the namespace and both devices.
    pub async fn close(self) {
        #[cfg(target_os = "linux")]
        self.tun.close().await;
        #[cfg(not(target_os = "linux"))]
        match self.never {}
    }
}
