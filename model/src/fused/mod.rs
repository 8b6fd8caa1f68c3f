//! Glimpse's fused CPU operators for GoogLeNet, added to burn-flex through Burn's backend
//! extension mechanism (`#[backend_extension]`): Burn stays unforked, the network stays a
//! Burn model on a Burn device, and these three operations replace the stock ones.
//!
//! - [`FusedOps::conv_bias_relu_nhwc`]: convolution + bias + ReLU in one pass over
//!   channels-last activations, with weights packed once at load ([`conv`]);
//! - [`FusedOps::max_pool_nhwc`]: max-pooling without leaving channels-last ([`pool`]);
//! - [`FusedOps::inception_nhwc`]: a whole Inception block, each branch writing into its
//!   slice of the output, the two 1×1 reductions merged into one GEMM ([`inception`]).
//!
//! Why: burn-flex runs each convolution as NCHW→NHWC conversion, im2col, GEMM, a bias pass,
//! a ReLU op and a concat per block; every one of those is a full pass over memory.

pub(crate) mod conv;
pub(crate) mod inception;
pub(crate) mod packed;
pub(crate) mod pool;
pub(crate) mod profile;
pub(crate) mod winograd;

use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, ExtensionType, Flex, backend_extension};
use burn::tensor::{Bytes, DType, Shape, Tensor};

use conv::{Activations, ConvGeometry, Destination};
use inception::{InceptionConvs, PackedConv};
use pool::{PoolGeometry, max_pool};

/// An Inception block's packed weights (see [`pack_conv`]) and biases, as tensors.
#[derive(ExtensionType)]
pub(crate) struct InceptionWeights<B: Backend> {
    pub branch1_weight: FloatTensor<B>,
    pub branch1_bias: FloatTensor<B>,
    pub reduce_weight: FloatTensor<B>,
    pub reduce_bias: FloatTensor<B>,
    pub branch2_weight: FloatTensor<B>,
    pub branch2_bias: FloatTensor<B>,
    pub branch3_weight: FloatTensor<B>,
    pub branch3_bias: FloatTensor<B>,
    pub branch4_weight: FloatTensor<B>,
    pub branch4_bias: FloatTensor<B>,
}

/// The fused operations. Activations are `[batch, height, width, channels]`; weights are
/// packed by [`pack_conv`].
#[backend_extension(Flex)]
pub(crate) trait FusedOps: Backend {
    /// `relu(conv2d(x, weight) + bias)` with a square `kernel`, `stride` and zero `padding`;
    /// `winograd` when the weight was packed for [`winograd`] (3×3, stride 1, padding 1).
    fn conv_bias_relu_nhwc(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        kernel: usize,
        stride: usize,
        padding: usize,
        winograd: bool,
    ) -> FloatTensor<Self>;

    /// Max-pool with a square `kernel`, `stride`, `padding` and `ceil_mode=True`.
    fn max_pool_nhwc(
        x: FloatTensor<Self>,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> FloatTensor<Self>;

    /// One Inception block; `winograd` when its two 3×3 convolutions were packed for
    /// [`winograd`].
    fn inception_nhwc(
        x: FloatTensor<Self>,
        #[extension_type] weights: InceptionWeights<Self>,
        winograd: bool,
    ) -> FloatTensor<Self>;
}

/// A dense f32 view of a Flex tensor (copied only if it is strided, e.g. after a permute).
fn dense(x: FlexTensor) -> FlexTensor {
    assert_eq!(x.dtype(), DType::F32, "the fused operators run in f32");
    if x.as_slice::<f32>().is_some() {
        x
    } else {
        x.to_contiguous()
    }
}

fn values(x: &FlexTensor) -> &[f32] {
    x.as_slice::<f32>().expect("dense f32 tensor")
}

fn dims4(x: &FlexTensor) -> [usize; 4] {
    let shape = x.layout().shape();
    assert_eq!(shape.len(), 4, "NHWC activations are 4-D");
    [shape[0], shape[1], shape[2], shape[3]]
}

fn tensor(values: Vec<f32>, shape: [usize; 4]) -> FlexTensor {
    FlexTensor::new(
        Bytes::from_elems(values),
        Layout::contiguous(Shape::from(shape.to_vec())),
        DType::F32,
    )
}

fn activations(data: &[f32], [batch, height, width, channels]: [usize; 4]) -> Activations<'_> {
    Activations {
        data,
        batch,
        height,
        width,
        channels,
        row_stride: channels,
        offset: 0,
    }
}

