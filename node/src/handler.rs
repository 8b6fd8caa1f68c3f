//! The node's request handler: admission, decoding off the runtime, the inference queue,
//! fault injection and load reporting.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use glimpse_model::DecodeLimits;
use glimpse_transport::{
    Handler, InferenceAnswer, InferenceError, InferenceRequest, LoadReport, Timings,
};
use tokio::sync::{Semaphore, oneshot};

use crate::engine::{Engine, Job, Prepared, SubmitError};
use crate::faults::{FaultDecision, Faults, die_abruptly};

/// Weight of the newest sample in the latency average reported to front-ends: 0.2 follows a
/// change within about ten requests without jumping on one outlier.
const LATENCY_EWMA_ALPHA: f32 = 0.2;

/// Counters a node keeps about itself (also logged at shutdown).
#[derive(Debug, Default)]
pub struct NodeCounters {
    pub answered: AtomicU64,
    pub failed: AtomicU64,
    pub overloaded: AtomicU64,
}

/// A point-in-time copy of [`NodeCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeStats {
    pub answered: u64,
    pub failed: u64,
    pub overloaded: u64,
}

impl NodeCounters {
    pub fn snapshot(&self) -> NodeStats {
        NodeStats {
            answered: self.answered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            overloaded: self.overloaded.load(Ordering::Relaxed),
        }
    }
}

/// Implements the transport's [`Handler`] for one node.
pub struct NodeHandler {
    engine: Engine,
    decode: bool,
    limits: DecodeLimits,
    /// Decoding is CPU work on tokio's blocking pool; at most one decode per core runs at once
    /// so a burst of uploads cannot spawn hundreds of blocking threads.
    decode_permits: Semaphore,
    faults: Faults,
    capacity: u32,
    in_flight: AtomicU32,
    /// f32 bits of the latency EWMA in ms; 0 until the first answer.
    latency_ms: AtomicU32,
    latency_lock: Mutex<()>,
    counters: Arc<NodeCounters>,
}

/// Decrements the in-flight count however the request ends, including when the transport
/// drops the future because the stream was reset or the client went away.
struct InFlight<'a>(&'a AtomicU32);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl NodeHandler {
    pub(crate) fn new(
        engine: Engine,
        decode: bool,
        limits: DecodeLimits,
        faults: Faults,
        capacity: u32,
        counters: Arc<NodeCounters>,
    ) -> NodeHandler {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        NodeHandler {
            engine,
            decode,
            limits,
            decode_permits: Semaphore::new(cores),
            faults,
            capacity,
            in_flight: AtomicU32::new(0),
            latency_ms: AtomicU32::new(0),
            latency_lock: Mutex::new(()),
            counters,
        }
    }

    fn record_latency(&self, elapsed: Duration) {
        let sample = elapsed.as_secs_f32() * 1000.0;
        let _guard = self.latency_lock.lock();
        let old = f32::from_bits(self.latency_ms.load(Ordering::Relaxed));
        let new = if old == 0.0 {
            sample
        } else {
            old + LATENCY_EWMA_ALPHA * (sample - old)
        };
        self.latency_ms.store(new.to_bits(), Ordering::Relaxed);
    }

    /// Decodes (GoogLeNet only), queues for the inference thread and awaits the answer. A
    /// request whose front-end gives up (attempt timeout, deadline, lost hedge) has its stream
    /// reset; the transport then drops this future, and the inference thread skips the job.
    async fn serve(&self, req: InferenceRequest) -> Result<InferenceAnswer, InferenceError> {
        let top_k = usize::try_from(req.top_k)
            .unwrap_or(usize::MAX)
            .clamp(1, 1000);
        let mut decode_ms = 0.0;
        let mut preprocess_ms = 0.0;
        let mut waited = Duration::ZERO;
        let input = if self.decode {
            let wait_start = Instant::now();
            let _permit = self
                .decode_permits
                .acquire()
                .await
                .map_err(|_| InferenceError::Draining)?;
            waited += wait_start.elapsed();
            let limits = self.limits.clone();
            let image = req.image;
            let prepared = tokio::task::spawn_blocking(move || {
                let t0 = Instant::now();
                let decoded = glimpse_model::decode(&image, &limits);
                let decode = t0.elapsed();
                decoded.map(|rgb| {
                    let t1 = Instant::now();
                    let tensor = glimpse_model::preprocess(&rgb);
                    (tensor, decode, t1.elapsed())
                })
            })
            .await
            .map_err(|e| InferenceError::Internal(format!("decoder task failed: {e}")))?;
            let (tensor, decode, preprocess) = prepared.map_err(image_error)?;
            decode_ms = ms(decode);
            preprocess_ms = ms(preprocess);
            Prepared::Tensor(tensor)
        } else {
            Prepared::Raw(req.image)
        };

        let (reply, answer) = oneshot::channel();
        let submitted = self.engine.submit(Job {
            input,
            top_k,
            enqueued: Instant::now(),
            reply,
        });
        match submitted {
            Ok(()) => {}
            Err(SubmitError::Full) => {
                self.counters.overloaded.fetch_add(1, Ordering::Relaxed);
                return Err(InferenceError::Overloaded);
            }
            Err(SubmitError::Stopped) => return Err(InferenceError::Draining),
        }
        let outcome = answer
            .await
            .map_err(|_| InferenceError::Internal("inference thread stopped".into()))?
            .map_err(InferenceError::Internal)?;

        let delay = self.faults.extra_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok(InferenceAnswer {
            top: outcome.top,
            timings: Timings {
                queue_ms: ms(waited + outcome.queue),
                decode_ms,
                preprocess_ms,
                infer_ms: ms(outcome.infer),
            },
            synthetic: !self.decode,
        })
    }
}

fn ms(d: Duration) -> f32 {
    d.as_secs_f32() * 1000.0
}

fn image_error(err: glimpse_model::ImageError) -> InferenceError {
    match err {
        glimpse_model::ImageError::TooLarge { .. } => InferenceError::TooLarge(err.to_string()),
        other => InferenceError::BadImage(other.to_string()),
    }
}

impl Handler for NodeHandler {
    async fn handle(&self, req: InferenceRequest) -> Result<InferenceAnswer, InferenceError> {
        let arrived = Instant::now();
        match self.faults.decide() {
            FaultDecision::Proceed => {}
            FaultDecision::Die => {
                tracing::error!(request_id = req.request_id, "injected failure: dying now");
                die_abruptly();
            }
            FaultDecision::Stall => {
                tracing::warn!(
                    request_id = req.request_id,
                    "injected stall: never answering"
                );
                // Hold the in-flight slot too: a wedged process does not free its work.
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                let _slot = InFlight(&self.in_flight);
                std::future::pending::<()>().await;
            }
        }

        // Admission: QUIC's stream limit already caps one connection at `capacity`; this caps
        // the node as a whole when several front-ends share it.
        let before = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _slot = InFlight(&self.in_flight);
        if before >= self.capacity {
            self.counters.overloaded.fetch_add(1, Ordering::Relaxed);
            return Err(InferenceError::Overloaded);
        }

        let result = self.serve(req).await;
        match &result {
            Ok(_) => {
                self.counters.answered.fetch_add(1, Ordering::Relaxed);
                self.record_latency(arrived.elapsed());
            }
            Err(_) => {
                self.counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        result
    }

    fn load(&self) -> LoadReport {
        LoadReport {
            in_flight: self.in_flight.load(Ordering::SeqCst),
            queued: self.engine.queued(),
            recent_latency_ms: f32::from_bits(self.latency_ms.load(Ordering::Relaxed)),
        }
    }
}
