//! Where an image goes: *power of two choices*, as a pure function over the cluster's pools
//! of usable nodes, comparing either the nodes' outstanding attempts (today's
//! [`Placement::LeastOutstanding`]) or the image's expected completion time on each
//! ([`Placement::ExpectedFinish`], the default).
//!
//! The cluster state ([`super::Cluster`]) keeps every node that can take work right now in
//! one of two [`Pool`]s (fresh, or silent: a last resort), updated as nodes change, so a pick
//! samples two members instead of scanning every node: its cost does not grow with the
//! fleet. The nodes a request must avoid (those already running it, or that failed it) are
//! few, at most its attempt limit, and are skipped by drawing again.
//!
//! Why expected finish: outstanding attempts say nothing about speed, so a slow node's
//! full queue looks like a fast node's and every image sent there waits several times
//! longer. Comparing (images ahead + 1) × the node's service time ÷ its lanes sends each
//! image where it finishes first. And a pick may be *declined*: when the better of the two
//! candidates would still finish later than waiting for a typical node ([`pick`]'s
//! `accept`), the image waits in the front-end's queue for one, rather than start on a node
//! several times slower; a slow node takes work only once the queue makes waiting worse.

use std::fmt;
use std::str::FromStr;

use rand::Rng;

/// How a pick compares two candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Placement {
    /// Fewer outstanding attempts from this front-end wins; never declines a usable node.
    /// Blind to speed and to other front-ends' load: kept for comparison.
    LeastOutstanding,
    /// Earlier expected completion wins: (this front-end's outstanding attempts + the
    /// node's reported load from others + 1) × its service-time estimate ÷ its lanes; and
    /// an image waits rather than start where it would finish later than on a typical node.
    #[default]
    ExpectedFinish,
}

impl Placement {
    /// The name the flags and the reports use.
    pub fn as_str(self) -> &'static str {
        match self {
            Placement::LeastOutstanding => "least-outstanding",
            Placement::ExpectedFinish => "expected-finish",
        }
    }
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A placement name that is not one of [`Placement`]'s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown placement {0:?} (expected least-outstanding or expected-finish)")]
pub struct UnknownPlacement(pub String);

impl FromStr for Placement {
    type Err = UnknownPlacement;

    fn from_str(s: &str) -> Result<Placement, UnknownPlacement> {
        match s {
            "least-outstanding" => Ok(Placement::LeastOutstanding),
            "expected-finish" => Ok(Placement::ExpectedFinish),
            other => Err(UnknownPlacement(other.to_string())),
        }
    }
}

/// A set of node indexes with O(1) insert, remove, membership and uniform sampling.
#[derive(Debug, Clone, Default)]
pub struct Pool {
    members: Vec<usize>,
    /// `position[node]` is the node's index in `members`, or `ABSENT`.
    position: Vec<usize>,
}

const ABSENT: usize = usize::MAX;

impl Pool {
    /// An empty pool for nodes `0..nodes`.
    pub fn new(nodes: usize) -> Pool {
        Pool {
            members: Vec::with_capacity(nodes),
            position: vec![ABSENT; nodes],
        }
    }

    /// Members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Whether `node` is a member.
    pub fn contains(&self, node: usize) -> bool {
        self.position.get(node).is_some_and(|&p| p != ABSENT)
    }

    /// Adds `node` (nothing if already there).
    pub fn insert(&mut self, node: usize) {
        if node >= self.position.len() {
            self.position.resize(node + 1, ABSENT);
        }
        if self.position[node] == ABSENT {
            self.position[node] = self.members.len();
            self.members.push(node);
        }
    }

    /// Removes `node` (nothing if absent), moving the last member into its place.
    pub fn remove(&mut self, node: usize) {
        let Some(&p) = self.position.get(node) else {
            return;
        };
        if p == ABSENT {
            return;
        }
        self.members.swap_remove(p);
        if let Some(&moved) = self.members.get(p) {
            self.position[moved] = p;
        }
        self.position[node] = ABSENT;
    }

