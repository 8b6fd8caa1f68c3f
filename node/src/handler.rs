//! The node's request handler: admission, the decode budget, decoding off the runtime, the
//! inference queue, "work started" signals, fault injection and load reporting.
//!
//! A GoogLeNet request goes through, in order:
//! 1. admission: at most `capacity` requests on the node (beyond it: Overloaded);
//! 2. a header-only probe of the image ([`glimpse_model::probe`]): its size and the bytes its
//!    decode will hold at once (`decode_bytes`). An image over the pixel cap, or whose
//!    decode could never fit the whole decode budget, is refused as TooLarge here, at once;
//! 3. the decode budget: `decode_bytes` reserved from a FIFO semaphore shared by every
//!    request (a request waits for earlier ones, so a large image is not starved by small
//!    ones), then one of the one-per-core decode permits;
//! 4. Started is sent to the front-end (with the expected decode + preprocess time): the
//!    request stops waiting here and real work begins;
//! 5. decode and preprocess on tokio's blocking pool. The budget and core permits are *moved
//!    into* that closure: if the front-end cancels now, the transport drops this future but
//!    the blocking decode runs on to its end, still holding its bytes and its core, so the
//!    budget always covers what is really allocated;
//! 6. the inference lanes' queue, and the answer.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use glimpse_model::DecodeLimits;
use glimpse_transport::{
    Handler, InferenceAnswer, InferenceError, InferenceRequest, LoadReport, Timings, WorkStarted,
};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use crate::engine::{Engine, Job, JobOutcome, Prepared, SubmitError};
use crate::faults::{FaultDecision, Faults, die_abruptly};

/// Weight of the newest sample in the latency average reported to front-ends: 0.2 follows a
/// change within about ten requests without jumping on one outlier.
const LATENCY_EWMA_ALPHA: f32 = 0.2;

/// The decode budget is counted in permits of this many bytes (a u32 of them covers 4 TiB).
const BUDGET_UNIT: u64 = 1024;

/// Decode + preprocess time per byte of `decode_bytes` assumed before this node has
/// measured its own (nanoseconds). Measured on the shared 2-core development machine (test
/// build, `model/tests/decode_memory.rs`): 0.9 to 3.2 ns/byte (the 16000×4000 GIF canvas
/// 1.7, a 2400×1600 JPEG 1.5, PNGs up to 3.2, small images lower). The start value is above
/// all of them on purpose: the front-end lets a started request run for twice this estimate
/// (plus its usual timeout) before it sends a copy elsewhere. A first guess that is too
/// short would make a cold node's big decodes run on two nodes; one that is too long only
/// delays the rescue of a wedged decode until the measured rate takes over (a few requests).
const INITIAL_DECODE_NS_PER_BYTE: f64 = 5.0;

/// Weight of the newest decode in the rate average: 0.2, as for latency.
const RATE_EWMA_ALPHA: f64 = 0.2;

/// Counters a node keeps about itself (also logged at shutdown).
#[derive(Debug, Default)]
pub(crate) struct NodeCounters {
    pub answered: AtomicU64,
    pub failed: AtomicU64,
    pub overloaded: AtomicU64,
    /// Blocking decodes that ran to their end (whatever their result, and whether or not
    /// the front-end still wanted the answer).
    pub decoded: AtomicU64,
    /// Bytes of the decode budget reserved by decodes right now.
    pub decode_budget_in_use: AtomicU64,
    /// Most bytes of the decode budget ever reserved at once.
    pub decode_budget_peak: AtomicU64,
    /// Requests admitted and not yet ended, counted apart from the admission check so a
    /// broken check shows here.
    pub held: AtomicU64,
    /// Most requests ever held at once.
    pub held_peak: AtomicU64,
}

