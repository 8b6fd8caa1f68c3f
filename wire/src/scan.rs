//! A `ModelInferRequest`'s cost, read off its wire form before it is decoded.
//!
//! Decoding protobuf trusts the message: an `inputs` entry is 2 bytes on the wire and a
//! ~300-byte struct once decoded, so 1 MB of empty entries became 308 MB and one 100 MiB
//! message could ask for tens of GB. This walks the encoded message once, without
//! allocating, and refuses it at the first field past a cap: the counts of inputs, outputs,
//! raw contents, shape dimensions, parameters and BYTES elements ([`crate::shape`],
//! the caps every protocol checks), the length of every short string, and the number of
//! fields at all levels together (so even unknown fields cannot make decoding take time in
//! proportion to a large message). Typed (numeric) contents are refused here too, before
//! they are copied out: the model's one input is BYTES.
//!
//! What passes decodes into at most its own size plus a constant: the image fields are
//! `Bytes` that share the received buffer (see `build.rs`), strings are short and few, and
//! every struct is counted. So decoding is cheap enough to stay on the async runtime.

use crate::shape::{
    MAX_BATCH, MAX_DIMS, MAX_PARAMETERS, MAX_SHORT_STRING, MAX_TENSORS, ShapeError,
};

/// Most fields a message may hold at every level of nesting together, known or unknown: a
/// full batch of BYTES elements plus room for everything else a request names.
pub const MAX_FIELDS: usize = MAX_BATCH + 1024;

/// Most BYTES elements one `contents` may hold: the ceiling of `--max-files`. The site's own
/// (lower) image limit is checked after decoding, in the words every protocol uses.
pub const MAX_ELEMENTS: usize = MAX_BATCH;

/// Why a message was refused before decoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a well-formed protobuf encoding.
    #[error("malformed protobuf message: {0}")]
    Malformed(&'static str),
    /// A tensor cap (the same as every protocol's).
    #[error(transparent)]
    Shape(#[from] ShapeError),
    /// More fields than [`MAX_FIELDS`].
    #[error("more than {MAX_FIELDS} fields in one message")]
    Fields,
    /// More BYTES elements in one input than [`MAX_ELEMENTS`].
    #[error("more than {MAX_ELEMENTS} BYTES elements in one input")]
    Elements,
}

/// Protobuf wire types (groups, 3 and 4, are refused: proto3 has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    Varint,
    Fixed64,
    Len,
    Fixed32,
}

/// One field: its number, and its payload when it is length-delimited.
struct Field<'a> {
    number: u64,
    wire: Wire,
    payload: &'a [u8],
}

/// Walks one level of a message, counting every field against the message's total.
struct Fields<'a, 'c> {
    buf: &'a [u8],
    count: &'c mut Counts,
}

/// What has been seen across the whole message.
#[derive(Default)]
struct Counts {
    fields: usize,
    parameters: usize,
}

impl<'a> Fields<'a, '_> {
    fn next(&mut self) -> Result<Option<Field<'a>>, WireError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        self.count.fields += 1;
        if self.count.fields > MAX_FIELDS {
            return Err(WireError::Fields);
        }
        let tag = varint(&mut self.buf)?;
        let number = tag >> 3;
        if number == 0 {
            return Err(WireError::Malformed("field number 0"));
        }
        let (wire, payload) = match tag & 7 {
            0 => {
                varint(&mut self.buf)?;
                (Wire::Varint, &[][..])
            }
            1 => (Wire::Fixed64, take(&mut self.buf, 8)?),
            2 => {
                let len = varint(&mut self.buf)?;
                let len = usize::try_from(len).map_err(|_| WireError::Malformed("length"))?;
                (Wire::Len, take(&mut self.buf, len)?)
            }
            5 => (Wire::Fixed32, take(&mut self.buf, 4)?),
            _ => return Err(WireError::Malformed("unsupported wire type")),
        };
        Ok(Some(Field {
            number,
            wire,
            payload,
        }))
    }

    /// The fields of a nested message, counted against the same totals.
    fn nested<'b>(&'b mut self, payload: &'a [u8]) -> Fields<'a, 'b> {
        Fields {
            buf: payload,
            count: &mut *self.count,
        }
    }
}