    /// Members, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.members.iter().copied()
    }

    fn sample(&self, rng: &mut impl Rng) -> usize {
        self.members[rng.random_range(0..self.members.len())]
    }
}

/// What a pick must respect for one request.
#[derive(Debug, Clone, Copy)]
pub struct Avoid<'a> {
    /// Nodes running an attempt of this request: never picked.
    pub running: &'a [usize],
    /// Nodes that failed this request: only a last resort.
    pub failed: &'a [usize],
    /// A hedge or a reopened overdue image takes only a fresh node, never a last resort:
    /// a second copy on a node already in doubt is not worth its cost.
    pub fresh_only: bool,
}

/// Pairs drawn from a large pool before a pick is declined: when the first pair's better
/// node is not worth starting on (see [`pick`]), a couple more pairs are tried, so a pool
/// with a few slow members rarely sends an image to wait while fast nodes are free, and the
/// cost of a pick stays bounded.
const PAIRS: usize = 3;

/// How a pick judges the candidates' costs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Choice {
    /// The most a fresh node may cost: above it the pick is declined (the image waits for a
    /// better node). `None`: any usable node will do.
    pub accept: Option<f64>,
    /// When a small pool is gathered whole anyway, take its cheapest member rather than the
    /// better of a random pair: free at that size, and no image then waits behind a slow
    /// node while a faster one is idle.
    pub cheapest_gathered: bool,
}

/// What looking at one pool found.
enum Found {
    /// This node.
    Node(usize),
    /// Candidates exist, but none is worth starting on: wait.
    Declined,
    /// No candidate.
    Empty,
}

/// Picks a node for one attempt: two distinct fresh nodes drawn at random, not running or
/// failed for this request, and the one with the lower `cost`; when no fresh node is left,
/// the same among the last resorts (silent nodes with credit, and nodes that failed this
/// request but have credit), unless `avoid.fresh_only`.
///
/// `cost(node)` is what the placement compares (outstanding attempts, or the image's
/// expected completion time there), or `None` if the node cannot take an attempt (used for
/// failed nodes, which may have left the pools). With `choice.accept`, a fresh node costing
/// more is declined (a few more pairs are drawn first): `None` then means "wait for a better
/// node", not "no node"; last resorts are never declined.
pub fn pick(
    fresh: &Pool,
    silent: &Pool,
    avoid: Avoid<'_>,
    cost: impl Fn(usize) -> Option<f64>,
    choice: Choice,
    rng: &mut impl Rng,
) -> Option<usize> {
    match two_choices_in(fresh, avoid, &cost, choice, rng) {
        Found::Node(node) => return Some(node),
        Found::Declined => return None,
        Found::Empty => {}
    }
    if avoid.fresh_only {
        return None;
    }
    // Last resorts: few by nature (nodes gone quiet, or that failed this very request), so
    // they are gathered rather than sampled.
    let mut resort: Vec<(usize, f64)> = Vec::new();
    let candidates = avoid.failed.iter().copied().chain(silent.iter());
    for n in candidates {
        if avoid.running.contains(&n) || resort.iter().any(|&(m, _)| m == n) {
            continue;
        }
        if let Some(c) = cost(n) {
            resort.push((n, c));
        }
    }
    two_choices(&resort, rng)
}

