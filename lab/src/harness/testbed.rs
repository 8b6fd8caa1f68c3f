//! The testbed of one measurement run: the processes under test (front-end, Glimpse nodes or
//! baseline workers), the links between them (UDP relays, TCP delay proxies, TUN links with
//! their network namespaces) and the disturbances acting on both (crash cycles, link
//! flapping).
//!
//! One value owns all of it, so a run holds one [`Testbed`] and teardown does not depend on
//! the order in which a function happened to declare its locals. [`Testbed::close`] tears
//! down on the normal path, waiting for each step; `Drop` does the same steps without
//! waiting when a run returns early or panics. Both go in this order:
//!
//! 1. **Disturbances.** The crash cycler restarts workers: stopped after the processes, it
//!    could start one again (into a namespace about to be deleted). The flapper reconfigures
//!    links that are about to go.
//! 2. **Processes**, the front-end first: it is the workers' client, so it goes before them
//!    and does not spend its last moments reconnecting to vanished nodes. Processes go before
//!    their links so that nothing is in flight when a link stops, and because a process
//!    started with `ip netns exec` keeps its namespace alive for as long as it runs
//!    (`ip netns del` only removes the name).
//! 3. **Links**: relays and delay proxies stop forwarding, then each TUN link stops and
//!    deletes its namespace. The namespaces are last because a TUN link owns its namespace:
//!    they go together.
//!
//! The load (the HTTPS submitter or the baseline dispatcher) is not part of the testbed: the
//! run hands it to the driver, which has finished with it before the testbed is closed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::LabError;
use super::net::NsLink;
use super::procs::Proc;
use glimpse_netem::link::{Direction, LinkControl};
use glimpse_netem::relay::{RelayConfig, RelayHandle};

/// How a worker is started, kept so that the crash cycles can start it again.
#[derive(Clone)]
struct WorkerCommand {
    name: String,
    program: PathBuf,
    args: Vec<String>,
}

/// The workers by index. A slot is empty while the crash cycler has that worker down. A
/// std mutex, never held across an `.await`, so that `Drop` can take it.
type Workers = Arc<Mutex<Vec<Option<Proc>>>>;

/// Everything one run starts; see the module documentation for the teardown order.
pub struct Testbed {
    log_dir: PathBuf,
    /// Background tasks acting on the testbed: crash cycles, link flapping.
    disturbances: Vec<JoinHandle<()>>,
    /// The Glimpse front-end (baseline runs have none: the lab dispatches itself).
    frontend: Option<Proc>,
    workers: Workers,
    commands: Vec<WorkerCommand>,
    /// Every impaired link's control surface, whatever its kind: what impairment and flapping
    /// act on. Holds the relays of `relays` and the TUN links of `namespaces`.
    links: Vec<Arc<dyn LinkControl>>,
    relays: Vec<RelayHandle>,
    /// The baseline's TCP delay proxies (`--net relay`).
    proxies: Vec<JoinHandle<()>>,
    /// One namespace per worker with the TUN link into it (`--net netns`).
    namespaces: Vec<NsLink>,
}

impl Testbed {
    /// An empty testbed; the processes it starts log to `log_dir/NAME.log`.
    pub fn new(log_dir: &Path) -> Testbed {
        Testbed {
            log_dir: log_dir.to_path_buf(),
            disturbances: Vec::new(),
            frontend: None,
            workers: Arc::new(Mutex::new(Vec::new())),
            commands: Vec::new(),
            links: Vec::new(),
            relays: Vec::new(),
            proxies: Vec::new(),
            namespaces: Vec::new(),
        }
    }

    /// Takes over a worker's namespace and TUN link, which becomes one of the impaired links.
    pub fn add_namespace(&mut self, ns: NsLink) {
        self.links.push(ns.control());
        self.namespaces.push(ns);
    }

    /// Starts a worker (a Glimpse node or a baseline worker), remembering how, for restarts.
    pub fn spawn_worker(
        &mut self,
        name: &str,
        program: PathBuf,
        args: Vec<String>,
    ) -> Result<(), LabError> {
        let proc = Proc::spawn(name, &program, &args, &self.log_dir)?;
        self.workers.lock().push(Some(proc));
        self.commands.push(WorkerCommand {
            name: name.to_string(),
            program,
            args,
        });
        Ok(())
    }

    /// Starts the front-end; returned so the caller can wait for it to become ready.
    pub fn spawn_frontend(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
    ) -> Result<&mut Proc, LabError> {
        let proc = Proc::spawn(name, program, args, &self.log_dir)?;
        Ok(self.frontend.insert(proc))
    }

    /// Starts a transparent UDP relay on loopback in front of `upstream`; returns the address
    /// to use instead of `upstream`.
    pub async fn start_relay(
        &mut self,
        upstream: SocketAddr,
        seed: u64,
    ) -> Result<SocketAddr, LabError> {
        let mut rc = RelayConfig::new(SocketAddr::from(([127, 0, 0, 1], 0)), upstream);
        rc.seed = seed;
        let relay = RelayHandle::start(rc)
            .await
            .map_err(|e| LabError::Setup(e.to_string()))?;
        let addr = relay.local_addr();
        self.links.push(Arc::new(relay.clone()));
        self.relays.push(relay);
        Ok(addr)
    }

