//! Expected-finish placement on a virtual clock: the cluster state (`Cluster`) driven by a
//! small discrete-event fleet of single-lane nodes with service times ±10% around each node's
//! speed, Poisson arrivals
//! from a seeded generator, and no socket, task or sleep. Each test offers a load, counts
//! where the images went and how long they waited, and checks the placement's promises:
//! a slow node gets little work but still helps when the others are full, a node that turns
//! slow loses its share within seconds and wins it back when it recovers, every speed of a
//! heterogeneous fleet gets work, and no image queues behind a slower node while a faster
//! one is idle.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::{Duration, Instant};

use glimpse_transport::dispatcher::{Cluster, NodeEndpoint, Placement};
use glimpse_transport::{LoadReport, NodeInfo};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const CAPACITY: u32 = 4;
const REPORT_EVERY_US: u64 = 100_000;
/// Virtual time by which every node of a test fleet has answered.
const WARM_US: u64 = 1_000_000;

fn info() -> NodeInfo {
    NodeInfo {
        node_id: "test".into(),
        model: "synthetic".into(),
        weights: "none".into(),
        trained: false,
        synthetic: true,
        backend: "none".into(),
        capacity: CAPACITY,
        max_batch: 1,
        max_batch_wait_ms: 0,
        version: "test".into(),
        load_interval_ms: Some(100),
        acks: true,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// The next image arrives.
    Arrive,
    /// A node's worker finishes its current image.
    Finish(usize),
    /// Every node sends its load report.
    Report,
}

/// Images per node, in windows of virtual time.
#[derive(Debug, Default, Clone)]
struct Window {
    placed: Vec<u64>,
}

/// A fleet of single-lane nodes behind one front-end's cluster state, in microseconds of
/// virtual time.
struct Fleet {
    t0: Instant,
    now: u64,
    c: Cluster<u64>,
    rng: SmallRng,
    /// Each node's service time, µs (changeable mid-run).
    service_us: Vec<u64>,
    /// Images admitted on each node, in order: (image, placed at).
    queue: Vec<VecDeque<(u64, u64)>>,
    /// The service time of the image each node is serving.
    serving: Vec<Option<u64>>,
    /// Served time since the last report, per node: (sum µs, count).
    recent: Vec<(u64, u32)>,
    agenda: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    next_image: u64,
    /// Mean gap between arrivals, µs.
    gap_us: f64,
    /// Placements per node, per window of `window_us`.
    window_us: u64,
    windows: Vec<Window>,
    /// Images that queued behind a node while a faster node sat idle.
    behind_slower: u64,
    /// Latency of every image, µs, by arrival.
    latencies: Vec<(u64, u64)>,
    arrivals: Vec<u64>,
}

impl Fleet {
    /// Nodes with these service times (ms), offered `load` × their summed capacity.
    fn new(service_ms: &[f64], load: f64, seed: u64) -> Fleet {
        let n = service_ms.len();
        let endpoints = (0..n).map(|i| NodeEndpoint {
            name: format!("n{i}"),
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
        });
        let mut c = Cluster::new(endpoints);
        c.set_placement(Placement::ExpectedFinish);
        for i in 0..n {
            c.set_ready(i, info());
        }
        let capacity_per_s: f64 = service_ms.iter().map(|ms| 1000.0 / ms).sum();
        let mut f = Fleet {
            t0: Instant::now(),
            now: 0,
            c,
            rng: SmallRng::seed_from_u64(seed),
            service_us: service_ms.iter().map(|ms| (ms * 1000.0) as u64).collect(),
            queue: vec![VecDeque::new(); n],
            serving: vec![None; n],
            recent: vec![(0, 0); n],
            agenda: BinaryHeap::new(),
            seq: 0,
            next_image: 0,
            gap_us: 1e6 / (capacity_per_s * load),
            window_us: 1_000_000,
            windows: Vec::new(),
            behind_slower: 0,
            latencies: Vec::new(),
            arrivals: Vec::new(),
        };
        f.push(0, Ev::Arrive);
        f.push(REPORT_EVERY_US, Ev::Report);
        f
    }

    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.agenda.push(Reverse((at, self.seq, ev)));
    }

    fn at(&self, us: u64) -> Instant {
        self.t0 + Duration::from_micros(us)
    }

    /// Runs until virtual time `until_us`.
    fn run_until(&mut self, until_us: u64) {
        while let Some(Reverse((t, _, ev))) = self.agenda.peek().copied() {
            if t > until_us {
                break;
            }
            self.agenda.pop();
            self.now = t;
            match ev {
                Ev::Arrive => self.arrive(),
                Ev::Finish(node) => self.finish(node),
                Ev::Report => self.report(),
            }
        }
        self.now = until_us;
    }

    fn arrive(&mut self) {
        let image = self.next_image;
        self.next_image += 1;
        self.arrivals.push(self.now);
        let now = self.at(self.now);
        if let Some(node) = self.c.wait_or_grant(now, image, &[], &mut self.rng) {
            self.place(image, node);
        }
        let u: f64 = self.rng.random_range(f64::MIN_POSITIVE..1.0);
        let gap = (-self.gap_us * u.ln()) as u64;
        self.push(self.now + gap.max(1), Ev::Arrive);
    }

    /// An image starts on `node` (credit already taken by the cluster).
    fn place(&mut self, image: u64, node: usize) {
        let w = (self.now / self.window_us) as usize;
        if self.windows.len() <= w {
            self.windows.resize(w + 1, Window::default());
        }
        let placed = &mut self.windows[w].placed;
        if placed.len() < self.service_us.len() {
            placed.resize(self.service_us.len(), 0);
        }
        placed[node] += 1;
        let waits = !self.queue[node].is_empty();
        let faster_idle = (0..self.service_us.len())
            .any(|m| self.service_us[m] < self.service_us[node] && self.queue[m].is_empty());
        // Counted once every node has answered (the first second): before that a cold node
        // is taken for the median of the few answers seen so far.
        if waits && faster_idle && self.now >= WARM_US {
            self.behind_slower += 1;
        }
        self.queue[node].push_back((image, self.now));
        if self.serving[node].is_none() {
            self.start(node);
        }
    }

    fn start(&mut self, node: usize) {
        if self.queue[node].is_empty() {
            return;
        }
        // ±10% around the node's service time: real service times vary, and nodes of one
        // speed must look alike to placement however their estimates were reached.
        let jitter: f64 = self.rng.random_range(0.9..1.1);
        let s = (self.service_us[node] as f64 * jitter) as u64;
        self.serving[node] = Some(s);
        self.push(self.now + s, Ev::Finish(node));
    }

    fn finish(&mut self, node: usize) {
        let Some(s) = self.serving[node].take() else {
            return;
        };
        let Some((image, _)) = self.queue[node].pop_front() else {
            return;
        };
        let arrived = self.arrivals[image as usize];
        self.latencies.push((image, self.now - arrived));
        let r = &mut self.recent[node];
        *r = (r.0 + s, r.1 + 1);
        let now = self.at(self.now);
        self.c.release(node);
        self.c.record_service(node, s as f64 / 1000.0, now);
        self.start(node);
        self.grant();
    }

    fn grant(&mut self) {
        let now = self.at(self.now);
        while let Some((image, node)) = self.c.grant(now, &mut self.rng) {
            self.place(image, node);
        }
    }

    fn report(&mut self) {
        let now = self.at(self.now);
        for node in 0..self.service_us.len() {
            let (sum, count) = std::mem::take(&mut self.recent[node]);
            let report = LoadReport {
                in_flight: self.queue[node].len() as u32,
                queued: self.queue[node].len().saturating_sub(1) as u32,
                recent_latency_ms: 0.0,
                service_ms: (count > 0).then(|| sum as f32 / count as f32 / 1000.0),
                lanes: Some(1),
            };
            self.c.set_load(node, report, now);
        }
        self.grant();
        self.push(self.now + REPORT_EVERY_US, Ev::Report);
    }

    /// Placements per node over the windows `from..to` (seconds).
    fn placed(&self, from: usize, to: usize) -> Vec<u64> {
        let mut total = vec![0u64; self.service_us.len()];
        for w in self.windows.iter().take(to).skip(from) {
            for (t, p) in total.iter_mut().zip(&w.placed) {
                *t += p;
            }
        }
        total
    }

    /// The `q` quantile of the latencies of images that arrived in `from..to` seconds, ms.
    fn latency_ms(&self, from: usize, to: usize, q: f64) -> f64 {
        let (a, b) = (from as u64 * 1_000_000, to as u64 * 1_000_000);
        let mut l: Vec<u64> = self
            .latencies
            .iter()
            .filter(|(i, _)| (a..b).contains(&self.arrivals[*i as usize]))
            .map(|&(_, l)| l)
            .collect();
        l.sort_unstable();
        let k = ((l.len() as f64 - 1.0) * q).round() as usize;
        l.get(k).map_or(0.0, |&us| us as f64 / 1000.0)
    }
}

