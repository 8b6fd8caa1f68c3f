//! The inference lanes and their dynamic batching.
//!
//! Dedicated OS threads, the lanes (`--lanes`, see [`crate::lanes`]), run the model. Request
//! handlers (async, on the tokio runtime) hand them prepared images through one bounded queue
//! and await a oneshot answer, so the forward pass never blocks a runtime thread (a blocked
//! runtime makes quinn miss its timers, quinn #1509).
//!
//! Batching follows Triton's two knobs, per lane: a free lane takes the first waiting image,
//! then gathers more until it has `max_batch` of them or `max_batch_wait` has passed since it
//! took the first. With `max_batch_wait = 0` (the default) it only takes what is already
//! waiting: batching then happens exactly when the node is behind, and an idle node adds no
//! delay to a lone image. One lane gathers at a time (it holds the queue while it does), so
//! two free lanes never split a burst into two half batches by racing for it.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glimpse_model::{Classifier, ImageTensor};
use glimpse_transport::Label;
use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::batches::BatchHistograms;
use crate::lanes::{Parallelism, lane_pool};
use crate::synthetic::SyntheticModel;

/// A test model: runs on the raw bytes of a batch, from inside the lane's pool.
#[cfg(test)]
pub(crate) type ProbeFn = dyn Fn(&[Bytes], usize) -> Vec<Vec<Label>> + Send + Sync;

/// The model the lanes run (shared by all of them).
pub(crate) enum ModelRunner {
    /// GoogLeNet through glimpse-model; expects decoded, preprocessed tensors.
    GoogLeNet(Arc<Classifier>),
    /// The synthetic stand-in; expects the raw image bytes.
    Synthetic(SyntheticModel),
    /// Engine tests: a closure over the raw bytes and top-k.
    #[cfg(test)]
    Probe(Arc<ProbeFn>),
}

impl ModelRunner {
    /// Whether requests must be decoded and preprocessed before they reach this model.
    pub(crate) fn needs_decoding(&self) -> bool {
        matches!(self, ModelRunner::GoogLeNet(_))
    }
}

/// What one request hands the lanes.
pub(crate) enum Prepared {
    /// A preprocessed image for GoogLeNet.
    Tensor(ImageTensor),
    /// Raw bytes for the synthetic model.
    Raw(Bytes),
}

/// One image waiting for a lane.
pub(crate) struct Job {
    pub input: Prepared,
    pub top_k: usize,
    /// When the job entered the queue; the queue time reported to clients starts here.
    pub enqueued: Instant,
    pub reply: oneshot::Sender<Result<JobOutcome, String>>,
}

/// The answer for one image, with the time it spent waiting and in the forward pass.
#[derive(Debug)]
pub(crate) struct JobOutcome {
    pub top: Vec<Label>,
    /// From entering the queue to the start of the forward pass that carried it.
    pub queue: Duration,
    /// Wall time of the whole forward pass that carried this image: the image waited for all
    /// of it, so this is what it cost its latency (not a per-image share).
    pub infer: Duration,
    /// How many images shared that forward pass (reported to the front-end).
    pub batch_size: usize,
}

/// Why a job could not be queued.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubmitError {
    /// The queue is full: the node is overloaded.
    Full,
    /// The lanes have stopped (they only do when the node shuts down).
    Stopped,
}

/// Batching settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BatchPolicy {
    pub max_batch: usize,
    pub max_batch_wait: Duration,
    /// Queue bound; beyond it submissions fail with [`SubmitError::Full`].
    pub queue_limit: usize,
}

/// Handle to the lanes. Dropping it closes the queue; the lanes finish the jobs already
/// queued and exit.
pub(crate) struct Engine {
    tx: Option<SyncSender<Job>>,
    queued: Arc<AtomicU32>,
    lanes: Vec<JoinHandle<()>>,
}

impl Engine {
    /// Starts one lane with one thread running `model`.
    #[cfg(test)]
    pub(crate) fn start(model: ModelRunner, policy: BatchPolicy) -> std::io::Result<Engine> {
        let one = Parallelism::new(Some(1), Some(1)).map_err(std::io::Error::other)?;
        Engine::start_observed(model, policy, one, Arc::default())
    }

