//! The one model as every KServe v2 protocol sees it (HTTP JSON, HTTP binary, gRPC): its
//! name and version, metadata and configuration, what a classification request asks for,
//! and running a batch of images through the site. The protocol modules only translate
//! their wire forms to and from these types, so they cannot disagree on what the model is.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use warp::http::StatusCode;

use crate::access::caller::Caller;
use crate::api::job::{JobStatus, display_name};
use crate::api::upload::Upload;
use crate::fleet::inference::{DEFAULT_TOP_K, MAX_TOP_K, TopLabel};
use crate::http::error::ApiError;
use crate::observe::stats::StatsSnapshot;
use crate::site::Site;
use glimpse_wire::budget::Held;

use glimpse_wire::parse::ParseError;

pub use glimpse_wire::names::{
    CONFIG_INPUT_DIMS, CONFIG_OUTPUT_DIMS, EXTENSIONS, INPUT_CONFIG_TYPE, INPUT_DATATYPE,
    INPUT_NAME, INPUT_SHAPE, MODEL_NAME, MODEL_VERSION, OUTPUT_SHAPE, PLATFORM, SERVER_NAME,
};

pub use glimpse_wire::answer::{OutputName, OutputSpec, OutputTensor, Values};

impl From<glimpse_wire::answer::UnknownOutput> for ApiError {
    fn from(e: glimpse_wire::answer::UnknownOutput) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

/// The result of a batch: each image's top classes, best first, all the same length.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchAnswer {
    /// One row per image, in request order.
    pub rows: Vec<Vec<TopLabel>>,
    /// Classes per image.
    pub k: usize,
}

impl BatchAnswer {
    /// `[batch, k]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows.len(), self.k]
    }

    /// The first `k` classes of every image, row by row (`k` at most [`BatchAnswer::k`]).
    pub fn cells(&self, k: usize) -> impl Iterator<Item = &TopLabel> {
        let k = k.min(self.k);
        self.rows.iter().flat_map(move |r| r.iter().take(k))
    }
}

impl BatchAnswer {
    /// The output `spec` asks for: its own form, or classification strings of its
    /// `class_count` classes.
    pub fn output(&self, spec: &OutputSpec) -> OutputTensor {
        let k = spec
            .class_count
            .map_or(self.k, |c| (c as usize).min(self.k));
        let values = match (spec.class_count, spec.name) {
            (Some(_), _) => Values::Bytes(self.cells(k).map(classification_string).collect()),
            (None, OutputName::Labels) => {
                Values::Bytes(self.cells(k).map(|t| t.label.clone()).collect())
            }
            (None, OutputName::Probabilities) => {
                Values::Fp32(self.cells(k).map(|t| t.probability).collect())
            }
        };
        OutputTensor {
            name: spec.name,
            shape: [self.rows.len(), k],
            values,
        }
    }
}

/// Triton's classification string for one class: `"score:index:label"`.
pub fn classification_string(t: &TopLabel) -> String {
    format!("{:.6}:{}:{}", t.probability, t.index, t.label)
}

/// Checks that a request names this model, and (when it names one) this version.
pub fn check_model(name: &str, version: Option<&str>) -> Result<(), ApiError> {
    if name != MODEL_NAME {
        return Err(ApiError::not_found(format!(
            "unknown model {:?}; this server serves {MODEL_NAME:?}",
            display_name(name)
        )));
    }
    match version {
        Some(v) if !v.is_empty() && v != MODEL_VERSION => Err(ApiError::not_found(format!(
            "unknown version {:?} of model {MODEL_NAME:?}; its version is {MODEL_VERSION:?}",
            display_name(v)
        ))),
        _ => Ok(()),
    }
}

/// The classes per image a request gets: the largest `class_count` its outputs ask for,
/// else its `top_k` parameter, else the default; each from 1 to [`MAX_TOP_K`].
pub fn classes_wanted(top_k: Option<u32>, outputs: &[OutputSpec]) -> Result<u32, ApiError> {
    let k = outputs
        .iter()
        .filter_map(|o| o.class_count)
        .max()
        .or(top_k)
        .unwrap_or(DEFAULT_TOP_K);
    if (1..=MAX_TOP_K).contains(&k) {
        Ok(k)
    } else {
        Err(ApiError::bad_request(format!(
            "the number of classes must be from 1 to {MAX_TOP_K}, got {k}"
        )))
    }
}