fn mean(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

/// Ten nodes of 50 ms, one of them 5× slower, at 80% of the fleet's capacity: the slow node
/// gets at most a tenth of a fast node's share, yet it takes work when the others are full.
#[test]
fn a_slow_node_gets_little_work_at_80_percent_load() {
    let mut speeds = vec![50.0; 10];
    speeds[3] = 250.0;
    let mut f = Fleet::new(&speeds, 0.8, 1);
    f.run_until(60_000_000);
    let placed = f.placed(5, 60);
    let fast: Vec<u64> = placed
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != 3)
        .map(|(_, &p)| p)
        .collect();
    let share = placed[3] as f64 / mean(&fast);
    assert!(share <= 0.1, "slow share {share:.3}: {placed:?}");
    assert_eq!(f.behind_slower, 0, "an image queued behind a slow node");
    // The same fleet pushed past what the fast nodes can carry: the slow node helps.
    let mut g = Fleet::new(&speeds, 0.97, 2);
    g.run_until(30_000_000);
    let placed = g.placed(5, 30);
    assert!(
        placed[3] > 0,
        "the slow node took no work when the others were full"
    );
    // Throughput keeps up with the offered load: nothing piles up at the front-end.
    assert!(g.c.waiting() < 100, "{} waiting", g.c.waiting());
}

