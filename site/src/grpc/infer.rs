//! `ModelInfer`'s wire forms: a [`ModelInferRequest`] checked and turned into uploads and
//! the outputs it asks for, and a [`BatchAnswer`] turned into a [`ModelInferResponse`]. What
//! the model is and how a batch runs is [`crate::kserve::model`]'s; this only translates.
//!
//! Images come as the one input `image` (BYTES), either in `raw_input_contents[0]` (each
//! element a 4-byte little-endian length and the file, what Triton's clients send) or as
//! `contents.bytes_contents` (one file per element). Outputs always go back in
//! `raw_output_contents`, one entry per output in the order of `outputs`, because that is
//! where Triton's clients look.

use std::collections::HashMap;

use bytes::Bytes;

use crate::api::upload::Upload;
use crate::fleet::inference::MAX_TOP_K;
use crate::http::error::ApiError;
use crate::kserve::model::{
    self, BatchAnswer, INPUT_DATATYPE, INPUT_NAME, MODEL_NAME, MODEL_VERSION, OutputName,
    OutputSpec, classification_string,
};
use crate::site::Site;
use glimpse_wire::binary::{encode_bytes_tensor, encode_fp32_tensor, split_bytes_tensor};
use glimpse_wire::budget::Held;
use glimpse_wire::parse::{ParseError, ParseLimits};
use glimpse_wire::proto::infer_parameter::ParameterChoice;
use glimpse_wire::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use glimpse_wire::proto::model_infer_response::InferOutputTensor;
use glimpse_wire::proto::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelInferResponse,
};
use glimpse_wire::shape::ShapeError;

/// A checked request: its images (paid for from the byte budget) and what to answer.
pub(crate) struct Batch {
    /// The request's `id`, echoed in the response.
    pub(crate) id: String,
    /// One upload per image, in request order.
    pub(crate) uploads: Vec<Upload>,
    /// The outputs to send back, in order.
    pub(crate) outputs: Vec<OutputSpec>,
    /// Classes per image to ask the model for.
    pub(crate) k: u32,
}

/// Check `req` against the model and the site's limits and take its images out of it. The
/// cheap checks (model, parameters, outputs, the input's name and type) come first. Images
/// are slices of the received message, not copies, and take their bytes from `paid`, what
/// the request paid for its message as it arrived (see [`super::body`]); the rest of `paid`
/// goes back when this returns.
pub(crate) fn read_request(
    req: ModelInferRequest,
    site: &Site,
    mut paid: Held,
) -> Result<Batch, ApiError> {
    model::check_model(&req.model_name, Some(&req.model_version))?;
    let top_k = req
        .parameters
        .get("top_k")
        .map(|p| count_param(p, "top_k"))
        .transpose()?;
    let outputs = requested_outputs(&req.outputs)?;
    let k = model::classes_wanted(top_k, &outputs)?;
    let uploads = images(req.inputs, req.raw_input_contents, site, &mut paid)?;
    Ok(Batch {
        id: req.id,
        uploads,
        outputs,
        k,
    })
}

/// A class count from a parameter: int64, uint64, or a string of digits (Triton's Python
/// client sends `classification` as an int64, some clients as a string).
fn count_param(p: &InferParameter, what: &str) -> Result<u32, ApiError> {
    let n = match &p.parameter_choice {
        Some(ParameterChoice::Int64Param(v)) => u32::try_from(*v).ok(),
        Some(ParameterChoice::Uint64Param(v)) => u32::try_from(*v).ok(),
        Some(ParameterChoice::StringParam(s)) => s.trim().parse::<u32>().ok(),
        _ => None,
    };
    n.ok_or_else(|| {
        ApiError::bad_request(format!(
            "parameter {what:?} must be an integer from 1 to {MAX_TOP_K} (int64, uint64 or a string of digits)"
        ))
    })
}

/// The outputs a request asks for, each at most once; both when it names none.
fn requested_outputs(
    requested: &[InferRequestedOutputTensor],
) -> Result<Vec<OutputSpec>, ApiError> {
    if requested.is_empty() {
        return Ok(OutputName::ALL
            .map(|name| OutputSpec {
                name,
                class_count: None,
                binary: true,
            })
            .to_vec());
    }
    let mut specs: Vec<OutputSpec> = Vec::with_capacity(OutputName::ALL.len());
    for o in requested {
        let name = OutputName::parse(&o.name)?;
        if specs.iter().any(|s| s.name == name) {
            return Err(ApiError::bad_request(format!(
                "output {:?} is requested more than once",
                name.as_str()
            )));
        }
        let class_count = o
            .parameters
            .get("classification")
            .map(|p| count_param(p, "classification"))
            .transpose()?;
        specs.push(OutputSpec {
            name,
            class_count,
            binary: true,
        });
    }
    Ok(specs)
}

