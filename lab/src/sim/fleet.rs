//! The fleet: node processes doing the work, and the front-end supervising them, as
//! `transport/src/dispatcher/node.rs` does: connect, follow the heartbeat, notice a lost
//! connection, reconnect with backoff.
//!
//! Load reports are the heartbeat. Rather than one event per report (ten a second per node),
//! the front-end's check runs when the real [`Heartbeat`] says the node would turn silent
//! (`quiet_at`); it first feeds the heartbeat the latest report the node really sent by then
//! (reports go out every interval while the process runs and is not stalled), so the
//! decision is the real type's, at a fifth of the events. A node heard again after a stall
//! gets one report event at its resumption.
//!
//! How a lost node is noticed, as on the real network (quinn ignores ICMP): a crashed
//! process's connection is declared lost by the QUIC idle timeout after it was last heard,
//! unless it restarts first, in which case the front-end's next keep-alive draws a stateless
//! reset from the new process. Until then the node is only *silent*. A connection attempt to
//! a dead process waits for the connect timeout; to a live one it takes two round trips.

use glimpse_transport::dispatcher::{Cause, Heartbeat};
use rand::Rng;

use super::engine::{Sim, core, failure};
use super::event::{Event, Nanos, nanos};
use super::node::{Admit, Job, exponential};

impl Sim {
    /// Every node connected at the start, as the lab waits for all nodes to be ready.
    pub(super) fn connect_all(&mut self) {
        for fe in 0..self.fes.len() {
            for node in 0..self.cfg.nodes {
                self.connected(fe, node, true);
            }
        }
    }

    /// The degradation's start and end, if the run has one.
    pub(super) fn schedule_degrade(&mut self) {
        if let Some(d) = self.cfg.degrade {
            self.agenda
                .push(nanos(d.from), Event::Degrade { slower: true });
            self.agenda
                .push(nanos(d.until), Event::Degrade { slower: false });
        }
    }

    /// A node that runs and is not stalled sends its load report to every front-end it is
    /// connected to, every interval on its own phase (the report's half round trip, a
    /// fraction of a millisecond, is left out). Node 0's reports stop when nothing has
    /// settled for [`IDLE_TICKS`] intervals, and the others' with them, so a stuck run still
    /// runs out of events.
    fn reports(&mut self, node: usize) {
        const IDLE_TICKS: u32 = 6000;
        if node == 0 {
            let settled = self.clients.answered + self.clients.lost;
            if settled == self.ticks.1 {
                self.ticks.0 += 1;
            } else {
                self.ticks = (0, settled);
            }
        }
        if self.ticks.0 > IDLE_TICKS {
            return;
        }
        let now = self.instant(self.now);
        let lanes = self.cfg.model.workers.max(1);
        let n = &mut self.nodes[node];
        let reporting = matches!(n.reporting, Some((_, None)));
        if n.alive && reporting && n.send_at(self.now) == self.now {
            let (in_flight, queued) = n.load();
            let service_ms = n.take_recent_service_ms().map(|ms| ms as f32);
            let report = glimpse_transport::LoadReport {
                in_flight,
                queued,
                recent_latency_ms: 0.0,
                service_ms,
                lanes: Some(lanes),
            };
            for fe in &mut self.fes {
                if fe.links[node].up {
                    let cluster = &mut fe.cluster;
                    core!(self, cluster.set_load(node, report.clone(), now));
                }
            }
            self.regrant = true;
        }
        let interval = nanos(self.cfg.model.load_interval).max(1);
        let node = node as u32;
        self.agenda
            .push(self.now + interval, Event::Reports { node });
    }

