//! Bad inputs fail fast with clear errors: weights files and images. No forward passes.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::store::burn_pack::{Reader, Writer};
use glimpse_model::{
    Backend, Classifier, DecodeLimits, ImageError, LoadOptions, ModelError, WeightsSource, decode,
    prepare,
};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

fn load(path: &Path) -> Result<Classifier, ModelError> {
    Classifier::load(&WeightsSource::Path(path.to_path_buf()), Backend::Flex)
}

#[test]
fn nonexistent_weights_path_is_named() {
    let err = load(Path::new("/nonexistent/googlenet.pth")).expect_err("no such file");
    assert!(matches!(err, ModelError::WeightsNotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/googlenet.pth"));
}

#[test]
fn missing_tensor_is_named() {
    let err = load(&fixtures().join("broken-missing.pth")).expect_err("incomplete checkpoint");
    match &err {
        ModelError::MissingTensor { key, .. } => assert_eq!(key, "conv1.conv.weight"),
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    assert!(err.to_string().contains("conv1.conv.weight"));
}

#[test]
fn wrong_shape_is_named() {
    let err = load(&fixtures().join("broken-shape.pth")).expect_err("foreign checkpoint");
    match &err {
        ModelError::BadTensor { key, reason } => {
            assert_eq!(key, "conv1.conv.weight");
            assert!(reason.contains("[32, 3, 3, 3]"), "{reason}");
        }
        other => panic!("expected BadTensor, got {other:?}"),
    }
}

#[test]
fn truncated_checkpoint_is_refused() {
    let bytes = std::fs::read(fixtures().join("googlenet-fixture.pth")).expect("read fixture");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("truncated.pth");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("write");
    let err = load(&path).expect_err("truncated file");
    assert!(
        matches!(
            err,
            ModelError::WeightsUnreadable { .. } | ModelError::BadTensor { .. }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("truncated.pth") || msg.contains("tensor"),
        "{msg}"
    );
}

#[test]
fn corrupted_tensor_data_is_named() {
    let mut bytes = std::fs::read(fixtures().join("googlenet-fixture.pth")).expect("read fixture");
    // The middle of the file is inside some large convolution weight's storage.
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("corrupt.pth");
    std::fs::write(&path, &bytes).expect("write");
    let err = load(&path).expect_err("corrupt file");
    match &err {
        ModelError::BadTensor { key, .. } => {
            assert!(key.ends_with(".weight") || key.ends_with(".bias"), "{key}")
        }
        other => panic!("expected BadTensor naming the tensor, got {other:?}"),
    }
}

#[test]
fn non_checkpoint_file_is_refused() {
    let err = load(&fixtures().join("images/landscape.jpg")).expect_err("a JPEG is no .pth");
    assert!(
        matches!(err, ModelError::WeightsUnreadable { .. }),
        "{err:?}"
    );
}

/// The burnpack metadata key holding the native copy's format.
const FORMAT_KEY: &str = "glimpse.format";

/// A native copy of the fixture, as `save_native` writes it.
fn native_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("fixture.bpk");
    load(&fixtures().join("googlenet-fixture.pth"))
        .expect("load fixture .pth")
        .save_native(&path)
        .expect("save native");
    path
}

/// The format `save_native` records (this version's).
fn current_format(native: &Path) -> String {
    Reader::from_file(native)
        .expect("read .bpk")
        .metadata()
        .get(FORMAT_KEY)
        .cloned()
        .expect("save_native records the format")
}

/// Copies a `.bpk` with the same tensors and metadata, except the format: `format`, or none.
fn with_format(from: &Path, to: &Path, format: Option<&str>) {
    let reader = Reader::from_file(from).expect("read .bpk");
    let metadata = reader.metadata().clone();
    let mut writer = Writer::new(reader.into_tensors().expect("tensors"));
    for (key, value) in metadata.iter().filter(|(key, _)| *key != FORMAT_KEY) {
        writer = writer.with_metadata(key, value);
    }
    if let Some(format) = format {
        writer = writer.with_metadata(FORMAT_KEY, format);
    }
    writer.write_to_file(to).expect("write .bpk");
}

#[test]
fn native_copy_of_another_format_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = native_fixture(dir.path());
    let current = current_format(&native);

    // The control: a copy rewritten with the current format still loads.
    let same = dir.path().join("same.bpk");
    with_format(&native, &same, Some(&current));
    load(&same).expect("a copy in the current format loads");

    let old = dir.path().join("old.bpk");
    with_format(&native, &old, Some("googlenet-folded-v0"));
    let err = load(&old).expect_err("another format");
    match &err {
        ModelError::NativeFormat {
            path,
            found,
            expected,
        } => {
            assert_eq!(path, &old);
            assert_eq!(found.as_deref(), Some("googlenet-folded-v0"));
            assert_eq!(expected, &current);
        }
        other => panic!("expected NativeFormat, got {other:?}"),
    }
    let msg = err.to_string();
    eprintln!("{msg}");
    assert!(
        msg.contains("old.bpk") && msg.contains("googlenet-folded-v0"),
        "{msg}"
    );
    assert!(msg.contains(&current) && msg.contains("re-create"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");

    let unmarked = dir.path().join("unmarked.bpk");
    with_format(&native, &unmarked, None);
    let err = load(&unmarked).expect_err("no format recorded");
    assert!(
        matches!(&err, ModelError::NativeFormat { found: None, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("none recorded"), "{err}");
}

/// `auto` ignores a cached native copy of another format and goes for the `.pth`: here
/// there is none and downloading is off, so it says the weights are unavailable (the
/// fixture cannot stand in for the official file, whose SHA-256 is checked). With the copy
/// in the current format, the same cache starts (parity.rs checks that path in full).
#[test]
fn auto_passes_over_a_stale_native_copy_for_the_pth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = native_fixture(dir.path());
    let cache = dir.path().join("cache");
    std::fs::create_dir(&cache).expect("mkdir");
    let cached = cache.join("googlenet-1378be20.folded.bpk");
    let options = LoadOptions {
        cache_dir: Some(cache.clone()),
        url: "http://127.0.0.1:9/unreachable".to_string(),
        download: false,
        progress: false,
    };
    let auto = || Classifier::load_with(&WeightsSource::Auto, Backend::Flex, &options);

    with_format(&native, &cached, Some("googlenet-folded-v0"));
    let err = auto().expect_err("stale copy and no .pth");
    assert!(
        matches!(err, ModelError::WeightsUnavailable { .. }),
        "{err:?}"
    );

    with_format(&native, &cached, Some(&current_format(&native)));
    let classifier = auto().expect("the current copy is used");
    assert_eq!(classifier.identity().name, "googlenet-1378be20");
}

/// CRC-32 (IEEE) for hand-made PNG chunks.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    out.extend_from_slice(&body);
    out.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A valid-looking PNG header claiming `w`×`h` RGB, with a few KB of zlib data.
fn bomb_png(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    // A stored (uncompressed) deflate block of zeros: a few KB of plausible pixel data.
    let payload = vec![0u8; 4000];
    let mut zlib = vec![0x78, 0x01, 0x00];
    zlib.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    zlib.extend_from_slice(&(!(payload.len() as u16)).to_le_bytes());
    zlib.extend_from_slice(&payload);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn decompression_bomb_png_is_refused_from_its_header() {
    let png = bomb_png(50_000, 50_000);
    assert!(png.len() < 8192);
    let start = Instant::now();
    let err = decode(&png, &DecodeLimits::default()).expect_err("50000x50000 must be refused");
    let elapsed = start.elapsed();
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("50000x50000"), "{err}");
    // Refusing happens before decoding anything; the real figure is microseconds. The
    // bound is loose so a loaded CI machine cannot make this flaky.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    // Within the width/height limits but over the pixel budget: also refused up front.
    let limits = DecodeLimits {
        max_pixels: 1_000_000,
        ..DecodeLimits::default()
    };
    let err = decode(&bomb_png(2000, 2000), &limits).expect_err("4 Mpx over a 1 Mpx budget");
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err:?}");
}

#[test]
fn oversized_upload_is_refused_before_decoding() {
    let limits = DecodeLimits {
        max_bytes: 1000,
        ..DecodeLimits::default()
    };
    let err = decode(&vec![0u8; 1001], &limits).expect_err("over max_bytes");
    assert!(matches!(err, ImageError::TooLarge { .. }), "{err:?}");
}

#[test]
fn garbage_and_truncated_images_are_errors() {
    let err = decode(b"definitely not an image", &DecodeLimits::default()).expect_err("garbage");
    assert!(matches!(err, ImageError::Unsupported(_)), "{err:?}");
    let jpeg = std::fs::read(fixtures().join("images/landscape.jpg")).expect("read");
    let err = prepare(&jpeg[..600], &DecodeLimits::default()).expect_err("truncated JPEG");
    assert!(
        matches!(err, ImageError::Corrupt(_) | ImageError::Unsupported(_)),
        "{err:?}"
    );
}

fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

#[test]
fn every_accepted_format_decodes_to_rgb8() {
    let rgb = DynamicImage::ImageRgb8(RgbImage::from_fn(40, 30, |x, y| {
        Rgb([(x * 6) as u8, (y * 8) as u8, 100])
    }));
    for format in [
        ImageFormat::Png,
        ImageFormat::Jpeg,
        ImageFormat::Gif,
        ImageFormat::WebP,
        ImageFormat::Bmp,
    ] {
        let bytes = encode(&rgb, format);
        let img =
            decode(&bytes, &DecodeLimits::default()).unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(img.dimensions(), (40, 30), "{format:?}");
        let p = img.get_pixel(20, 15);
        // Lossy formats (JPEG, GIF's palette) only approximately.
        assert!(
            (i32::from(p[0]) - 120).abs() < 24 && (i32::from(p[2]) - 100).abs() < 24,
            "{format:?}: {p:?}"
        );
    }
}

#[test]
fn alpha_gray_and_16_bit_become_8_bit_rgb() {
    // Alpha is dropped without compositing, as Pillow's convert("RGB") does.
    let rgba = DynamicImage::ImageRgba8(RgbaImage::from_pixel(8, 8, Rgba([10, 20, 30, 0])));
    let img = decode(&encode(&rgba, ImageFormat::Png), &DecodeLimits::default()).expect("rgba");
    assert_eq!(img.get_pixel(3, 3), &Rgb([10, 20, 30]));

    let gray = DynamicImage::ImageLuma8(image::GrayImage::from_pixel(8, 8, image::Luma([77])));
    let img = decode(&encode(&gray, ImageFormat::Png), &DecodeLimits::default()).expect("gray");
    assert_eq!(img.get_pixel(0, 0), &Rgb([77, 77, 77]));

    let deep = DynamicImage::ImageRgb16(image::ImageBuffer::from_pixel(
        8,
        8,
        Rgb([65535u16, 0, 32896]),
    ));
    let img = decode(&encode(&deep, ImageFormat::Png), &DecodeLimits::default()).expect("16-bit");
    assert_eq!(img.get_pixel(0, 0), &Rgb([255, 0, 128]));
}
