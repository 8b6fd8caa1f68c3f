//! What a KServe v2 request's tensors may look like, whatever protocol brought it: HTTP JSON,
//! HTTP binary and gRPC all check against these caps and refuse with these errors, so a
//! request one protocol refuses is refused by the others in the same words.
//!
//! The caps are far above what the model needs (one input, two outputs, a 1- or
//! 2-dimensional shape) and far below what would cost memory: the gRPC listener checks them
//! on the wire before a message is decoded (see [`crate::scan`]), where each empty
//! repeated entry would otherwise become a decoded struct 100 times its wire size.

/// The model's one input: encoded image files, one per BYTES element (re-exported by
/// [`crate::names`], with the model's other names; defined here so the caps need nothing else).
pub const INPUT_NAME: &str = "image";

/// Most inputs, outputs (and gRPC `raw_input_contents` entries) a request may name; the model
/// has one input and two outputs.
pub const MAX_TENSORS: usize = 8;
/// Most dimensions a shape may have.
pub const MAX_DIMS: usize = 8;
/// Longest name, datatype, `id` or parameter string, in bytes.
pub const MAX_SHORT_STRING: usize = 256;
/// Most parameters a request may carry, over the request, its inputs and its outputs.
pub const MAX_PARAMETERS: usize = 32;
/// Most images one request may ever carry: the ceiling of `--max-files`, so the gRPC wire
/// check (which knows no configuration) never refuses a batch the site would accept.
pub const MAX_BATCH: usize = 1024;

/// Why a request's tensors are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    /// More inputs than [`MAX_TENSORS`].
    #[error("more than {MAX_TENSORS} inputs")]
    Inputs,
    /// More outputs than [`MAX_TENSORS`].
    #[error("more than {MAX_TENSORS} outputs")]
    Outputs,
    /// More gRPC `raw_input_contents` entries than [`MAX_TENSORS`].
    #[error("more than {MAX_TENSORS} raw_input_contents entries")]
    RawInputs,
    /// A shape with more than [`MAX_DIMS`] dimensions.
    #[error("a shape has more than {MAX_DIMS} dimensions")]
    Dims,
    /// More parameters than [`MAX_PARAMETERS`].
    #[error("more than {MAX_PARAMETERS} parameters")]
    Parameters,
    /// A name, datatype, id or parameter string longer than [`MAX_SHORT_STRING`].
    #[error("`{0}` is longer than {MAX_SHORT_STRING} bytes")]
    LongString(&'static str),
    /// More images than the request may carry.
    #[error("more than {0} images in one request (the limit)")]
    Images(usize),
    /// The input holds numbers, not encoded images.
    #[error(
        "input \"{INPUT_NAME}\" is BYTES: send the images in bytes_contents or raw_input_contents"
    )]
    Typed,
    /// The input has no images at all.
    #[error("input \"{INPUT_NAME}\" has no data")]
    Empty,
    /// The declared shape does not multiply out to the number of images.
    #[error("shape {shape:?} does not match {images} data element(s)")]
    Mismatch {
        /// The declared shape.
        shape: Vec<i64>,
        /// The images sent.
        images: usize,
    },
}

/// Checks a batch's declared shape (when it declares one) against its image count and the
/// per-request image limit `max_images`: the shape has at most [`MAX_DIMS`] non-negative
/// dimensions whose product is the image count, and there is at least one image and at
/// most `max_images`.
pub fn check_batch(
    shape: Option<&[i64]>,
    images: usize,
    max_images: usize,
) -> Result<(), ShapeError> {
    if images == 0 {
        return Err(ShapeError::Empty);
    }
    if let Some(shape) = shape
        && !shape.is_empty()
    {
        if shape.len() > MAX_DIMS {
            return Err(ShapeError::Dims);
        }
        let product = shape.iter().try_fold(
            1i64,
            |acc, d| if *d >= 0 { acc.checked_mul(*d) } else { None },
        );
        if product != i64::try_from(images).ok() {
            return Err(ShapeError::Mismatch {
                shape: shape.to_vec(),
                images,
            });
        }
    }
    if images > max_images {
        return Err(ShapeError::Images(max_images));
    }
    Ok(())
}

/// Classes per image when a request does not say.
pub const DEFAULT_TOP_K: u32 = 5;
/// Most classes per image a request may ask for (ImageNet has 1,000).
pub const MAX_TOP_K: u32 = 1000;

/// Parse `top_k` from a query or parameter value; `None` means the default.
pub fn parse_top_k(raw: Option<&str>) -> Result<u32, String> {
    match raw {
        None => Ok(DEFAULT_TOP_K),
        Some(s) => match s.trim().parse::<u32>() {
            Ok(k) if (1..=MAX_TOP_K).contains(&k) => Ok(k),
            _ => Err(format!(
                "top_k must be an integer from 1 to {MAX_TOP_K}, got {:?}",
                crate::text::truncate(s.to_string(), 40)
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_checked_against_its_shape_and_the_image_limit() {
        assert_eq!(check_batch(None, 3, 4), Ok(()));
        assert_eq!(check_batch(Some(&[]), 3, 4), Ok(()));
        assert_eq!(check_batch(Some(&[3]), 3, 4), Ok(()));
        assert_eq!(check_batch(Some(&[3, 1]), 3, 4), Ok(()));
        assert_eq!(check_batch(Some(&[1]), 0, 4), Err(ShapeError::Empty));
        assert!(matches!(
            check_batch(Some(&[2]), 3, 4),
            Err(ShapeError::Mismatch { images: 3, .. })
        ));
        assert!(matches!(
            check_batch(Some(&[-3]), 3, 4),
            Err(ShapeError::Mismatch { .. })
        ));
        assert!(matches!(
            check_batch(Some(&[i64::MAX, 2]), 3, 4),
            Err(ShapeError::Mismatch { .. })
        ));
        assert_eq!(check_batch(Some(&[1; 9]), 1, 4), Err(ShapeError::Dims));
        assert_eq!(check_batch(Some(&[5]), 5, 4), Err(ShapeError::Images(4)));
    }

    #[test]
    fn the_errors_say_what_the_limit_is() {
        assert_eq!(
            ShapeError::Dims.to_string(),
            "a shape has more than 8 dimensions"
        );
        assert_eq!(ShapeError::Inputs.to_string(), "more than 8 inputs");
        assert_eq!(
            ShapeError::Images(64).to_string(),
            "more than 64 images in one request (the limit)"
        );
        assert!(ShapeError::Typed.to_string().contains("bytes_contents"));
    }
}
