//! How a node spends its cores: `--threads` compute threads split into `--lanes` inference
//! lanes.
//!
//! A CPU can run one model two ways. Intra-op parallelism runs one forward pass at a time and
//! splits each convolution across every thread; its cost is the synchronisation at every
//! layer, which small batches (little work per layer) pay most. Batch-level parallelism runs
//! several forward passes at once, each on fewer threads; its cost is latency (each pass is
//! slower) and one copy of the activations per lane. A lane is one inference thread that takes
//! batches from the node's single queue and runs them on its own rayon pool of
//! `threads / lanes` threads (the lane's thread is one of them), so Burn's rayon work
//! (burn-flex's GEMMs and convolutions, burn-ndarray's kernels, the model's own kernels) stays
//! on the lane's share of the cores instead of the process-wide global pool.

use std::num::NonZeroUsize;

use clap::Args;
use glimpse_model::Classifier;

use crate::error::NodeError;

/// Default lanes for `threads` compute threads: one lane per thread, so every forward pass runs
/// single-threaded and the cores work on different batches. Chosen from node-level
/// measurements (`scripts/bench-node`, BENCHMARKS.md): on 2 threads, 2 lanes served 10–22%
/// more images/s than 1 lane at max-batch 1 and 8, because a pass over a small batch cannot
/// keep two threads busy through GoogLeNet's 7×7 and 14×14 layers. The price is a lone
/// image's latency (one thread's forward time). `--lanes`' help states it: keep the two in step.
pub fn default_lanes(threads: usize) -> usize {
    threads.max(1)
}

/// The compute threads a node uses when `--threads` is not given: the cores this process may
/// run on (`std::thread::available_parallelism`, which honours CPU affinity and cgroup quotas,
/// e.g. a container's CPU limit), or 1 where that cannot be read.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// Why a `--threads`/`--lanes` combination is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParallelismError {
    /// `--threads 0`.
    #[error("--threads must be at least 1")]
    NoThreads,
    /// `--lanes 0`.
    #[error("--lanes must be at least 1")]
    NoLanes,
    /// More lanes than threads: a lane without a thread could never run.
    #[error(
        "--lanes {lanes} is more than --threads {threads}: every lane needs a thread of its own"
    )]
    MoreLanesThanThreads {
        /// The lanes asked for.
        lanes: usize,
        /// The threads asked for.
        threads: usize,
    },
}

/// Compute threads and the lanes that share them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parallelism {
    threads: usize,
    lanes: usize,
}

impl Default for Parallelism {
    /// Every available core, one lane each ([`default_lanes`]).
    fn default() -> Self {
        let threads = default_threads();
        Parallelism {
            threads,
            lanes: default_lanes(threads),
        }
    }
}

impl Parallelism {
    /// `threads` compute threads in `lanes` lanes; `None` means the default
    /// ([`default_threads`]; [`default_lanes`]).
    pub fn new(threads: Option<usize>, lanes: Option<usize>) -> Result<Self, ParallelismError> {
        let threads = threads.unwrap_or_else(default_threads);
        let lanes = lanes.unwrap_or_else(|| default_lanes(threads));
        if threads == 0 {
            return Err(ParallelismError::NoThreads);
        }
        if lanes == 0 {
            return Err(ParallelismError::NoLanes);
        }
        if lanes > threads {
            return Err(ParallelismError::MoreLanesThanThreads { lanes, threads });
        }
        Ok(Parallelism { threads, lanes })
    }

    /// Total compute threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Forward passes that run at once.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Threads of each lane: `threads / lanes`, the remainder one each to the first lanes, so
    /// every thread asked for is used.
    pub fn threads_per_lane(&self) -> Vec<usize> {
        let (base, extra) = (self.threads / self.lanes, self.threads % self.lanes);
        (0..self.lanes)
            .map(|i| base + usize::from(i < extra))
            .collect()
    }
}

