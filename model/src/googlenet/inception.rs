//! torchvision's `Inception` block: four parallel branches concatenated on channels.
//!
//! As in torchvision (and unlike the paper), the "5x5" branch uses a 3x3 convolution; the
//! official weights were trained that way, so a 5x5 here would not load them.
//!
//! Inference-only restructuring: the three 1x1 convolutions that read the block's input
//! (`branch1`, `branch2.0`, `branch3.0`) are merged at load time into one convolution whose
//! output channels are theirs concatenated, and the result is split. Per output channel the
//! arithmetic is unchanged; the backend runs one larger matrix product instead of three
//! small ones and reads the input once.

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
pub struct Inception {
    /// `branch1`, `branch2.0` and `branch3.0`, merged along output channels.
    pointwise: ConvBnRelu,
    branch2: ConvBnRelu,
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
        let key = |name: &str| format!("{prefix}.{name}");
        Ok(Inception {
            pointwise: ConvBnRelu::load_merged(
                source,
                &[
                    (key("branch1"), ConvSpec::new(cin, c1, 1)),
                    (key("branch2.0"), ConvSpec::new(cin, c3r, 1)),
                    (key("branch3.0"), ConvSpec::new(cin, c5r, 1)),
                ],
                device,
            )?,
            branch2: ConvBnRelu::load(
                source,
                &key("branch2.1"),
                ConvSpec::new(c3r, c3, 3),
                device,
            )?,
            branch3: ConvBnRelu::load(
                source,
                &key("branch3.1"),
                ConvSpec::new(c5r, c5, 3),
                device,
            )?,
            // torchvision: MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True).
            branch4_pool: MaxPool2dConfig::new([3, 3])
                .with_strides([1, 1])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_ceil_mode(true)
                .init(),
            branch4: ConvBnRelu::load(
                source,
                &key("branch4.1"),
                ConvSpec::new(cin, pool, 1),
                device,
            )?,
        })
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let c3r = self.branch2.in_channels();
        let c5r = self.branch3.in_channels();
        let c1 = self.pointwise.out_channels() - c3r - c5r;
        let y = self.pointwise.forward(x.clone());
        let b1 = y.clone().narrow(1, 0, c1);
        let r2 = y.clone().narrow(1, c1, c3r);
        let r3 = y.narrow(1, c1 + c3r, c5r);
        let b2 = self.branch2.forward(r2);
        let b3 = self.branch3.forward(r3);
        let b4 = self.branch4.forward(self.branch4_pool.forward(x));
        Tensor::cat(vec![b1, b2, b3, b4], 1)
    }
}
