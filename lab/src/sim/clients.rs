//! The client's side of the driver: submitting images as requests, and what happens at a
//! request's one final answer (the image settles, or its client submits it again); and the
//! end-of-run check that the driver contract held.

use glimpse_transport::DispatchError;
use glimpse_transport::dispatcher::{Request, Won};

use super::SimError;
use super::engine::{Live, Sim, core};
use super::event::{Event, Nanos};
use super::node::exponential;
use super::workload::Workload;

impl Sim {
    /// A client submits its next image (closed loop), or the next arrival comes (open loop).
    pub(super) fn arrive(&mut self, client: u32) -> Result<(), SimError> {
        if let Workload::Open { per_s } = self.cfg.workload
            && self.clients.images.len() + 1 < self.clients.total
        {
            let gap = exponential(1e9 / per_s, &mut self.rng) as Nanos;
            self.agenda
                .push(self.now + gap, Event::Arrive { client: client + 1 });
        }
        match self.clients.next_image(self.now, client) {
            Some(image) => self.submit(image, client),
            None => Ok(()),
        }
    }

    /// Starts a request for `image`.
    pub(super) fn submit(&mut self, image: u32, client: u32) -> Result<(), SimError> {
        if let Some(i) = self.clients.images.get_mut(image as usize) {
            i.submissions += 1;
        }
        let id = self.next_request;
        self.next_request += 1;
        self.counts.requests += 1;
        let now = self.instant(self.now);
        let mut req = Request::new(now, self.cfg.policy, self.cfg.image_bytes);
        // Front-ends take turns: a load balancer in front of them spreads the requests.
        let fe = (id % self.fes.len() as u64) as usize;
        core!(self, req.start(&mut self.fes[fe].cluster));
        let live = Live {
            req,
            fe,
            image,
            client,
            queued: false,
            timer: None,
            timer_gen: 0,
            fired: (0, 0),
            open: Vec::new(),
        };
        self.reqs.insert(id, live);
        self.drive(id)
    }

    /// The request's one final answer: settle the image, or let its client resubmit it.
    pub(super) fn done(
        &mut self,
        id: u64,
        result: Result<Won, DispatchError>,
    ) -> Result<(), SimError> {
        let Some(mut live) = self.reqs.remove(&id) else {
            return Ok(());
        };
        self.counts.dones += 1;
        if let Some(a) = core!(self, live.req.poll_action()) {
            return Err(SimError::Invariant(format!(
                "request {id} acted after its Done: {a:?}"
            )));
        }
        if !live.open.is_empty() {
            return Err(SimError::Invariant(format!(
                "request {id} ended with attempts still open"
            )));
        }
        if live.queued {
            let cluster = &mut self.fes[live.fe].cluster;
            core!(self, cluster.forget_waiters(|&w| w == id));
        }
        let (image, client) = (live.image, live.client);
        match result {
            Ok(_) => self.clients.answered(image, self.now),
            Err(_) => {
                let again = self
                    .clients
                    .failed(image, self.now, self.cfg.client_attempts);
                if again {
                    self.agenda
                        .push(self.now, Event::Resubmit { image, client });
                    return Ok(());
                }
            }
        }
        if matches!(self.cfg.workload, Workload::Closed { .. }) {
            self.agenda.push(self.now, Event::Arrive { client });
        }
        Ok(())
    }

    /// Every request got exactly one Done and every unit of credit came back.
    pub(super) fn check_end(&mut self) -> Result<(), SimError> {
        let c = &self.counts;
        if c.dones != c.requests || !self.reqs.is_empty() {
            return Err(SimError::Invariant(format!(
                "{} request(s), {} Done(s), {} still live",
                c.requests,
                c.dones,
                self.reqs.len()
            )));
        }
        let mut held = Vec::new();
        let mut waiting = 0;
        for (f, fe) in self.fes.iter().enumerate() {
            held.extend(
                (0..self.cfg.nodes)
                    .filter(|&i| fe.cluster.outstanding(i) != 0)
                    .map(|i| format!("fe{f} n{i}: {}", fe.cluster.outstanding(i))),
            );
            waiting += fe.cluster.waiting();
        }
        if !held.is_empty() || waiting != 0 || !self.inflight.is_empty() {
            return Err(SimError::Invariant(format!(
                "credit not returned ({}), {} waiter(s), {} attempt(s) in flight",
                held.join(", "),
                waiting,
                self.inflight.len()
            )));
        }
        Ok(())
    }
}
