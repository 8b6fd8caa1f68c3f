//! The same folded GoogLeNet, run channels-last on Glimpse's fused operators
//! ([`crate::fused`]): the fast path behind [`crate::Backend::Flex`].
//!
//! It is built from the stock network once, at load: every convolution's folded weight is
//! packed into the micro-kernel's panels (or Winograd's transformed filters), each Inception
//! block's two 1×1 reductions are merged into one weight, and the classifier's weight is
//! read out once. A forward pass then runs on a [`Plan`]: the buffers every stage reads and
//! writes, owned by the caller (one per inference lane) and grown only when a larger batch
//! than any before arrives. In steady state a pass allocates nothing: the input is written
//! channels-last into the plan straight from the images, each stage writes into the other of
//! two activation buffers, and the logits go into the caller's slice. The kernels' own
//! scratch (im2col patches, Winograd tiles, an Inception block's reduced and pooled maps) is
//! per-thread and reused in the same way.

use std::sync::Arc;

use burn::tensor::TensorData;

use super::conv::ConvBnRelu;
use super::inception::Inception;
use super::{FEATURES, GoogLeNet, NUM_CLASSES};
use crate::ModelError;
use crate::fused::conv::{Activations, ConvGeometry, Destination};
use crate::fused::inception::{InceptionConvs, InceptionScratch, PackedConv, inception};
use crate::fused::pool::{PoolGeometry, max_pool};
use crate::fused::{ScratchNeed, pack_conv, reserve_scratch, winograd};
use crate::preprocess;

/// One packed convolution: its weight as the kernels read it, its bias, its shape, and
/// whether it runs as Winograd F(4×4, 3×3).
#[derive(Debug, Clone)]
struct Packed {
    weight: Arc<[f32]>,
    bias: Arc<[f32]>,
    geometry: ConvGeometry,
    winograd: bool,
}

impl Packed {
    /// Packs `conv`, for Winograd when `winograd` (which needs a 3×3/1 convolution).
    fn pack(conv: &ConvBnRelu, winograd: bool) -> Result<Self, ModelError> {
        let (weight, bias, geometry) = conv.folded()?;
        Ok(Packed::new(&weight, bias, geometry, winograd))
    }

    fn new(oihw: &[f32], bias: Vec<f32>, geometry: ConvGeometry, winograd: bool) -> Self {
        Packed {
            weight: pack_conv(oihw, geometry, winograd).into(),
            bias: bias.into(),
            geometry,
            winograd,
        }
    }

    /// The kernels' view of it.
    fn view(&self) -> PackedConv<'_> {
        PackedConv {
            geometry: self.geometry,
            winograd: self.winograd,
            weight: &self.weight,
            bias: &self.bias,
        }
    }
}

/// One Inception block, packed: branch 1, the merged reductions, branches 2 to 4.
#[derive(Debug, Clone)]
struct PackedBlock {
    branch1: Packed,
    reduce: Packed,
    branch2: Packed,
    branch3: Packed,
    branch4: Packed,
}

impl PackedBlock {
    /// Packs one block; the two reductions become one `cin → ch3x3red + ch5x5red`
    /// convolution (their folded weights stacked along the output channels before packing).
    fn pack(block: &Inception, winograd: bool) -> Result<Self, ModelError> {
        let (mut weight, mut bias, mut geometry) = block.branch2_reduce.folded()?;
        let (w3, b3, g3) = block.branch3_reduce.folded()?;
        weight.extend_from_slice(&w3);
        bias.extend_from_slice(&b3);
        geometry.out_channels += g3.out_channels;
        Ok(PackedBlock {
            branch1: Packed::pack(&block.branch1, false)?,
            reduce: Packed::new(&weight, bias, geometry, false),
            branch2: Packed::pack(&block.branch2, winograd)?,
            branch3: Packed::pack(&block.branch3, winograd)?,
            branch4: Packed::pack(&block.branch4, false)?,
        })
    }

    fn view(&self) -> InceptionConvs<'_> {
        InceptionConvs {
            branch1: self.branch1.view(),
            reduce: self.reduce.view(),
            branch2: self.branch2.view(),
            branch3: self.branch3.view(),
            branch4: self.branch4.view(),
        }
    }
}

/// Map sides of the layers a 224×224 input gives: conv3, then inception3*, 4*, 5*.
const CONV3_SIDE: usize = 56;
const BLOCK_SIDES: [usize; 9] = [28, 28, 14, 14, 14, 14, 14, 7, 7];