/// Power of two choices among the members of `pool` that `avoid` does not exclude, by
/// rejection sampling while the excluded are a small minority of a large pool, else over the
/// gathered candidates. Either way each unordered pair of candidates is equally likely.
/// A winner costing more than `choice.accept` is declined: a large pool draws up to
/// [`PAIRS`] pairs; a gathered one takes its cheapest member if that is acceptable.
fn two_choices_in(
    pool: &Pool,
    avoid: Avoid<'_>,
    cost: &impl Fn(usize) -> Option<f64>,
    choice: Choice,
    rng: &mut impl Rng,
) -> Found {
    const GATHER_BELOW: usize = 32;
    let acceptable = |c: f64| choice.accept.is_none_or(|limit| c <= limit);
    let excluded = |n: usize| avoid.running.contains(&n) || avoid.failed.contains(&n);
    // Counted with repeats (a node may be both running and failed): an overestimate only
    // makes gathering more likely.
    let excluded_members = avoid
        .running
        .iter()
        .chain(avoid.failed)
        .filter(|&&n| pool.contains(n))
        .count();
    if pool.len() < GATHER_BELOW || excluded_members * 4 >= pool.len() {
        let gathered: Vec<(usize, f64)> = pool
            .iter()
            .filter(|&n| !excluded(n))
            .filter_map(|n| cost(n).map(|c| (n, c)))
            .collect();
        // Ties are broken from a random starting point, so equal nodes share the work.
        let cheapest = |rng: &mut _| {
            if gathered.is_empty() {
                return None;
            }
            let start = Rng::random_range(rng, 0..gathered.len());
            let (after, before) = gathered.split_at(start);
            before
                .iter()
                .chain(after)
                .copied()
                .reduce(|best, c| if c.1 < best.1 { c } else { best })
        };
        if choice.cheapest_gathered {
            return match cheapest(rng) {
                None => Found::Empty,
                Some((n, c)) if acceptable(c) => Found::Node(n),
                Some(_) => Found::Declined,
            };
        }
        let Some(node) = two_choices(&gathered, rng) else {
            return Found::Empty;
        };
        if gathered.iter().any(|&(n, c)| n == node && acceptable(c)) {
            return Found::Node(node);
        }
        return match cheapest(rng) {
            Some((n, c)) if acceptable(c) => Found::Node(n),
            _ => Found::Declined,
        };
    }
    // Fewer than a quarter of the members are excluded: each draw succeeds with probability
    // over three quarters.
    let draw = |rng: &mut _, other: Option<usize>| loop {
        let n = pool.sample(rng);
        if !excluded(n) && Some(n) != other {
            return n;
        }
    };
    for _ in 0..PAIRS {
        let a = draw(rng, None);
        let b = draw(rng, Some(a));
        let (ca, cb) = (cost(a).unwrap_or(f64::MAX), cost(b).unwrap_or(f64::MAX));
        let (node, c) = if cb < ca { (b, cb) } else { (a, ca) };
        if acceptable(c) {
            return Found::Node(node);
        }
    }
    Found::Declined
}