/// Checks a batch's declared shape against its image count and the site's per-request
/// image limit (see [`glimpse_wire::shape::check_batch`]); refusals are counted like a parser's.
pub fn check_batch(shape: Option<&[i64]>, images: usize, site: &Site) -> Result<(), ApiError> {
    glimpse_wire::shape::check_batch(shape, images, site.limits.max_files)
        .map_err(|e| refuse_parse(site, e.into()))
}

/// A request parser's refusal as the client sees it, counted: malformed 400, over a limit
/// 413, the byte budget spent 503 with `Retry-After`.
pub fn refuse_parse(site: &Site, e: ParseError) -> ApiError {
    let (status, reason) = match &e {
        ParseError::Invalid(_) | ParseError::Body(_) => (StatusCode::BAD_REQUEST, "malformed"),
        ParseError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        ParseError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "bytes_busy"),
    };
    site.metrics.request_rejected(reason);
    let err = ApiError::new(status, e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        err.retry_after(site.limits.retry_after_s)
    } else {
        err
    }
}

/// A batch's images as uploads, named by their index (`image[0]`, ...), as errors name them.
pub fn uploads(images: Vec<(Bytes, Held)>) -> Vec<Upload> {
    images
        .into_iter()
        .enumerate()
        .map(|(i, (bytes, held))| Upload {
            name: format!("image[{i}]"),
            content_type: None,
            bytes,
            held,
        })
        .collect()
}

/// Classify a batch for `caller` and wait for every image. A tensor cannot have holes, so
/// if one image fails the batch fails, with that image's index and status.
pub async fn classify_batch(
    site: &Arc<Site>,
    caller: &Caller,
    uploads: Vec<Upload>,
    k: u32,
) -> Result<BatchAnswer, ApiError> {
    let submitted = site.submit(caller, uploads, k)?;
    let results = site.wait_all(submitted).await;
    if let Some((i, failed)) = results
        .iter()
        .enumerate()
        .find(|(_, j)| j.status != JobStatus::Ok)
    {
        let status = failed
            .code
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let msg = format!(
            "image[{i}]: {}",
            failed.error.clone().unwrap_or_else(|| "failed".to_string())
        );
        let err = ApiError::new(status, msg);
        return Err(if status == StatusCode::SERVICE_UNAVAILABLE {
            err.retry_after(site.limits.retry_after_s)
        } else {
            err
        });
    }
    let k = results.iter().map(|j| j.top.len()).min().unwrap_or(0);
    Ok(BatchAnswer {
        rows: results.into_iter().map(|j| j.top).collect(),
        k,
    })
}

/// Model metadata as the Open Inference Protocol defines it.
pub fn metadata() -> Value {
    json!({
        "name": MODEL_NAME,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": [
            { "name": INPUT_NAME, "datatype": INPUT_DATATYPE, "shape": INPUT_SHAPE }
        ],
        "outputs": OutputName::ALL.map(|o| json!({
            "name": o.as_str(), "datatype": o.datatype(), "shape": OUTPUT_SHAPE
        })),
    })
}

/// What a client needs of the model's configuration (Triton's `ModelConfig`, in its JSON
/// form): the largest batch, the input and the outputs. The batch dimension is implicit,
/// as in Triton: `dims` are per image.
pub fn config(site: &Site) -> Value {
    json!({
        "name": MODEL_NAME,
        "platform": PLATFORM,
        "backend": PLATFORM,
        "max_batch_size": max_batch_size(site),
        "input": [
            { "name": INPUT_NAME, "data_type": INPUT_CONFIG_TYPE, "dims": CONFIG_INPUT_DIMS }
        ],
        "output": OutputName::ALL.map(|o| json!({
            "name": o.as_str(),
            "data_type": o.config_type(),
            "dims": CONFIG_OUTPUT_DIMS,
        })),
    })
}

