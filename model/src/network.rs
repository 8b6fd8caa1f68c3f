//! [`Network`]: which GoogLeNet a classifier runs, the stock Burn modules or the fused
//! fast path packed from them.

use burn::tensor::{Device, Tensor};

use crate::ModelError;
use crate::googlenet::GoogLeNet;
use crate::googlenet::fused::FusedGoogLeNet;

/// The network a classifier runs: the stock Burn modules, or the fused fast path packed
/// from them. The stock modules are kept either way: they are what a native `.bpk` copy
/// saves. Cheap to clone (tensors share their data), which is how inference lanes get
/// their own copy.
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
    },
}

impl Network {
    /// Wraps a loaded network, packing it for the fused operators when `fused` is set.
    pub(crate) fn new(stock: GoogLeNet, fused: bool, device: &Device) -> Result<Self, ModelError> {
        Ok(if fused {
            let fused = FusedGoogLeNet::pack(&stock, device)?;
            Network::Fused {
                stock: Box::new(stock),
                fused: Box::new(fused),
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

    /// Logits `[N, 1000]` for ImageNet-normalized images `[N, 3, 224, 224]`.
    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        match self {
            Network::Stock(stock) => stock.forward(x),
            Network::Fused { fused, .. } => fused.forward(x),
        }
    }
}