    /// Starts `parallelism.lanes()` lanes running `model`, each on its share of the threads,
    /// recording every forward pass in `batches`. Returns once every lane's pool is up.
    pub(crate) fn start_observed(
        model: ModelRunner,
        policy: BatchPolicy,
        parallelism: Parallelism,
        batches: Arc<BatchHistograms>,
    ) -> std::io::Result<Engine> {
        let (tx, rx) = mpsc::sync_channel(policy.queue_limit.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let model = Arc::new(model);
        let queued = Arc::new(AtomicU32::new(0));
        let (up_tx, up_rx) = mpsc::channel();
        let mut lanes = Vec::with_capacity(parallelism.lanes());
        for (lane, threads) in parallelism.threads_per_lane().into_iter().enumerate() {
            let (rx, model, queued, batches, up) = (
                rx.clone(),
                model.clone(),
                queued.clone(),
                batches.clone(),
                up_tx.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("glimpse-lane{lane}-0"))
                .spawn(move || {
                    // The pool is built on the lane's own thread, which becomes its thread 0.
                    let pool = match lane_pool(lane, threads) {
                        Ok(pool) => {
                            let _ = up.send(Ok(()));
                            pool
                        }
                        Err(e) => {
                            let _ = up.send(Err(std::io::Error::other(e)));
                            return;
                        }
                    };
                    drop(up);
                    inference_loop(&rx, &model, policy, &queued, &batches, &pool);
                });
            match spawned {
                Ok(handle) => lanes.push(handle),
                Err(e) => {
                    // Lanes already started see the closed queue and exit.
                    drop(tx);
                    join_all(lanes);
                    return Err(e);
                }
            }
        }
        drop(up_tx);
        let engine = Engine {
            tx: Some(tx),
            queued,
            lanes,
        };
        for _ in 0..engine.lanes.len() {
            match up_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(std::io::Error::other("an inference lane died at start")),
            }
        }
        Ok(engine)
    }

    /// Queues a job without waiting.
    pub(crate) fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let Some(tx) = &self.tx else {
            return Err(SubmitError::Stopped);
        };
        // Count before sending so the thread's decrement can never run first.
        self.queued.fetch_add(1, Ordering::SeqCst);
        match tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(err) => {
                self.queued.fetch_sub(1, Ordering::SeqCst);
                Err(match err {
                    TrySendError::Full(_) => SubmitError::Full,
                    TrySendError::Disconnected(_) => SubmitError::Stopped,
                })
            }
        }
    }

    /// Images waiting for a forward pass (not counting those running).
    pub(crate) fn queued(&self) -> u32 {
        self.queued.load(Ordering::SeqCst)
    }

    /// Lanes running forward passes at once.
    pub(crate) fn lanes(&self) -> u32 {
        u32::try_from(self.lanes.len()).unwrap_or(u32::MAX)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.tx = None;
        // Each lane only ever finishes its current batch, then the queued jobs, before it
        // sees the closed queue.
        join_all(std::mem::take(&mut self.lanes));
    }
}

fn join_all(lanes: Vec<JoinHandle<()>>) {
    for lane in lanes {
        let _ = lane.join();
    }
}

