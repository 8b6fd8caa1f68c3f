//! torchvision's `Inception` block: four parallel branches concatenated on channels.
//!
//! As in torchvision (and unlike the paper), the "5x5" branch uses a 3x3 convolution; the
//! official weights were trained that way, so a 5x5 here would not load them.

use burn::module::Module;
use burn::nn::PaddingConfig2d;
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::tensor::{Device, Tensor};

use super::conv::{ConvBnRelu, ConvSpec};
use super::weights::TensorSource;
use crate::ModelError;

/// Channel counts, in torchvision's argument order:
/// `(in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InceptionSpec(
    pub usize,
    pub usize,
    pub usize,
    pub usize,
    pub usize,
    pub usize,
    pub usize,
);

impl InceptionSpec {
    /// Channels out of the block: the four branches concatenated.
    pub(crate) const fn out_channels(&self) -> usize {
        self.1 + self.3 + self.5 + self.6
    }
}

#[derive(Module, Debug)]
pub(crate) struct Inception {
    branch1: ConvBnRelu,
    branch2_reduce: ConvBnRelu,
    branch2: ConvBnRelu,
    branch3_reduce: ConvBnRelu,
    branch3: ConvBnRelu,
    branch4_pool: MaxPool2d,
    branch4: ConvBnRelu,
}

impl Inception {
    /// Builds the block from torchvision's keys under `prefix` (e.g. `inception4c`).
    pub(crate) fn load(
        source: &mut dyn TensorSource,
        prefix: &str,
        spec: InceptionSpec,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let InceptionSpec(cin, c1, c3r, c3, c5r, c5, pool) = spec;
        let mut conv = |name: &str, spec: ConvSpec| {
            ConvBnRelu::load(source, &format!("{prefix}.{name}"), spec, device)
        };
        Ok(Inception {
            branch1: conv("branch1", ConvSpec::new(cin, c1, 1))?,
            branch2_reduce: conv("branch2.0", ConvSpec::new(cin, c3r, 1))?,
            branch2: conv("branch2.1", ConvSpec::new(c3r, c3, 3))?,
            branch3_reduce: conv("branch3.0", ConvSpec::new(cin, c5r, 1))?,
            branch3: conv("branch3.1", ConvSpec::new(c5r, c5, 3))?,
            // torchvision: MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True).
            branch4_pool: MaxPool2dConfig::new([3, 3])
                .with_strides([1, 1])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_ceil_mode(true)
                .init(),
            branch4: conv("branch4.1", ConvSpec::new(cin, pool, 1))?,
        })
    }

    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let b1 = self.branch1.forward(x.clone());
        let b2 = self.branch2.forward(self.branch2_reduce.forward(x.clone()));
        let b3 = self.branch3.forward(self.branch3_reduce.forward(x.clone()));
        let b4 = self.branch4.forward(self.branch4_pool.forward(x));
        Tensor::cat(vec![b1, b2, b3, b4], 1)
    }
}