    /// Takes over a TCP delay proxy's task.
    pub fn add_proxy(&mut self, task: JoinHandle<()>) {
        self.proxies.push(task);
    }

    /// Applies `spec` (relay syntax, e.g. `loss=5%`) to both directions of every link.
    pub fn impair(&self, spec: &str) -> Result<(), LabError> {
        for l in &self.links {
            l.apply_spec(Direction::Both, spec)
                .map_err(|e| LabError::Setup(e.to_string()))?;
        }
        Ok(())
    }

    /// Every link's counters, in the order the links were added.
    pub fn link_stats(&self) -> Vec<glimpse_netem::link::LinkStats> {
        self.links.iter().map(|l| l.stats()).collect()
    }

    /// Sets every link's counters back to zero (between the runs of a point).
    pub fn reset_link_counters(&self) {
        for l in &self.links {
            l.reset_counters();
        }
    }

    /// From now on, kills one worker (round robin) every `every` and restarts it `down_for`
    /// later.
    pub fn start_crash_cycles(&mut self, every: Duration, down_for: Duration) {
        self.disturbances.push(tokio::spawn(crash_cycles(
            self.workers.clone(),
            self.commands.clone(),
            every,
            down_for,
            self.log_dir.clone(),
        )));
    }

    /// From now on, each `slot`, each link goes dark (both directions) with probability `p`.
    pub fn start_flapping(&mut self, p: f64, slot: Duration, seed: u64) {
        self.disturbances
            .push(tokio::spawn(flap_links(self.links.clone(), p, slot, seed)));
    }

    /// Tears everything down in the order of the module documentation, waiting for each
    /// step: the disturbances have stopped before a process is killed, and every process is
    /// reaped before its namespace is deleted.
    pub async fn close(mut self) {
        for t in self.disturbances.drain(..) {
            t.abort();
            // Cancelled is the expected outcome: the task is gone.
            let _ = t.await;
        }
        for l in &self.links {
            tracing::debug!(stats = ?l.stats(), "link counters");
        }
        if let Some(mut frontend) = self.frontend.take() {
            frontend.kill().await;
        }
        let workers: Vec<Proc> = self.workers.lock().drain(..).flatten().collect();
        for mut w in workers {
            w.kill().await;
        }
        for r in self.relays.drain(..) {
            r.shutdown();
        }
        for p in self.proxies.drain(..) {
            p.abort();
        }
        self.links.clear();
        for ns in self.namespaces.drain(..) {
            ns.close().await;
        }
        // `Drop` now finds nothing left to do.
    }
}

impl Drop for Testbed {
    /// The same order as [`Testbed::close`], without waiting: processes are killed on drop
    /// (`kill_on_drop`), links stop and namespaces are deleted at once. Should an aborted
    /// crash cycler be restarting a worker on another thread right now, that worker is killed
    /// when the runtime drops the task, which holds the last reference to the workers.
    fn drop(&mut self) {
        for t in &self.disturbances {
            t.abort();
        }
        self.frontend = None;
        self.workers.lock().clear();
        // Stops relays and TUN links alike; a TUN link's shutdown deletes its namespace.
        for l in &self.links {
            l.shutdown();
        }
        for p in &self.proxies {
            p.abort();
        }
        self.namespaces.clear();
    }
}

/// Kills one worker (round robin) every `every` and restarts it `down_for` later.
async fn crash_cycles(
    workers: Workers,
    commands: Vec<WorkerCommand>,
    every: Duration,
    down_for: Duration,
    log_dir: PathBuf,
) {
    let mut k = 0usize;
    loop {
        tokio::time::sleep(every).await;
        let idx = k % commands.len();
        k += 1;
        // Taken out of its slot so that no lock is held while it dies.
        let victim = workers.lock()[idx].take();
        if let Some(mut p) = victim {
            p.kill().await;
        }
        tokio::time::sleep(down_for).await;
        let c = &commands[idx];
        match Proc::spawn(&c.name, &c.program, &c.args, &log_dir) {
            Ok(p) => workers.lock()[idx] = Some(p),
            Err(e) => tracing::warn!(error = %e, "restart failed"),
        }
    }
}

/// Seed-semantics loss for Glimpse: each `slot`, each link goes dark (both directions) with
/// probability `p`, independently.
async fn flap_links(links: Vec<Arc<dyn LinkControl>>, p: f64, slot: Duration, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    loop {
        for r in &links {
            let dark = rng.random_bool(p.clamp(0.0, 1.0));
            let spec = if dark {
                "blackhole=on"
            } else {
                "blackhole=off"
            };
            if let Err(e) = r.apply_spec(Direction::Both, spec) {
                tracing::warn!(error = %e, "flap");
            }
        }
        tokio::time::sleep(slot).await;
    }
}