    /// The degraded nodes turn slower (or recover).
    fn degrade(&mut self, slower: bool) {
        let Some(d) = self.cfg.degrade else {
            return;
        };
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if d.every > 0 && i % d.every == d.every - 1 {
                let base = self.cfg.slowdown(i);
                n.slowdown = if slower { base * d.factor } else { base };
            }
        }
    }

    /// The first fleet-wide fault draws.
    pub(super) fn schedule_faults(&mut self) {
        for crash in [true, false] {
            if let Some(gap) = self.fault_gap(crash) {
                self.agenda.push(gap, Event::NextFault { crash });
            }
        }
    }

    /// Time to the next crash (or stall) anywhere in the fleet, if they happen at all.
    fn fault_gap(&mut self, crash: bool) -> Option<Nanos> {
        let f = &self.cfg.faults;
        let per_min = if crash {
            f.crash_per_node_min
        } else {
            f.stall_per_node_min
        };
        let per_s = per_min * self.cfg.nodes as f64 / 60.0;
        (per_s > 0.0).then(|| exponential(1e9 / per_s, &mut self.rng) as Nanos)
    }

    pub(super) fn handle_fleet(&mut self, event: Event) -> Result<(), super::SimError> {
        match event {
            Event::NextFault { crash } => {
                let node = self.rng.random_range(0..self.cfg.nodes);
                if crash {
                    let restart = self.cfg.faults.restart_after;
                    self.crash(node, Some(nanos(restart)));
                } else {
                    self.stall(node);
                }
                if let Some(gap) = self.fault_gap(crash) {
                    self.agenda.push(self.now + gap, Event::NextFault { crash });
                }
            }
            Event::Restart { node } => self.restart(node as usize),
            Event::ConnectionLost { fe, node, conn } => {
                return self.connection_lost(fe as usize, node, conn);
            }
            Event::Connect { fe, node } => self.connect(fe as usize, node as usize),
            Event::Connected {
                fe,
                node,
                generation,
                ok,
            } if self.fes[fe as usize].links[node as usize].connecting == Some(generation) => {
                self.connected(fe as usize, node as usize, ok)
            }
            Event::HeartbeatCheck { fe, node, conn } => {
                self.heartbeat_check(fe as usize, node as usize, conn)
            }
            Event::Report { fe, node, conn }
                if self.fes[fe as usize].links[node as usize].conn == conn =>
            {
                self.feed(fe as usize, node as usize);
                self.schedule_check(fe as usize, node as usize);
            }
            Event::StallEnd { node, epoch } => self.stall_end(node as usize, epoch),
            Event::Reports { node } => self.reports(node as usize),
            Event::Degrade { slower } => self.degrade(slower),
            _ => {}
        }
        Ok(())
    }

    /// An attempt reaches its node: admitted, refused, or (seed semantics) it kills the node.
    pub(super) fn deliver(&mut self, serial: u64) {
        let Some(f) = self.inflight.get(&serial).copied() else {
            return;
        };
        let node = f.node as usize;
        let n = &self.nodes[node];
        if !n.alive || n.epoch != f.node_epoch {
            return; // sent to a process that is gone: only the connection's loss ends it
        }
        let kill = self.cfg.faults.kill_first;
        if node == 0 && kill > 0.0 && self.rng.random_bool(kill) {
            return self.crash(0, None);
        }
        let one_way = self.cfg.model.one_way();
        let job = Job {
            serial,
            cancelled: false,
            lost: f.lost,
        };
        let n = &mut self.nodes[node];
        let send = n.send_at(self.now) + one_way;
        match n.admit(&self.cfg.model, job) {
            Admit::Overloaded => {
                self.counts.overloaded += 1;
                let answer = Event::Answer {
                    serial,
                    ok: false,
                    service_us: 0,
                };
                self.agenda.push(send, answer);
            }
            Admit::Queued => {
                if self.cfg.model.started_on_admission {
                    self.agenda.push(send, Event::Started { serial });
                }
                self.start_work(node);
            }
        }
    }

    /// Free workers take queued jobs.
    fn start_work(&mut self, node: usize) {
        let one_way = self.cfg.model.one_way();
        let n = &mut self.nodes[node];
        let (epoch, slowdown) = (n.epoch, n.slowdown);
        for (worker, job) in n.start_work(self.now) {
            if !self.cfg.model.started_on_admission {
                let serial = job.serial;
                self.agenda
                    .push(self.now + one_way, Event::Started { serial });
            }
            let service = self.cfg.model.service(slowdown, &mut self.rng);
            self.nodes[node].begin(worker, service);
            let event = Event::ServiceDone {
                node: node as u32,
                epoch,
                worker,
            };
            self.agenda.push(self.now + service, event);
        }
    }

    /// A worker finished (a stall freezes it: the rest of its work runs after the stall).
    pub(super) fn service_done(&mut self, node: u32, epoch: u32, worker: u32) {
        let n = &mut self.nodes[node as usize];
        if n.epoch != epoch {
            return;
        }
        if let Some((from, until)) = n.stall
            && self.now >= from
            && self.now < until
        {
            let event = Event::ServiceDone {
                node,
                epoch,
                worker,
            };
            self.agenda.push(until + (self.now - from), event);
            return;
        }
        if let Some((job, service)) = n.finish(worker) {
            if job.lost && !job.cancelled {
                self.counts.lost_answers += 1;
            } else if !job.cancelled {
                let at = self.now + self.cfg.model.one_way();
                let serial = job.serial;
                let service_us = u32::try_from(service / 1000).unwrap_or(u32::MAX);
                let answer = Event::Answer {
                    serial,
                    ok: true,
                    service_us,
                };
                self.agenda.push(at, answer);
            }
        }
        self.start_work(node as usize);
    }

    /// A reset stream reaches the node.
    pub(super) fn node_cancel(&mut self, node: u32, epoch: u32, serial: u64) {
        let n = &mut self.nodes[node as usize];
        if n.epoch == epoch {
            n.cancel(serial);
        }
    }

    /// A node process dies; it starts again after `restart` (never with `None`).
    fn crash(&mut self, node: usize, restart: Option<Nanos>) {
        if !self.nodes[node].alive {
            return;
        }
        self.counts.crashes += 1;
        self.nodes[node].crash(self.now);
        let restart_at = restart.map(|r| self.now + r);
        if let Some(at) = restart_at {
            self.agenda.push(at, Event::Restart { node: node as u32 });
        }
        for fe in 0..self.fes.len() {
            let link = &self.fes[fe].links[node];
            if !link.up {
                continue;
            }
            let conn = link.conn;
            let c = &self.cfg.connection;
            let mut lost_at = self.now + nanos(c.idle_timeout);
            if let Some(at) = restart_at {
                let keep_alive = nanos(c.keep_alive).max(1);
                let reset =
                    at + self.rng.random_range(0..keep_alive) + 2 * self.cfg.model.one_way();
                lost_at = lost_at.min(reset);
            }
            let (fe, node) = (fe as u32, node as u32);
            self.agenda
                .push(lost_at, Event::ConnectionLost { fe, node, conn });
        }
    }

    /// A crashed process starts again; a connection attempt waiting on it gets through.
    fn restart(&mut self, node: usize) {
        self.nodes[node].restart();
        let at = self.now + 2 * self.cfg.model.one_way() * 2;
        for fe in 0..self.fes.len() {
            let link = &mut self.fes[fe].links[node];
            if link.connecting.is_none() {
                continue;
            }
            link.connect_gen += 1;
            link.connecting = Some(link.connect_gen);
            let generation = link.connect_gen;
            let (fe, node) = (fe as u32, node as u32);
            self.agenda.push(
                at,
                Event::Connected {
                    fe,
                    node,
                    generation,
                    ok: true,
                },
            );
        }
    }

    /// The connection is gone: the node is Down, its attempts fail, reconnecting starts.
    fn connection_lost(&mut self, fe: usize, node: u32, conn: u32) -> Result<(), super::SimError> {
        let i = node as usize;
        let f = &mut self.fes[fe];
        if f.links[i].conn != conn || !f.links[i].up {
            return Ok(());
        }
        let link = &mut f.links[i];
        link.up = false;
        link.conn += 1;
        let cluster = &mut f.cluster;
        core!(self, cluster.set_down(i, Some("connection lost".into())));
        for serial in std::mem::take(&mut self.fes[fe].on_node[i]) {
            let lost = failure(Cause::ConnectionLost, "connection lost");
            self.end_attempt(serial, Err(lost))?;
        }
        self.reconnect_later(fe, i);
        Ok(())
    }

    fn reconnect_later(&mut self, fe: usize, node: usize) {
        let link = &mut self.fes[fe].links[node];
        let delay = core!(self, link.backoff.next_delay(&mut self.rng));
        let (fe, node) = (fe as u32, node as u32);
        self.agenda
            .push(self.now + nanos(delay), Event::Connect { fe, node });
    }

    /// A connection attempt: through in two round trips to a live process, else it waits for
    /// the connect timeout.
    fn connect(&mut self, fe: usize, node: usize) {
        let cluster = &mut self.fes[fe].cluster;
        core!(self, cluster.set_connecting(node));
        let alive = self.nodes[node].alive;
        let link = &mut self.fes[fe].links[node];
        link.connect_gen += 1;
        link.connecting = Some(link.connect_gen);
        let generation = link.connect_gen;
        let after = if alive {
            4 * self.cfg.model.one_way()
        } else {
            nanos(self.cfg.connection.connect_timeout)
        };
        let (fe, node) = (fe as u32, node as u32);
        self.agenda.push(
            self.now + after,
            Event::Connected {
                fe,
                node,
                generation,
                ok: alive,
            },
        );
    }

    /// A connection attempt ended: Ready with a fresh heartbeat, or Down and retry later.
    fn connected(&mut self, fe: usize, node: usize, ok: bool) {
        self.fes[fe].links[node].connecting = None;
        if !(ok && self.nodes[node].alive) {
            let cluster = &mut self.fes[fe].cluster;
            core!(self, cluster.set_down(node, Some("connect failed".into())));
            return self.reconnect_later(fe, node);
        }
        let now = self.instant(self.now);
        let interval = self.cfg.model.load_interval;
        let policy = self.cfg.policy;
        let link = &mut self.fes[fe].links[node];
        link.conn += 1;
        link.up = true;
        link.fed = self.now;
        link.check_pending = false;
        core!(self, {
            link.backoff.reset();
            link.heartbeat = Heartbeat::new(now, &policy, Some(interval));
        });
        if !matches!(self.nodes[node].reporting, Some((_, None))) {
            self.nodes[node].reporting = Some((self.now, None));
        }
        let info = self.node_info(node);
        let cluster = &mut self.fes[fe].cluster;
        core!(self, cluster.set_ready(node, info));
        self.regrant = true;
        self.schedule_check(fe, node);
    }

    fn rtt(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(2 * self.cfg.model.one_way())
    }

    /// Schedules the heartbeat check at the time the node would turn silent.
    fn schedule_check(&mut self, fe: usize, node: usize) {
        let rtt = self.rtt();
        let link = &self.fes[fe].links[node];
        if !link.up || link.check_pending {
            return;
        }
        let Some(at) = core!(self, link.heartbeat.quiet_at(rtt)) else {
            return;
        };
        let t = self.virtual_time(at).max(self.now);
        let link = &mut self.fes[fe].links[node];
        link.check_pending = true;
        let (fe, node, conn) = (fe as u32, node as u32, link.conn);
        self.agenda
            .push(t, Event::HeartbeatCheck { fe, node, conn });
    }

    /// Feeds the heartbeat the latest report that has arrived by now.
    fn feed(&mut self, fe: usize, node: usize) {
        let one_way = self.cfg.model.one_way();
        let interval = nanos(self.cfg.model.load_interval);
        let Some(sent) = self.nodes[node].last_report(self.now.saturating_sub(one_way), interval)
        else {
            return;
        };
        let arrived = sent + one_way;
        if arrived <= self.fes[fe].links[node].fed {
            return;
        }
        let at = self.instant(arrived);
        let f = &mut self.fes[fe];
        let link = &mut f.links[node];
        link.fed = arrived;
        if core!(self, link.heartbeat.on_frame(at)) {
            let cluster = &mut f.cluster;
            core!(self, cluster.set_silent(node, false));
            self.regrant = true;
            self.retime(fe, node);
        }
    }

    fn heartbeat_check(&mut self, fe: usize, node: usize, conn: u32) {
        if self.fes[fe].links[node].conn != conn {
            return;
        }
        self.fes[fe].links[node].check_pending = false;
        self.feed(fe, node);
        let (now, rtt) = (self.instant(self.now), self.rtt());
        let f = &mut self.fes[fe];
        if core!(self, f.links[node].heartbeat.on_timeout(now, rtt)) {
            let cluster = &mut f.cluster;
            core!(self, cluster.set_silent(node, true));
            self.retime(fe, node);
        }
        self.schedule_check(fe, node);
    }

    /// The requests running on `node` look at their timers again (its silence changed).
    fn retime(&mut self, fe: usize, node: usize) {
        let requests: Vec<u64> = self.fes[fe].on_node[node]
            .iter()
            .filter_map(|s| self.inflight.get(s).map(|f| f.request))
            .collect();
        for id in requests {
            self.rearm(id);
        }
    }

    /// The node stops answering and reporting for the configured time.
    fn stall(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if !n.alive || n.stall.is_some() {
            return;
        }
        self.counts.stalls += 1;
        let until = self.now + nanos(self.cfg.faults.stall_for);
        n.stall = Some((self.now, until));
        if let Some((from, None)) = n.reporting {
            n.reporting = Some((from, Some(self.now)));
        }
        let (node, epoch) = (node as u32, n.epoch);
        self.agenda.push(until, Event::StallEnd { node, epoch });
    }

    /// A stalled node resumes: its workers go on, its next report is on its way.
    fn stall_end(&mut self, node: usize, epoch: u32) {
        let n = &mut self.nodes[node];
        if n.epoch != epoch {
            return;
        }
        n.stall = None;
        n.reporting = Some((self.now, None));
        self.start_work(node);
        let at = self.now + self.cfg.model.one_way();
        for fe in 0..self.fes.len() {
            let conn = self.fes[fe].links[node].conn;
            let (fe, node) = (fe as u32, node as u32);
            self.agenda.push(at, Event::Report { fe, node, conn });
        }
    }
}