/// A point-in-time copy of [`NodeCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct NodeStats {
    /// Requests answered with labels.
    pub answered: u64,
    /// Admitted requests that ended in an error instead (bad or too large image, full
    /// inference queue, draining, model failure).
    pub failed: u64,
    /// Requests refused as overloaded: over `capacity` at admission, or (also counted in
    /// `failed`) refused by a full inference queue.
    pub overloaded: u64,
    /// Blocking decodes that ran to their end, whatever their result and whether or not the
    /// front-end still wanted the answer.
    pub decoded: u64,
    /// Bytes of the decode budget reserved by running decodes at the time of the snapshot.
    pub decode_budget_in_use_bytes: u64,
    /// Most bytes of the decode budget ever reserved at once.
    pub decode_budget_peak_bytes: u64,
    /// Most requests admitted and not yet ended at once. Admission keeps it at or below
    /// `capacity` however many front-ends share the node; logged at shutdown, so a test
    /// of several front-ends can check it from outside.
    pub held_peak: u64,
}

impl NodeCounters {
    pub(crate) fn snapshot(&self) -> NodeStats {
        // The budget in use is read before `decoded`: a decode counts itself before it
        // returns its budget, so a snapshot with nothing in use has counted every decode
        // that held some.
        let decode_budget_in_use_bytes = self.decode_budget_in_use.load(Ordering::SeqCst);
        NodeStats {
            answered: self.answered.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            overloaded: self.overloaded.load(Ordering::Relaxed),
            decoded: self.decoded.load(Ordering::SeqCst),
            decode_budget_in_use_bytes,
            decode_budget_peak_bytes: self.decode_budget_peak.load(Ordering::SeqCst),
            held_peak: self.held_peak.load(Ordering::SeqCst),
        }
    }
}

/// What one decode holds until its blocking work ends: its share of the decode budget and
/// its core. Dropped at the end of the blocking closure, never earlier, whatever happens to
/// the request. The gauge goes down before the permits are returned, so it never shows
/// more than the semaphore really lends.
struct DecodeReservation {
    bytes: u64,
    counters: Arc<NodeCounters>,
    _budget: OwnedSemaphorePermit,
    _core: OwnedSemaphorePermit,
}

impl DecodeReservation {
    fn new(
        bytes: u64,
        counters: Arc<NodeCounters>,
        budget: OwnedSemaphorePermit,
        core: OwnedSemaphorePermit,
    ) -> Self {
        let now = counters
            .decode_budget_in_use
            .fetch_add(bytes, Ordering::SeqCst)
            + bytes;
        counters.decode_budget_peak.fetch_max(now, Ordering::SeqCst);
        DecodeReservation {
            bytes,
            counters,
            _budget: budget,
            _core: core,
        }
    }
}

