//! GoogLeNet exactly as torchvision defines it for inference (`torchvision.models.googlenet`),
//! laid out one block per file like tracel-ai/models' resnet-burn:
//! - [`conv`]: `BasicConv2d` (conv without bias + BatchNorm eps 1e-3 + ReLU), folded;
//! - [`inception`]: the Inception block;
//! - [`weights`]: where the numbers come from (torchvision's `.pth`, seeded random), the
//!   torchvision key names, and the BatchNorm folding;
//! - [`fused`]: the same network channels-last on Glimpse's fused operators (the fast path);
//! - this file: the network itself.
//!
//! Dropout is the identity at inference and the aux classifiers only matter for training, so
//! neither exists here.

pub(crate) mod conv;
pub(crate) mod fused;
pub(crate) mod inception;
pub(crate) mod weights;

use burn::module::Module;
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};

use crate::ModelError;
use conv::{ConvBnRelu, ConvSpec};
use inception::{Inception, InceptionSpec};
use weights::TensorSource;

/// Number of ImageNet classes the final layer scores.
pub const NUM_CLASSES: usize = 1000;
/// Feature width entering the classifier.
const FEATURES: usize = 1024;

/// The folded GoogLeNet. Input: `[N, 3, 224, 224]` ImageNet-normalized; output: logits `[N, 1000]`.
#[derive(Module, Debug)]
pub(crate) struct GoogLeNet {
    conv1: ConvBnRelu,
    maxpool1: MaxPool2d,
    conv2: ConvBnRelu,
    conv3: ConvBnRelu,
    maxpool2: MaxPool2d,
    inception3a: Inception,
    inception3b: Inception,
    maxpool3: MaxPool2d,
    inception4a: Inception,
    inception4b: Inception,
    inception4c: Inception,
    inception4d: Inception,
    inception4e: Inception,
    maxpool4: MaxPool2d,
    inception5a: Inception,
    inception5b: Inception,
    avgpool: AdaptiveAvgPool2d,
    fc: Linear,
}

/// torchvision's `MaxPool2d(kernel, stride, ceil_mode=True)` (no padding).
fn max_pool(kernel: usize, stride: usize) -> MaxPool2d {
    MaxPool2dConfig::new([kernel, kernel])
        .with_strides([stride, stride])
        .with_ceil_mode(true)
        .init()
}

/// The Inception blocks in order, with torchvision's channel counts.
const BLOCKS: [(&str, InceptionSpec); 9] = [
    (
        "inception3a",
        InceptionSpec::new([192, 64, 96, 128, 16, 32, 32]),
    ),
    (
        "inception3b",
        InceptionSpec::new([256, 128, 128, 192, 32, 96, 64]),
    ),
    (
        "inception4a",
        InceptionSpec::new([480, 192, 96, 208, 16, 48, 64]),
    ),
    (
        "inception4b",
        InceptionSpec::new([512, 160, 112, 224, 24, 64, 64]),
    ),
    (
        "inception4c",
        InceptionSpec::new([512, 128, 128, 256, 24, 64, 64]),
    ),
    (
        "inception4d",
        InceptionSpec::new([512, 112, 144, 288, 32, 64, 64]),
    ),
    (
        "inception4e",
        InceptionSpec::new([528, 256, 160, 320, 32, 128, 128]),
    ),
    (
        "inception5a",
        InceptionSpec::new([832, 256, 160, 320, 32, 128, 128]),
    ),
    (
        "inception5b",
        InceptionSpec::new([832, 384, 192, 384, 48, 128, 128]),
    ),
];

