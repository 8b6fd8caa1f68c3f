//! Fuzz target `kserve_binary`: what `POST /v2/models/googlenet/infer` does with a body in the
//! binary tensor data extension's framing (what Triton's HTTP client sends by default),
//! [`glimpse_wire::binary::parse_binary_request`]: a JSON header of
//! `Inference-Header-Content-Length` bytes through the same guarded parser as JSON bodies,
//! then raw BYTES tensors whose 4-byte length prefixes are attacker-controlled.
//!
//! Input: one byte choosing the read size, two bytes (little endian) giving the header
//! length, then the body. Beyond "no panic": what is accepted is within the limits, every
//! image is paid for, and the budget is whole again once the request is dropped.
//!
//! Included with `#[path]` by `glimpse-fuzz` (under AFL++) and by `wire/tests/fuzz_corpus.rs`
//! (corpus replay): both run exactly this function.

use super::trickle::Trickle;
use glimpse_wire::binary::parse_binary_request;
use glimpse_wire::budget::ByteBudget;
use glimpse_wire::parse::ParseLimits;

/// Runs one input; `true` when the request parsed.
pub(crate) fn run(data: &[u8]) -> bool {
    let [step, lo, hi, body @ ..] = data else {
        return false;
    };
    let header_len = u64::from(u16::from_le_bytes([*lo, *hi]));
    let budget = ByteBudget::new(1 << 20);
    let limits = ParseLimits {
        max_images: 4,
        max_image_bytes: 4 << 10,
        budget: budget.clone(),
    };
    let reader = Trickle {
        data: body,
        step: usize::from(*step) * 16 + 1,
    };
    let accepted = match parse_binary_request(reader, header_len, &limits) {
        Ok(req) => {
            let mut images = 0;
            let mut bytes = 0;
            for input in &req.inputs {
                for (image, held) in &input.data {
                    assert!(!image.is_empty() && image.len() <= limits.max_image_bytes);
                    assert_eq!(held.len(), image.len(), "every image byte is paid for");
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
