//! One Inception block on NHWC activations, written in place into the block's output.
//!
//! The four branches write straight into their channel slices of one preallocated output
//! (the GEMM's destination row stride is the block's width), so there is no concat copy. The
//! two 1×1 "reduce" convolutions that read the block's input are merged into one GEMM (their
//! packed weights side by side); the two 3×3 convolutions then read their halves of that
//! result in place. The branch-4 max-pool and the reduce output live in the caller's
//! [`InceptionScratch`], reused from block to block and call to call.

use super::conv::{Activations, ConvGeometry, Destination, conv_bias_relu};
use super::pool::{PoolGeometry, max_pool};
use super::profile::{self, LayerKind};
use super::winograd;

/// One packed convolution: `weight` is the micro-kernel's panels of `[k·k·cin, cout]` (or,
/// with `winograd`, the 36 transformed 3×3 filters), `bias` is `[cout]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PackedConv<'a> {
    pub geometry: ConvGeometry,
    pub winograd: bool,
    pub weight: &'a [f32],
    pub bias: &'a [f32],
}

impl PackedConv<'_> {
    /// `dst = relu(conv(input) + bias)`, by the algorithm the weight was packed for.
    pub(crate) fn run(&self, input: Activations<'_>, dst: Destination) {
        let g = self.geometry;
        let kind = match g.kernel {
            1 => LayerKind::Pointwise,
            3 => LayerKind::ThreeByThree,
            _ => LayerKind::Stem,
        };
        let pixels = input.batch * g.out_side(input.height) * g.out_side(input.width);
        let macs = (pixels * g.patch_len() * g.out_channels) as u64;
        profile::timed(kind, macs, || {
            if self.winograd {
                winograd::conv3x3(input, g.out_channels, self.weight, self.bias, dst);
            } else {
                conv_bias_relu(input, g, self.weight, self.bias, dst);
            }
        });
    }
}

/// The block's packed weights, borrowed from the network for one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InceptionConvs<'a> {
    /// 1×1, `cin → ch1x1`.
    pub branch1: PackedConv<'a>,
    /// Both 1×1 reductions merged: `cin → ch3x3red + ch5x5red`.
    pub reduce: PackedConv<'a>,
    /// 3×3 on the first `ch3x3red` reduced channels.
    pub branch2: PackedConv<'a>,
    /// 3×3 on the last `ch5x5red` reduced channels (torchvision's "5×5" branch is 3×3).
    pub branch3: PackedConv<'a>,
    /// 1×1 after the 3×3/1/1 max-pool.
    pub branch4: PackedConv<'a>,
}

impl InceptionConvs<'_> {
    /// Channels of the block's output: the four branches side by side.
    pub(crate) fn out_channels(&self) -> usize {
        self.branch1.geometry.out_channels
            + self.branch2.geometry.out_channels
            + self.branch3.geometry.out_channels
            + self.branch4.geometry.out_channels
    }
}

/// torchvision's branch-4 pool: `MaxPool2d(3, stride=1, padding=1, ceil_mode=True)`.
const BRANCH4_POOL: PoolGeometry = PoolGeometry {
    kernel: 3,
    stride: 1,
    padding: 1,
};

/// A block's intermediate maps: the merged reductions' output and the branch-4 pool's. The
/// caller keeps them from block to block and pass to pass; they grow to the largest block
/// they have served and never shrink.
#[derive(Debug, Clone, Default)]
pub(crate) struct InceptionScratch {
    reduced: Vec<f32>,
    pooled: Vec<f32>,
}

/// `buffer[..len]`, growing `buffer` first if it is shorter.
fn grown(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

/// Runs the block on a dense NHWC `input` into `output` (`[pixels, out_channels]`).
pub(crate) fn inception(
    input: Activations<'_>,
    convs: &InceptionConvs<'_>,
    output: &mut [f32],
    scratch: &mut InceptionScratch,
) {
    let pixels = input.batch * input.height * input.width;
    let width = convs.out_channels();
    assert_eq!(output.len(), pixels * width, "output size");
    assert!(
        input.row_stride == input.channels && input.offset == 0,
        "dense input"
    );
    let red = convs.reduce.geometry.out_channels;
    let reduced = grown(&mut scratch.reduced, pixels * red);
    let pooled = grown(&mut scratch.pooled, pixels * input.channels);

    let mut offset = 0;
    let mut run = |source: Activations<'_>, conv: &PackedConv<'_>, output: &mut [f32]| {
        conv.run(source, Destination::new(output, width, offset));
        offset += conv.geometry.out_channels;
    };
    run(input, &convs.branch1, output);
    convs.reduce.run(input, Destination::new(reduced, red, 0));
    let c3r = convs.branch2.geometry.in_channels;
    let reduced: &[f32] = reduced;
    let half = |channels, offset| Activations {
        data: reduced,
        channels,
        row_stride: red,
        offset,
        ..input
    };
    run(half(c3r, 0), &convs.branch2, output);
    run(
        half(convs.branch3.geometry.in_channels, c3r),
        &convs.branch3,
        output,
    );
    max_pool(
        &input.data[..pixels * input.channels],
        (input.batch, input.height, input.width, input.channels),
        BRANCH4_POOL,
        pooled,
    );
    let pooled_input = Activations {
        data: pooled,
        ..input
    };
    run(pooled_input, &convs.branch4, output);
}
