//! Where an image goes: *power of two choices* on outstanding attempts, as a pure function
//! over the cluster's pools of usable nodes.
//!
//! The cluster state ([`super::Cluster`]) keeps every node that can take work right now in
//! one of two [`Pool`]s (fresh, or silent: a last resort), updated as nodes change, so a pick
//! samples two members instead of scanning every node: its cost does not grow with the
//! fleet. The nodes a request must avoid (those already running it, or that failed it) are
//! few, at most its attempt limit, and are skipped by drawing again.

use rand::Rng;

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

/// Picks a node for one attempt: two distinct fresh nodes drawn at random, not running or
/// failed for this request, and the one with fewer outstanding attempts; when no fresh node
/// is left, the same among the last resorts (silent nodes with credit, and nodes that failed
/// this request but have credit), unless `avoid.fresh_only`.
///
/// `load(node)` is the node's outstanding attempts, or `None` if it cannot take one (used
/// for failed nodes, which may have left the pools).
pub fn pick(
    fresh: &Pool,
    silent: &Pool,
    avoid: Avoid<'_>,
    load: impl Fn(usize) -> Option<u32>,
    rng: &mut impl Rng,
) -> Option<usize> {
    if let Some(node) = two_choices_in(fresh, avoid, &load, rng) {
        return Some(node);
    }
    if avoid.fresh_only {
        return None;
    }
    // Last resorts: few by nature (nodes gone quiet, or that failed this very request), so
    // they are gathered rather than sampled.
    let mut resort: Vec<(usize, u32)> = Vec::new();
    let candidates = avoid.failed.iter().copied().chain(silent.iter());
    for n in candidates {
        if avoid.running.contains(&n) || resort.iter().any(|&(m, _)| m == n) {
            continue;
        }
        if let Some(l) = load(n) {
            resort.push((n, l));
        }
    }
    two_choices(&resort, rng)
}

/// Power of two choices among the members of `pool` that `avoid` does not exclude, by
/// rejection sampling while the excluded are a small minority of a large pool, else over the
/// gathered candidates. Either way each unordered pair of candidates is equally likely.
fn two_choices_in(
    pool: &Pool,
    avoid: Avoid<'_>,
    load: &impl Fn(usize) -> Option<u32>,
    rng: &mut impl Rng,
) -> Option<usize> {
    const GATHER_BELOW: usize = 32;
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
        let gathered: Vec<(usize, u32)> = pool
            .iter()
            .filter(|&n| !excluded(n))
            .filter_map(|n| load(n).map(|l| (n, l)))
            .collect();
        return two_choices(&gathered, rng);
    }
    // Fewer than a quarter of the members are excluded: each draw succeeds with probability
    // over three quarters.
    let draw = |rng: &mut _, other: Option<usize>| loop {
        let n = pool.sample(rng);
        if !excluded(n) && Some(n) != other {
            return n;
        }
    };
    let a = draw(rng, None);
    let b = draw(rng, Some(a));
    let (la, lb) = (load(a).unwrap_or(u32::MAX), load(b).unwrap_or(u32::MAX));
    Some(if lb < la { b } else { a })
}

/// Power of two choices over an explicit candidate list of `(node, load)`.
fn two_choices(candidates: &[(usize, u32)], rng: &mut impl Rng) -> Option<usize> {
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
        let load = |n: usize| Some(if n == 0 { 5 } else { 1 });
        let none = Avoid {
            running: &[],
            failed: &[],
            fresh_only: false,
        };
        for _ in 0..50 {
            assert_eq!(pick(&fresh, &silent, none, load, &mut rng), Some(1));
        }
        let busy = Avoid {
            running: &[1],
            ..none
        };
        assert_eq!(pick(&fresh, &silent, busy, load, &mut rng), Some(0));
        // A node that failed the request is a last resort, never for a hedge.
        let failed = Avoid {
            running: &[0],
            failed: &[1],
            fresh_only: false,
        };
        assert_eq!(pick(&fresh, &silent, failed, load, &mut rng), Some(1));
        let hedge = Avoid {
            fresh_only: true,
            ..failed
        };
        assert_eq!(pick(&fresh, &silent, hedge, load, &mut rng), None);
    }

    #[test]
    fn silent_nodes_are_used_only_when_no_fresh_node_is_left() {
        let mut rng = SmallRng::seed_from_u64(1);
        let fresh = pool(3, &[0]);
        let silent = pool(3, &[2]);
        let load = |_| Some(0);
        let none = Avoid {
            running: &[],
            failed: &[],
            fresh_only: false,
        };
        assert_eq!(pick(&fresh, &silent, none, load, &mut rng), Some(0));
        let busy = Avoid {
            running: &[0],
            ..none
        };
        assert_eq!(pick(&fresh, &silent, busy, load, &mut rng), Some(2));
        let hedge = Avoid {
            fresh_only: true,
            ..busy
        };
        assert_eq!(pick(&fresh, &silent, hedge, load, &mut rng), None);
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
            let p = pick(&fresh, &silent, avoid, |_| Some(0), &mut rng).unwrap();
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
}
