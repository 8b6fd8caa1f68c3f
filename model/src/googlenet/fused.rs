//! The same folded GoogLeNet, run channels-last through Glimpse's fused operators
//! ([`crate::fused`]) on burn-flex: the fast path behind [`crate::Backend::Flex`].
//!
//! It is built from the stock network once, at load: every convolution's folded weight is
//! packed into the micro-kernel's panels, and each Inception block's two 1×1 reductions are merged into
//! one weight. The input is switched to NHWC once at the top and stays that way to the
//! global average pool; the classifier (`fc`) is the stock module, shared with the stock net.

use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

use super::GoogLeNet;
use super::conv::ConvBnRelu;
use super::inception::Inception;
use crate::ModelError;
use crate::fused::{
    InceptionTensors, conv_bias_relu_nhwc, inception_nhwc, max_pool_nhwc, pack_conv, winograd,
};

/// A packed convolution: weight panels, bias, (kernel, stride, padding), and whether it
/// runs as Winograd F(4×4, 3×3).
#[derive(Debug, Clone)]
struct PackedConv {
    weight: Tensor<2>,
    bias: Tensor<1>,
    window: (usize, usize, usize),
    winograd: bool,
}

impl PackedConv {
    /// Packs `conv`, for Winograd when `winograd` (which needs a 3×3/1 convolution).
    fn pack(conv: &ConvBnRelu, winograd: bool, device: &Device) -> Result<Self, ModelError> {
        let (weight, bias, geometry) = conv.folded()?;
        let (weight, bias) = pack_conv(&weight, &bias, geometry, winograd, device);
        Ok(PackedConv {
            weight,
            bias,
            window: (geometry.kernel, geometry.stride, geometry.padding),
            winograd,
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_bias_relu_nhwc(x, &self.weight, &self.bias, self.window, self.winograd)
    }
}

/// Map sides of the layers a 224×224 input gives: conv3, then inception3*, 4*, 5*.
const CONV3_SIDE: usize = 56;
const BLOCK_SIDES: [usize; 9] = [28, 28, 14, 14, 14, 14, 14, 7, 7];

/// GoogLeNet on the fused operators. Cheap to clone (tensors share their data).
#[derive(Debug, Clone)]
pub(crate) struct FusedGoogLeNet {
    conv1: PackedConv,
    conv2: PackedConv,
    conv3: PackedConv,
    /// inception3a … inception5b, in order, each with whether its 3×3s run as Winograd.
    blocks: Vec<(InceptionTensors, bool)>,
    fc: Linear,
}

/// Packs one block; the two reductions become one `cin → ch3x3red + ch5x5red` convolution
/// (their folded weights stacked along the output channels before packing).
fn pack_block(
    block: &Inception,
    winograd: bool,
    device: &Device,
) -> Result<InceptionTensors, ModelError> {
    let pair = |conv: &ConvBnRelu, winograd| {
        PackedConv::pack(conv, winograd, device).map(|p| (p.weight, p.bias))
    };
    let (mut weight, mut bias, mut geometry) = block.branch2_reduce.folded()?;
    let (w3, b3, g3) = block.branch3_reduce.folded()?;
    weight.extend_from_slice(&w3);
    bias.extend_from_slice(&b3);
    geometry.out_channels += g3.out_channels;
    let reduce = pack_conv(&weight, &bias, geometry, false, device);
    Ok([
        pair(&block.branch1, false)?,
        reduce,
        pair(&block.branch2, winograd)?,
        pair(&block.branch3, winograd)?,
        pair(&block.branch4, false)?,
    ])
}

impl FusedGoogLeNet {
    /// Packs the stock network's folded weights onto `device`, which must be burn-flex's.
    pub(crate) fn pack(net: &GoogLeNet, device: &Device) -> Result<Self, ModelError> {
        let blocks = [
            &net.inception3a,
            &net.inception3b,
            &net.inception4a,
            &net.inception4b,
            &net.inception4c,
            &net.inception4d,
            &net.inception4e,
            &net.inception5a,
            &net.inception5b,
        ]
        .into_iter()
        .zip(BLOCK_SIDES)
        .map(|(block, side)| {
            let winograd = winograd::wanted(side);
            pack_block(block, winograd, device).map(|tensors| (tensors, winograd))
        })
        .collect::<Result<Vec<_>, _>>()?;
        Ok(FusedGoogLeNet {
            conv1: PackedConv::pack(&net.conv1, false, device)?,
            conv2: PackedConv::pack(&net.conv2, false, device)?,
            conv3: PackedConv::pack(&net.conv3, winograd::wanted(CONV3_SIDE), device)?,
            blocks,
            fc: net.fc.clone(),
        })
    }

    /// Logits `[N, 1000]` for ImageNet-normalized images `[N, 3, 224, 224]` (NCHW, as the
    /// stock network takes them).
    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = super::transform_input(x).permute([0, 2, 3, 1]);
        let x = self.conv1.forward(x);
        let x = max_pool_nhwc(x, 3, 2, 0);
        let x = self.conv2.forward(x);
        let x = self.conv3.forward(x);
        let mut x = max_pool_nhwc(x, 3, 2, 0);
        for (i, (block, winograd)) in self.blocks.iter().enumerate() {
            x = inception_nhwc(x, block, *winograd);
            // After inception3b and inception4e, as in torchvision.
            x = match i {
                1 => max_pool_nhwc(x, 3, 2, 0),
                6 => max_pool_nhwc(x, 2, 2, 0),
                _ => x,
            };
        }
        let [n, _, _, c] = x.dims();
        // Global average pool over H and W, then the classifier (dropout is the identity).
        let x: Tensor<2> = x.mean_dims(&[1, 2]).reshape([n, c]);
        self.fc.forward(x)
    }
}