/// Takes the next batch from the shared queue: the first job (waiting for one), then more as
/// the batch policy allows. `None` once the queue is closed and empty.
fn next_batch(rx: &Mutex<Receiver<Job>>, policy: BatchPolicy) -> Option<Vec<Job>> {
    let max_batch = policy.max_batch.max(1);
    // Poisoning needs a panic while holding the lock, and nothing below panics; the queue
    // itself would be intact anyway.
    let rx = rx.lock();
    let first = rx.recv().ok()?;
    let mut batch = vec![first];
    let gather_until = Instant::now() + policy.max_batch_wait;
    while batch.len() < max_batch {
        match rx.try_recv() {
            Ok(job) => {
                batch.push(job);
                continue;
            }
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now >= gather_until {
            break;
        }
        match rx.recv_timeout(gather_until - now) {
            Ok(job) => batch.push(job),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

fn inference_loop(
    rx: &Mutex<Receiver<Job>>,
    model: &ModelRunner,
    policy: BatchPolicy,
    queued: &AtomicU32,
    batches: &BatchHistograms,
    pool: &rayon::ThreadPool,
) {
    while let Some(mut batch) = next_batch(rx, policy) {
        queued.fetch_sub(batch.len() as u32, Ordering::SeqCst);
        // A request whose stream was reset or whose client gave up has dropped its receiver:
        // skip it rather than spend a forward pass on an answer nobody reads.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        // The forward pass's rayon work runs on this lane's threads only.
        pool.install(|| run_batch(model, batch, batches));
    }
    tracing::debug!("inference queue closed; inference lane exits");
}

fn run_batch(model: &ModelRunner, batch: Vec<Job>, batches: &BatchHistograms) {
    let started = Instant::now();
    let top_k = batch.iter().map(|j| j.top_k).max().unwrap_or(0);
    let mut replies = Vec::with_capacity(batch.len());
    let mut tensors = Vec::new();
    let mut raws = Vec::new();
    for job in batch {
        replies.push((job.reply, job.enqueued, job.top_k));
        match job.input {
            Prepared::Tensor(t) => tensors.push(t),
            Prepared::Raw(b) => raws.push(b),
        }
    }
    let size = replies.len();
    // A panic inside the model (a bug, or an unexpected input shape) must fail this batch's
    // requests, not kill the thread and with it every later request.
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| match model {
        ModelRunner::GoogLeNet(classifier) => {
            if !raws.is_empty() || tensors.len() != size {
                return Err("internal: raw bytes reached the GoogLeNet runner".to_string());
            }
            classifier
                .classify_batch(&tensors, top_k)
                .map_err(|e| e.to_string())
                .map(|all| {
                    all.into_iter()
                        .map(|preds| {
                            preds
                                .into_iter()
                                .map(|p| Label {
                                    index: p.index as u32,
                                    label: p.label.to_string(),
                                    probability: p.probability,
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect::<Vec<_>>()
                })
        }
        ModelRunner::Synthetic(synthetic) => {
            if !tensors.is_empty() || raws.len() != size {
                return Err("internal: a tensor reached the synthetic runner".to_string());
            }
            let slices: Vec<&[u8]> = raws.iter().map(|b| b.as_ref()).collect();
            Ok(synthetic.classify_batch(&slices, top_k))
        }
        #[cfg(test)]
        ModelRunner::Probe(probe) => Ok(probe(&raws, top_k)),
    }));
    let infer = started.elapsed();
    batches.observe(size, infer);
    let result = match result {
        Ok(Ok(all)) if all.len() == size => Ok(all),
        Ok(Ok(all)) => Err(format!(
            "internal: model returned {} answers for {size} images",
            all.len()
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("internal: the model panicked on this batch".to_string()),
    };
    match result {
        Ok(all) => {
            for ((reply, enqueued, k), mut top) in replies.into_iter().zip(all) {
                top.truncate(k);
                let _ = reply.send(Ok(JobOutcome {
                    top,
                    queue: started.saturating_duration_since(enqueued),
                    infer,
                    batch_size: size,
                }));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, batch = size, "forward pass failed");
            for (reply, _, _) in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Condvar, Mutex as StdMutex};

    fn job(bytes: &'static [u8]) -> (Job, oneshot::Receiver<Result<JobOutcome, String>>) {
        let (tx, rx) = oneshot::channel();
        (
            Job {
                input: Prepared::Raw(Bytes::from_static(bytes)),
                top_k: 5,
                enqueued: Instant::now(),
                reply: tx,
            },
            rx,
        )
    }

    #[test]
    fn gathers_waiting_jobs_into_one_batch() {
        // A 200 ms first batch gives the test ample time to queue three more behind it.
        let engine = Engine::start(
            ModelRunner::Synthetic(SyntheticModel::new(Duration::from_millis(200))),
            BatchPolicy {
                max_batch: 8,
                max_batch_wait: Duration::ZERO,
                queue_limit: 16,
            },
        )
        .unwrap();
        let (j0, r0) = job(b"first");
        engine.submit(j0).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let mut rxs = Vec::new();
        for bytes in [&b"a"[..], b"b", b"c"] {
            let (j, r) = job(bytes);
            engine.submit(j).unwrap();
            rxs.push(r);
        }
        let first = r0.blocking_recv().unwrap().unwrap();
        assert_eq!(first.batch_size, 1);
        for r in rxs {
            let out = r.blocking_recv().unwrap().unwrap();
            assert_eq!(out.batch_size, 3);
            assert_eq!(out.top.len(), 5);
            // Charged 3 × 200 ms for the batch of three.
            assert!(out.infer >= Duration::from_millis(600));
        }
    }

    #[test]
    fn waits_for_more_images_up_to_max_batch_wait() {
        let engine = Engine::start(
            ModelRunner::Synthetic(SyntheticModel::new(Duration::ZERO)),
            BatchPolicy {
                max_batch: 2,
                max_batch_wait: Duration::from_secs(30),
                queue_limit: 16,
            },
        )
        .unwrap();
        let (j0, r0) = job(b"one");
        engine.submit(j0).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let (j1, r1) = job(b"two");
        engine.submit(j1).unwrap();
        // The batch closes as soon as it is full, long before the 30 s wait.
        let a = r0.blocking_recv().unwrap().unwrap();
        let b = r1.blocking_recv().unwrap().unwrap();
        assert_eq!(a.batch_size, 2);
        assert_eq!(b.batch_size, 2);
        assert!(a.queue >= Duration::from_millis(100));
    }

    #[test]
    fn full_queue_is_refused() {
        let engine = Engine::start(
            ModelRunner::Synthetic(SyntheticModel::new(Duration::from_millis(500))),
            BatchPolicy {
                max_batch: 1,
                max_batch_wait: Duration::ZERO,
                queue_limit: 1,
            },
        )
        .unwrap();
        let (j0, _r0) = job(b"busy");
        engine.submit(j0).unwrap();
        // Let the thread take the first job so exactly one queue slot exists.
        std::thread::sleep(Duration::from_millis(100));
        let (j1, _r1) = job(b"queued");
        engine.submit(j1).unwrap();
        let (j2, _r2) = job(b"refused");
        assert_eq!(engine.submit(j2), Err(SubmitError::Full));
        assert_eq!(engine.queued(), 1);
    }

    #[test]
    fn answers_follow_their_requests_and_top_k() {
        let engine = Engine::start(
            ModelRunner::Synthetic(SyntheticModel::new(Duration::ZERO)),
            BatchPolicy {
                max_batch: 4,
                max_batch_wait: Duration::from_millis(20),
                queue_limit: 16,
            },
        )
        .unwrap();
        let mut rxs = Vec::new();
        for (i, bytes) in [&b"p"[..], b"q", b"r"].into_iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            engine
                .submit(Job {
                    input: Prepared::Raw(Bytes::from_static(bytes)),
                    top_k: i + 1,
                    enqueued: Instant::now(),
                    reply: tx,
                })
                .unwrap();
            rxs.push((bytes, i + 1, rx));
        }
        for (bytes, k, rx) in rxs {
            let out = rx.blocking_recv().unwrap().unwrap();
            let expected = crate::synthetic::synthetic_labels(bytes, k);
            assert_eq!(out.top.len(), k);
            let got: Vec<u32> = out.top.iter().map(|l| l.index).collect();
            let want: Vec<u32> = expected.iter().map(|l| l.index).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn two_lanes_run_two_batches_at_once_each_on_its_own_pool() {
        // Every forward pass waits until two are inside at once (or 60 s pass, then answers
        // nothing): with the lanes serialized, neither image would get its labels.
        let inside = Arc::new((StdMutex::new(0usize), Condvar::new()));
        let pools = Arc::new(Mutex::new(Vec::new()));
        let probe = {
            let (inside, pools) = (inside.clone(), pools.clone());
            move |raws: &[Bytes], k: usize| {
                pools
                    .lock()
                    .push((rayon::current_num_threads(), rayon::current_thread_index()));
                let (count, changed) = &*inside;
                let mut n = count.lock().expect("count");
                *n += 1;
                changed.notify_all();
                let (_n, waited) = changed
                    .wait_timeout_while(n, Duration::from_secs(60), |n| *n < 2)
                    .expect("count");
                if waited.timed_out() {
                    return Vec::new();
                }
                raws.iter()
                    .map(|b| crate::synthetic::synthetic_labels(b, k))
                    .collect()
            }
        };
        // Three threads in two lanes: pools of two and one.
        let engine = Engine::start_observed(
            ModelRunner::Probe(Arc::new(probe)),
            BatchPolicy {
                max_batch: 1,
                max_batch_wait: Duration::ZERO,
                queue_limit: 16,
            },
            Parallelism::new(Some(3), Some(2)).expect("valid"),
            Arc::default(),
        )
        .unwrap();
        let (j0, r0) = job(b"one");
        let (j1, r1) = job(b"two");
        engine.submit(j0).unwrap();
        engine.submit(j1).unwrap();
        for r in [r0, r1] {
            let out = r
                .blocking_recv()
                .unwrap()
                .expect("answered while the other lane ran");
            assert_eq!(out.batch_size, 1);
            assert_eq!(out.top.len(), 5);
        }
        let mut seen = pools.lock().clone();
        seen.sort();
        // Each pass ran on its lane's thread 0, inside pools of its share of the threads.
        assert_eq!(seen, vec![(1, Some(0)), (2, Some(0))]);
    }

    #[test]
    fn dropping_the_engine_drains_every_queued_job_across_lanes() {
        let engine = Engine::start_observed(
            ModelRunner::Synthetic(SyntheticModel::new(Duration::from_millis(20))),
            BatchPolicy {
                max_batch: 2,
                max_batch_wait: Duration::ZERO,
                queue_limit: 16,
            },
            Parallelism::new(Some(2), Some(2)).expect("valid"),
            Arc::default(),
        )
        .unwrap();
        let mut rxs = Vec::new();
        for bytes in [&b"a"[..], b"b", b"c", b"d", b"e", b"f", b"g"] {
            let (j, r) = job(bytes);
            engine.submit(j).unwrap();
            rxs.push(r);
        }
        drop(engine);
        for r in rxs {
            let out = r
                .blocking_recv()
                .unwrap()
                .expect("answered before the lanes exit");
            assert_eq!(out.top.len(), 5);
        }
    }
}
