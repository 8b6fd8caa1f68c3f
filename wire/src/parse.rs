//! Parsing a KServe v2 JSON inference request as it streams in, into typed fields, under
//! limits that hold whatever the body contains.
//!
//! The body is never parsed into a `serde_json::Value` (40 M empty strings in 120 MB became
//! 2 GB that way) nor held whole: it is read through a blocking [`Read`] fed from the
//! network, off the async runtime, and each BYTES element is base64-decoded the moment it is
//! parsed. Every collection has a cap checked as it grows (images, inputs, outputs, shape
//! dimensions, nesting), so an oversized request fails at the first element past a limit,
//! after reading only that far. A [`JsonGuard`] in front of the parser also bounds what no
//! visitor sees: the length of any one string (serde_json buffers a string whole before
//! handing it over) and the nesting depth. Decoded image bytes are paid for from the byte
//! budget before they are kept.

use std::cell::RefCell;
use std::fmt;
use std::io::Read;
use std::rc::Rc;

use base64::Engine;
use bytes::Bytes;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::budget::{ByteBudget, Held};

use crate::shape::ShapeError;
pub use crate::shape::{MAX_DIMS, MAX_SHORT_STRING, MAX_TENSORS};

/// Deepest nesting of JSON arrays and objects.
pub const MAX_DEPTH: usize = 32;

/// What a request may contain.
#[derive(Debug, Clone)]
pub struct ParseLimits {
    /// Most images (BYTES elements) in one request.
    pub max_images: usize,
    /// Largest decoded image, in bytes.
    pub max_image_bytes: usize,
    /// Decoded image bytes are paid for from here.
    pub budget: ByteBudget,
}

impl ParseLimits {
    /// The longest string the guard lets through: one base64 image plus slack for padding
    /// and whitespace.
    fn max_string(&self) -> usize {
        self.max_image_bytes.div_ceil(3) * 4 + 1024
    }
}

/// One output the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestedOutput {
    /// The output's name.
    pub name: String,
    /// Triton's `classification` parameter: answer as `"score:index:label"` strings.
    pub class_count: Option<u32>,
    /// Our `top_k` parameter on the output: classes per image, in the output's own form.
    pub top_k: Option<u32>,
    /// `binary_data`: send this output as raw bytes after the JSON header.
    pub binary: Option<bool>,
}

/// A parsed inference request.
#[derive(Debug, Default)]
pub struct InferRequest {
    /// The request id the client chose, echoed in the answer.
    pub id: Option<String>,
    /// The request's `top_k` parameter.
    pub top_k: Option<u32>,
    /// The input tensors.
    pub inputs: Vec<Input>,
    /// The outputs asked for (all of them when absent).
    pub outputs: Option<Vec<RequestedOutput>>,
    /// `binary_data_output`: send every output as raw bytes unless it says otherwise.
    pub binary_data_output: Option<bool>,
}

/// One input tensor.
#[derive(Debug, Default)]
pub struct Input {
    /// The input's name.
    pub name: String,
    /// KServe v2 datatype, e.g. `BYTES`.
    pub datatype: String,
    /// Its shape as the client declared it.
    pub shape: Option<Vec<i64>>,
    /// Decoded BYTES elements, in order, each with its share of the byte budget.
    pub data: Vec<(Bytes, Held)>,
    /// Whether `data` was present at all.
    pub has_data: bool,
    /// `binary_data_size`: the input's raw bytes follow the JSON header (binary tensor
    /// data extension), this many of them.
    pub binary_data_size: Option<u64>,
}

/// Why a request could not be parsed. Each maps to a status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Malformed JSON, or well-formed but not an inference request: 400.
    #[error("invalid inference request: {0}")]
    Invalid(String),
    /// Over a count or size limit: 413.
    #[error("{0}")]
    TooLarge(String),
    /// The byte budget is spent: 503.
    #[error("the server is holding as many uploaded bytes as it may")]
    Busy,
    /// Reading the body failed (timeout, size limit, connection): the reader says how.
    #[error("{0}")]
    Body(String),
}