/// A node that turns 5× slower loses its share within a few seconds, and wins it back
/// within a few seconds of recovering.
#[test]
fn a_node_that_turns_slow_loses_its_share_and_wins_it_back() {
    let speeds = vec![50.0; 10];
    let mut f = Fleet::new(&speeds, 0.8, 3);
    f.run_until(20_000_000);
    f.service_us[5] = 250_000;
    f.run_until(40_000_000);
    f.service_us[5] = 50_000;
    f.run_until(70_000_000);
    let share = |from, to| {
        let p = f.placed(from, to);
        let others: Vec<u64> = p
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != 5)
            .map(|(_, &x)| x)
            .collect();
        p[5] as f64 / mean(&others)
    };
    let before = share(5, 20);
    assert!(before > 0.8, "a healthy node's share {before:.2}");
    // From 3 s after it slowed down to its recovery.
    let slow = share(23, 40);
    assert!(slow <= 0.1, "a slow node's share {slow:.3}");
    // From 10 s after its recovery on.
    let after = share(50, 70);
    assert!(after > 0.8, "a recovered node's share {after:.2}");
}

/// Speeds of 1×, 2× and 20× (GPU-like) at 80% of their summed capacity: all get work, in
/// the order of their speed; no image queues behind a node while a faster one is idle; the
/// fleet keeps up.
#[test]
fn heterogeneous_speeds_all_get_work() {
    let speeds = [50.0, 50.0, 25.0, 25.0, 2.5];
    let mut f = Fleet::new(&speeds, 0.8, 4);
    f.run_until(30_000_000);
    let p = f.placed(2, 30);
    assert!(p.iter().all(|&x| x > 0), "{p:?}");
    assert!(p[4] > p[2] && p[2] > p[0], "faster nodes take more: {p:?}");
    assert_eq!(f.behind_slower, 0, "an image queued behind a slower node");
    let offered = (30.0 - 2.0) * 1e6 / f.gap_us;
    let placed: u64 = p.iter().sum();
    assert!(
        placed as f64 > 0.95 * offered,
        "placed {placed} of about {offered:.0} offered"
    );
}

/// Before any node has answered, placement falls back to outstanding attempts, and a node
/// that joins later starts at the fleet's median, so it gets work at once.
#[test]
fn a_cold_node_starts_at_the_fleet_median() {
    let speeds = vec![50.0; 4];
    let mut f = Fleet::new(&speeds, 0.8, 5);
    f.run_until(5_000_000);
    let median = f.c.reference_service_ms().expect("known after answers");
    assert!((median - 50.0).abs() < 5.0, "{median}");
    let status = f.c.status();
    assert!(status.iter().all(|n| n.placements > 0));
    let shares: f32 = status.iter().map(|n| n.placement_share).sum();
    assert!((shares - 1.0).abs() < 1e-3, "shares sum to {shares}");
    assert!(status.iter().all(|n| n.expected_ms.is_some()));
    assert!(
        status
            .iter()
            .all(|n| n.service_ms.is_some_and(|s| (s - 50.0).abs() < 5.0)),
        "{status:?}"
    );
    // Tail latency at 80% load stays within a few service times.
    let p99 = f.latency_ms(1, 5, 0.99);
    assert!(p99 < 400.0, "p99 {p99}");
}
