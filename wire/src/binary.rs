//! Raw tensor bytes as the KServe v2 binary tensor data extension (HTTP) and gRPC's
//! `raw_input_contents` / `raw_output_contents` lay them out, and the extension's request
//! framing ([`parse_binary_request`]): a BYTES tensor is its elements
//! in order, each a 4-byte little-endian length followed by that many bytes; an FP32 tensor
//! is its values as little-endian `f32`s.
//!
//! Reading is done from a [`Read`] (a body streaming in, or a gRPC message already in
//! memory) under the same limits as JSON requests. Every length prefix is checked against
//! what is left of the tensor and against the per-image limit before anything is allocated,
//! so a prefix that lies costs nothing, and each image is paid for from the byte budget
//! before it is read.

use std::io::Read;

use bytes::Bytes;

use crate::budget::Held;
use crate::parse::{InferRequest, ParseError, ParseLimits, parse_infer_request};
use crate::shape::ShapeError;

/// Reads the BYTES elements of one tensor of `size` bytes from `reader`. `first` is the
/// index of its first element among the request's images (for messages and the image
/// count limit). Each image is copied out, paid for from the byte budget first.
pub fn read_bytes_tensor<R: Read>(
    reader: &mut R,
    size: u64,
    first: usize,
    limits: &ParseLimits,
) -> Result<Vec<(Bytes, Held)>, ParseError> {
    let pay = |n| {
        let mut held = Held::none();
        limits.budget.take(&mut held, n).then_some(held)
    };
    bytes_tensor(&mut Streamed(reader), size, first, limits, pay)
}

/// The BYTES elements of `tensor`, a whole tensor already in memory (a gRPC
/// `raw_input_contents` entry), as slices of it: nothing is copied. Each image's bytes are
/// moved out of `paid`, what the request already paid for its message, and only what that
/// lacks is taken from the budget.
pub fn split_bytes_tensor(
    tensor: &Bytes,
    first: usize,
    limits: &ParseLimits,
    paid: &mut Held,
) -> Result<Vec<(Bytes, Held)>, ParseError> {
    let pay = |n| limits.budget.claim(paid, n);
    let size = tensor.len() as u64;
    bytes_tensor(&mut Sliced(tensor.clone()), size, first, limits, pay)
}

/// Where a BYTES tensor's elements come from.
trait Elements {
    /// The next 4-byte length prefix.
    fn prefix(&mut self) -> Result<[u8; 4], ParseError>;
    /// The next `len` bytes, which the caller has checked are there.
    fn element(&mut self, len: usize) -> Result<Bytes, ParseError>;
}

/// Elements copied out of a stream.
struct Streamed<'r, R>(&'r mut R);

impl<R: Read> Elements for Streamed<'_, R> {
    fn prefix(&mut self) -> Result<[u8; 4], ParseError> {
        let mut prefix = [0u8; 4];
        read_exact(self.0, &mut prefix, "a BYTES element's length")?;
        Ok(prefix)
    }

    fn element(&mut self, len: usize) -> Result<Bytes, ParseError> {
        let mut bytes = vec![0u8; len];
        read_exact(self.0, &mut bytes, "a BYTES element")?;
        Ok(Bytes::from(bytes))
    }
}

/// Elements sliced out of a buffer.
struct Sliced(Bytes);

impl Elements for Sliced {
    fn prefix(&mut self) -> Result<[u8; 4], ParseError> {
        let head = self.element(4)?;
        let mut prefix = [0u8; 4];
        prefix.copy_from_slice(&head);
        Ok(prefix)
    }

    fn element(&mut self, len: usize) -> Result<Bytes, ParseError> {
        if len > self.0.len() {
            return Err(ParseError::Invalid(
                "a BYTES element runs past the end of its tensor".into(),
            ));
        }
        Ok(self.0.split_to(len))
    }
}

/// The elements of a tensor of `size` bytes, each checked (length prefix against what is
/// left, the image count, the per-image size) before `pay` is asked for its bytes and
/// before it is read.
fn bytes_tensor(
    src: &mut impl Elements,
    size: u64,
    first: usize,
    limits: &ParseLimits,
    mut pay: impl FnMut(usize) -> Option<Held>,
) -> Result<Vec<(Bytes, Held)>, ParseError> {
    let mut left = size;
    let mut out = Vec::new();
    while left > 0 {
        let index = first + out.len();
        if left < 4 {
            return Err(ParseError::Invalid(format!(
                "element {index} of the BYTES tensor: {left} byte(s) left, too few for its 4-byte length"
            )));
        }
        let prefix = src.prefix()?;
        left -= 4;
        let len = u64::from(u32::from_le_bytes(prefix));
        if len > left {
            return Err(ParseError::Invalid(format!(
                "element {index} of the BYTES tensor declares {len} bytes, but only {left} are left in the tensor"
            )));
        }
        if index >= limits.max_images {
            return Err(ShapeError::Images(limits.max_images).into());
        }
        if len == 0 {
            return Err(ParseError::Invalid(format!("image[{index}] is empty")));
        }
        if len > limits.max_image_bytes as u64 {
            return Err(ParseError::TooLarge(crate::text::file_too_large(
                &format!("image[{index}]"),
                Some(len),
                limits.max_image_bytes,
            )));
        }
        // Bounded by the per-image limit above.
        let len = len as usize;
        let held = pay(len).ok_or(ParseError::Busy)?;
        let bytes = src.element(len)?;
        left -= len as u64;
        out.push((bytes, held));
    }
    Ok(out)
}

