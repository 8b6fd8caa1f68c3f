//! The same folded GoogLeNet, run channels-last through Glimpse's fused operators
//! ([`crate::fused`]) on burn-flex: the fast path behind [`crate::Backend::Flex`].
//!
//! It is built from the stock network once, at load: every convolution's folded weight is
//! packed into the GEMM layout, and each Inception block's two 1×1 reductions are merged into
//! one weight. The input is switched to NHWC once at the top and stays that way to the
//! global average pool; the classifier (`fc`) is the stock module, shared with the stock net.

use burn::nn::Linear;
use burn::tensor::{Device, Tensor};

use super::GoogLeNet;
use super::conv::ConvBnRelu;
use super::inception::Inception;
use crate::ModelError;
use crate::fused::{
    InceptionTensors, conv_bias_relu_nhwc, inception_nhwc, max_pool_nhwc, pack_conv,
};

/// A packed convolution: `[k·k·cin, cout]` weight, bias, and (kernel, stride, padding).
#[derive(Debug, Clone)]
struct PackedConv {
    weight: Tensor<2>,
    bias: Tensor<1>,
    window: (usize, usize, usize),
}

impl PackedConv {
    fn pack(conv: &ConvBnRelu, device: &Device) -> Result<Self, ModelError> {
        let (weight, bias, geometry) = conv.folded()?;
        let (weight, bias) = pack_conv(&weight, &bias, geometry, device);
        Ok(PackedConv {
            weight,
            bias,
            window: (geometry.kernel, geometry.stride, geometry.padding),
        })
    }

    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv_bias_relu_nhwc(x, &self.weight, &self.bias, self.window)
    }
}

/// GoogLeNet on the fused operators. Cheap to clone (tensors share their data).
#[derive(Debug, Clone)]
pub(crate) struct FusedGoogLeNet {
    conv1: PackedConv,
    conv2: PackedConv,
    conv3: PackedConv,
    /// inception3a … inception5b, in order.
    blocks: Vec<InceptionTensors>,
    fc: Linear,
}

/// Packs one block; the two reductions become one `[cin, ch3x3red + ch5x5red]` weight.
fn pack_block(block: &Inception, device: &Device) -> Result<InceptionTensors, ModelError> {
    let pair = |conv: &ConvBnRelu| PackedConv::pack(conv, device).map(|p| (p.weight, p.bias));
    let (r2w, r2b) = pair(&block.branch2_reduce)?;
    let (r3w, r3b) = pair(&block.branch3_reduce)?;
    let reduce = (
        Tensor::cat(vec![r2w, r3w], 1),
        Tensor::cat(vec![r2b, r3b], 0),
    );
    Ok([
        pair(&block.branch1)?,
        reduce,
        pair(&block.branch2)?,
        pair(&block.branch3)?,
        pair(&block.branch4)?,
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
        .map(|block| pack_block(block, device))
        .collect::<Result<Vec<_>, _>>()?;
        Ok(FusedGoogLeNet {
            conv1: PackedConv::pack(&net.conv1, device)?,
            conv2: PackedConv::pack(&net.conv2, device)?,
            conv3: PackedConv::pack(&net.conv3, device)?,
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
        for (i, block) in self.blocks.iter().enumerate() {
            x = inception_nhwc(x, block);
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
