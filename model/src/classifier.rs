//! [`Classifier`]: GoogLeNet with loaded weights on one backend, run on batches of prepared
//! images from any thread.

use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use burn::tensor::{Device, Tensor, TensorData};

use crate::googlenet::{GoogLeNet, NUM_CLASSES};
use crate::preprocess::{self, ImageTensor};
use crate::{
    Backend, LoadOptions, ModelError, Prediction, WeightsIdentity, WeightsSource, load, native,
    top_k_softmax,
};

/// GoogLeNet with loaded weights on one backend. `Send + Sync`: calls from several threads
/// are serialized (each forward pass already uses every core).
pub struct Classifier {
    model: Mutex<GoogLeNet>,
    device: Device,
    backend: Backend,
    identity: WeightsIdentity,
}

impl fmt::Debug for Classifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Classifier")
            .field("backend", &self.backend)
            .field("identity", &self.identity)
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
        tracing::info!(weights = %identity.name, trained = identity.trained, %backend, "GoogLeNet loaded");
        Ok(Classifier {
            model: Mutex::new(model),
            device,
            backend,
            identity,
        })
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
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let n = images.len();
        let mut input = Vec::with_capacity(n * ImageTensor::LEN);
        for image in images {
            input.extend_from_slice(image.as_slice());
        }
        let side = preprocess::CROP as usize;
        let input =
            Tensor::<4>::from_data(TensorData::new(input, [n, 3, side, side]), &self.device);
        let model = self.model.lock().map_err(|_| poisoned())?;
        let output = model.forward(input);
        drop(model);
        let data = output
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| ModelError::Inference(format!("{e:?}")))?;
        if data.len() != n * NUM_CLASSES {
            return Err(ModelError::Inference(format!(
                "expected {} outputs, got {}",
                n * NUM_CLASSES,
                data.len()
            )));
        }
        Ok(data.chunks(NUM_CLASSES).map(<[f32]>::to_vec).collect())
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
        let model = self.model.lock().map_err(|_| poisoned())?;
        native::save_native(&model, path, &self.identity)
    }
}

fn poisoned() -> ModelError {
    ModelError::Internal("a previous inference panicked".into())
}

#[cfg(test)]
mod tests {
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
}