/// Parse a request in the binary tensor data extension's form: a JSON header of
/// `header_len` bytes, then the raw bytes of every input whose parameters give a
/// `binary_data_size`, in input order, and nothing after them. Blocking, like
/// [`parse_infer_request`].
pub fn parse_binary_request<R: Read>(
    mut reader: R,
    header_len: u64,
    limits: &ParseLimits,
) -> Result<InferRequest, ParseError> {
    let mut req = parse_infer_request((&mut reader).take(header_len), limits)?;
    let mut first: usize = req.inputs.iter().map(|i| i.data.len()).sum();
    for input in &mut req.inputs {
        let Some(size) = input.binary_data_size else {
            continue;
        };
        if input.has_data {
            return Err(ParseError::Invalid(format!(
                "input {:?} has both `data` and `binary_data_size`",
                input.name
            )));
        }
        if input.datatype != "BYTES" {
            return Err(ParseError::Invalid(format!(
                "input {:?} must be BYTES, got {:?}",
                input.name, input.datatype
            )));
        }
        input.data = read_bytes_tensor(&mut reader, size, first, limits)?;
        input.has_data = true;
        first += input.data.len();
    }
    let mut extra = [0u8; 1];
    match reader.read(&mut extra) {
        Ok(0) => Ok(req),
        Ok(_) => Err(ParseError::Invalid(
            "the body goes on past the binary data its header declares".into(),
        )),
        Err(e) => Err(ParseError::Body(e.to_string())),
    }
}

/// `read_exact`, where running out of body is the client's error (a tensor shorter than it
/// said), and other failures are the body's (timeouts, size limit).
pub(crate) fn read_exact<R: Read>(
    reader: &mut R,
    buf: &mut [u8],
    what: &str,
) -> Result<(), ParseError> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ParseError::Invalid(format!(
                "the body ends inside {what}: the binary data is shorter than declared"
            ))
        } else {
            ParseError::Body(e.to_string())
        }
    })
}

/// A BYTES tensor's raw form.
pub fn encode_bytes_tensor<'a>(elements: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        let len = u32::try_from(e.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&e[..len as usize]);
    }
    out
}

/// An FP32 tensor's raw form.
pub fn encode_fp32_tensor(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::ByteBudget;

    fn limits() -> ParseLimits {
        ParseLimits {
            max_images: 3,
            max_image_bytes: 100,
            budget: ByteBudget::new(1 << 20),
        }
    }

    fn read(raw: &[u8]) -> Result<Vec<Vec<u8>>, ParseError> {
        let mut r = raw;
        read_bytes_tensor(&mut r, raw.len() as u64, 0, &limits())
            .map(|v| v.into_iter().map(|(b, _)| b.to_vec()).collect())
    }

    #[test]
    fn elements_round_trip() {
        let raw = encode_bytes_tensor([&b"abc"[..], b"de"]);
        assert_eq!(raw, b"\x03\0\0\0abc\x02\0\0\0de");
        assert_eq!(read(&raw).unwrap(), [b"abc".to_vec(), b"de".to_vec()]);
        assert_eq!(
            encode_fp32_tensor([1.0, -2.5]),
            [0, 0, 128, 63, 0, 0, 32, 192]
        );
    }

    #[test]
    fn a_length_that_lies_is_refused_before_allocating() {
        // Claims 4 GB in a 9-byte tensor.
        let err = read(b"\xff\xff\xff\xffabcde").unwrap_err();
        assert!(
            matches!(&err, ParseError::Invalid(m) if m.contains("declares 4294967295 bytes")),
            "{err:?}"
        );
        let err = read(b"\x03\0\0\0abc\x02\0").unwrap_err();
        assert!(
            matches!(&err, ParseError::Invalid(m) if m.contains("too few")),
            "{err:?}"
        );
    }

    #[test]
    fn limits_hold_per_image_per_request_and_on_the_budget() {
        let big = [7u8; 101];
        let err = read(&encode_bytes_tensor([&big[..]])).unwrap_err();
        assert!(matches!(err, ParseError::TooLarge(_)), "{err:?}");
        let four = encode_bytes_tensor([&b"a"[..], b"b", b"c", b"d"]);
        let err = read(&four).unwrap_err();
        assert!(
            matches!(&err, ParseError::TooLarge(m) if m.contains("images")),
            "{err:?}"
        );
        let err = read(b"\0\0\0\0").unwrap_err();
        assert!(
            matches!(&err, ParseError::Invalid(m) if m.contains("empty")),
            "{err:?}"
        );
        let tight = ParseLimits {
            budget: ByteBudget::new(2),
            ..limits()
        };
        let raw = encode_bytes_tensor([&b"abc"[..]]);
        let mut r = &raw[..];
        let err = read_bytes_tensor(&mut r, raw.len() as u64, 0, &tight).unwrap_err();
        assert_eq!(err, ParseError::Busy);
    }

    #[test]
    fn a_tensor_shorter_than_declared_says_so() {
        let raw = encode_bytes_tensor([&b"abc"[..]]);
        let mut r = &raw[..5];
        let err = read_bytes_tensor(&mut r, raw.len() as u64, 0, &limits()).unwrap_err();
        assert!(
            matches!(&err, ParseError::Invalid(m) if m.contains("shorter than declared")),
            "{err:?}"
        );
    }
}