fn varint(buf: &mut &[u8]) -> Result<u64, WireError> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some((&b, rest)) = buf.split_first() else {
            return Err(WireError::Malformed("truncated varint"));
        };
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Ok(value);
        }
    }
    Err(WireError::Malformed("varint longer than 10 bytes"))
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], WireError> {
    if buf.len() < n {
        return Err(WireError::Malformed("truncated field"));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// A length-delimited field that should be a short string.
fn short(field: &Field<'_>, what: &'static str) -> Result<(), WireError> {
    expect(field, Wire::Len)?;
    if field.payload.len() > MAX_SHORT_STRING {
        return Err(ShapeError::LongString(what).into());
    }
    Ok(())
}

fn expect(field: &Field<'_>, wire: Wire) -> Result<(), WireError> {
    if field.wire == wire {
        Ok(())
    } else {
        Err(WireError::Malformed("a field has the wrong wire type"))
    }
}

/// Checks an encoded `ModelInferRequest` (see the module doc).
pub fn check_infer_request(message: &[u8]) -> Result<(), WireError> {
    let mut counts = Counts::default();
    let mut fields = Fields {
        buf: message,
        count: &mut counts,
    };
    let (mut inputs, mut outputs, mut raw) = (0usize, 0usize, 0usize);
    while let Some(f) = fields.next()? {
        match f.number {
            1 => short(&f, "model_name")?,
            2 => short(&f, "model_version")?,
            3 => short(&f, "id")?,
            4 => parameter(&mut fields, &f)?,
            5 => {
                inputs += 1;
                if inputs > MAX_TENSORS {
                    return Err(ShapeError::Inputs.into());
                }
                expect(&f, Wire::Len)?;
                input(&mut fields.nested(f.payload))?;
            }
            6 => {
                outputs += 1;
                if outputs > MAX_TENSORS {
                    return Err(ShapeError::Outputs.into());
                }
                expect(&f, Wire::Len)?;
                output(&mut fields.nested(f.payload))?;
            }
            7 => {
                raw += 1;
                if raw > MAX_TENSORS {
                    return Err(ShapeError::RawInputs.into());
                }
                expect(&f, Wire::Len)?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `InferInputTensor`: name, datatype, shape, parameters, contents.
fn input(fields: &mut Fields<'_, '_>) -> Result<(), WireError> {
    let mut dims = 0usize;
    while let Some(f) = fields.next()? {
        match f.number {
            1 => short(&f, "name")?,
            2 => short(&f, "datatype")?,
            3 => {
                // Packed (one length-delimited run of varints) or one varint per dimension.
                dims += match f.wire {
                    Wire::Len => f.payload.iter().filter(|b| **b < 0x80).count(),
                    Wire::Varint => 1,
                    _ => return Err(WireError::Malformed("a field has the wrong wire type")),
                };
                if dims > MAX_DIMS {
                    return Err(ShapeError::Dims.into());
                }
            }
            4 => parameter(fields, &f)?,
            5 => {
                expect(&f, Wire::Len)?;
                contents(&mut fields.nested(f.payload))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// `InferTensorContents`: BYTES elements only.
fn contents(fields: &mut Fields<'_, '_>) -> Result<(), WireError> {
    let mut elements = 0usize;
    while let Some(f) = fields.next()? {
        match f.number {
            1..=7 => return Err(ShapeError::Typed.into()),
            8 => {
                expect(&f, Wire::Len)?;
                elements += 1;
                if elements > MAX_ELEMENTS {
                    return Err(WireError::Elements);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `InferRequestedOutputTensor`: name, parameters.
fn output(fields: &mut Fields<'_, '_>) -> Result<(), WireError> {
    while let Some(f) = fields.next()? {
        match f.number {
            1 => short(&f, "name")?,
            2 => parameter(fields, &f)?,
            _ => {}
        }
    }
    Ok(())
}

/// One entry of a `map<string, InferParameter>`, counted against the message's parameters.
fn parameter<'a>(fields: &mut Fields<'a, '_>, entry: &Field<'a>) -> Result<(), WireError> {
    expect(entry, Wire::Len)?;
    fields.count.parameters += 1;
    if fields.count.parameters > MAX_PARAMETERS {
        return Err(ShapeError::Parameters.into());
    }
    let mut entry_fields = fields.nested(entry.payload);
    while let Some(f) = entry_fields.next()? {
        match f.number {
            1 => short(&f, "parameter name")?,
            2 => {
                expect(&f, Wire::Len)?;
                let mut value = entry_fields.nested(f.payload);
                while let Some(v) = value.next()? {
                    if v.number == 3 {
                        short(&v, "parameter value")?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
    use crate::proto::{InferParameter, InferTensorContents, ModelInferRequest};
    use prost::Message;

    fn image_input(elements: usize, dims: Vec<i64>) -> InferInputTensor {
        InferInputTensor {
            name: "image".into(),
            datatype: "BYTES".into(),
            shape: dims,
            parameters: Default::default(),
            contents: Some(InferTensorContents {
                bytes_contents: vec![bytes::Bytes::from_static(b"png"); elements],
                ..Default::default()
            }),
        }
    }

    fn request(inputs: Vec<InferInputTensor>) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "googlenet".into(),
            inputs,
            ..Default::default()
        }
    }

    fn check(r: &ModelInferRequest) -> Result<(), WireError> {
        check_infer_request(&r.encode_to_vec())
    }

    #[test]
    fn a_real_request_passes() {
        let mut r = request(vec![image_input(3, vec![3])]);
        r.outputs.push(InferRequestedOutputTensor {
            name: "labels".into(),
            parameters: [(
                "classification".to_string(),
                InferParameter {
                    parameter_choice: Some(
                        crate::proto::infer_parameter::ParameterChoice::Int64Param(3),
                    ),
                },
            )]
            .into(),
        });
        r.raw_input_contents
            .push(bytes::Bytes::from_static(b"\x03\0\0\0abc"));
        assert_eq!(check(&r), Ok(()));
    }

    #[test]
    fn empty_inputs_past_the_cap_are_refused_at_the_first_extra_one() {
        let r = request(vec![InferInputTensor::default(); MAX_TENSORS + 1]);
        assert_eq!(check(&r), Err(ShapeError::Inputs.into()));
        // A million of them: refused after reading nine.
        let mut wire = Vec::new();
        for _ in 0..1_000_000 {
            wire.extend_from_slice(&[5 << 3 | 2, 0]);
        }
        assert_eq!(check_infer_request(&wire), Err(ShapeError::Inputs.into()));
    }

    #[test]
    fn shapes_count_packed_and_unpacked_dimensions() {
        assert_eq!(check(&request(vec![image_input(1, vec![1; 8])])), Ok(()));
        assert_eq!(
            check(&request(vec![image_input(1, vec![1; 9])])),
            Err(ShapeError::Dims.into())
        );
        // Twelve million dimensions, unpacked: field 3 as varints inside an input.
        let mut input = Vec::new();
        for _ in 0..1000 {
            input.extend_from_slice(&[3 << 3, 1]);
        }
        let mut wire = vec![5 << 3 | 2];
        prost::encoding::encode_varint(input.len() as u64, &mut wire);
        wire.extend_from_slice(&input);
        assert_eq!(check_infer_request(&wire), Err(ShapeError::Dims.into()));
        // Large multi-byte dimensions count once each.
        assert_eq!(
            check(&request(vec![image_input(1, vec![i64::MAX, -1, 300])])),
            Ok(())
        );
    }

    #[test]
    fn elements_parameters_strings_and_typed_contents_are_capped() {
        assert_eq!(
            check(&request(vec![image_input(MAX_ELEMENTS, vec![])])),
            Ok(())
        );
        assert_eq!(
            check(&request(vec![image_input(MAX_ELEMENTS + 1, vec![])])),
            Err(WireError::Elements)
        );
        let mut r = request(vec![]);
        for i in 0..=MAX_PARAMETERS {
            r.parameters
                .insert(format!("p{i}"), InferParameter::default());
        }
        assert_eq!(check(&r), Err(ShapeError::Parameters.into()));
        let mut r = request(vec![]);
        r.id = "x".repeat(MAX_SHORT_STRING + 1);
        assert_eq!(check(&r), Err(ShapeError::LongString("id").into()));
        let mut typed = image_input(0, vec![]);
        typed.contents = Some(InferTensorContents {
            fp32_contents: vec![1.0; 4],
            ..Default::default()
        });
        assert_eq!(check(&request(vec![typed])), Err(ShapeError::Typed.into()));
    }

    #[test]
    fn unknown_fields_count_toward_the_field_cap() {
        let mut wire = Vec::new();
        for _ in 0..=MAX_FIELDS {
            // Field 99, a varint: tag 792 is 0x98 0x06.
            wire.extend_from_slice(&[0x98, 0x06, 0]);
        }
        assert_eq!(check_infer_request(&wire), Err(WireError::Fields));
    }

    #[test]
    fn malformed_encodings_are_refused() {
        for bad in [
            &[0x0a][..],      // field 1, no length
            &[0x0a, 5, b'a'], // length past the end
            &[0x0b],          // a group
            &[0x00, 0],       // field 0
            &[
                0x2a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
            ],
            &[0x28, 1], // inputs as a varint
        ] {
            assert!(
                matches!(check_infer_request(bad), Err(WireError::Malformed(_))),
                "{bad:?}"
            );
        }
    }
}