/// The geometry of a packed weight (`[k·k·cin, cout rounded up to a panel]`) and its bias
/// (`[cout]`).
fn geometry(
    weight: &FlexTensor,
    bias: &FlexTensor,
    (kernel, stride, padding): (usize, usize, usize),
    winograd: bool,
) -> ConvGeometry {
    let shape = weight.layout().shape();
    assert_eq!(shape.len(), 2, "packed weights are 2-D");
    let out_channels = bias.layout().shape()[0];
    assert_eq!(shape[1], out_channels.next_multiple_of(packed::PANEL));
    let rows_per_channel = if winograd {
        assert_eq!(
            (kernel, stride, padding),
            (3, 1, 1),
            "Winograd is for 3×3/1"
        );
        winograd::POINTS
    } else {
        kernel * kernel
    };
    ConvGeometry {
        in_channels: shape[0] / rows_per_channel,
        out_channels,
        kernel,
        stride,
        padding,
    }
}

impl FusedOps for Flex {
    fn conv_bias_relu_nhwc(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        kernel: usize,
        stride: usize,
        padding: usize,
        winograd: bool,
    ) -> FlexTensor {
        let (x, weight, bias) = (dense(x), dense(weight), dense(bias));
        let [n, h, w, _] = dims4(&x);
        let geometry = geometry(&weight, &bias, (kernel, stride, padding), winograd);
        let (oh, ow) = (geometry.out_side(h), geometry.out_side(w));
        let cout = geometry.out_channels;
        let mut out = vec![0.0; n * oh * ow * cout];
        let conv = PackedConv {
            geometry,
            winograd,
            weight: values(&weight),
            bias: values(&bias),
        };
        conv.run(
            activations(values(&x), dims4(&x)),
            Destination::new(&mut out, cout, 0),
        );
        tensor(out, [n, oh, ow, cout])
    }

    fn max_pool_nhwc(x: FlexTensor, kernel: usize, stride: usize, padding: usize) -> FlexTensor {
        let x = dense(x);
        let [n, h, w, c] = dims4(&x);
        let geometry = PoolGeometry {
            kernel,
            stride,
            padding,
        };
        let (oh, ow) = (geometry.out_side(h), geometry.out_side(w));
        let mut out = vec![0.0; n * oh * ow * c];
        max_pool(values(&x), (n, h, w, c), geometry, &mut out);
        tensor(out, [n, oh, ow, c])
    }

    fn inception_nhwc(
        x: FlexTensor,
        weights: InceptionWeights<Self>,
        winograd: bool,
    ) -> FlexTensor {
        let x = dense(x);
        let dims = dims4(&x);
        let w = |t: FlexTensor| dense(t);
        let tensors = [
            (w(weights.branch1_weight), w(weights.branch1_bias), 1),
            (w(weights.reduce_weight), w(weights.reduce_bias), 1),
            (w(weights.branch2_weight), w(weights.branch2_bias), 3),
            (w(weights.branch3_weight), w(weights.branch3_bias), 3),
            (w(weights.branch4_weight), w(weights.branch4_bias), 1),
        ];
        let conv = |i: usize| {
            let (weight, bias, kernel) = &tensors[i];
            let winograd = winograd && *kernel == 3;
            PackedConv {
                geometry: geometry(weight, bias, (*kernel, 1, kernel / 2), winograd),
                winograd,
                weight: values(weight),
                bias: values(bias),
            }
        };
        let convs = InceptionConvs {
            branch1: conv(0),
            reduce: conv(1),
            branch2: conv(2),
            branch3: conv(3),
            branch4: conv(4),
        };
        let [n, h, w, _] = dims;
        let width = convs.out_channels();
        let mut out = vec![0.0; n * h * w * width];
        inception::inception(activations(values(&x), dims), &convs, &mut out);
        tensor(out, [n, h, w, width])
    }
}

