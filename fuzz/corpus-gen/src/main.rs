//! Writes the fuzz seed corpus: `fuzz/corpus/transport_frames/` and `fuzz/corpus/model_decode/`.
//!
//! `cargo run --manifest-path fuzz/Cargo.toml -p glimpse-fuzz-corpus`
//!
//! Every seed is made by a real encoder (the transport's own frame encoders; jpeg-encoder,
//! png, gif and `image` for pictures), except the interlaced PNG, which is assembled here
//! because no Rust encoder writes Adam7, and the two lossy WebP files, copied from
//! `corpus-gen/imported/` because no Rust encoder writes lossy WebP (see fuzz/README.md).
//! The output is deterministic: rerunning it rewrites the same bytes.
//!
//! Names: `ok-*` seeds must be accepted by their target and `bad-*` seeds refused (the
//! replay tests check both); other seeds only must not crash.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use glimpse_transport::codec::{
    self, ControlMessage, ErrorKind, ErrorReply, LEN_PREFIX, MAX_FRAME_BYTES, Reply, RequestHeader,
};
use glimpse_transport::{InferenceAnswer, Label, LoadReport, NodeInfo, Timings};
use image::ImageEncoder;
use serde_cbor::Value;

type Seeds = Vec<(&'static str, Vec<u8>)>;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    write_corpus(&root.join("corpus/transport_frames"), transport_seeds());
    write_corpus(&root.join("corpus/model_decode"), image_seeds(&root));
    write_corpus(&root.join("corpus/multipart_upload"), multipart_seeds());
    write_corpus(&root.join("corpus/kserve_request"), kserve_seeds());
    write_corpus(&root.join("corpus/kserve_binary"), kserve_binary_seeds());
    write_corpus(&root.join("corpus/grpc_infer"), grpc_infer_seeds());
}

// ---------------------------------------------------------------------------------------
// multipart_upload: one byte choosing the chunk size (n * 8 + 1), then a body with boundary XB

/// A multipart body of `(name, filename, bytes)` parts.
fn multipart(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, filename, bytes) in parts {
        out.extend_from_slice(
            format!(
                "--XB\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\nContent-Type: image/png\r\n\r\n"
            )
            .as_bytes(),
        );
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"--XB--\r\n");
    out
}

fn chunked(chunk: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![chunk];
    out.extend(body);
    out
}

fn multipart_seeds() -> Seeds {
    let png = b"\x89PNG\r\n\x1a\n0123456789";
    let long_name = "n".repeat(400);
    let unterminated = {
        let mut b = b"--XB\r\nContent-Disposition: form-data; name=\"file\"; filename=\"".to_vec();
        b.extend(std::iter::repeat_n(b'a', 9000));
        b
    };
    vec![
        ("ok-two-files", chunked(255, multipart(&[("file", "a.png", png), ("file", "b.png", b"BBBB")]))),
        ("ok-one-byte-chunks", chunked(0, multipart(&[("file", "a.png", png)]))),
        ("ok-other-field-skipped", chunked(3, multipart(&[("note", "x", b"hi"), ("image", "c.png", png)]))),
        ("ok-long-name-cut", chunked(7, multipart(&[("file", &long_name, png)]))),
        ("bad-too-many-files", chunked(255, multipart(&[("file", "1", png), ("file", "2", png), ("file", "3", png), ("file", "4", png), ("file", "5", png)]))),
        ("bad-file-too-large", chunked(255, multipart(&[("file", "big.png", &[7u8; 5000])]))),
        ("bad-unterminated-header", chunked(31, unterminated)),
        ("bad-no-files", chunked(255, b"--XB--\r\n".to_vec())),
        ("bad-truncated", chunked(2, b"--XB\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nAAAA".to_vec())),
        ("bad-no-boundary", chunked(255, vec![b'x'; 9000])),
    ]
}

// ---------------------------------------------------------------------------------------
// kserve_request: one byte choosing the read size (n * 16 + 1), then a JSON body