/// Power of two choices over an explicit candidate list of `(node, cost)`.
fn two_choices(candidates: &[(usize, f64)], rng: &mut impl Rng) -> Option<usize> {
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0].0),
        n => {
            let a = rng.random_range(0..n);
            let mut b = rng.random_range(0..n - 1);
            if b >= a {
                b += 1;
            }
            let (pa, pb) = (candidates[a], candidates[b]);
            Some(if pb.1 < pa.1 { pb.0 } else { pa.0 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn pool(nodes: usize, members: &[usize]) -> Pool {
        let mut p = Pool::new(nodes);
        for &m in members {
            p.insert(m);
        }
        p
    }

    #[test]
    fn pool_insert_remove_keep_positions_consistent() {
        let mut p = pool(10, &[1, 3, 5, 7]);
        p.insert(3);
        assert_eq!(p.len(), 4);
        p.remove(1);
        p.remove(1);
        assert!(!p.contains(1));
        assert!(p.contains(7) && p.contains(3) && p.contains(5));
        p.remove(7);
        p.insert(9);
        let mut m: Vec<usize> = p.iter().collect();
        m.sort();
        assert_eq!(m, vec![3, 5, 9]);
        p.insert(42);
        assert!(p.contains(42));
    }

    #[test]
    fn two_choices_prefer_the_less_loaded_and_respect_avoidance() {
        let mut rng = SmallRng::seed_from_u64(7);
        let silent = Pool::new(4);
        let fresh = pool(4, &[0, 1]);
        let load = |n: usize| Some(if n == 0 { 5.0 } else { 1.0 });
        let none = Avoid {
            running: &[],
            failed: &[],
            fresh_only: false,
        };
        for _ in 0..50 {
            assert_eq!(
                pick(&fresh, &silent, none, load, Choice::default(), &mut rng),
                Some(1)
            );
        }
        let busy = Avoid {
            running: &[1],
            ..none
        };
        assert_eq!(
            pick(&fresh, &silent, busy, load, Choice::default(), &mut rng),
            Some(0)
        );
        // A node that failed the request is a last resort, never for a hedge.
        let failed = Avoid {
            running: &[0],
            failed: &[1],
            fresh_only: false,
        };
        assert_eq!(
            pick(&fresh, &silent, failed, load, Choice::default(), &mut rng),
            Some(1)
        );
        let hedge = Avoid {
            fresh_only: true,
            ..failed
        };
        assert_eq!(
            pick(&fresh, &silent, hedge, load, Choice::default(), &mut rng),
            None
        );
    }

    #[test]
    fn silent_nodes_are_used_only_when_no_fresh_node_is_left() {
        let mut rng = SmallRng::seed_from_u64(1);
        let fresh = pool(3, &[0]);
        let silent = pool(3, &[2]);
        let load = |_| Some(0.0);
        let none = Avoid {
            running: &[],
            failed: &[],
            fresh_only: false,
        };
        assert_eq!(
            pick(&fresh, &silent, none, load, Choice::default(), &mut rng),
            Some(0)
        );
        let busy = Avoid {
            running: &[0],
            ..none
        };
        assert_eq!(
            pick(&fresh, &silent, busy, load, Choice::default(), &mut rng),
            Some(2)
        );
        let hedge = Avoid {
            fresh_only: true,
            ..busy
        };
        assert_eq!(
            pick(&fresh, &silent, hedge, load, Choice::default(), &mut rng),
            None
        );
    }

    #[test]
    fn large_pools_are_sampled_uniformly_around_the_excluded() {
        let mut rng = SmallRng::seed_from_u64(3);
        let n = 1000;
        let fresh = pool(n, &(0..n).collect::<Vec<_>>());
        let silent = Pool::new(n);
        let running = [10, 20];
        let failed = [30];
        let avoid = Avoid {
            running: &running,
            failed: &failed,
            fresh_only: false,
        };
        let mut hits = vec![0u32; n];
        for _ in 0..200_000 {
            let p = pick(
                &fresh,
                &silent,
                avoid,
                |_| Some(0.0),
                Choice::default(),
                &mut rng,
            )
            .unwrap();
            hits[p] += 1;
        }
        assert_eq!(hits[10] + hits[20] + hits[30], 0);
        // 200 expected per node; every node is reached, none far off.
        let (lo, hi) = (
            hits.iter()
                .enumerate()
                .filter(|(i, _)| ![10, 20, 30].contains(i))
                .map(|(_, &h)| h)
                .min()
                .unwrap(),
            *hits.iter().max().unwrap(),
        );
        assert!(lo > 100 && hi < 320, "min {lo} max {hi}");
    }

    #[test]
    fn a_pick_worse_than_waiting_is_declined() {
        let mut rng = SmallRng::seed_from_u64(9);
        let silent = pool(64, &[63]);
        let none = Avoid {
            running: &[],
            failed: &[],
            fresh_only: false,
        };
        // A small pool is gathered whole: its cheapest member, or nothing (not the silent
        // last resort) when even that costs more than waiting.
        let small = pool(64, &[0, 1, 2]);
        let cost = |n: usize| Some([250.0, 60.0, 120.0][n.min(2)]);
        let choice = |accept| Choice {
            accept,
            cheapest_gathered: true,
        };
        for _ in 0..20 {
            assert_eq!(
                pick(&small, &silent, none, cost, choice(Some(225.0)), &mut rng),
                Some(1)
            );
        }
        assert_eq!(
            pick(&small, &silent, none, cost, choice(Some(50.0)), &mut rng),
            None
        );
        // A large pool of slow members but one: a few pairs are drawn, then it declines.
        let large = pool(64, &(0..40).collect::<Vec<_>>());
        let slow = |_| Some(250.0);
        assert_eq!(
            pick(&large, &silent, none, slow, choice(Some(225.0)), &mut rng),
            None
        );
        // Without a limit (today's placement) any usable node will do.
        assert!(pick(&large, &silent, none, slow, Choice::default(), &mut rng).is_some());
    }
}