/// The max-pools between stages: torchvision's `ceil_mode=True`, no padding.
const POOL_3_2: PoolGeometry = PoolGeometry {
    kernel: 3,
    stride: 2,
    padding: 0,
};
const POOL_2_2: PoolGeometry = PoolGeometry {
    kernel: 2,
    stride: 2,
    padding: 0,
};

/// GoogLeNet on the fused operators. Cheap to clone (the packed weights are shared).
#[derive(Debug, Clone)]
pub(crate) struct FusedGoogLeNet {
    conv1: Packed,
    conv2: Packed,
    conv3: Packed,
    /// inception3a … inception5b, in order.
    blocks: Vec<PackedBlock>,
    /// The classifier's weight, `[FEATURES, NUM_CLASSES]` (input-major, as Burn keeps it).
    fc_weight: Arc<[f32]>,
    fc_bias: Arc<[f32]>,
    /// What each thread's kernel scratch must hold for these layers.
    scratch: ScratchNeed,
}

/// The buffers of forward passes, reused from pass to pass: two activation maps (each stage
/// reads one and writes the other) and the pooled features. One per caller at a time (an
/// inference lane owns one); it grows to the largest batch it has run and stays that size.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    current: Vec<f32>,
    next: Vec<f32>,
    /// Length and NHWC shape of the map in `current`.
    len: usize,
    dims: [usize; 4],
    features: Vec<f32>,
    /// The Inception blocks' intermediate maps.
    block: InceptionScratch,
}

/// `buffer[..len]`, growing `buffer` first if it is shorter (the only allocation a plan makes).
fn grown(buffer: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buffer.len() < len {
        buffer.resize(len, 0.0);
    }
    &mut buffer[..len]
}

impl Plan {
    /// The input stage: `dims` (NHWC) written by `fill`.
    fn start(&mut self, dims: [usize; 4], fill: impl FnOnce(&mut [f32])) {
        self.len = dims.iter().product();
        self.dims = dims;
        fill(grown(&mut self.current, self.len));
    }

    /// One stage: `run` reads the current map and writes `out` (NHWC), which becomes current.
    fn stage(&mut self, out: [usize; 4], run: impl FnOnce(Activations<'_>, &mut [f32])) {
        let len = out.iter().product();
        let [batch, height, width, channels] = self.dims;
        let input = Activations {
            data: &self.current[..self.len],
            batch,
            height,
            width,
            channels,
            row_stride: channels,
            offset: 0,
        };
        run(input, grown(&mut self.next, len));
        std::mem::swap(&mut self.current, &mut self.next);
        (self.len, self.dims) = (len, out);
    }

    fn conv(&mut self, conv: &Packed) {
        let [n, h, w, _] = self.dims;
        let g = conv.geometry;
        let out = [n, g.out_side(h), g.out_side(w), g.out_channels];
        self.stage(out, |x, dst| {
            conv.view().run(x, Destination::new(dst, g.out_channels, 0))
        });
    }

    fn pool(&mut self, geometry: PoolGeometry) {
        let [n, h, w, c] = self.dims;
        let out = [n, geometry.out_side(h), geometry.out_side(w), c];
        self.stage(out, |x, dst| max_pool(x.data, (n, h, w, c), geometry, dst));
    }

    fn inception(&mut self, block: &PackedBlock) {
        let [n, h, w, _] = self.dims;
        let convs = block.view();
        let mut scratch = std::mem::take(&mut self.block);
        self.stage([n, h, w, convs.out_channels()], |x, dst| {
            inception(x, &convs, dst, &mut scratch)
        });
        self.block = scratch;
    }
}

impl FusedGoogLeNet {
    /// Packs the stock network's folded weights.
    pub(crate) fn pack(net: &GoogLeNet) -> Result<Self, ModelError> {
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
        .map(|(block, side)| PackedBlock::pack(block, winograd::wanted(side)))
        .collect::<Result<Vec<_>, _>>()?;
        let read = |data: TensorData| {
            data.try_to_vec::<f32>()
                .map_err(|e| ModelError::Internal(format!("reading the classifier: {e:?}")))
        };
        let fc_bias = match &net.fc.bias {
            Some(bias) => read(bias.val().into_data())?,
            None => vec![0.0; NUM_CLASSES],
        };
        let (conv1, conv2) = (
            Packed::pack(&net.conv1, false)?,
            Packed::pack(&net.conv2, false)?,
        );
        let conv3 = Packed::pack(&net.conv3, winograd::wanted(CONV3_SIDE))?;
        let mut scratch = ScratchNeed::default();
        let every_conv = [&conv1, &conv2, &conv3].into_iter().chain(
            blocks
                .iter()
                .flat_map(|b| [&b.branch1, &b.reduce, &b.branch2, &b.branch3, &b.branch4]),
        );
        for conv in every_conv {
            scratch.cover(conv.geometry, conv.winograd);
        }
        Ok(FusedGoogLeNet {
            conv1,
            conv2,
            conv3,
            blocks,
            fc_weight: read(net.fc.weight.val().into_data())?.into(),
            fc_bias: fc_bias.into(),
            scratch,
        })
    }

