//! [`Classifier`]: GoogLeNet with loaded weights on one backend, run on batches of prepared
//! images from any thread, with as many forward passes at once as it has lanes.

use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::tensor::Device;
use parking_lot::{Mutex, MutexGuard};

use crate::googlenet::NUM_CLASSES;
use crate::network::Network;
use crate::preprocess::ImageTensor;
use crate::{
    Backend, LoadOptions, ModelError, Prediction, WeightsIdentity, WeightsSource, load, native,
    top_k_softmax,
};

/// GoogLeNet with loaded weights on one backend. `Send + Sync`: each call runs on one of the
/// classifier's lanes (one by default, see [`Classifier::with_lanes`]); calls beyond the number
/// of lanes wait for a free one.
pub struct Classifier {
    /// Clones of one module, each run by one call at a time. Never empty. Clones of the
    /// network share their tensors (Burn's `Param` and flex tensors keep their data behind an
    /// `Arc`), so a lane costs only its activations while it runs, not another copy of the
    /// weights, packed or not.
    lanes: Vec<Mutex<Network>>,
    /// Which lane to wait on when every lane is busy: round-robin, so waiters spread out.
    next: AtomicUsize,
    device: Device,
    backend: Backend,
    identity: WeightsIdentity,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("backend", &self.backend)
            .field("identity", &self.identity)
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Loads the weights onto `backend` with [`LoadOptions::default`].
    pub fn load(source: &WeightsSource, backend: Backend) -> Result<Classifier, ModelError> {
        Self::load_with(source, backend, &LoadOptions::default())
    }

    /// Loads the weights onto `backend`, with explicit cache/download options.
    pub fn load_with(
        source: &WeightsSource,
        backend: Backend,
        options: &LoadOptions,
    ) -> Result<Classifier, ModelError> {
        let device = backend.device();
        let (model, identity) = load::load(source, options, &device)?;
        let model = Network::new(model, backend.fused())?;
        tracing::info!(weights = %identity.name, trained = identity.trained, %backend, "GoogLeNet loaded");
        Ok(Classifier {
            lanes: vec![Mutex::new(model)],
            next: AtomicUsize::new(0),
            device,
            backend,
            identity,
        })
    }

    /// The same classifier with `lanes` lanes (at least one): up to `lanes` calls run their
    /// forward passes at once instead of queueing for the one network. Worth it when each pass
    /// leaves cores idle (small batches, fewer intra-op threads than cores); the weights are
    /// shared, so each lane costs only its activations while it runs.
    pub fn with_lanes(mut self, lanes: usize) -> Classifier {
        // A panic in an earlier forward pass leaves the weights as they were (the forward pass
        // only reads them), so a lane's module is always good to clone.
        let model = self.lanes[0].lock().clone();
        self.lanes = (0..lanes.max(1))
            .map(|_| Mutex::new(model.clone()))
            .collect();
        self
    }

    /// How many forward passes can run at once.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// What the weights are.
    pub fn identity(&self) -> &WeightsIdentity {
        &self.identity
    }

    /// The backend running the network.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Raw logits `[N][1000]` for `images`, in one forward pass.
    pub fn logits(&self, images: &[ImageTensor]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.logits_on_lane(images, |_| {})
    }

    /// [`Classifier::logits`], calling `on_lane` with the lane's index while holding it (the
    /// tests' window onto which lanes run at once).
    fn logits_on_lane(
        &self,
        images: &[ImageTensor],
        on_lane: impl FnOnce(usize),
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let mut logits = vec![0.0; images.len() * NUM_CLASSES];
        let (index, mut model) = self.take_lane();
        on_lane(index);
        model.logits_into(images, &mut logits, &self.device)?;
        drop(model);
        Ok(logits.chunks(NUM_CLASSES).map(<[f32]>::to_vec).collect())
    }

    /// Raw logits of `images` written into `logits` (`[N, 1000]`, row-major: image `i`'s
    /// class `c` at `i * 1000 + c`), in one forward pass. On the default (fused) backend this
    /// allocates nothing once the lane it runs on has served a batch this large: every
    /// activation lives in the lane's reused buffers.
    pub fn logits_into(
        &self,
        images: &[ImageTensor],
        logits: &mut [f32],
    ) -> Result<(), ModelError> {
        if logits.len() != images.len() * NUM_CLASSES {
            return Err(ModelError::Inference(format!(
                "{} logits for {} images: give {} (1000 per image)",
                logits.len(),
                images.len(),
                images.len() * NUM_CLASSES
            )));
        }
        if images.is_empty() {
            return Ok(());
        }
        let (_, mut model) = self.take_lane();
        model.logits_into(images, logits, &self.device)
    }

    /// The first free lane, in order (so a lightly loaded classifier keeps using the same
    /// lanes' warm buffers); when all are busy, waits for one chosen round-robin.
    /// A panic in an earlier forward pass leaves the lane usable: the pass only reads the
    /// weights, and its buffers are rewritten by the next one (`parking_lot` does not poison).
    fn take_lane(&self) -> (usize, MutexGuard<'_, Network>) {
        for (index, lane) in self.lanes.iter().enumerate() {
            if let Some(model) = lane.try_lock() {
                return (index, model);
            }
        }
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        (index, self.lanes[index].lock())
    }