/// The most images one request may carry.
pub fn max_batch_size(site: &Site) -> u32 {
    u32::try_from(site.limits.max_files).unwrap_or(u32::MAX)
}

/// The statistics extension's answer for the model.
pub fn statistics(s: &StatsSnapshot) -> Value {
    json!({
        "model_stats": [{
            "name": MODEL_NAME,
            "version": MODEL_VERSION,
            "last_inference": s.last_inference,
            "inference_count": s.inference_count,
            "execution_count": s.execution_count,
            "inference_stats": {
                "success": s.success,
                "fail": s.fail,
                "queue": s.queue,
                "compute_input": s.compute_input,
                "compute_infer": s.compute_infer,
                "compute_output": s.compute_output,
                "cache_hit": { "count": 0, "ns": 0 },
                "cache_miss": { "count": 0, "ns": 0 },
            },
            "batch_stats": [],
        }]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_strings_are_score_index_label() {
        assert_eq!(
            classification_string(&TopLabel::of(0.5, 281, "tabby, tabby cat")),
            "0.500000:281:tabby, tabby cat"
        );
    }

    #[test]
    fn versions_other_than_ours_are_unknown() {
        assert!(check_model(MODEL_NAME, None).is_ok());
        assert!(check_model(MODEL_NAME, Some("")).is_ok());
        assert!(check_model(MODEL_NAME, Some("1")).is_ok());
        assert_eq!(
            check_model(MODEL_NAME, Some("2")).unwrap_err().status(),
            404
        );
        assert_eq!(check_model("resnet", Some("1")).unwrap_err().status(), 404);
    }

    #[test]
    fn the_largest_class_count_wins_over_top_k() {
        let spec = |c| OutputSpec {
            name: OutputName::Labels,
            class_count: c,
            binary: false,
        };
        assert_eq!(classes_wanted(None, &[]).unwrap(), DEFAULT_TOP_K);
        assert_eq!(classes_wanted(Some(7), &[spec(None)]).unwrap(), 7);
        assert_eq!(
            classes_wanted(Some(7), &[spec(Some(2)), spec(Some(9))]).unwrap(),
            9
        );
        assert_eq!(classes_wanted(Some(0), &[]).unwrap_err().status(), 400);
        assert_eq!(
            classes_wanted(None, &[spec(Some(MAX_TOP_K + 1))])
                .unwrap_err()
                .status(),
            400
        );
    }

    #[test]
    fn outputs_take_their_own_form_or_classification_strings() {
        let answer = BatchAnswer {
            rows: vec![vec![TopLabel::of(0.75, 1, "a"), TopLabel::of(0.25, 2, "b")]],
            k: 2,
        };
        let spec = |name, class_count| OutputSpec {
            name,
            class_count,
            binary: false,
        };
        let probs = answer.output(&spec(OutputName::Probabilities, None));
        assert_eq!(probs.shape, [1, 2]);
        assert_eq!(probs.values, Values::Fp32(vec![0.75, 0.25]));
        assert_eq!(probs.values.to_raw(), [0, 0, 64, 63, 0, 0, 128, 62]);
        let labels = answer.output(&spec(OutputName::Labels, None));
        assert_eq!(labels.values.to_json(), json!(["a", "b"]));
        let classes = answer.output(&spec(OutputName::Probabilities, Some(1)));
        assert_eq!(classes.shape, [1, 1]);
        assert_eq!(
            classes.values,
            Values::Bytes(vec!["0.750000:1:a".to_string()])
        );
        assert_eq!(classes.values.datatype(), "BYTES");
    }

    #[test]
    fn cells_take_the_first_k_of_each_row() {
        let answer = BatchAnswer {
            rows: vec![
                vec![TopLabel::of(0.6, 1, "a"), TopLabel::of(0.3, 2, "b")],
                vec![TopLabel::of(0.9, 3, "c"), TopLabel::of(0.1, 4, "d")],
            ],
            k: 2,
        };
        let firsts: Vec<u32> = answer.cells(1).map(|t| t.index).collect();
        assert_eq!(firsts, [1, 3]);
        assert_eq!(answer.cells(5).count(), 4);
        assert_eq!(answer.shape(), [2, 2]);
    }
}