/// The request's images, checked against the model's one input and the site's limits, each
/// holding its bytes, moved out of `paid`.
fn images(
    inputs: Vec<InferInputTensor>,
    raw: Vec<Bytes>,
    site: &Site,
    paid: &mut Held,
) -> Result<Vec<Upload>, ApiError> {
    let bad = ApiError::bad_request;
    let count = inputs.len();
    let Ok([input]) = <[_; 1]>::try_from(inputs) else {
        return Err(bad(format!(
            "expected exactly one input named {INPUT_NAME:?}, got {count}"
        )));
    };
    if input.name != INPUT_NAME {
        return Err(bad(format!(
            "unknown input {:?}; the model's input is {INPUT_NAME:?}",
            crate::api::job::display_name(&input.name)
        )));
    }
    if input.datatype != INPUT_DATATYPE {
        return Err(bad(format!(
            "input {INPUT_NAME:?} must be {INPUT_DATATYPE}, got {:?}",
            crate::api::job::display_name(&input.datatype)
        )));
    }
    let elements = bytes_contents(input.contents)?;
    let limits = ParseLimits {
        max_images: site.limits.max_files,
        max_image_bytes: site.limits.max_file_bytes,
        budget: site.budget.clone(),
    };
    let read = match (raw.as_slice(), elements.is_empty()) {
        ([], _) => from_elements(elements, &limits, paid),
        ([tensor], true) => split_bytes_tensor(tensor, 0, &limits, paid),
        ([_], false) => {
            return Err(bad(format!(
                "input {INPUT_NAME:?} has both raw_input_contents and contents; send one"
            )));
        }
        (many, _) => {
            return Err(bad(format!(
                "raw_input_contents has {} entries; the model has one input",
                many.len()
            )));
        }
    };
    let data = read.map_err(|e| model::refuse_parse(site, e))?;
    model::check_batch(Some(&input.shape), data.len(), site)?;
    Ok(model::uploads(data))
}

/// The BYTES elements of `contents`; any other typed contents are the client's mistake
/// (refused on the wire already, see [`super::scan`]; checked again for a request built in
/// memory).
fn bytes_contents(contents: Option<InferTensorContents>) -> Result<Vec<Bytes>, ApiError> {
    let Some(c) = contents else {
        return Ok(Vec::new());
    };
    let typed = !c.bool_contents.is_empty()
        || !c.int_contents.is_empty()
        || !c.int64_contents.is_empty()
        || !c.uint_contents.is_empty()
        || !c.uint64_contents.is_empty()
        || !c.fp32_contents.is_empty()
        || !c.fp64_contents.is_empty();
    if typed {
        return Err(ApiError::bad_request(
            ParseError::from(ShapeError::Typed).to_string(),
        ));
    }
    Ok(c.bytes_contents)
}

/// `bytes_contents` elements as images, under the same limits as a raw tensor: the count is
/// checked before anything is paid for, each image's size before it is.
fn from_elements(
    elements: Vec<Bytes>,
    limits: &ParseLimits,
    paid: &mut Held,
) -> Result<Vec<(Bytes, Held)>, ParseError> {
    if elements.len() > limits.max_images {
        return Err(ShapeError::Images(limits.max_images).into());
    }
    elements
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            if e.is_empty() {
                return Err(ParseError::Invalid(format!("image[{i}] is empty")));
            }
            if e.len() > limits.max_image_bytes {
                return Err(ParseError::TooLarge(crate::access::limits::file_too_large(
                    &format!("image[{i}]"),
                    Some(e.len() as u64),
                    limits.max_image_bytes,
                )));
            }
            let held = limits.budget.claim(paid, e.len()).ok_or(ParseError::Busy)?;
            Ok((e, held))
        })
        .collect()
}

/// The response to a request with `id` that asked for `outputs`, from its batch's answer.
/// An output with a class count is Triton's classification form: BYTES
/// `"score:index:label"`, its own `k` per image; otherwise labels are BYTES and
/// probabilities FP32. Each is `[batch, k]`.
pub(crate) fn response(
    id: String,
    outputs: &[OutputSpec],
    answer: &BatchAnswer,
) -> ModelInferResponse {
    let batch = dim(answer.rows.len());
    let mut tensors = Vec::with_capacity(outputs.len());
    let mut raw = Vec::with_capacity(outputs.len());
    for spec in outputs {
        let (datatype, k, data) = match spec.class_count {
            Some(count) => {
                let k = usize::try_from(count).unwrap_or(usize::MAX).min(answer.k);
                let strings: Vec<String> = answer.cells(k).map(classification_string).collect();
                let data = encode_bytes_tensor(strings.iter().map(String::as_bytes));
                ("BYTES", k, data)
            }
            None => {
                let cells = answer.cells(answer.k);
                let data = match spec.name {
                    OutputName::Labels => encode_bytes_tensor(cells.map(|t| t.label.as_bytes())),
                    OutputName::Probabilities => encode_fp32_tensor(cells.map(|t| t.probability)),
                };
                (spec.name.datatype(), answer.k, data)
            }
        };
        tensors.push(InferOutputTensor {
            name: spec.name.as_str().to_string(),
            datatype: datatype.to_string(),
            shape: vec![batch, dim(k)],
            parameters: HashMap::new(),
            contents: None,
        });
        raw.push(data);
    }
    ModelInferResponse {
        model_name: MODEL_NAME.to_string(),
        model_version: MODEL_VERSION.to_string(),
        id,
        parameters: HashMap::new(),
        outputs: tensors,
        raw_output_contents: raw,
    }
}