impl From<ShapeError> for ParseError {
    /// Over a count: 413; any other shape fault: 400, in the same words for every protocol.
    fn from(e: ShapeError) -> ParseError {
        match e {
            ShapeError::Images(_) => ParseError::TooLarge(e.to_string()),
            _ => ParseError::Invalid(e.to_string()),
        }
    }
}

/// Parse an inference request from `reader`. Blocking: run it on a blocking thread.
/// `body_error` is consulted when the reader fails, to report why (see
/// the front-end's channel reader).
pub fn parse_infer_request<R: Read>(
    reader: R,
    limits: &ParseLimits,
) -> Result<InferRequest, ParseError> {
    let stash = Rc::new(RefCell::new(None));
    let guarded = Guarded {
        inner: reader,
        guard: JsonGuard::new(limits.max_string(), MAX_DEPTH),
        refusal: stash.clone(),
    };
    let ctx = Ctx {
        limits,
        stash,
        images: RefCell::new(0),
    };
    let mut de = serde_json::Deserializer::from_reader(std::io::BufReader::with_capacity(
        64 * 1024,
        guarded,
    ));
    let parsed = RequestSeed { ctx: &ctx }
        .deserialize(&mut de)
        .and_then(|r| de.end().map(|()| r));
    match parsed {
        Ok(r) => Ok(r),
        Err(e) => Err(ctx.stash.take().unwrap_or_else(|| from_json_error(e))),
    }
}

fn from_json_error(e: serde_json::Error) -> ParseError {
    if e.is_io() {
        let io: std::io::Error = e.into();
        // Our own readers put the reason in the io error.
        return match io.get_ref().and_then(|i| i.downcast_ref::<GuardError>()) {
            Some(GuardError::StringTooLong(max)) => ParseError::TooLarge(format!(
                "a string in the request is longer than {max} bytes"
            )),
            Some(GuardError::TooDeep(max)) => {
                ParseError::Invalid(format!("nesting deeper than {max} levels"))
            }
            None => ParseError::Body(io.to_string()),
        };
    }
    ParseError::Invalid(crate::text::truncate(e.to_string(), 300))
}

/// Errors the [`JsonGuard`] raises, inside the reader's `io::Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("string longer than {0} bytes")]
    /// A JSON string longer than this many bytes.
    StringTooLong(usize),
    #[error("nesting deeper than {0}")]
    /// JSON nested deeper than this many levels.
    TooDeep(usize),
}

/// Tracks strings and nesting in a JSON byte stream, one pass, a few bytes of state: refuses
/// any string longer than `max_string` bytes (as encoded) and nesting deeper than `max_depth`.
/// It does not validate JSON (the parser behind it does); it only bounds what the parser
/// would buffer or recurse into.
#[derive(Debug, Clone)]
pub struct JsonGuard {
    max_string: usize,
    max_depth: usize,
    in_string: bool,
    escaped: bool,
    string_len: usize,
    depth: usize,
}

impl JsonGuard {
    /// A guard refusing strings over `max_string` bytes and nesting over `max_depth`.
    pub fn new(max_string: usize, max_depth: usize) -> JsonGuard {
        JsonGuard {
            max_string,
            max_depth,
            in_string: false,
            escaped: false,
            string_len: 0,
            depth: 0,
        }
    }

