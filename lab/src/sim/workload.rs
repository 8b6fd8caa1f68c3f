//! The clients: how images are offered, and what a client does with a failed request.
//!
//! The lab (`lab/src/harness/driver.rs`) offers load *closed loop*: `concurrency` clients each
//! take the next image as soon as their previous one is answered, and resubmit an image whose
//! request failed, up to `client_attempts` submissions, after which it counts as lost. The
//! validation reproduces exactly that. The projections offer load *open loop* (Poisson
//! arrivals at a fixed rate), as a large front-end in front of many users sees it: a closed
//! loop would slow its own offered load down whenever the fleet slows, hiding the tail.

use super::event::Nanos;

/// How images are offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Workload {
    /// `clients` clients, each sending its next image when the last one is answered.
    Closed {
        /// Clients, each with one image outstanding.
        clients: u32,
    },
    /// Poisson arrivals, `per_s` images per second.
    Open {
        /// Mean arrivals per second.
        per_s: f64,
    },
}

/// One image's fate, as the client sees it.
#[derive(Debug, Clone, Copy)]
pub struct Image {
    /// First submission.
    pub submitted: Nanos,
    /// Submissions so far.
    pub submissions: u32,
    /// The client that owns it (closed loop), or the arrival number.
    pub client: u32,
    /// Answered, or given up on after `client_attempts` submissions.
    pub settled: bool,
}

/// The client side of a run: which images exist and how each ended.
#[derive(Debug, Default)]
pub struct Clients {
    /// Every image offered so far, by number.
    pub images: Vec<Image>,
    /// Images to offer in all.
    pub total: usize,
    /// Images answered.
    pub answered: usize,
    /// Images given up on (no answer after every submission): must stay 0.
    pub lost: usize,
    /// Latency of each answered image, first submission to answer, ms.
    pub latencies_ms: Vec<f64>,
    /// The same, for the images in the second half of the run (by submission).
    pub late_latencies_ms: Vec<f64>,
    /// When the last image settled.
    pub last_settled: Nanos,
    /// When the last new image was submitted, and how many were answered by then: an open
    /// loop's throughput is measured over that window, not over the drain that follows.
    pub all_submitted: Option<(Nanos, usize)>,
}

impl Clients {
    /// Clients for `total` images.
    pub fn new(total: usize) -> Clients {
        Clients {
            images: Vec::with_capacity(total),
            total,
            latencies_ms: Vec::with_capacity(total),
            ..Clients::default()
        }
    }

    /// The next new image, if any is left; its number.
    pub fn next_image(&mut self, now: Nanos, client: u32) -> Option<u32> {
        if self.images.len() >= self.total {
            return None;
        }
        self.images.push(Image {
            submitted: now,
            submissions: 0,
            client,
            settled: false,
        });
        if self.images.len() == self.total {
            self.all_submitted = Some((now, self.answered));
        }
        u32::try_from(self.images.len() - 1).ok()
    }

    /// Every image settled.
    pub fn all_settled(&self) -> bool {
        self.answered + self.lost >= self.total
    }

    /// An image was answered at `now`.
    pub fn answered(&mut self, image: u32, now: Nanos) {
        if let Some(i) = self.images.get_mut(image as usize) {
            i.settled = true;
            self.answered += 1;
            let ms = now.saturating_sub(i.submitted) as f64 / 1e6;
            self.latencies_ms.push(ms);
            if image as usize >= self.total / 2 {
                self.late_latencies_ms.push(ms);
            }
            self.last_settled = now;
        }
    }

    /// An image's request failed at `now`: true when the client submits it again.
    pub fn failed(&mut self, image: u32, now: Nanos, client_attempts: u32) -> bool {
        let Some(i) = self.images.get_mut(image as usize) else {
            return false;
        };
        if i.submissions < client_attempts.max(1) {
            return true;
        }
        i.settled = true;
        self.lost += 1;
        self.last_settled = now;
        false
    }
}
