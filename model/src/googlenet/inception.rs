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

/// Channel counts, named after torchvision's `Inception.__init__` arguments.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InceptionSpec {
    pub in_channels: usize,
    pub ch1x1: usize,
    pub ch3x3red: usize,
    pub ch3x3: usize,
    pub ch5x5red: usize,
    /// Output of the "5×5" branch, which torchvision builds as a 3×3.
    pub ch5x5: usize,
    pub pool_proj: usize,
}

impl InceptionSpec {
    /// torchvision's positional order: `(in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj)`.
    pub(crate) const fn new(c: [usize; 7]) -> Self {
        InceptionSpec {
            in_channels: c[0],
            ch1x1: c[1],
            ch3x3red: c[2],
            ch3x3: c[3],
            ch5x5red: c[4],
            ch5x5: c[5],
            pool_proj: c[6],
        }
    }

    /// Channels out of the block: the four branches concatenated.
    pub(crate) const fn out_channels(&self) -> usize {
        self.ch1x1 + self.ch3x3 + self.ch5x5 + self.pool_proj
    }
}

#[derive(Module, Debug)]
pub(crate) struct Inception {
    pub(crate) branch1: ConvBnRelu,
    pub(crate) branch2_reduce: ConvBnRelu,
    pub(crate) branch2: ConvBnRelu,
    pub(crate) branch3_reduce: ConvBnRelu,
    pub(crate) branch3: ConvBnRelu,
    branch4_pool: MaxPool2d,
    pub(crate) branch4: ConvBnRelu,
}

impl Inception {
    /// Builds the block from torchvision's keys under `prefix` (e.g. `inception4c`).
    pub(crate) fn load(
        source: &mut dyn TensorSource,
        prefix: &str,
        spec: InceptionSpec,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let InceptionSpec {
            in_channels: cin,
            ch1x1: c1,
            ch3x3red: c3r,
            ch3x3: c3,
            ch5x5red: c5r,
            ch5x5: c5,
            pool_proj: pool,
        } = spec;
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