    /// Look at the next bytes of the stream.
    pub fn feed(&mut self, data: &[u8]) -> Result<(), GuardError> {
        let mut i = 0;
        while i < data.len() {
            if self.in_string {
                // Fast path: skip to the next quote or backslash.
                let rest = &data[i..];
                if self.escaped {
                    self.escaped = false;
                    self.string_len += 1;
                    i += 1;
                    continue;
                }
                match memchr::memchr2(b'"', b'\\', rest) {
                    None => {
                        self.string_len += rest.len();
                        i = data.len();
                    }
                    Some(j) => {
                        self.string_len += j;
                        if rest[j] == b'"' {
                            self.in_string = false;
                        } else {
                            self.escaped = true;
                            self.string_len += 1;
                        }
                        i += j + 1;
                    }
                }
                if self.string_len > self.max_string {
                    return Err(GuardError::StringTooLong(self.max_string));
                }
                continue;
            }
            match data[i] {
                b'"' => {
                    self.in_string = true;
                    self.string_len = 0;
                }
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth > self.max_depth {
                        return Err(GuardError::TooDeep(self.max_depth));
                    }
                }
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }
}

struct Guarded<R> {
    inner: R,
    guard: JsonGuard,
    /// The visitors' [`Ctx::stash`]: once it holds a refusal, nothing more is read.
    /// serde_json, on its way out of an error, still closes every open array and object,
    /// skipping whitespace to find their ends; without this, a refused request followed by
    /// megabytes of spaces would be read to its end, holding its parse slot all the while,
    /// instead of being answered at once.
    refusal: Rc<RefCell<Option<ParseError>>>,
}

impl<R: Read> Read for Guarded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.refusal.borrow().is_some() {
            return Err(std::io::Error::other("the request was already refused"));
        }
        let n = self.inner.read(buf)?;
        self.guard.feed(&buf[..n]).map_err(std::io::Error::other)?;
        Ok(n)
    }
}

/// Parse state shared by the visitors: the limits, and the structured error behind a
/// serde `custom` error (serde's errors are strings; the status is kept here).
struct Ctx<'a> {
    limits: &'a ParseLimits,
    /// Shared with [`Guarded`], which stops reading once it is set.
    stash: Rc<RefCell<Option<ParseError>>>,
    images: RefCell<usize>,
}

impl Ctx<'_> {
    fn fail<E: de::Error>(&self, e: ParseError) -> E {
        let msg = e.to_string();
        self.stash.replace(Some(e));
        E::custom(msg)
    }
}

