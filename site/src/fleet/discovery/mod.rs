//! Live membership: which nodes the front-end uses, followed while it runs.
//!
//! The sources are `--node` (resolved once at start), `--node-dns` names (looked up every
//! round) and a `--nodes-file` (read every round); their union is the membership. A round
//! runs every `--discovery-interval-s` and on SIGHUP, and when the union changed it goes to
//! [`Dispatcher::set_nodes`]: new nodes connect and join placement when ready, vanished ones
//! drain. [`Membership`] is the decision part, without I/O: what each source last said,
//! and what a failed lookup or a bad file changes (nothing: the last good answer stands).

pub mod args;
pub mod config;
pub mod dns;
pub mod file;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use glimpse_transport::{Dispatcher, NodeChanges, NodeEndpoint};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use config::DiscoveryConfig;
use dns::{DnsAnswer, DnsName, DnsResolver};
use file::{FileRead, NodesFile};

/// What every source last said; their union is the membership.
#[derive(Debug, Clone, Default)]
pub struct Membership {
    fixed: Vec<NodeEndpoint>,
    /// Each `--node-dns` name with its last answer (`None` until one arrived).
    dns: Vec<(DnsName, Option<Vec<IpAddr>>)>,
    /// The nodes file's last good list.
    file: Option<Vec<NodeEndpoint>>,
}

impl Membership {
    /// `fixed` nodes (from `--node`) and `names` with nothing known yet.
    pub fn new(fixed: Vec<NodeEndpoint>, names: &[DnsName]) -> Membership {
        Membership {
            fixed,
            dns: names.iter().map(|n| (n.clone(), None)).collect(),
            file: None,
        }
    }

    /// The `--node-dns` names, in order.
    pub fn names(&self) -> impl Iterator<Item = &DnsName> {
        self.dns.iter().map(|(n, _)| n)
    }

    /// Name `i` answered: addresses replace the last ones (none: its nodes leave); a failed
    /// lookup changes nothing and is returned for the log.
    pub fn on_dns(&mut self, i: usize, answer: DnsAnswer) -> Result<(), String> {
        match answer {
            DnsAnswer::Addresses(ips) => {
                self.dns[i].1 = Some(ips);
                Ok(())
            }
            DnsAnswer::Failed(e) => Err(e),
        }
    }

    /// The nodes file was read: a new list replaces the last; a bad file changes nothing
    /// and is returned for the log.
    pub fn on_file(&mut self, read: FileRead) -> Result<(), String> {
        match read {
            FileRead::Unchanged => Ok(()),
            FileRead::Nodes(nodes) => {
                self.file = Some(nodes);
                Ok(())
            }
            FileRead::Bad(e) => Err(e),
        }
    }

    /// The membership: every source's nodes, each endpoint once.
    pub fn endpoints(&self) -> Vec<NodeEndpoint> {
        let from_dns = self.dns.iter().flat_map(|(name, ips)| {
            ips.iter().flatten().map(|&ip| NodeEndpoint {
                name: name.name.clone(),
                addr: SocketAddr::new(ip, name.port),
            })
        });
        let mut out: Vec<NodeEndpoint> = Vec::new();
        let all = self
            .fixed
            .iter()
            .cloned()
            .chain(from_dns)
            .chain(self.file.iter().flatten().cloned());
        for ep in all {
            if !out.contains(&ep) {
                out.push(ep);
            }
        }
        out
    }
}

/// Records a source's outcome; returns the failure to log when it is new (a repeat of the
/// last one is only logged at debug level).
fn note(last: &mut Option<String>, source: &str, result: Result<(), String>) -> Option<String> {
    match result {
        Ok(()) => {
            if last.take().is_some() {
                info!(source, "node discovery source works again");
            }
            None
        }
        Err(e) if last.as_deref() == Some(e.as_str()) => {
            tracing::debug!(error = %e, "node discovery source still failing");
            None
        }
        Err(e) => {
            *last = Some(e.clone());
            Some(e)
        }
    }
}

fn names_len(m: &Membership) -> usize {
    m.dns.len()
}

/// Where the discovery loop hands each new membership: the front-end's dispatcher, or a
/// test's recorder (so the loop's timing runs on tokio's paused clock, without sockets).
pub trait Members: Send + 'static {
    /// Makes `nodes` the membership; says who joined and who left.
    fn set_nodes(&self, nodes: &[NodeEndpoint]) -> NodeChanges;
}

impl Members for Dispatcher {
    fn set_nodes(&self, nodes: &[NodeEndpoint]) -> NodeChanges {
        Dispatcher::set_nodes(self, nodes)
    }
}