/// A convolution's folded PyTorch weight `[cout, cin, k, k]` and bias, packed for
/// [`FusedOps::conv_bias_relu_nhwc`] as tensors on `device`: the micro-kernel's panels,
/// shaped `[k·k·cin, cout rounded up to a panel]` (`[36·cin, …]`: the 36 transformed
/// filters, with `winograd`, which needs a 3×3/1 convolution), and the bias `[cout]`.
pub(crate) fn pack_conv(
    oihw: &[f32],
    bias: &[f32],
    geometry: ConvGeometry,
    winograd: bool,
    device: &burn::tensor::Device,
) -> (Tensor<2>, Tensor<1>) {
    let (panels, rows) = if winograd {
        assert_eq!(
            (geometry.kernel, geometry.stride),
            (3, 1),
            "Winograd is for 3×3/1"
        );
        let (cin, cout) = (geometry.in_channels, geometry.out_channels);
        (
            winograd::pack_filter(oihw, cin, cout),
            winograd::POINTS * cin,
        )
    } else {
        (conv::pack_weight(oihw, geometry), geometry.patch_len())
    };
    let weight = Tensor::from_data(
        burn::tensor::TensorData::new(
            panels,
            [rows, geometry.out_channels.next_multiple_of(packed::PANEL)],
        ),
        device,
    );
    let bias = Tensor::from_data(
        burn::tensor::TensorData::new(bias.to_vec(), [geometry.out_channels]),
        device,
    );
    (weight, bias)
}

/// Tensor-level entry points (what the network calls).
pub(crate) fn conv_bias_relu_nhwc(
    x: Tensor<4>,
    weight: &Tensor<2>,
    bias: &Tensor<1>,
    (kernel, stride, padding): (usize, usize, usize),
    winograd: bool,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::conv_bias_relu_nhwc(
        x.into_dispatch(),
        weight.clone().into_dispatch(),
        bias.clone().into_dispatch(),
        kernel,
        stride,
        padding,
        winograd,
    ))
}

/// See [`FusedOps::max_pool_nhwc`].
pub(crate) fn max_pool_nhwc(
    x: Tensor<4>,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::max_pool_nhwc(
        x.into_dispatch(),
        kernel,
        stride,
        padding,
    ))
}

/// A packed Inception block, as tensors: `(weight, bias)` for branch 1, the merged
/// reductions, branch 2, branch 3 and branch 4.
pub(crate) type InceptionTensors = [(Tensor<2>, Tensor<1>); 5];

/// See [`FusedOps::inception_nhwc`].
pub(crate) fn inception_nhwc(x: Tensor<4>, block: &InceptionTensors, winograd: bool) -> Tensor<4> {
    let [b1, red, b2, b3, b4] = block
        .clone()
        .map(|(w, b)| (w.into_dispatch(), b.into_dispatch()));
    let weights = InceptionWeights {
        branch1_weight: b1.0,
        branch1_bias: b1.1,
        reduce_weight: red.0,
        reduce_bias: red.1,
        branch2_weight: b2.0,
        branch2_bias: b2.1,
        branch3_weight: b3.0,
        branch3_bias: b3.1,
        branch4_weight: b4.0,
        branch4_bias: b4.1,
    };
    Tensor::from_dispatch(<Dispatch as FusedOps>::inception_nhwc(
        x.into_dispatch(),
        weights,
        winograd,
    ))
}
