//! The typed v2 response, as every protocol sends it: which outputs a request asks for and in
//! which form ([`OutputName`], [`OutputSpec`]), and an output tensor's values ([`Values`],
//! [`OutputTensor`]) in their JSON or raw form.

use serde_json::{Value, json};

use crate::binary::{encode_bytes_tensor, encode_fp32_tensor};
use crate::shape::MAX_SHORT_STRING;

/// A request named an output the model does not have (a 400 on every protocol).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown output {0:?}; outputs are \"labels\" and \"probabilities\"")]
pub struct UnknownOutput(pub String);

/// The model's outputs. Each is `[batch, k]`: the top-k classes of each image, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputName {
    /// BYTES: class names.
    Labels,
    /// FP32: softmax probabilities.
    Probabilities,
}

impl OutputName {
    /// Both outputs, in metadata order.
    pub const ALL: [OutputName; 2] = [OutputName::Labels, OutputName::Probabilities];

    /// The output's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputName::Labels => "labels",
            OutputName::Probabilities => "probabilities",
        }
    }

    /// Its datatype, unless the classification extension turns it into strings.
    pub fn datatype(self) -> &'static str {
        match self {
            OutputName::Labels => "BYTES",
            OutputName::Probabilities => "FP32",
        }
    }

    /// Its data type in the model configuration (Triton's `TYPE_*` names).
    pub fn config_type(self) -> &'static str {
        match self {
            OutputName::Labels => "TYPE_STRING",
            OutputName::Probabilities => "TYPE_FP32",
        }
    }

    /// The output called `name`, or an error naming the ones there are.
    pub fn parse(name: &str) -> Result<OutputName, UnknownOutput> {
        OutputName::ALL
            .into_iter()
            .find(|o| o.as_str() == name)
            .ok_or_else(|| {
                let shown: String = name
                    .chars()
                    .map(|c| if c.is_control() { '\u{fffd}' } else { c })
                    .collect();
                UnknownOutput(crate::text::truncate(shown, MAX_SHORT_STRING))
            })
    }
}

/// One output a request asks for, and in which form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputSpec {
    /// Which output.
    pub name: OutputName,
    /// Triton's classification extension (`class_count`): the output comes back as BYTES
    /// `"score:index:label"` strings, its `k` classes per image.
    pub class_count: Option<u32>,
    /// Send the output as raw binary after the JSON header (HTTP binary tensor extension).
    pub binary: bool,
}

/// The values of one output tensor, flattened row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// BYTES elements (class names, or classification strings).
    Bytes(Vec<String>),
    /// FP32 values.
    Fp32(Vec<f32>),
}

impl Values {
    /// The KServe v2 datatype.
    pub fn datatype(&self) -> &'static str {
        match self {
            Values::Bytes(_) => "BYTES",
            Values::Fp32(_) => "FP32",
        }
    }

    /// The raw form: binary tensor data extension and gRPC `raw_output_contents`.
    pub fn to_raw(&self) -> Vec<u8> {
        match self {
            Values::Bytes(v) => encode_bytes_tensor(v.iter().map(String::as_bytes)),
            Values::Fp32(v) => encode_fp32_tensor(v.iter().copied()),
        }
    }

    /// The JSON `data` array.
    pub fn to_json(&self) -> Value {
        match self {
            Values::Bytes(v) => json!(v),
            Values::Fp32(v) => json!(v),
        }
    }
}

/// One output tensor of an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    /// The output's name.
    pub name: OutputName,
    /// `[batch, k]`.
    pub shape: [usize; 2],
    /// Its values.
    pub values: Values,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_found_by_name_and_an_unknown_one_is_named_safely() {
        assert_eq!(OutputName::parse("labels"), Ok(OutputName::Labels));
        assert_eq!(
            OutputName::parse("probabilities"),
            Ok(OutputName::Probabilities)
        );
        let e = OutputName::parse("logits\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown output \"logits\u{fffd}\"; outputs are \"labels\" and \"probabilities\""
        );
        let long = OutputName::parse(&"x".repeat(10_000)).unwrap_err();
        assert!(long.0.len() <= MAX_SHORT_STRING, "{}", long.0.len());
    }

    #[test]
    fn values_have_their_datatype_and_raw_form() {
        let labels = Values::Bytes(vec!["cat".into(), "dog".into()]);
        assert_eq!(labels.datatype(), "BYTES");
        assert_eq!(labels.to_raw(), b"\x03\0\0\0cat\x03\0\0\0dog");
        assert_eq!(labels.to_json(), json!(["cat", "dog"]));
        let p = Values::Fp32(vec![0.5]);
        assert_eq!(p.datatype(), "FP32");
        assert_eq!(p.to_raw(), 0.5f32.to_le_bytes());
    }
}