    /// The `top_k` most probable classes for each image (softmax over all 1000), best first,
    /// from one forward pass over the whole batch. `top_k` is capped at 1000.
    pub fn classify_batch(
        &self,
        images: &[ImageTensor],
        top_k: usize,
    ) -> Result<Vec<Vec<Prediction>>, ModelError> {
        Ok(self
            .logits(images)?
            .iter()
            .map(|logits| top_k_softmax(logits, top_k))
            .collect())
    }

    /// Writes the folded network in Burn's native format (`.bpk`), for fast start with
    /// [`WeightsSource::Path`]. Written to a temporary name and renamed into place.
    pub fn save_native(&self, path: &Path) -> Result<(), ModelError> {
        let model = self.lanes[0].lock();
        native::save_native(model.stock(), path, &self.identity)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Condvar, Mutex as StdMutex};
    use std::time::Duration;

    use super::*;
    use crate::ImageError;

    #[test]
    fn public_types_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Classifier>();
        send_sync::<ImageTensor>();
        send_sync::<Prediction>();
        send_sync::<ModelError>();
        send_sync::<ImageError>();
    }

    /// The default backend runs the fused network, the others the stock one, and on random
    /// weights (unlike the fixture, activations spread over every channel) the fused and
    /// stock paths agree on the logits of a non-constant image.
    #[test]
    fn flex_runs_the_fused_network_and_agrees_with_stock() {
        let fused = Classifier::load(&WeightsSource::Random { seed: 5 }, Backend::default())
            .expect("random weights")
            .with_lanes(2);
        assert!(Backend::default().fused());
        for lane in &fused.lanes {
            let lane = lane.lock();
            assert!(
                matches!(*lane, Network::Fused { .. }),
                "default backend is not fused"
            );
        }
        let stock = Classifier::load(&WeightsSource::Random { seed: 5 }, Backend::FlexStock)
            .expect("random weights");
        assert!(matches!(*stock.lanes[0].lock(), Network::Stock(_)));
        let values: Vec<f32> = (0..ImageTensor::LEN)
            .map(|i| ((i * 7919) % 1000) as f32 / 400.0 - 1.2)
            .collect();
        let images = vec![
            ImageTensor::from_chw(values).expect("tensor"),
            image(),
            image(),
        ];
        let (a, b) = (
            fused.logits(&images).expect("fused"),
            stock.logits(&images).expect("stock"),
        );
        let diff = a
            .iter()
            .flatten()
            .zip(b.iter().flatten())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(diff < 1e-3, "fused and stock logits differ by {diff}");
        assert!(
            a[0] != a[1],
            "different images should give different logits"
        );
    }

    fn random() -> Classifier {
        Classifier::load(&WeightsSource::Random { seed: 3 }, Backend::FlexStock)
            .expect("random weights")
    }

    fn image() -> ImageTensor {
        ImageTensor::from_chw(vec![0.25; ImageTensor::LEN]).expect("tensor")
    }

    #[test]
    fn lanes_are_clamped_to_at_least_one() {
        let classifier = random();
        assert_eq!(classifier.lanes(), 1);
        let classifier = classifier.with_lanes(0);
        assert_eq!(classifier.lanes(), 1);
        assert_eq!(classifier.with_lanes(3).lanes(), 3);
    }

    /// Two calls hold both lanes at the same moment: each, once it has its lane, waits (up to
    /// a generous two minutes, never reached when lanes work) for the other to have one too.
    /// Were calls serialized on one network, the first would wait out the timeout with the
    /// second queued behind it, and the test would fail.
    #[test]
    fn two_lanes_run_two_forward_passes_at_once() {
        let classifier = Arc::new(random().with_lanes(2));
        assert_eq!(classifier.lanes(), 2);
        let single = classifier.logits(&[image()]).expect("forward");
        let held = Arc::new((StdMutex::new(Vec::<usize>::new()), Condvar::new()));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let classifier = Arc::clone(&classifier);
                let held = Arc::clone(&held);
                std::thread::spawn(move || {
                    let mut met = false;
                    let logits = classifier
                        .logits_on_lane(&[image()], |lane| {
                            let (lanes, cv) = &*held;
                            let mut lanes = lanes.lock().expect("lock");
                            lanes.push(lane);
                            cv.notify_all();
                            let (lanes, _) = cv
                                .wait_timeout_while(lanes, Duration::from_secs(120), |l| {
                                    l.len() < 2
                                })
                                .expect("wait");
                            met = lanes.len() == 2;
                        })
                        .expect("forward");
                    // More calls, now free to queue: every one still answers.
                    for _ in 0..2 {
                        classifier.logits(&[image()]).expect("forward");
                    }
                    (met, logits)
                })
            })
            .collect();
        for thread in threads {
            let (met, logits) = thread.join().expect("thread");
            assert!(met, "the two calls never held a lane each at the same time");
            assert_eq!(logits, single, "every lane runs the same network");
        }
        let mut lanes = held.0.lock().expect("lock").clone();
        lanes.sort_unstable();
        assert_eq!(lanes, [0, 1]);
    }

    #[test]
    fn more_callers_than_lanes_all_get_answers() {
        let classifier = Arc::new(random().with_lanes(2));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let classifier = Arc::clone(&classifier);
                std::thread::spawn(move || {
                    for _ in 0..2 {
                        let answers = classifier.classify_batch(&[image()], 1).expect("classify");
                        assert_eq!(answers.len(), 1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("thread");
        }
    }
}
