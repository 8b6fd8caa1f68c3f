//! [`Network`]: which GoogLeNet a classifier runs, the stock Burn modules or the fused
//! fast path packed from them.

use burn::tensor::{Device, Tensor, TensorData};

use crate::googlenet::fused::{FusedGoogLeNet, Plan};
use crate::googlenet::{GoogLeNet, NUM_CLASSES};
use crate::{ImageTensor, ModelError, preprocess};

/// The network a classifier runs: the stock Burn modules, or the fused fast path packed
/// from them. The stock modules are kept either way: they are what a native `.bpk` copy
/// saves. Cheap to clone (tensors and packed weights share their data), which is how
/// inference lanes get their own copy; each copy's fused plan is its own.
#[derive(Debug, Clone)]
pub(crate) enum Network {
    /// Burn's own operators on whichever backend the tensors live on.
    Stock(Box<GoogLeNet>),
    /// The fused channels-last operators (burn-flex only).
    Fused {
        /// The folded modules the fused weights were packed from.
        stock: Box<GoogLeNet>,
        /// The packed network that runs.
        fused: Box<FusedGoogLeNet>,
        /// The buffers its passes run in (empty until the first pass).
        plan: Plan,
    },
}

impl Network {
    /// Wraps a loaded network, packing it for the fused operators when `fused` is set.
    pub(crate) fn new(stock: GoogLeNet, fused: bool) -> Result<Self, ModelError> {
        Ok(if fused {
            let fused = FusedGoogLeNet::pack(&stock)?;
            Network::Fused {
                stock: Box::new(stock),
                fused: Box::new(fused),
                plan: Plan::default(),
            }
        } else {
            Network::Stock(Box::new(stock))
        })
    }

    /// The stock modules (for saving).
    pub(crate) fn stock(&self) -> &GoogLeNet {
        match self {
            Network::Stock(stock) | Network::Fused { stock, .. } => stock,
        }
    }

    /// Writes the logits of `images` into `logits` (`[N, 1000]`, row-major). The fused
    /// network allocates nothing here once its plan has run a batch this large; the stock one
    /// runs Burn's operators on `device`.
    pub(crate) fn logits_into(
        &mut self,
        images: &[ImageTensor],
        logits: &mut [f32],
        device: &Device,
    ) -> Result<(), ModelError> {
        match self {
            Network::Fused { fused, plan, .. } => {
                fused.logits_into(plan, images.iter().map(ImageTensor::as_slice), logits);
                Ok(())
            }
            Network::Stock(stock) => {
                let n = images.len();
                let mut input = Vec::with_capacity(n * ImageTensor::LEN);
                for image in images {
                    input.extend_from_slice(image.as_slice());
                }
                let side = preprocess::CROP as usize;
                let input =
                    Tensor::<4>::from_data(TensorData::new(input, [n, 3, side, side]), device);
                let data = stock
                    .forward(input)
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
                logits.copy_from_slice(&data);
                Ok(())
            }
        }
    }
}