    /// Writes the logits of `images` (each an ImageNet-normalized `[3, 224, 224]` NCHW
    /// tensor, as `preprocess` makes them) into `logits` (`[N, 1000]`), using `plan`'s
    /// buffers. Allocates only when `plan` has not yet run a batch this large.
    pub(crate) fn logits_into<'a>(
        &self,
        plan: &mut Plan,
        images: impl ExactSizeIterator<Item = &'a [f32]>,
        logits: &mut [f32],
    ) {
        let n = images.len();
        assert_eq!(logits.len(), n * NUM_CLASSES, "logits size");
        reserve_scratch(self.scratch);
        let side = preprocess::CROP as usize;
        plan.start([n, side, side, 3], |nhwc| write_input(images, side, nhwc));
        plan.conv(&self.conv1);
        plan.pool(POOL_3_2);
        plan.conv(&self.conv2);
        plan.conv(&self.conv3);
        plan.pool(POOL_3_2);
        for (i, block) in self.blocks.iter().enumerate() {
            plan.inception(block);
            // After inception3b and inception4e, as in torchvision.
            match i {
                1 => plan.pool(POOL_3_2),
                6 => plan.pool(POOL_2_2),
                _ => {}
            }
        }
        let [_, h, w, c] = plan.dims;
        assert_eq!(c, FEATURES, "GoogLeNet ends with {FEATURES} channels");
        let features = grown(&mut plan.features, n * c);
        average_pool(&plan.current[..plan.len], h * w, c, features);
        classify(features, &self.fc_weight, &self.fc_bias, logits);
    }
}

/// torchvision's `transform_input` (GoogLeNet's pretrained weights expect inputs normalized
/// with mean and std 0.5, not ImageNet's) fused with the switch to channels-last: one pass
/// from each image's NCHW planes into the plan's NHWC input.
fn write_input<'a>(images: impl Iterator<Item = &'a [f32]>, side: usize, nhwc: &mut [f32]) {
    let (mean, std) = (preprocess::MEAN, preprocess::STD);
    let scale: [f32; 3] = std::array::from_fn(|c| std[c] / 0.5);
    let shift: [f32; 3] = std::array::from_fn(|c| (mean[c] - 0.5) / 0.5);
    let plane = side * side;
    for (image, out) in images.zip(nhwc.chunks_exact_mut(3 * plane)) {
        assert_eq!(image.len(), 3 * plane, "an image is [3, {side}, {side}]");
        for (p, pixel) in out.chunks_exact_mut(3).enumerate() {
            for c in 0..3 {
                pixel[c] = image[c * plane + p] * scale[c] + shift[c];
            }
        }
    }
}

/// Global average pool: each image's `pixels` rows of `channels` into one row.
fn average_pool(maps: &[f32], pixels: usize, channels: usize, features: &mut [f32]) {
    for (image, row) in maps
        .chunks_exact(pixels * channels)
        .zip(features.chunks_exact_mut(channels))
    {
        row.fill(0.0);
        for pixel in image.chunks_exact(channels) {
            for (sum, v) in row.iter_mut().zip(pixel) {
                *sum += v;
            }
        }
        let inv = 1.0 / pixels as f32;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// The classifier, `logits = features · weight + bias` (dropout is the identity at
/// inference): 1 M multiply-adds per image, under 0.1% of the network, so a loop the
/// compiler vectorizes over the classes is enough.
fn classify(features: &[f32], weight: &[f32], bias: &[f32], logits: &mut [f32]) {
    let classes = bias.len();
    for (row, out) in features
        .chunks_exact(weight.len() / classes)
        .zip(logits.chunks_exact_mut(classes))
    {
        out.copy_from_slice(bias);
        for (&x, w) in row.iter().zip(weight.chunks_exact(classes)) {
            for (o, &w) in out.iter_mut().zip(w) {
                *o += x * w;
            }
        }
    }
}