/// A tensor dimension (counts here are far below `i64::MAX`).
fn dim(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::inference::TopLabel;

    fn answer() -> BatchAnswer {
        BatchAnswer {
            rows: vec![
                vec![TopLabel::of(0.5, 1, "a"), TopLabel::of(0.25, 2, "b")],
                vec![TopLabel::of(0.75, 3, "c"), TopLabel::of(0.125, 4, "d")],
            ],
            k: 2,
        }
    }

    fn spec(name: OutputName, class_count: Option<u32>) -> OutputSpec {
        OutputSpec {
            name,
            class_count,
            binary: true,
        }
    }

    #[test]
    fn outputs_come_back_raw_in_the_order_asked() {
        let outputs = [
            spec(OutputName::Probabilities, None),
            spec(OutputName::Labels, None),
        ];
        let r = response("req-1".into(), &outputs, &answer());
        assert_eq!(r.id, "req-1");
        assert_eq!(r.model_name, MODEL_NAME);
        assert_eq!(r.outputs[0].name, "probabilities");
        assert_eq!(r.outputs[0].datatype, "FP32");
        assert_eq!(r.outputs[0].shape, [2, 2]);
        assert_eq!(
            r.raw_output_contents[0],
            encode_fp32_tensor([0.5, 0.25, 0.75, 0.125])
        );
        assert_eq!(r.outputs[1].datatype, "BYTES");
        assert_eq!(
            r.raw_output_contents[1],
            encode_bytes_tensor([&b"a"[..], b"b", b"c", b"d"])
        );
        assert!(r.outputs.iter().all(|o| o.contents.is_none()));
    }

    #[test]
    fn classification_gives_score_index_label_strings_per_output_k() {
        let r = response(
            String::new(),
            &[spec(OutputName::Labels, Some(1))],
            &answer(),
        );
        assert_eq!(r.outputs[0].datatype, "BYTES");
        assert_eq!(r.outputs[0].shape, [2, 1]);
        assert_eq!(
            r.raw_output_contents[0],
            encode_bytes_tensor([&b"0.500000:1:a"[..], b"0.750000:3:c"])
        );
    }

    fn param(choice: ParameterChoice) -> InferParameter {
        InferParameter {
            parameter_choice: Some(choice),
        }
    }

    #[test]
    fn class_counts_come_as_integers_or_digit_strings() {
        assert_eq!(
            count_param(&param(ParameterChoice::Int64Param(3)), "k").unwrap(),
            3
        );
        assert_eq!(
            count_param(&param(ParameterChoice::Uint64Param(4)), "k").unwrap(),
            4
        );
        assert_eq!(
            count_param(&param(ParameterChoice::StringParam(" 7 ".into())), "k").unwrap(),
            7
        );
        for bad in [
            ParameterChoice::Int64Param(-1),
            ParameterChoice::Uint64Param(u64::MAX),
            ParameterChoice::BoolParam(true),
            ParameterChoice::StringParam("many".into()),
        ] {
            assert_eq!(count_param(&param(bad), "k").unwrap_err().status(), 400);
        }
    }

    #[test]
    fn both_outputs_unless_named_and_each_once() {
        let all = requested_outputs(&[]).unwrap();
        assert_eq!(all.len(), 2);
        let ask = |name: &str| InferRequestedOutputTensor {
            name: name.to_string(),
            parameters: HashMap::new(),
        };
        let one = requested_outputs(&[ask("labels")]).unwrap();
        assert_eq!(one, [spec(OutputName::Labels, None)]);
        assert_eq!(
            requested_outputs(&[ask("labels"), ask("labels")])
                .unwrap_err()
                .status(),
            400
        );
        assert_eq!(
            requested_outputs(&[ask("logits")]).unwrap_err().status(),
            400
        );
    }

    #[test]
    fn elements_are_counted_before_they_are_paid_for() {
        let limits = ParseLimits {
            max_images: 2,
            max_image_bytes: 4,
            budget: glimpse_wire::budget::ByteBudget::new(1 << 10),
        };
        let b = |s: &'static [u8]| Bytes::from_static(s);
        let mut paid = Held::none();
        let three = vec![b(b"a"), b(b"b"), b(b"c")];
        assert!(matches!(
            from_elements(three, &limits, &mut paid),
            Err(ParseError::TooLarge(_))
        ));
        assert_eq!(limits.budget.in_use(), 0);
        assert!(matches!(
            from_elements(vec![b(b"12345")], &limits, &mut paid),
            Err(ParseError::TooLarge(_))
        ));
        assert!(matches!(
            from_elements(vec![Bytes::new()], &limits, &mut paid),
            Err(ParseError::Invalid(_))
        ));
        // What the message paid for goes to its images first.
        assert!(limits.budget.take(&mut paid, 3));
        let ok = from_elements(vec![b(b"ab"), b(b"cd")], &limits, &mut paid).unwrap();
        assert_eq!((limits.budget.in_use(), paid.len()), (4, 0));
        drop(ok);
        assert_eq!(limits.budget.in_use(), 0);
    }
}