fn kserve(step: u8, json: &str) -> Vec<u8> {
    chunked(step, json.as_bytes().to_vec())
}

fn kserve_seeds() -> Seeds {
    // base64 of "one", "two", "\x89PNG" and 5000 bytes
    let big = "AAAA".repeat(1700);
    vec![
        ("ok-one-image", kserve(255, r#"{"id":"r1","inputs":[{"name":"image","shape":[1],"datatype":"BYTES","data":["b25l"]}]}"#)),
        ("ok-batch-nested", kserve(0, r#"{"inputs":[{"name":"image","shape":[2,1],"datatype":"BYTES","data":[["b25l"],["dHdv"]],"parameters":{"x":{"y":[1,2]}}}],"outputs":[{"name":"labels","parameters":{"classification":3}},{"name":"probabilities"}],"parameters":{"top_k":"2","other":null}}"#)),
        ("ok-escapes-and-unknown-keys", kserve(1, r#"{"unknown":"a\"b\\c\u00e9","id":"\u0041","inputs":[{"datatype":"BYTES","data":["iVBORw=="],"name":"image"}]}"#)),
        ("ok-no-padding", kserve(9, r#"{"inputs":[{"name":"image","datatype":"BYTES","data":["b25lIQ"]}]}"#)),
        ("bad-too-many-images", kserve(255, r#"{"inputs":[{"name":"image","datatype":"BYTES","data":["b25l","b25l","b25l","b25l","b25l"]}]}"#)),
        ("bad-empty-image", kserve(255, r#"{"inputs":[{"name":"image","datatype":"BYTES","data":["","",""]}]}"#)),
        ("bad-image-too-large", kserve(255, &format!(r#"{{"inputs":[{{"name":"image","datatype":"BYTES","data":["{big}"]}}]}}"#))),
        ("bad-not-base64", kserve(255, r#"{"inputs":[{"name":"image","datatype":"BYTES","data":["%%%"]}]}"#)),
        ("bad-numbers", kserve(255, r#"{"inputs":[{"name":"image","datatype":"FP32","data":[1.5,2]}]}"#)),
        ("bad-deep", kserve(255, &format!("{}1{}", "[".repeat(40), "]".repeat(40)))),
        ("bad-too-many-dims", kserve(255, r#"{"inputs":[{"name":"image","shape":[1,1,1,1,1,1,1,1,1],"datatype":"BYTES","data":[]}]}"#)),
        ("bad-no-inputs", kserve(255, r#"{"id":"x"}"#)),
        ("bad-trailing", kserve(255, r#"{"inputs":[]} {}"#)),
        ("bad-truncated", kserve(3, r#"{"inputs":[{"name":"image","datatype":"BYTES","data":["b25l""#)),
    ]
}

// ---------------------------------------------------------------------------------------
// kserve_binary: one byte choosing the read size (n * 16 + 1), two bytes (LE) of header
// length, then a JSON header and raw BYTES tensors (4-byte LE length, then the bytes)

/// A binary-extension body: `header`, then `tensor`, with the header length given as
/// `header_len` (the true one unless a seed lies about it).
fn kserve_binary(step: u8, header: &str, header_len: Option<u16>, tensor: &[u8]) -> Vec<u8> {
    let len = header_len.unwrap_or(u16::try_from(header.len()).expect("small header"));
    let mut out = vec![step];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(tensor);
    out
}

/// A raw BYTES tensor.
fn bytes_tensor(elements: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        out.extend_from_slice(&u32::try_from(e.len()).expect("small").to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

fn kserve_binary_seeds() -> Seeds {
    let input = |size: usize| {
        format!(r#"{{"inputs":[{{"name":"image","shape":[2],"datatype":"BYTES","parameters":{{"binary_data_size":{size}}}}}],"parameters":{{"binary_data_output":true}}}}"#)
    };
    let two = bytes_tensor(&[b"one", b"\x89PNG"]);
    let mut lying = two.clone();
    lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    let big = vec![7u8; 5000];
    let too_big = bytes_tensor(&[&big]);
    let five = bytes_tensor(&[b"a", b"b", b"c", b"d", b"e"]);
    let mut trailing = two.clone();
    trailing.extend_from_slice(b"junk");
    let both = r#"{"inputs":[{"name":"image","datatype":"BYTES","data":["b25l"],"parameters":{"binary_data_size":7}}]}"#;
    vec![
        ("ok-two-images", kserve_binary(255, &input(two.len()), None, &two)),
        ("ok-small-reads", kserve_binary(0, &input(two.len()), None, &two)),
        ("ok-json-data-no-binary", kserve_binary(7, r#"{"inputs":[{"name":"image","datatype":"BYTES","data":["b25l"]}]}"#, None, &[])),
        ("bad-header-past-body", kserve_binary(255, &input(two.len()), Some(60000), &two)),
        ("bad-length-lies", kserve_binary(255, &input(lying.len()), None, &lying)),
        ("bad-short-tensor", kserve_binary(255, &input(two.len() + 9), None, &two)),
        ("bad-trailing-bytes", kserve_binary(255, &input(two.len()), None, &trailing)),
        ("bad-image-too-large", kserve_binary(255, &input(too_big.len()), None, &too_big)),
        ("bad-too-many-images", kserve_binary(255, &input(five.len()), None, &five)),
        ("bad-data-and-binary", kserve_binary(255, both, None, b"\x03\0\0\0one")),
        ("bad-prefix-cut", kserve_binary(255, &input(2), None, b"\x03\0")),
    ]
}

// ---------------------------------------------------------------------------------------
// grpc_infer: an encoded ModelInferRequest (field numbers from wire/proto/grpc_service.proto)

/// A protobuf varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field.
fn field(number: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint(number << 3 | 2, &mut out);
    varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// A varint field.
fn varint_field(number: u64, value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    varint(number << 3, &mut out);
    varint(value, &mut out);
    out
}

/// `InferInputTensor` "image" of BYTES with `shape` (packed) and `elements` in
/// `contents.bytes_contents`.
fn grpc_input(shape: &[u64], elements: &[&[u8]]) -> Vec<u8> {
    let mut packed = Vec::new();
    for d in shape {
        varint(*d, &mut packed);
    }
    let contents: Vec<u8> = elements.iter().flat_map(|e| field(8, e)).collect();
    [
        field(1, b"image"),
        field(2, b"BYTES"),
        field(3, &packed),
        field(5, &contents),
    ]
    .concat()
}

/// A `map<string, InferParameter>` entry with an int64 value.
fn grpc_parameter(number: u64, key: &str, value: u64) -> Vec<u8> {
    let entry = [field(1, key.as_bytes()), field(2, &varint_field(2, value))].concat();
    field(number, &entry)
}

fn grpc_infer_seeds() -> Seeds {
    let name = field(1, b"googlenet");
    let input = field(5, &grpc_input(&[2], &[b"one", b"\x89PNG"]));
    let output = field(6, &[field(1, b"labels"), grpc_parameter(2, "classification", 3)].concat());
    let raw = field(7, &bytes_tensor(&[b"one", b"two"]));
    let bare_input = field(5, &[field(1, b"image"), field(2, b"BYTES")].concat());
    let many_inputs: Vec<u8> = (0..9).flat_map(|_| field(5, &[])).collect();
    let many_dims = field(5, &grpc_input(&[1; 9], &[b"x"]));
    let unpacked_dims: Vec<u8> = (0..9).flat_map(|_| varint_field(3, 1)).collect();
    let typed = field(5, &[field(1, b"image"), field(5, &field(6, &[0, 0, 128, 63]))].concat());
    let many_params: Vec<u8> = (0..33).flat_map(|i| grpc_parameter(4, &format!("p{i}"), 1)).collect();
    let long_id = field(3, &[b'x'; 300]);
    let unknown: Vec<u8> = varint_field(99, 7);
    vec![
        ("ok-bytes-contents", [name.clone(), input.clone(), output.clone()].concat()),
        ("ok-raw-contents", [name.clone(), bare_input, raw].concat()),
        ("ok-parameter-and-unknown-field", [name.clone(), grpc_parameter(4, "top_k", 2), unknown].concat()),
        ("ok-empty", Vec::new()),
        ("bad-nine-inputs", [name.clone(), many_inputs].concat()),
        ("bad-nine-dimensions", [name.clone(), many_dims].concat()),
        ("bad-nine-unpacked-dimensions", [name.clone(), field(5, &unpacked_dims)].concat()),
        ("bad-typed-contents", [name.clone(), typed].concat()),
        ("bad-33-parameters", [name.clone(), many_params].concat()),
        ("bad-long-id", [name.clone(), long_id].concat()),
        ("bad-truncated", input[..input.len() - 2].to_vec()),
        ("bad-group", vec![0x0b, 0x0c]),
    ]
}

/// Replaces the directory's files with `seeds`.
fn write_corpus(dir: &PathBuf, seeds: Seeds) {
    if dir.exists() {
        fs::remove_dir_all(dir).expect("remove old corpus");
    }
    fs::create_dir_all(dir).expect("create corpus dir");
    let mut total = 0;
    for (name, bytes) in &seeds {
        assert!(bytes.len() <= 64 << 10, "{name}: seeds stay small");
        fs::write(dir.join(name), bytes).expect("write seed");
        total += bytes.len();
    }
    println!("{}: {} seeds, {total} bytes", dir.display(), seeds.len());
}

// ---------------------------------------------------------------------------------------
// transport_frames

/// A NodeInfo built through serde from the fields every protocol version has (plus
/// `extra`), so this generator does not break when a field with a default is added; fields
/// the build does not know are ignored, as the decoder ignores them.
fn node_info(load_interval_ms: Option<u32>, extra: &[(&str, Value)]) -> NodeInfo {
    let text = |s: &str| Value::Text(s.into());
    let mut map: BTreeMap<Value, Value> = [
        ("node_id", text("node-1.glimpse.test")),
        ("model", text("googlenet")),
        ("weights", text("googlenet-1378be20")),
        ("trained", Value::Bool(true)),
        ("synthetic", Value::Bool(false)),
        ("backend", text("flex")),
        ("capacity", Value::Integer(8)),
        ("max_batch", Value::Integer(4)),
        ("max_batch_wait_ms", Value::Integer(2)),
        ("version", text("0.1.0")),
    ]
    .into_iter()
    .chain(extra.iter().cloned())
    .map(|(k, v)| (text(k), v))
    .collect();
    if let Some(ms) = load_interval_ms {
        map.insert(text("load_interval_ms"), Value::Integer(ms.into()));
    }
    serde_cbor::value::from_value(Value::Map(map)).expect("a NodeInfo")
}

/// `frame` with its body's top-level CBOR map changed by `edit`.
fn edit_frame(frame: &[u8], edit: impl FnOnce(&mut BTreeMap<Value, Value>)) -> Vec<u8> {
    let Ok(Value::Map(mut map)) = serde_cbor::from_slice(&frame[LEN_PREFIX..]) else {
        panic!("frame bodies are CBOR maps");
    };
    edit(&mut map);
    self::frame(&serde_cbor::to_vec(&Value::Map(map)).unwrap())
}

fn load(in_flight: u32, queued: u32, ms: f32) -> ControlMessage {
    ControlMessage::Load(LoadReport {
        in_flight,
        queued,
        recent_latency_ms: ms,
        ..LoadReport::default()
    })
}

fn answer(labels: u32) -> Reply {
    Reply::Answer(InferenceAnswer {
        top: (0..labels)
            .map(|i| Label {
                index: 281 + i,
                label: [
                    "tabby",
                    "tiger cat",
                    "Persian cat",
                    "Siamese cat",
                    "Egyptian cat",
                ][i as usize % 5]
                    .into(),
                probability: 0.5 / (i + 1) as f32,
            })
            .collect(),
        timings: Timings {
            queue_ms: 0.25,
            decode_ms: 3.5,
            preprocess_ms: 1.75,
            infer_ms: 41.0,
            batch_size: None,
        },
        synthetic: false,
    })
}

/// A frame around a body the encoder did not write (length prefix included).
fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// A control or reply frame with its protocol version changed from 1 to `v` (< 24, so the
/// CBOR integer stays one byte).
fn with_version(frame: &[u8], v: u8) -> Vec<u8> {
    let mut out = frame.to_vec();
    // The body is a map whose first key is the text "v" (0x61 0x76), then the version.
    let at = LEN_PREFIX + 1;
    assert_eq!(
        &out[at..at + 3],
        &[0x61, b'v', 0x01],
        "version field where expected"
    );
    out[at + 2] = v;
    out
}

fn transport_seeds() -> Seeds {
    let header = RequestHeader::new(42, 1, Some(1500), 5, 123_456);
    let enc_h = |h: &RequestHeader| codec::encode_request_header(h).unwrap().to_vec();
    let enc_c = |m: &ControlMessage| codec::encode_control(m).unwrap().to_vec();
    let enc_r = |r: &Reply| codec::encode_reply(r).unwrap().to_vec();
    let error = |kind, message: &str| {
        enc_r(&Reply::Error(ErrorReply {
            kind,
            message: message.into(),
        }))
    };

    let mut control_stream = enc_c(&ControlMessage::Hello(node_info(Some(100), &[])));
    for (i, ms) in [(0, 0.0), (3, 41.5), (8, f32::NAN)] {
        control_stream.extend(enc_c(&load(i, i / 2, ms)));
    }
    control_stream.extend(enc_c(&ControlMessage::Draining));

    let mut wrong_version = header.clone();
    wrong_version.v = 2;
    let mut packed = header.clone();
    packed.deadline_ms = None;
    let header_frame = enc_h(&header);
    // Built as CBOR rather than with the Rust types, so the generator also builds against a
    // transport that predates them (where they are an unknown field / an unknown variant).
    let with_ack = edit_frame(&header_frame, |m| {
        m.insert(Value::Text("ack".into()), Value::Bool(true));
    });
    let started = edit_frame(&enc_r(&answer(1)), |m| {
        let expect = BTreeMap::from([(Value::Text("expect_ms".into()), Value::Integer(1500))]);
        let variant = BTreeMap::from([(Value::Text("Started".into()), Value::Map(expect))]);
        m.insert(Value::Text("reply".into()), Value::Map(variant));
    });
    let reply_stream = [started.clone(), enc_r(&answer(5))].concat();

    vec![
        ("ok-request-header.bin", header_frame.clone()),
        (
            "ok-request-header-no-deadline.bin",
            enc_h(&RequestHeader::new(u64::MAX, 3, None, 1000, 0)),
        ),
        ("ok-request-header-ack.bin", with_ack),
        (
            "ok-request-header-packed.bin",
            frame(&serde_cbor::ser::to_vec_packed(&packed).unwrap()),
        ),
        (
            "ok-hello.bin",
            enc_c(&ControlMessage::Hello(node_info(Some(100), &[]))),
        ),
        (
            "ok-hello-without-interval.bin",
            enc_c(&ControlMessage::Hello(node_info(None, &[]))),
        ),
        (
            "ok-hello-acks.bin",
            enc_c(&ControlMessage::Hello(node_info(
                Some(250),
                &[("acks", Value::Bool(true))],
            ))),
        ),
        ("ok-load.bin", enc_c(&load(3, 1, 12.5))),
        ("ok-draining.bin", enc_c(&ControlMessage::Draining)),
        ("ok-control-stream.bin", control_stream),
        ("ok-reply-answer.bin", enc_r(&answer(5))),
        ("ok-reply-answer-empty.bin", enc_r(&answer(0))),
        ("reply-started.bin", started),
        ("ok-reply-started-then-answer.bin", reply_stream),
        (
            "ok-reply-bad-image.bin",
            error(ErrorKind::BadImage, "corrupt image: EOF"),
        ),
        (
            "ok-reply-too-large.bin",
            error(ErrorKind::TooLarge, "9000x9000"),
        ),
        ("ok-reply-overloaded.bin", error(ErrorKind::Overloaded, "")),
        ("ok-reply-draining.bin", error(ErrorKind::Draining, "")),
        (
            "ok-reply-internal.bin",
            error(ErrorKind::Internal, "worker died"),
        ),
        (
            "ok-reply-bad-request.bin",
            error(ErrorKind::BadRequest, "bad frame"),
        ),
        (
            "ok-reply-unsupported-version.bin",
            error(ErrorKind::UnsupportedVersion, "v2"),
        ),
        ("bad-request-header-version-2.bin", enc_h(&wrong_version)),
        (
            "bad-control-version-7.bin",
            with_version(&enc_c(&ControlMessage::Draining), 7),
        ),
        (
            "bad-reply-version-0.bin",
            with_version(&enc_r(&answer(1)), 0),
        ),
        (
            "bad-truncated-header.bin",
            header_frame[..header_frame.len() - 1].to_vec(),
        ),
        ("bad-prefix-only.bin", header_frame[..3].to_vec()),
        ("bad-empty-frame.bin", frame(&[])),
        (
            "bad-oversized.bin",
            [
                &((MAX_FRAME_BYTES + 1) as u32).to_be_bytes()[..],
                &header_frame[LEN_PREFIX..],
            ]
            .concat(),
        ),
        ("bad-not-cbor.bin", frame(b"GET / HTTP/1.1\r\n\r\n")),
    ]
}

// ---------------------------------------------------------------------------------------
// model_decode

/// A deterministic picture with edges and gradients, `channels` bytes a pixel.
fn pixels(w: u32, h: u32, channels: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(w as usize * h as usize * channels);
    for y in 0..h {
        for x in 0..w {
            let r = (x * 255 / w.max(2).saturating_sub(1).max(1)) as u8;
            let g = (y * 255 / h.max(2).saturating_sub(1).max(1)) as u8;
            let b = if (x / 4 + y / 4) % 2 == 0 { 230 } else { 20 };
            let px = [r, g, b, 128 + (x as u8 % 128)];
            out.extend_from_slice(&px[..channels]);
        }
    }
    out
}

fn jpeg(
    w: u16,
    h: u16,
    color: jpeg_encoder::ColorType,
    setup: impl FnOnce(&mut jpeg_encoder::Encoder<&mut Vec<u8>>),
) -> Vec<u8> {
    let channels = match color {
        jpeg_encoder::ColorType::Luma => 1,
        jpeg_encoder::ColorType::Rgb => 3,
        _ => 4,
    };
    let mut out = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut out, 80);
    setup(&mut enc);
    enc.encode(&pixels(u32::from(w), u32::from(h), channels), w, h, color)
        .unwrap();
    out
}

/// A big-endian TIFF block with one IFD entry: Orientation = `orientation`.
fn exif_orientation(orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\x00\x2a\x00\x00\x00\x08".to_vec();
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    tiff
}

fn png_with(
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    setup: impl FnOnce(&mut png::Encoder<&mut Vec<u8>>),
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    setup(&mut enc);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
    out
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn png_header(w: u32, h: u32, depth: u8, color: u8, interlace: u8) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, interlace]);
    png_chunk(&mut out, b"IHDR", &ihdr);
    out
}

/// An 8-bit RGB Adam7-interlaced PNG: the seven passes' scanlines (filter 0), zlib'd.
fn interlaced_png(w: u32, h: u32) -> Vec<u8> {
    const PASSES: [(u32, u32, u32, u32); 7] = [
        (0, 0, 8, 8),
        (4, 0, 8, 8),
        (0, 4, 4, 8),
        (2, 0, 4, 4),
        (0, 2, 2, 4),
        (1, 0, 2, 2),
        (0, 1, 1, 2),
    ];
    let src = pixels(w, h, 3);
    let mut raw = Vec::new();
    for (x0, y0, dx, dy) in PASSES {
        if x0 >= w || y0 >= h {
            continue; // an empty pass has no scanlines at all
        }
        for y in (y0..h).step_by(dy as usize) {
            raw.push(0);
            for x in (x0..w).step_by(dx as usize) {
                let i = (y * w + x) as usize * 3;
                raw.extend_from_slice(&src[i..i + 3]);
            }
        }
    }
    let mut out = png_header(w, h, 8, 2, 1);
    png_chunk(
        &mut out,
        b"IDAT",
        &miniz_oxide::deflate::compress_to_vec_zlib(&raw, 6),
    );
    png_chunk(&mut out, b"IEND", &[]);
    out
}

fn gif(
    screen: (u16, u16),
    frames: &[(u16, u16, u16, u16, bool)], // left, top, width, height, interlaced
) -> Vec<u8> {
    let palette: Vec<u8> = (0..16u8)
        .flat_map(|i| [i * 16, 255 - i * 16, i.wrapping_mul(40)])
        .collect();
    let mut out = Vec::new();
    {
        let mut enc = gif::Encoder::new(&mut out, screen.0, screen.1, &palette).unwrap();
        enc.set_repeat(gif::Repeat::Infinite).unwrap();
        for (n, &(left, top, width, height, interlaced)) in frames.iter().enumerate() {
            let buffer: Vec<u8> = (0..u32::from(width) * u32::from(height))
                .map(|i| ((i + n as u32) % 16) as u8)
                .collect();
            let frame = gif::Frame {
                left,
                top,
                width,
                height,
                interlaced,
                delay: 10,
                transparent: (n > 0).then_some(0),
                buffer: buffer.into(),
                ..gif::Frame::default()
            };
            enc.write_frame(&frame).unwrap();
        }
    }
    out
}

fn with_image_encoder(write: impl FnOnce(&mut Vec<u8>) -> image::ImageResult<()>) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out).unwrap();
    out
}

fn image_seeds(root: &Path) -> Seeds {
    use jpeg_encoder::{ColorType as J, SamplingFactor};
    use png::{BitDepth, ColorType as P};

    let (w, h) = (23u32, 17u32);
    let rgb16: Vec<u8> = pixels(w, h, 4)
        .iter()
        .flat_map(|&v| (u16::from(v) * 257 - u16::from(v % 3)).to_be_bytes())
        .collect();
    let palette_png = png_with(
        w,
        h,
        P::Indexed,
        BitDepth::Four,
        &(0..h)
            .flat_map(|y| {
                (0..w.div_ceil(2)).map(move |x| (((x + y) % 16) << 4 | ((x + 2 * y) % 16)) as u8)
            })
            .collect::<Vec<_>>(),
        |e| {
            e.set_palette(
                (0..16u8)
                    .flat_map(|i| [i * 16, 200, 255 - i * 16])
                    .collect::<Vec<_>>(),
            );
            e.set_trns(vec![0u8, 64, 128]);
        },
    );
    let baseline = jpeg(24, 16, J::Rgb, |_| {});
    let imported = |name: &str| fs::read(root.join("corpus-gen/imported").join(name)).unwrap();

    let mut oversized_png = png_header(5000, 5000, 8, 2, 0);
    png_chunk(&mut oversized_png, b"IEND", &[]);

    vec![
        ("ok-baseline.jpg", baseline.clone()),
        (
            "ok-progressive.jpg",
            jpeg(31, 22, J::Rgb, |e| {
                e.set_progressive(true);
                e.set_sampling_factor(SamplingFactor::R_4_2_0);
            }),
        ),
        (
            "ok-exif-rotated.jpg",
            jpeg(30, 12, J::Rgb, |e| {
                e.add_exif_metadata(&exif_orientation(6)).unwrap();
            }),
        ),
        (
            "ok-restart-422.jpg",
            jpeg(33, 9, J::Rgb, |e| {
                e.set_sampling_factor(SamplingFactor::R_4_2_2);
                e.set_restart_interval(1);
            }),
        ),
        // jpeg-encoder's optimized tables do not go with a restart interval (it trips a
        // debug assertion), hence a separate seed.
        (
            "ok-gray-optimized.jpg",
            jpeg(17, 29, J::Luma, |e| e.set_optimized_huffman_tables(true)),
        ),
        ("ok-cmyk.jpg", jpeg(16, 16, J::Cmyk, |_| {})),
        ("ok-ycck.jpg", jpeg(16, 8, J::CmykAsYcck, |_| {})),
        (
            "ok-rgb8.png",
            png_with(w, h, P::Rgb, BitDepth::Eight, &pixels(w, h, 3), |_| {}),
        ),
        (
            "ok-rgba16.png",
            png_with(w, h, P::Rgba, BitDepth::Sixteen, &rgb16, |_| {}),
        ),
        (
            "ok-gray-alpha.png",
            png_with(
                w,
                h,
                P::GrayscaleAlpha,
                BitDepth::Eight,
                &pixels(w, h, 2),
                |_| {},
            ),
        ),
        ("ok-palette-trns.png", palette_png),
        ("ok-interlaced.png", interlaced_png(w, h)),
        ("ok-small.gif", gif((12, 9), &[(0, 0, 12, 9, false)])),
        (
            "ok-animated-interlaced.gif",
            gif((16, 16), &[(0, 0, 16, 16, true), (4, 4, 6, 5, false)]),
        ),
        // The decoder allocates the whole logical screen: 2048x2048 is exactly 4 Mpx.
        (
            "ok-big-screen.gif",
            gif((2048, 2048), &[(7, 3, 4, 4, false)]),
        ),
        (
            "bad-huge-screen.gif",
            gif((60000, 60000), &[(0, 0, 4, 4, false)]),
        ),
        (
            "ok-lossless.webp",
            with_image_encoder(|out| {
                image::codecs::webp::WebPEncoder::new_lossless(out).write_image(
                    &pixels(w, h, 4),
                    w,
                    h,
                    image::ExtendedColorType::Rgba8,
                )
            }),
        ),
        ("ok-lossy-gray.webp", imported("lossy-gray.webp")),
        ("ok-lossy-alpha.webp", imported("lossy-alpha.webp")),
        (
            "ok-rgb24.bmp",
            with_image_encoder(|out| {
                image::codecs::bmp::BmpEncoder::new(out).write_image(
                    &pixels(w, h, 3),
                    w,
                    h,
                    image::ExtendedColorType::Rgb8,
                )
            }),
        ),
        (
            "ok-gray8.bmp",
            with_image_encoder(|out| {
                image::codecs::bmp::BmpEncoder::new(out).write_image(
                    &pixels(w, h, 1),
                    w,
                    h,
                    image::ExtendedColorType::L8,
                )
            }),
        ),
        (
            "ok-tall-1x600.png",
            png_with(
                1,
                600,
                P::Grayscale,
                BitDepth::One,
                &[0b1000_0000; 600],
                |_| {},
            ),
        ),
        ("bad-huge.png", oversized_png),
        ("bad-not-an-image.txt", b"hello, not an image\n".to_vec()),
        (
            "truncated-baseline.jpg",
            baseline[..baseline.len() / 2].to_vec(),
        ),
    ]
}