impl Drop for DecodeReservation {
    fn drop(&mut self) {
        self.counters
            .decode_budget_in_use
            .fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// Implements the transport's [`Handler`] for one node.
pub struct NodeHandler {
    engine: Engine,
    decode: bool,
    limits: DecodeLimits,
    /// Decoding is CPU work on tokio's blocking pool; at most one decode per core runs at once
    /// so a burst of uploads cannot spawn hundreds of blocking threads.
    decode_permits: Arc<Semaphore>,
    /// The decode budget, one permit per [`BUDGET_UNIT`] bytes. tokio's semaphore is fair: a
    /// request waiting for many permits holds back later ones, so waits are first come,
    /// first served and a large image is not starved.
    decode_budget: Arc<Semaphore>,
    /// The budget in bytes, for messages and the too-large check.
    budget_bytes: u64,
    /// f64 bits of the average decode + preprocess time per byte of `decode_bytes` (ns).
    decode_rate: Arc<AtomicU64>,
    faults: Faults,
    capacity: u32,
    in_flight: AtomicU32,
    /// f32 bits of the latency EWMA in ms; 0 until the first answer.
    latency_ms: AtomicU32,
    latency_lock: Mutex<()>,
    /// Service time (µs, queueing excluded) and count of the images answered since the last
    /// load report: the report's `service_ms`, from which every front-end learns this
    /// node's speed.
    recent_service: Mutex<(u64, u32)>,
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

/// One admitted request in [`NodeCounters::held`], until it ends however it ends.
struct Held<'a>(&'a NodeCounters);

impl<'a> Held<'a> {
    fn enter(counters: &'a NodeCounters) -> Held<'a> {
        let now = counters.held.fetch_add(1, Ordering::SeqCst) + 1;
        counters.held_peak.fetch_max(now, Ordering::SeqCst);
        Held(counters)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
    }
}

impl NodeHandler {
    pub(crate) fn new(
        engine: Engine,
        decode: bool,
        limits: DecodeLimits,
        budget_bytes: u64,
        faults: Faults,
        capacity: u32,
        counters: Arc<NodeCounters>,
    ) -> NodeHandler {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let units = usize::try_from(budget_bytes / BUDGET_UNIT)
            .unwrap_or(Semaphore::MAX_PERMITS)
            .min(Semaphore::MAX_PERMITS);
        NodeHandler {
            engine,
            decode,
            limits,
            decode_permits: Arc::new(Semaphore::new(cores)),
            decode_budget: Arc::new(Semaphore::new(units)),
            budget_bytes,
            decode_rate: Arc::new(AtomicU64::new(INITIAL_DECODE_NS_PER_BYTE.to_bits())),
            faults,
            capacity,
            in_flight: AtomicU32::new(0),
            latency_ms: AtomicU32::new(0),
            latency_lock: Mutex::new(()),
            recent_service: Mutex::new((0, 0)),
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

    /// Expected decode + preprocess time for an image that holds `decode_bytes`.
    fn expected_work(&self, decode_bytes: u64) -> Duration {
        let ns_per_byte = f64::from_bits(self.decode_rate.load(Ordering::Relaxed));
        Duration::from_secs_f64((decode_bytes as f64 * ns_per_byte / 1e9).clamp(0.0, 3600.0))
    }

    /// Decodes (GoogLeNet only), queues for the inference lanes and awaits the answer. A
    /// request whose front-end gives up (attempt timeout, deadline, lost hedge) has its stream
    /// reset; the transport then drops this future, and the lane that takes the job skips it.
    async fn serve(
        &self,
        req: InferenceRequest,
        started: WorkStarted,
    ) -> Result<InferenceAnswer, InferenceError> {
        let top_k = usize::try_from(req.top_k)
            .unwrap_or(usize::MAX)
            .clamp(1, 1000);
        let mut decode_ms = 0.0;
        let mut preprocess_ms = 0.0;
        let mut waited = Duration::ZERO;
        let input = if self.decode {
            let (tensor, decode, preprocess, wait) = self.decode(req.image, started).await?;
            decode_ms = ms(decode);
            preprocess_ms = ms(preprocess);
            waited = wait;
            Prepared::Tensor(tensor)
        } else {
            // The synthetic model does no work before its queue: it started on admission.
            started.send(Duration::ZERO);
            Prepared::Raw(req.image)
        };

        let outcome = self.infer(input, top_k).await?;

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
                batch_size: Some(u32::try_from(outcome.batch_size).unwrap_or(u32::MAX)),
            },
            synthetic: !self.decode,
        })
    }

    /// Queues the prepared image for the inference lanes and waits for its labels (the
    /// queue and the forward pass, in one span).
    #[tracing::instrument(name = "node.infer", skip_all)]
    async fn infer(&self, input: Prepared, top_k: usize) -> Result<JobOutcome, InferenceError> {
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
        answer
            .await
            .map_err(|_| InferenceError::Internal("inference lanes stopped".into()))?
            .map_err(InferenceError::Internal)
    }

    /// Probe, reserve the decode budget and a core, say Started, then decode and preprocess
    /// on the blocking pool. Returns the tensor, the decode and preprocess times, and how
    /// long the request waited for the budget and a core.
    #[tracing::instrument(name = "node.decode", skip_all, fields(glimpse.image_bytes = image.len() as i64))]
    async fn decode(
        &self,
        image: bytes::Bytes,
        started: WorkStarted,
    ) -> Result<(glimpse_model::ImageTensor, Duration, Duration, Duration), InferenceError> {
        // The header alone: size checks, and what the decode will cost. Off the runtime
        // (a JPEG header read copies the file once).
        let limits = self.limits.clone();
        let header = image.clone();
        let info = tokio::task::spawn_blocking(move || glimpse_model::probe(&header, &limits))
            .await
            .map_err(|e| InferenceError::Internal(format!("probe task failed: {e}")))?
            .map_err(image_error)?;
        let units = info.decode_bytes.div_ceil(BUDGET_UNIT);
        let Some(units) = u32::try_from(units)
            .ok()
            .filter(|u| u64::from(*u) * BUDGET_UNIT <= self.budget_bytes)
        else {
            // Never queued: it would wait forever.
            return Err(InferenceError::TooLarge(format!(
                "decoding this {}x{} image needs about {} MiB, more than this node's whole \
                 decode budget of {} MiB (--decode-budget-bytes)",
                info.width,
                info.height,
                info.decode_bytes.div_ceil(1 << 20),
                self.budget_bytes >> 20
            )));
        };

        let wait_start = Instant::now();
        let budget = self
            .decode_budget
            .clone()
            .acquire_many_owned(units)
            .await
            .map_err(|_| InferenceError::Draining)?;
        let core = self
            .decode_permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| InferenceError::Draining)?;
        let waited = wait_start.elapsed();
        let reservation = DecodeReservation::new(
            u64::from(units) * BUDGET_UNIT,
            self.counters.clone(),
            budget,
            core,
        );
        started.send(self.expected_work(info.decode_bytes));

        let limits = self.limits.clone();
        let counters = self.counters.clone();
        let rate = self.decode_rate.clone();
        let decode_bytes = info.decode_bytes;
        let prepared = tokio::task::spawn_blocking(move || {
            // Held until this closure returns, even if the request is cancelled meanwhile.
            let _reservation = reservation;
            let t0 = Instant::now();
            let decoded = glimpse_model::decode(&image, &limits);
            let decode = t0.elapsed();
            counters.decoded.fetch_add(1, Ordering::SeqCst);
            let result = decoded.map(|rgb| {
                let t1 = Instant::now();
                let tensor = glimpse_model::preprocess(&rgb);
                drop(rgb);
                (tensor, decode, t1.elapsed())
            });
            if result.is_ok() {
                record_rate(&rate, t0.elapsed(), decode_bytes);
            }
            result
        })
        .await
        .map_err(|e| InferenceError::Internal(format!("decoder task failed: {e}")))?;
        let (tensor, decode, preprocess) = prepared.map_err(image_error)?;
        Ok((tensor, decode, preprocess, waited))
    }
}

/// Folds one decode's time per byte into the node's average.
fn record_rate(rate: &AtomicU64, elapsed: Duration, decode_bytes: u64) {
    if decode_bytes == 0 {
        return;
    }
    let sample = elapsed.as_nanos() as f64 / decode_bytes as f64;
    // A lost update between two racing decodes only drops one sample.
    let old = f64::from_bits(rate.load(Ordering::Relaxed));
    let new = old + RATE_EWMA_ALPHA * (sample - old);
    if new.is_finite() && new > 0.0 {
        rate.store(new.to_bits(), Ordering::Relaxed);
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
    async fn handle(
        &self,
        req: InferenceRequest,
        started: WorkStarted,
    ) -> Result<InferenceAnswer, InferenceError> {
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
                // A stall models a request wedged *after* work began: say so, so the
                // front-end reopens it elsewhere without cancelling it, as it always did.
                started.send(Duration::ZERO);
                // Hold the in-flight slot too: a wedged process does not free its work.
                self.in_flight.fetch_add(1, Ordering::SeqCst);
                let _slot = InFlight(&self.in_flight);
                return std::future::pending().await;
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
        let _held = Held::enter(&self.counters);

        let result = self.serve(req, started).await;
        match &result {
            Ok(answer) => {
                self.counters.answered.fetch_add(1, Ordering::Relaxed);
                self.record_latency(arrived.elapsed());
                let us = (answer.timings.service_ms() * 1000.0) as u64;
                let mut recent = self.recent_service.lock();
                *recent = (recent.0.saturating_add(us), recent.1.saturating_add(1));
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
            service_ms: {
                let (us, count) = std::mem::take(&mut *self.recent_service.lock());
                (count > 0).then(|| us as f32 / count as f32 / 1000.0)
            },
            lanes: Some(self.engine.lanes()),
        }
    }
}