/// `--threads` and `--lanes`, shared by `serve` and `classify`.
#[derive(Debug, Clone, Args)]
pub struct LaneArgs {
    /// Compute threads for inference, shared out among the lanes. Default: the cores this
    /// process may use (`available_parallelism`: CPU affinity and cgroup CPU limits count).
    #[arg(long, env = "GLIMPSE_NODE_THREADS", value_name = "N")]
    pub threads: Option<usize>,
    /// Forward passes run at once. Each lane takes batches from the node's one queue and runs
    /// them on its own pool of threads/lanes threads (the remainder one each to the first
    /// lanes), so more lanes trade each image's latency for throughput where one pass cannot
    /// keep every thread busy. At least 1, at most --threads. Default: one lane per thread
    /// (--threads), the value measured best for node throughput (BENCHMARKS.md); --lanes 1
    /// gives a lone image the lowest latency instead.
    #[arg(long, env = "GLIMPSE_NODE_LANES", value_name = "L")]
    pub lanes: Option<usize>,
}

impl LaneArgs {
    /// The checked combination.
    pub fn parallelism(&self) -> Result<Parallelism, NodeError> {
        Parallelism::new(self.threads, self.lanes).map_err(|e| NodeError::Config(e.to_string()))
    }
}

/// Builds lane `lane`'s pool of `threads` threads on the calling thread, which becomes the
/// pool's thread 0: forward passes started from it with `install` run on it directly, with no
/// hand-off, and the lane uses exactly its share of threads.
pub(crate) fn lane_pool(
    lane: usize,
    threads: usize,
) -> Result<rayon::ThreadPool, rayon::ThreadPoolBuildError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .use_current_thread()
        .thread_name(move |i| format!("glimpse-lane{lane}-{i}"))
        .build()
}

/// Readies a loaded classifier to run `lanes` forward passes at once.
///
/// The one place the node asks the model for lanes: the classifier keeps one copy of the
/// network per lane (sharing the weights) so concurrent passes do not wait for each other.
pub fn prepare_classifier(classifier: Classifier, lanes: usize) -> Classifier {
    classifier.with_lanes(lanes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_combinations_are_refused() {
        assert_eq!(
            Parallelism::new(Some(0), Some(1)),
            Err(ParallelismError::NoThreads)
        );
        assert_eq!(
            Parallelism::new(Some(2), Some(0)),
            Err(ParallelismError::NoLanes)
        );
        let err = Parallelism::new(Some(2), Some(3)).expect_err("refused");
        assert_eq!(
            err.to_string(),
            "--lanes 3 is more than --threads 2: every lane needs a thread of its own"
        );
    }

    #[test]
    fn default_is_one_single_threaded_lane_per_thread() {
        let p = Parallelism::new(Some(1), None).expect("valid");
        assert_eq!((p.threads(), p.lanes()), (1, 1));
        let p = Parallelism::new(Some(6), None).expect("valid");
        assert_eq!((p.lanes(), p.threads_per_lane()), (6, vec![1; 6]));
        let p = Parallelism::new(None, None).expect("valid");
        assert_eq!(p.lanes(), p.threads());
        let p = Parallelism::new(Some(4), Some(1)).expect("valid");
        assert_eq!(p.threads_per_lane(), vec![4]);
    }

    #[test]
    fn threads_are_shared_out_with_none_left_over() {
        let p = Parallelism::new(Some(7), Some(3)).expect("valid");
        assert_eq!(p.threads_per_lane(), vec![3, 2, 2]);
        let p = Parallelism::new(Some(4), Some(4)).expect("valid");
        assert_eq!(p.threads_per_lane(), vec![1, 1, 1, 1]);
        let d = Parallelism::default();
        assert_eq!(d.threads(), default_threads());
        assert_eq!(d.threads_per_lane().iter().sum::<usize>(), d.threads());
    }

    #[test]
    fn a_lane_pool_has_its_share_and_runs_on_the_lane_thread() {
        std::thread::spawn(|| {
            let me = std::thread::current().id();
            let pool = lane_pool(0, 3).expect("pool");
            pool.install(|| {
                assert_eq!(rayon::current_num_threads(), 3);
                assert_eq!(rayon::current_thread_index(), Some(0));
                assert_eq!(std::thread::current().id(), me);
            });
        })
        .join()
        .expect("lane thread");
    }
}
