//! Fuzz target `model_decode`: what a node does with the image bytes of a request,
//! [`glimpse_model::decode`] (format sniffing, header checks against the limits, JPEG / PNG /
//! GIF / WebP / BMP decoding, EXIF orientation, conversion to 8-bit RGB) and then
//! [`glimpse_model::preprocess`] (torchvision's resize, crop and normalization) on success,
//! checked against [`glimpse_model::probe`] (the header-only cost estimate nodes budget by).
//!
//! The limits are smaller than a node's defaults so that one input cannot make the fuzzer
//! allocate gigabytes: the code paths that enforce them are the same. Beyond "no panic": a
//! decoded image is within the limits and its buffer has exactly width × height × 3 bytes, and
//! the network input is 3 × 224 × 224 finite values.
//!
//! Included with `#[path]` by `glimpse-fuzz` (under AFL++) and by `model/tests/fuzz_corpus.rs`
//! (corpus replay): both run exactly this function.

use glimpse_model::{DecodeLimits, ImageTensor, decode, preprocess, probe};

/// 4096 × 4096 at most, 4 Mpx, 1 MiB of encoded bytes.
pub(crate) const LIMITS: DecodeLimits = DecodeLimits {
    max_bytes: 1 << 20,
    max_width: 4096,
    max_height: 4096,
    max_pixels: 4 << 20,
};

/// Runs one input; `true` when it decoded (and was then preprocessed).
pub(crate) fn run(data: &[u8]) -> bool {
    let Ok(img) = decode(data, &LIMITS) else {
        return false;
    };
    let (w, h) = img.dimensions();
    assert!(w >= 1 && h >= 1, "decoded an empty image: {w}x{h}");
    // The limits are square, so they hold whatever the EXIF orientation did.
    assert!(
        w <= LIMITS.max_width
            && h <= LIMITS.max_height
            && u64::from(w) * u64::from(h) <= LIMITS.max_pixels,
        "decoded {w}x{h}, beyond the limits"
    );
    assert_eq!(img.as_raw().len(), w as usize * h as usize * 3);
    // What a node budgets before decoding must agree with what decoding produced: the same
    // pixels (the orientation may swap width and height), and at least the RGB buffer.
    let info = probe(data, &LIMITS).expect("an image that decodes also probes");
    assert_eq!(
        u64::from(info.width) * u64::from(info.height),
        u64::from(w) * u64::from(h),
        "probe and decode disagree on the size"
    );
    assert!(info.decode_bytes >= u64::from(w) * u64::from(h) * 3);
    let tensor = preprocess(&img);
    let values = tensor.as_slice();
    assert_eq!(values.len(), ImageTensor::LEN);
    assert!(values.iter().all(|v| v.is_finite()), "non-finite input");
    true
}
