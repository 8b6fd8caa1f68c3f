//! torchvision's `BasicConv2d` after BatchNorm folding: one biased convolution plus ReLU.
//!
//! torchvision computes `relu(bn(conv(x)))` with a bias-free convolution and a BatchNorm in
//! inference mode (running statistics, eps 1e-3). Both are affine per output channel, so at
//! load time [`super::weights::fold_batch_norm`] merges them into one convolution with a bias;
//! at inference that saves a full pass over every activation map.

use burn::module::{Module, Param};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor, TensorData};

use super::weights::TensorSource;
use crate::ModelError;
use crate::fused::conv::ConvGeometry;

/// Shape of one `BasicConv2d`: channels, square kernel, stride and symmetric padding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConvSpec {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvSpec {
    pub(crate) const fn new(in_channels: usize, out_channels: usize, kernel: usize) -> Self {
        ConvSpec {
            in_channels,
            out_channels,
            kernel,
            stride: 1,
            padding: kernel / 2,
        }
    }

    pub(crate) const fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }
}

/// A folded `BasicConv2d`: convolution with bias, then ReLU.
#[derive(Module, Debug)]
pub(crate) struct ConvBnRelu {
    conv: Conv2d,
}

impl ConvBnRelu {
    /// Builds the block from the torchvision tensors under `prefix` (e.g.
    /// `inception3a.branch2.1`), folding its BatchNorm into the convolution.
    pub(crate) fn load(
        source: &mut dyn TensorSource,
        prefix: &str,
        spec: ConvSpec,
        device: &Device,
    ) -> Result<Self, ModelError> {
        let shape = [
            spec.out_channels,
            spec.in_channels,
            spec.kernel,
            spec.kernel,
        ];
        let (weight, bias) = super::weights::fold_batch_norm(source, prefix, shape)?;
        let p = spec.padding;
        let mut conv = Conv2dConfig::new([spec.in_channels, spec.out_channels], [spec.kernel; 2])
            .with_stride([spec.stride; 2])
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(true)
            .with_initializer(burn::module::Initializer::Zeros)
            .init(device);
        conv.weight = Param::from_tensor(Tensor::from_data(TensorData::new(weight, shape), device));
        conv.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(bias, [spec.out_channels]),
            device,
        )));
        Ok(ConvBnRelu { conv })
    }

    pub(crate) fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        relu(self.conv.forward(x))
    }

    /// The folded weight (PyTorch's `[out, in, k, k]`, row-major), the bias, and the shape,
    /// read back from the module: what the fused path packs.
    pub(crate) fn folded(&self) -> Result<(Vec<f32>, Vec<f32>, ConvGeometry), ModelError> {
        let read = |data: burn::tensor::TensorData| {
            data.try_to_vec::<f32>()
                .map_err(|e| ModelError::Internal(format!("reading a folded weight: {e:?}")))
        };
        let [out, cin, kernel, _] = self.conv.weight.shape().dims();
        let weight = read(self.conv.weight.val().into_data())?;
        let bias = match &self.conv.bias {
            Some(bias) => read(bias.val().into_data())?,
            None => vec![0.0; out],
        };
        let geometry = ConvGeometry {
            in_channels: cin,
            out_channels: out,
            kernel,
            stride: self.conv.stride[0],
            // Every GoogLeNet convolution pads by half its kernel ("same" at stride 1).
            padding: kernel / 2,
        };
        Ok((weight, bias, geometry))
    }
}