/// The discovery loop's state: the membership and the sources it asks.
pub struct Discovery {
    membership: Membership,
    resolver: Option<DnsResolver>,
    file: Option<NodesFile>,
    interval: Duration,
    /// The last failure of each source (the DNS names in order, then the file), so a
    /// failure that lasts is logged once as a warning, not every round.
    failures: Vec<Option<String>>,
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Discovery {
    /// Sets the sources up and runs a first round. A name that does not resolve yet is
    /// fine (its nodes may come later); a nodes file that cannot be read or parsed now is
    /// an error, since there is no last good list to keep.
    pub async fn start(
        sources: &DiscoveryConfig,
        fixed: Vec<NodeEndpoint>,
    ) -> Result<Discovery, String> {
        let resolver = if sources.node_dns.is_empty() {
            None
        } else {
            Some(DnsResolver::new(sources.dns_server)?)
        };
        // Registered now, so a SIGHUP during start-up is not the default (fatal) action.
        #[cfg(unix)]
        let hangup = Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| format!("listening for SIGHUP: {e}"))?,
        );
        let mut d = Discovery {
            membership: Membership::new(fixed, &sources.node_dns),
            resolver,
            file: sources.nodes_file.clone().map(NodesFile::new),
            interval: sources.interval,
            failures: vec![None; sources.node_dns.len() + 1],
            #[cfg(unix)]
            hangup,
        };
        if let Some(f) = d.file.as_mut() {
            d.membership.on_file(f.read(true).await)?;
        }
        d.round(false).await;
        Ok(d)
    }

    /// The membership now.
    pub fn endpoints(&self) -> Vec<NodeEndpoint> {
        self.membership.endpoints()
    }

    /// One round: looks every name up and reads the file (again, resolving it even if
    /// unchanged, when `force`). Failures are logged and keep the last answer.
    async fn round(&mut self, force: bool) {
        if let Some(resolver) = &self.resolver {
            let names: Vec<DnsName> = self.membership.names().cloned().collect();
            let answers =
                futures_util::future::join_all(names.iter().map(|n| resolver.lookup(n))).await;
            for (i, (name, answer)) in names.iter().zip(answers).enumerate() {
                let result = self.membership.on_dns(i, answer);
                if let Some(e) = note(&mut self.failures[i], &name.name, result) {
                    warn!(name = %name, error = %e, "node DNS lookup failed; keeping the last known addresses");
                }
            }
        }
        if let Some(f) = self.file.as_mut() {
            let read = f.read(force).await;
            let result = self.membership.on_file(read);
            let source = f.path().display().to_string();
            if let Some(e) = note(
                &mut self.failures[names_len(&self.membership)],
                &source,
                result,
            ) {
                warn!(path = %f.path().display(), error = %e, "nodes file not applied; keeping the last good list");
            }
        }
    }

    /// Follows the sources for good, handing every change of the membership to
    /// `dispatcher`. Abort the task to stop it. Rounds follow the runtime's clock (a tokio
    /// interval), so they run on paused time in tests.
    pub fn spawn(mut self, dispatcher: impl Members) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut current = self.endpoints();
            let mut tick = tokio::time::interval(self.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let forced = self.next_round(&mut tick).await;
                if forced {
                    info!("SIGHUP: looking the nodes up again");
                }
                self.round(forced).await;
                let next = self.endpoints();
                if next != current {
                    let change = dispatcher.set_nodes(&next);
                    for ep in &change.joined {
                        info!(node = %ep.name, addr = %ep.addr, "node joined the membership");
                    }
                    for ep in &change.removed {
                        info!(node = %ep.name, addr = %ep.addr, "node left the membership: draining");
                    }
                    current = next;
                }
            }
        })
    }

    /// Waits for the next round: true when SIGHUP asked for it.
    async fn next_round(&mut self, tick: &mut tokio::time::Interval) -> bool {
        #[cfg(unix)]
        if let Some(h) = self.hangup.as_mut() {
            return tokio::select! {
                _ = tick.tick() => false,
                _ = h.recv() => true,
            };
        }
        tick.tick().await;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, addr: &str) -> NodeEndpoint {
        NodeEndpoint {
            name: name.into(),
            addr: addr.parse().unwrap(),
        }
    }

    #[test]
    fn the_union_follows_answers_and_failures_keep_the_last() {
        let names: Vec<DnsName> = vec!["nodes.test:4433".parse().unwrap()];
        let mut m = Membership::new(vec![ep("fixed", "10.0.0.9:1")], &names);
        assert_eq!(m.endpoints(), vec![ep("fixed", "10.0.0.9:1")]);
        let ips = |s: &[&str]| DnsAnswer::Addresses(s.iter().map(|i| i.parse().unwrap()).collect());
        m.on_dns(0, ips(&["10.0.0.1", "10.0.0.2"])).unwrap();
        assert_eq!(m.endpoints().len(), 3);
        assert!(m.endpoints().contains(&ep("nodes.test", "10.0.0.2:4433")));
        // A failed lookup changes nothing.
        assert!(m.on_dns(0, DnsAnswer::Failed("timeout".into())).is_err());
        assert_eq!(m.endpoints().len(), 3);
        // An answer with one address less removes it; an empty one removes them all.
        m.on_dns(0, ips(&["10.0.0.2"])).unwrap();
        assert!(!m.endpoints().contains(&ep("nodes.test", "10.0.0.1:4433")));
        m.on_dns(0, ips(&[])).unwrap();
        assert_eq!(m.endpoints(), vec![ep("fixed", "10.0.0.9:1")]);
        // The file's list joins the union; a bad file keeps it; duplicates count once.
        m.on_file(FileRead::Nodes(vec![
            ep("f", "10.0.1.1:1"),
            ep("fixed", "10.0.0.9:1"),
        ]))
        .unwrap();
        assert_eq!(m.endpoints().len(), 2);
        assert!(m.on_file(FileRead::Bad("line 3: nonsense".into())).is_err());
        m.on_file(FileRead::Unchanged).unwrap();
        assert_eq!(m.endpoints().len(), 2);
        m.on_file(FileRead::Nodes(vec![])).unwrap();
        assert_eq!(m.endpoints(), vec![ep("fixed", "10.0.0.9:1")]);
    }

    /// A test's [`Members`]: every membership the loop hands over, in order.
    #[derive(Clone, Default)]
    struct Recorder(std::sync::Arc<parking_lot::Mutex<Vec<Vec<NodeEndpoint>>>>);

    impl Members for Recorder {
        fn set_nodes(&self, nodes: &[NodeEndpoint]) -> NodeChanges {
            self.0.lock().push(nodes.to_vec());
            NodeChanges::default()
        }
    }

    impl Recorder {
        fn seen(&self) -> Vec<Vec<NodeEndpoint>> {
            self.0.lock().clone()
        }
    }

    /// Replaces the file at once (as a ConfigMap mount or `mv` does).
    fn write_atomically(path: &std::path::Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn file_args(path: &std::path::Path, interval_s: f64) -> DiscoveryConfig {
        DiscoveryConfig {
            node_dns: Vec::new(),
            dns_server: None,
            nodes_file: Some(path.to_path_buf()),
            interval: Duration::from_secs_f64(interval_s),
        }
    }

    /// Lets the loop's task run until it waits on its clock again. A millisecond of paused
    /// time passes only once nothing else can run, and the file is read on a blocking
    /// thread, which holds the paused clock still until it is done.
    async fn settle() {
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_file_applies_at_the_next_round_and_a_bad_edit_keeps_the_last_good_list() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes");
        write_atomically(&path, "a=127.0.0.2:4433\n");
        let discovery = Discovery::start(&file_args(&path, 5.0), Vec::new())
            .await
            .unwrap();
        assert_eq!(discovery.endpoints(), vec![ep("a", "127.0.0.2:4433")]);
        let members = Recorder::default();
        let task = discovery.spawn(members.clone());
        settle().await;

        // Unchanged: rounds come and go, nothing is handed over.
        tokio::time::sleep(Duration::from_secs(12)).await;
        settle().await;
        assert!(members.seen().is_empty(), "{:?}", members.seen());

        // Changed: applied at the next round, not before it.
        write_atomically(&path, "b=127.0.0.3:4433\n");
        tokio::time::sleep(Duration::from_secs(1)).await;
        settle().await;
        assert!(members.seen().is_empty(), "applied before its round");
        tokio::time::sleep(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(members.seen(), vec![vec![ep("b", "127.0.0.3:4433")]]);

        // A bad edit is never applied, round after round: the last good list stands.
        write_atomically(&path, "this is not a node\n");
        tokio::time::sleep(Duration::from_secs(30)).await;
        settle().await;
        assert_eq!(members.seen().len(), 1, "{:?}", members.seen());

        // Mended: the next round applies it.
        write_atomically(&path, "a=127.0.0.2:4433\nb=127.0.0.3:4433\n");
        tokio::time::sleep(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(
            members.seen().last(),
            Some(&vec![ep("a", "127.0.0.2:4433"), ep("b", "127.0.0.3:4433")])
        );
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn no_round_runs_before_its_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nodes");
        write_atomically(&path, "a=127.0.0.2:4433\n");
        let day = 86_400.0;
        let discovery = Discovery::start(&file_args(&path, day), Vec::new())
            .await
            .unwrap();
        let members = Recorder::default();
        let task = discovery.spawn(members.clone());
        settle().await;
        write_atomically(&path, "b=127.0.0.3:4433\n");
        // An hour passes: the change waits for its round (or a SIGHUP).
        tokio::time::sleep(Duration::from_secs(3600)).await;
        settle().await;
        assert!(members.seen().is_empty(), "{:?}", members.seen());
        // The day is up: the round applies it.
        tokio::time::sleep(Duration::from_secs(86_400 - 3600 + 1)).await;
        settle().await;
        assert_eq!(members.seen(), vec![vec![ep("b", "127.0.0.3:4433")]]);
        task.abort();
    }
}
