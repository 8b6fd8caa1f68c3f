//! The inference thread and its dynamic batching.
//!
//! One dedicated OS thread owns the model. Request handlers (async, on the tokio runtime) hand
//! it prepared images through a bounded queue and await a oneshot answer, so the forward pass
//! never blocks a runtime thread (a blocked runtime makes quinn miss its timers, quinn #1509).
//!
//! Batching follows Triton's two knobs: the thread takes the first waiting image, then gathers
//! more until it has `max_batch` of them or `max_batch_wait` has passed since it took the first.
//! With `max_batch_wait = 0` (the default) it only takes what is already waiting: batching then
//! happens exactly when the node is behind, and an idle node adds no delay to a lone image.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glimpse_model::{Classifier, ImageTensor};
use glimpse_transport::Label;
use tokio::sync::oneshot;

use crate::observe::BatchHistograms;
use crate::synthetic::SyntheticModel;

/// The model the inference thread runs.
pub(crate) enum ModelRunner {
    /// GoogLeNet through glimpse-model; expects decoded, preprocessed tensors.
    GoogLeNet(Arc<Classifier>),
    /// The synthetic stand-in; expects the raw image bytes.
    Synthetic(SyntheticModel),
}

impl ModelRunner {
    /// Whether requests must be decoded and preprocessed before they reach this model.
    pub(crate) fn needs_decoding(&self) -> bool {
        matches!(self, ModelRunner::GoogLeNet(_))
    }
}

/// What one request hands the inference thread.
pub(crate) enum Prepared {
    /// A preprocessed image for GoogLeNet.
    Tensor(ImageTensor),
    /// Raw bytes for the synthetic model.
    Raw(Bytes),
}

/// One image waiting for the inference thread.
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
    /// The inference thread has stopped (it only does when the node shuts down).
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

/// Handle to the inference thread. Dropping it closes the queue; the thread finishes the jobs
/// already queued and exits.
pub(crate) struct Engine {
    tx: Option<SyncSender<Job>>,
    queued: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the inference thread with `model`.
    #[cfg(test)]
    pub(crate) fn start(model: ModelRunner, policy: BatchPolicy) -> std::io::Result<Engine> {
        Engine::start_observed(model, policy, Arc::default())
    }

    /// Starts the inference thread with `model`, recording every forward pass in `batches`.
    pub(crate) fn start_observed(
        model: ModelRunner,
        policy: BatchPolicy,
        batches: Arc<BatchHistograms>,
    ) -> std::io::Result<Engine> {
        let (tx, rx) = mpsc::sync_channel(policy.queue_limit.max(1));
        let queued = Arc::new(AtomicU32::new(0));
        let thread_queued = queued.clone();
        let thread = std::thread::Builder::new()
            .name("glimpse-infer".into())
            .spawn(move || inference_loop(rx, model, policy, thread_queued, &batches))?;
        Ok(Engine {
            tx: Some(tx),
            queued,
            thread: Some(thread),
        })
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

    /// Images waiting for a forward pass (not counting the one running).
    pub(crate) fn queued(&self) -> u32 {
        self.queued.load(Ordering::SeqCst)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(thread) = self.thread.take() {
            // The thread only ever finishes the current batch before it sees the closed queue.
            let _ = thread.join();
        }
    }
}

fn inference_loop(
    rx: Receiver<Job>,
    model: ModelRunner,
    policy: BatchPolicy,
    queued: Arc<AtomicU32>,
    batches: &BatchHistograms,
) {
    let max_batch = policy.max_batch.max(1);
    while let Ok(first) = rx.recv() {
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
        queued.fetch_sub(batch.len() as u32, Ordering::SeqCst);
        // A request whose stream was reset or whose client gave up has dropped its receiver:
        // skip it rather than spend a forward pass on an answer nobody reads.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        run_batch(&model, batch, batches);
    }
    tracing::debug!("inference queue closed; inference thread exits");
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
}
