//! Fuzz target `kserve_request`: what `POST /v2/models/googlenet/infer` does with its JSON
//! body, [`glimpse_wire::parse::parse_infer_request`] (the string and depth guard, the
//! typed streaming parse, base64 decoding, the image, tensor and dimension caps, the byte
//! budget), reading the body in chunks of a size the input chooses.
//!
//! Input: one byte choosing the read size, then the body. Beyond "no panic": what is accepted
//! is within the limits, every decoded image is paid for, and the budget is whole again once
//! the request is dropped.
//!
//! Included with `#[path]` by `glimpse-fuzz` (under AFL++) and by `wire/tests/fuzz_corpus.rs`
//! (corpus replay): both run exactly this function.

use super::trickle::Trickle;
use glimpse_wire::budget::ByteBudget;
use glimpse_wire::parse::{MAX_DIMS, MAX_TENSORS, ParseLimits, parse_infer_request};

/// Runs one input; `true` when the request parsed.
pub(crate) fn run(data: &[u8]) -> bool {
    let Some((&step, body)) = data.split_first() else {
        return false;
    };
    let budget = ByteBudget::new(1 << 20);
    let limits = ParseLimits {
        max_images: 4,
        max_image_bytes: 4 << 10,
        budget: budget.clone(),
    };
    let reader = Trickle {
        data: body,
        step: usize::from(step) * 16 + 1,
    };
    let accepted = match parse_infer_request(reader, &limits) {
        Ok(req) => {
            assert!(req.inputs.len() <= MAX_TENSORS);
            assert!(req.outputs.as_ref().is_none_or(|o| o.len() <= MAX_TENSORS));
            let mut images = 0;
            let mut bytes = 0;
            for input in &req.inputs {
                assert!(input.shape.as_ref().is_none_or(|s| s.len() <= MAX_DIMS));
                for (image, held) in &input.data {
                    assert!(!image.is_empty() && image.len() <= limits.max_image_bytes);
                    assert_eq!(held.len(), image.len(), "every decoded byte is paid for");
                    bytes += image.len();
                }
                images += input.data.len();
            }
            assert!(images <= limits.max_images);
            assert_eq!(budget.in_use(), bytes);
            true
        }
        Err(_) => false,
    };
    assert_eq!(budget.in_use(), 0, "the budget is whole again");
    accepted
}
