//! Fuzz target `grpc_infer`: what the gRPC listener does with a `ModelInfer` message before
//! the method sees it. [`glimpse_wire::scan::check_infer_request`] reads the encoded
//! message's cost (tensor counts, shape dimensions, parameters, string lengths, fields at
//! every level); only what it lets through is decoded by prost, with the images as slices
//! of the message (`Bytes`), exactly as the listener's codec does.
//!
//! Input: the encoded message. Beyond "no panic": whatever passes the check and decodes is
//! within every cap the check promises, so decoding it cost about its own size.
//!
//! Included with `#[path]` by `glimpse-fuzz` (under AFL++) and by `wire/tests/fuzz_corpus.rs`
//! (corpus replay): both run exactly this function.

use bytes::Bytes;
use glimpse_wire::proto::ModelInferRequest;
use glimpse_wire::scan::{MAX_ELEMENTS, check_infer_request};
use glimpse_wire::shape::{MAX_DIMS, MAX_PARAMETERS, MAX_SHORT_STRING, MAX_TENSORS};
use prost::Message;

/// Runs one input; `true` when the message passed the check and decoded.
pub(crate) fn run(data: &[u8]) -> bool {
    if check_infer_request(data).is_err() {
        return false;
    }
    let Ok(req) = ModelInferRequest::decode(Bytes::copy_from_slice(data)) else {
        return false;
    };
    let short = |s: &str| assert!(s.len() <= MAX_SHORT_STRING, "{} bytes", s.len());
    for s in [&req.model_name, &req.model_version, &req.id] {
        short(s);
    }
    assert!(req.inputs.len() <= MAX_TENSORS);
    assert!(req.outputs.len() <= MAX_TENSORS);
    assert!(req.raw_input_contents.len() <= MAX_TENSORS);
    let mut parameters = req.parameters.len();
    for input in &req.inputs {
        short(&input.name);
        short(&input.datatype);
        assert!(input.shape.len() <= MAX_DIMS);
        parameters += input.parameters.len();
        if let Some(c) = &input.contents {
            assert!(c.bytes_contents.len() <= MAX_ELEMENTS);
            assert!(c.bool_contents.is_empty() && c.int_contents.is_empty());
            assert!(c.int64_contents.is_empty() && c.uint_contents.is_empty());
            assert!(c.uint64_contents.is_empty() && c.fp32_contents.is_empty());
            assert!(c.fp64_contents.is_empty());
        }
    }
    for output in &req.outputs {
        short(&output.name);
        parameters += output.parameters.len();
    }
    assert!(parameters <= MAX_PARAMETERS);
    true
}