impl GoogLeNet {
    /// Builds the network from a source of torchvision-named tensors, folding each BatchNorm.
    /// Every tensor the network needs is requested by name; a source that lacks one fails
    /// with that name (no silent partial loads).
    pub(crate) fn load(source: &mut dyn TensorSource, device: &Device) -> Result<Self, ModelError> {
        // Channel counts chain from block to block; check the table once.
        debug_assert!(
            BLOCKS
                .windows(2)
                .all(|w| w[0].1.out_channels() == w[1].1.in_channels)
        );
        let conv1 = ConvBnRelu::load(source, "conv1", ConvSpec::new(3, 64, 7).stride(2), device)?;
        let conv2 = ConvBnRelu::load(source, "conv2", ConvSpec::new(64, 64, 1), device)?;
        let conv3 = ConvBnRelu::load(source, "conv3", ConvSpec::new(64, 192, 3), device)?;
        let mut blocks = Vec::with_capacity(BLOCKS.len());
        for (name, spec) in BLOCKS {
            blocks.push(Inception::load(source, name, spec, device)?);
        }
        let mut blocks = blocks.into_iter();
        let mut next = || {
            blocks
                .next()
                .ok_or_else(|| ModelError::Internal("inception table too short".into()))
        };
        let fc = load_fc(source, device)?;
        Ok(GoogLeNet {
            conv1,
            maxpool1: max_pool(3, 2),
            conv2,
            conv3,
            maxpool2: max_pool(3, 2),
            inception3a: next()?,
            inception3b: next()?,
            maxpool3: max_pool(3, 2),
            inception4a: next()?,
            inception4b: next()?,
            inception4c: next()?,
            inception4d: next()?,
            inception4e: next()?,
            maxpool4: max_pool(2, 2),
            inception5a: next()?,
            inception5b: next()?,
            avgpool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            fc,
        })
    }

    /// Logits `[N, 1000]` for ImageNet-normalized images `[N, 3, 224, 224]`.
    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = transform_input(x);
        let x = self.conv1.forward(x);
        let x = self.maxpool1.forward(x);
        let x = self.conv2.forward(x);
        let x = self.conv3.forward(x);
        let x = self.maxpool2.forward(x);
        let x = self.inception3a.forward(x);
        let x = self.inception3b.forward(x);
        let x = self.maxpool3.forward(x);
        let x = self.inception4a.forward(x);
        let x = self.inception4b.forward(x);
        let x = self.inception4c.forward(x);
        let x = self.inception4d.forward(x);
        let x = self.inception4e.forward(x);
        let x = self.maxpool4.forward(x);
        let x = self.inception5a.forward(x);
        let x = self.inception5b.forward(x);
        let x = self.avgpool.forward(x);
        let x: Tensor<2> = x.flatten(1, 3);
        // Dropout(p=0.2) is the identity at inference.
        self.fc.forward(x)
    }
}

/// torchvision's `transform_input=True` (set for the pretrained weights): the weights were
/// ported from Google's TensorFlow model, which expects inputs normalized with mean 0.5 and
/// std 0.5, so ImageNet-normalized inputs are re-normalized per channel:
/// `x_c * (std_c / 0.5) + (mean_c - 0.5) / 0.5`. Kept as its own step rather than folded into
/// conv1, because conv1 zero-pads and a folded shift would differ at the borders.
fn transform_input(x: Tensor<4>) -> Tensor<4> {
    let device = x.device();
    let mean = crate::preprocess::MEAN;
    let std = crate::preprocess::STD;
    let scale: Vec<f32> = (0..3).map(|c| std[c] / 0.5).collect();
    let shift: Vec<f32> = (0..3).map(|c| (mean[c] - 0.5) / 0.5).collect();
    let scale = Tensor::<4>::from_data(TensorData::new(scale, [1, 3, 1, 1]), &device);
    let shift = Tensor::<4>::from_data(TensorData::new(shift, [1, 3, 1, 1]), &device);
    x * scale + shift
}

/// The classifier, torchvision's `fc` (`Linear(1024, 1000)`). PyTorch stores the weight as
/// `[out, in]`; Burn's row layout wants `[in, out]`, so it is transposed here.
fn load_fc(source: &mut dyn TensorSource, device: &Device) -> Result<Linear, ModelError> {
    let weight = source.tensor("fc.weight", &[NUM_CLASSES, FEATURES])?;
    let bias = source.tensor("fc.bias", &[NUM_CLASSES])?;
    let mut transposed = vec![0f32; weight.len()];
    for o in 0..NUM_CLASSES {
        for i in 0..FEATURES {
            transposed[i * NUM_CLASSES + o] = weight[o * FEATURES + i];
        }
    }
    let mut fc = LinearConfig::new(FEATURES, NUM_CLASSES)
        .with_initializer(burn::module::Initializer::Zeros)
        .init(device);
    fc.weight = burn::module::Param::from_tensor(Tensor::from_data(
        TensorData::new(transposed, [FEATURES, NUM_CLASSES]),
        device,
    ));
    fc.bias = Some(burn::module::Param::from_tensor(Tensor::from_data(
        TensorData::new(bias, [NUM_CLASSES]),
        device,
    )));
    Ok(fc)
}