struct RequestSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for RequestSeed<'_, '_> {
    type Value = InferRequest;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<InferRequest, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RequestSeed<'_, '_> {
    type Value = InferRequest;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an inference request object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<InferRequest, A::Error> {
        let ctx = self.ctx;
        let mut req = InferRequest::default();
        let mut seen_inputs = false;
        while let Some(key) = map.next_key::<Key>()? {
            match key.0.as_str() {
                "id" => req.id = Some(map.next_value_seed(ShortString { ctx, what: "id" })?),
                "inputs" => {
                    seen_inputs = true;
                    req.inputs = map.next_value_seed(InputsSeed { ctx })?;
                }
                "outputs" => req.outputs = Some(map.next_value_seed(OutputsSeed { ctx })?),
                "parameters" => {
                    let p = map.next_value_seed(ParamsSeed { ctx })?;
                    req.top_k = p.top_k.or(p.classification).or(req.top_k);
                    req.binary_data_output = p.binary_data_output;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !seen_inputs {
            return Err(ctx.fail(ParseError::Invalid("missing field `inputs`".into())));
        }
        Ok(req)
    }
}

/// A map key, refused past [`MAX_SHORT_STRING`] (the guard allows image-sized strings).
struct Key(String);

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                if v.len() > MAX_SHORT_STRING {
                    return Err(E::custom("a field name is too long"));
                }
                Ok(Key(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

struct ShortString<'c, 'a> {
    ctx: &'c Ctx<'a>,
    what: &'static str,
}

impl<'de> DeserializeSeed<'de> for ShortString<'_, '_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for ShortString<'_, '_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a string for `{}`", self.what)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        if v.len() > MAX_SHORT_STRING {
            return Err(self.ctx.fail(ParseError::Invalid(format!(
                "`{}` is longer than {MAX_SHORT_STRING} bytes",
                self.what
            ))));
        }
        Ok(v.to_string())
    }
}

struct InputsSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for InputsSeed<'_, '_> {
    type Value = Vec<Input>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Input>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for InputsSeed<'_, '_> {
    type Value = Vec<Input>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of inputs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Input>, A::Error> {
        let mut out = Vec::new();
        while let Some(input) = seq.next_element_seed(InputSeed { ctx: self.ctx })? {
            out.push(input);
            if out.len() > MAX_TENSORS {
                return Err(self.ctx.fail(ShapeError::Inputs.into()));
            }
        }
        Ok(out)
    }
}

struct InputSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for InputSeed<'_, '_> {
    type Value = Input;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Input, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InputSeed<'_, '_> {
    type Value = Input;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an input object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Input, A::Error> {
        let ctx = self.ctx;
        let mut input = Input::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key.0.as_str() {
                "name" => input.name = map.next_value_seed(ShortString { ctx, what: "name" })?,
                "datatype" => {
                    input.datatype = map.next_value_seed(ShortString {
                        ctx,
                        what: "datatype",
                    })?;
                }
                "shape" => input.shape = Some(map.next_value_seed(ShapeSeed { ctx })?),
                "parameters" => {
                    input.binary_data_size =
                        map.next_value_seed(ParamsSeed { ctx })?.binary_data_size;
                }
                "data" => {
                    input.has_data = true;
                    map.next_value_seed(DataSeed {
                        ctx,
                        out: &mut input.data,
                        depth: 0,
                    })?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(input)
    }
}

struct ShapeSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for ShapeSeed<'_, '_> {
    type Value = Vec<i64>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<i64>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ShapeSeed<'_, '_> {
    type Value = Vec<i64>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a shape: an array of integers")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<i64>, A::Error> {
        let mut dims = Vec::new();
        while let Some(d) = seq.next_element::<i64>()? {
            dims.push(d);
            if dims.len() > MAX_DIMS {
                return Err(self.ctx.fail(ShapeError::Dims.into()));
            }
        }
        Ok(dims)
    }
}

/// The `data` of an input: BYTES elements, possibly nested (a `[2, 1]` tensor is
/// `[["..."], ["..."]]`), each base64-decoded as it is parsed.
struct DataSeed<'c, 'a, 'o> {
    ctx: &'c Ctx<'a>,
    out: &'o mut Vec<(Bytes, Held)>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_, '_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_, '_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("BYTES data: base64 strings, in arrays")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DIMS {
            return Err(self.ctx.fail(ParseError::Invalid(format!(
                "data is nested deeper than {MAX_DIMS} levels"
            ))));
        }
        let (ctx, out, depth) = (self.ctx, self.out, self.depth);
        while seq
            .next_element_seed(DataSeed {
                ctx,
                out: &mut *out,
                depth: depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        let ctx = self.ctx;
        let limits = ctx.limits;
        let index = {
            let mut n = ctx.images.borrow_mut();
            *n += 1;
            *n - 1
        };
        if index >= limits.max_images {
            return Err(ctx.fail(ShapeError::Images(limits.max_images).into()));
        }
        let text = v.trim();
        if text.is_empty() {
            return Err(ctx.fail(ParseError::Invalid(format!("image[{index}] is empty"))));
        }
        if text.len() / 4 * 3 > limits.max_image_bytes + 2 {
            return Err(ctx.fail(ParseError::TooLarge(crate::text::file_too_large(
                &format!("image[{index}]"),
                None,
                limits.max_image_bytes,
            ))));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .map_err(|e| {
                ctx.fail(ParseError::Invalid(format!(
                    "image[{index}] is not valid base64: {e}"
                )))
            })?;
        if bytes.len() > limits.max_image_bytes {
            return Err(ctx.fail(ParseError::TooLarge(crate::text::file_too_large(
                &format!("image[{index}]"),
                Some(bytes.len() as u64),
                limits.max_image_bytes,
            ))));
        }
        let mut held = Held::none();
        if !limits.budget.take(&mut held, bytes.len()) {
            return Err(ctx.fail(ParseError::Busy));
        }
        self.out.push((Bytes::from(bytes), held));
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Err(self.not_a_string("a number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Err(self.not_a_string("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Err(self.not_a_string("a number"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Err(self.not_a_string("a boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(self.not_a_string("null"))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.not_a_string("an object"))
    }
}

impl DataSeed<'_, '_, '_> {
    fn not_a_string<E: de::Error>(&self, found: &str) -> E {
        self.ctx.fail(ParseError::Invalid(format!(
            "BYTES data must be base64 strings, found {found}"
        )))
    }
}

struct OutputsSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for OutputsSeed<'_, '_> {
    type Value = Vec<RequestedOutput>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for OutputsSeed<'_, '_> {
    type Value = Vec<RequestedOutput>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of requested outputs")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut out = Vec::new();
        while let Some(o) = seq.next_element_seed(OutputSeed { ctx })? {
            out.push(o);
            if out.len() > MAX_TENSORS {
                return Err(ctx.fail(ShapeError::Outputs.into()));
            }
        }
        Ok(out)
    }
}

struct OutputSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for OutputSeed<'_, '_> {
    type Value = RequestedOutput;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OutputSeed<'_, '_> {
    type Value = RequestedOutput;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an output object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let ctx = self.ctx;
        let mut name = None;
        let mut params = Params::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key.0.as_str() {
                "name" => name = Some(map.next_value_seed(ShortString { ctx, what: "name" })?),
                "parameters" => params = map.next_value_seed(ParamsSeed { ctx })?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let name =
            name.ok_or_else(|| ctx.fail(ParseError::Invalid("an output has no `name`".into())))?;
        Ok(RequestedOutput {
            name,
            class_count: params.classification,
            top_k: params.top_k,
            binary: params.binary_data,
        })
    }
}

/// The parameters this server understands, wherever they appear; everything else is
/// skipped without being kept.
#[derive(Debug, Default)]
struct Params {
    /// Our `top_k`.
    top_k: Option<u32>,
    /// Triton's `classification`.
    classification: Option<u32>,
    /// `binary_data` (an output).
    binary_data: Option<bool>,
    /// `binary_data_size` (an input).
    binary_data_size: Option<u64>,
    /// `binary_data_output` (the request).
    binary_data_output: Option<bool>,
}

struct ParamsSeed<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for ParamsSeed<'_, '_> {
    type Value = Params;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Params, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed<'_, '_> {
    type Value = Params;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameters object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let ctx = self.ctx;
        let mut p = Params::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key.0.as_str() {
                name @ ("top_k" | "classification") => {
                    let raw = map.next_value_seed(Scalar { ctx })?;
                    let k = crate::shape::parse_top_k(Some(&raw))
                        .map_err(|e| ctx.fail(ParseError::Invalid(e)))?;
                    if name == "top_k" {
                        p.top_k = Some(k);
                    } else {
                        p.classification = Some(k);
                    }
                }
                name @ ("binary_data" | "binary_data_output") => {
                    let raw = map.next_value_seed(Scalar { ctx })?;
                    let on = match raw.as_str() {
                        "true" => true,
                        "false" => false,
                        _ => {
                            return Err(ctx.fail(ParseError::Invalid(format!(
                                "`{name}` must be true or false"
                            ))));
                        }
                    };
                    if name == "binary_data" {
                        p.binary_data = Some(on);
                    } else {
                        p.binary_data_output = Some(on);
                    }
                }
                "binary_data_size" => {
                    let raw = map.next_value_seed(Scalar { ctx })?;
                    let size = raw.parse::<u64>().map_err(|_| {
                        ctx.fail(ParseError::Invalid(format!(
                            "`binary_data_size` must be a byte count, got {raw:?}"
                        )))
                    })?;
                    p.binary_data_size = Some(size);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(p)
    }
}

/// A number or a short string, as text.
struct Scalar<'c, 'a> {
    ctx: &'c Ctx<'a>,
}

impl<'de> DeserializeSeed<'de> for Scalar<'_, '_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Scalar<'_, '_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or a string")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        ShortString {
            ctx: self.ctx,
            what: "parameter",
        }
        .visit_str(v)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.ctx.fail(ParseError::Invalid(
            "a parameter must be a number or a string".into(),
        )))
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<String, A::Error> {
        Err(self.ctx.fail(ParseError::Invalid(
            "a parameter must be a number or a string".into(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> ParseLimits {
        ParseLimits {
            max_images: 4,
            max_image_bytes: 1000,
            budget: ByteBudget::new(1 << 20),
        }
    }

    fn parse(text: &str) -> Result<InferRequest, ParseError> {
        parse_infer_request(text.as_bytes(), &limits())
    }

    fn b64(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }

    #[test]
    fn a_request_parses_into_typed_fields() {
        let text = format!(
            r#"{{"id":"r1","parameters":{{"top_k":3,"other":{{"deep":[1,2,{{}}]}}}},
               "inputs":[{{"data":[["{}"],["{}"]],"name":"image","shape":[2,1],"datatype":"BYTES","parameters":{{}}}}],
               "outputs":[{{"name":"labels","parameters":{{"classification":"2"}}}},{{"name":"probabilities"}}],
               "unknown":"ignored"}}"#,
            b64(b"one"),
            b64(b"two")
        );
        let r = parse(&text).unwrap();
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert_eq!(r.top_k, Some(3));
        let input = &r.inputs[0];
        assert_eq!(
            (input.name.as_str(), input.datatype.as_str()),
            ("image", "BYTES")
        );
        assert_eq!(input.shape, Some(vec![2, 1]));
        let data: Vec<&[u8]> = input.data.iter().map(|(b, _)| &b[..]).collect();
        assert_eq!(data, [&b"one"[..], b"two"]);
        let outs = r.outputs.unwrap();
        assert_eq!(outs[0].class_count, Some(2));
        assert_eq!(outs[1].name, "probabilities");
    }

    #[test]
    fn limits_stop_the_parse_at_the_first_element_past_them() {
        let many = format!(
            r#"{{"inputs":[{{"name":"image","datatype":"BYTES","data":[{}]}}]}}"#,
            vec![format!("\"{}\"", b64(b"x")); 5].join(",")
        );
        assert!(
            matches!(parse(&many), Err(ParseError::TooLarge(m)) if m.contains("more than 4 images"))
        );
        let empty = r#"{"inputs":[{"name":"image","datatype":"BYTES","data":["","",""]}]}"#;
        assert!(
            matches!(parse(empty), Err(ParseError::Invalid(m)) if m.contains("image[0] is empty"))
        );
        let big = format!(
            r#"{{"inputs":[{{"name":"image","datatype":"BYTES","data":["{}"]}}]}}"#,
            b64(&[7u8; 2000])
        );
        assert!(matches!(parse(&big), Err(ParseError::TooLarge(_))));
        let dims = r#"{"inputs":[{"name":"image","shape":[1,1,1,1,1,1,1,1,1],"datatype":"BYTES","data":[]}]}"#;
        assert!(matches!(parse(dims), Err(ParseError::Invalid(m)) if m.contains("dimensions")));
        let numbers = r#"{"inputs":[{"name":"image","datatype":"BYTES","data":[1]}]}"#;
        assert!(
            matches!(parse(numbers), Err(ParseError::Invalid(m)) if m.contains("base64 strings"))
        );
        let deep = format!(
            r#"{{"x":{}1{}, "inputs":[]}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        assert!(matches!(parse(&deep), Err(ParseError::Invalid(m)) if m.contains("deeper")));
        let long_id = format!(r#"{{"id":"{}","inputs":[]}}"#, "i".repeat(300));
        assert!(matches!(parse(&long_id), Err(ParseError::Invalid(m)) if m.contains("`id`")));
        let huge_string = format!(r#"{{"junk":"{}","inputs":[]}}"#, "s".repeat(5000));
        assert!(
            matches!(parse(&huge_string), Err(ParseError::TooLarge(m)) if m.contains("string"))
        );
        assert!(matches!(parse("{}"), Err(ParseError::Invalid(m)) if m.contains("inputs")));
        assert!(matches!(
            parse("{\"inputs\":[]} trailing"),
            Err(ParseError::Invalid(_))
        ));
    }

    /// A reader that counts what is taken from it.
    struct Counting<R> {
        inner: R,
        read: Rc<std::cell::Cell<usize>>,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read.set(self.read.get() + n);
            Ok(n)
        }
    }

    #[test]
    fn a_refused_request_is_not_read_past_the_refusal() {
        // serde_json skips whitespace to close the arrays and objects still open when a
        // visitor fails; eight megabytes of spaces after an empty image must not be read.
        let mut body = br#"{"inputs":[{"name":"image","datatype":"BYTES","data":["","#.to_vec();
        body.resize(8 << 20, b' ');
        let read = Rc::new(std::cell::Cell::new(0));
        let reader = Counting {
            inner: &body[..],
            read: read.clone(),
        };
        let parsed = parse_infer_request(reader, &limits());
        assert!(
            matches!(&parsed, Err(ParseError::Invalid(m)) if m.contains("image[0] is empty")),
            "{parsed:?}"
        );
        assert!(
            read.get() <= 64 * 1024,
            "{} bytes read after a refusal in the first 60",
            read.get()
        );
    }

    #[test]
    fn decoded_images_are_paid_for_from_the_budget() {
        let l = ParseLimits {
            budget: ByteBudget::new(5),
            ..limits()
        };
        let text = format!(
            r#"{{"inputs":[{{"name":"image","datatype":"BYTES","data":["{}","{}"]}}]}}"#,
            b64(b"abc"),
            b64(b"def")
        );
        assert_eq!(
            parse_infer_request(text.as_bytes(), &l).unwrap_err(),
            ParseError::Busy
        );
        assert_eq!(
            l.budget.in_use(),
            0,
            "what was taken went back with the error"
        );
        let text = format!(
            r#"{{"inputs":[{{"name":"image","datatype":"BYTES","data":["{}"]}}]}}"#,
            b64(b"abc")
        );
        let r = parse_infer_request(text.as_bytes(), &l).unwrap();
        assert_eq!(l.budget.in_use(), 3);
        drop(r);
        assert_eq!(l.budget.in_use(), 0);
    }

    #[test]
    fn the_guard_follows_strings_and_escapes_across_chunks() {
        // The string is 11 bytes as encoded: 0123, 45, the escaped quote (2), 67, 8.
        let mut g = JsonGuard::new(11, 3);
        for chunk in [&b"{\"a\": \"0123"[..], b"45\\\"67", b"8\", \"b\": [[1]]}"] {
            g.feed(chunk).unwrap();
        }
        assert!(!g.in_string);
        assert_eq!(g.depth, 0);
        let mut g = JsonGuard::new(10, 3);
        assert_eq!(
            g.feed(b"\"0123456789ab\""),
            Err(GuardError::StringTooLong(10))
        );
        let mut g = JsonGuard::new(10, 3);
        assert_eq!(g.feed(b"[[[\"]]]]\"[[]]]"), Err(GuardError::TooDeep(3)));
        let mut g = JsonGuard::new(10, 3);
        g.feed(b"[\"[[[[[[\"]").unwrap();
    }
}
