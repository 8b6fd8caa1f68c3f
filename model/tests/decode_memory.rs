//! [`glimpse_model::probe`]'s `decode_bytes` against what [`glimpse_model::decode`] and
//! [`glimpse_model::preprocess`] really allocate, measured by a counting global allocator.
//!
//! The estimate must be an upper bound of the peak (a node reserves it from its decode
//! budget before decoding), and not much more than the peak (or the budget would hold far
//! fewer decodes than it could). One test in this binary: the allocator counts every thread,
//! so nothing else may run beside it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Cursor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use glimpse_model::{DecodeLimits, decode, preprocess, probe};
use image::{DynamicImage, ImageEncoder, ImageFormat};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = CURRENT.fetch_add(n, Ordering::SeqCst) + n;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

fn shrank(n: usize) {
    CURRENT.fetch_sub(n, Ordering::SeqCst);
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for this call, forwarded as is.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for this call, forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for this call, forwarded as is.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc`'s contract for this call, forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Counted as a copy: old and new both exist for a moment.
            grew(new_size);
            shrank(layout.size());
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f`; returns its result, the most bytes it held allocated at once beyond what was
/// allocated before, and its wall time.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, Duration) {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let t = Instant::now();
    let out = f();
    let elapsed = t.elapsed();
    (out, PEAK.load(Ordering::SeqCst) - base, elapsed)
}

/// The 62-byte GIF of the security issue: a 16000×4000 logical screen, one 1×1 frame.
fn gif_bomb() -> Vec<u8> {
    let mut g = b"GIF89a".to_vec();
    g.extend_from_slice(&16000u16.to_le_bytes());
    g.extend_from_slice(&4000u16.to_le_bytes());
    g.extend_from_slice(&[0x80, 0, 0]);
    g.extend_from_slice(&[0, 0, 0, 255, 255, 255]);
    g.extend_from_slice(&[0x21, 0xF9, 4, 0, 0, 0, 0, 0]);
    g.extend_from_slice(&[0x21, 0xFE, 15]);
    g.extend_from_slice(b"decode-bomb.gif");
    g.push(0);
    g.extend_from_slice(&[0x2C, 0, 0, 0, 0, 1, 0, 1, 0, 0]);
    g.extend_from_slice(&[2, 2, 0x44, 0x01, 0]);
    g.push(0x3B);
    g
}

fn pixels(w: u32, h: u32) -> image::RgbaImage {
    image::RgbaImage::from_fn(w, h, |x, y| {
        image::Rgba([
            (x % 256) as u8,
            (y % 256) as u8,
            ((x / 7 + y / 5) % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    })
}

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// A JPEG with an EXIF orientation (6: rotate 90° clockwise) spliced in after SOI.
fn rotated_jpeg(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 80);
    let rgb = DynamicImage::ImageRgba8(pixels(w, h)).to_rgb8();
    enc.write_image(rgb.as_raw(), w, h, image::ExtendedColorType::Rgb8)
        .expect("encode jpeg");
    // TIFF (big-endian) with one IFD entry: Orientation (0x0112), SHORT, 1, value 6.
    let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&[
        0, 1, 0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    let mut app1 = b"Exif\0\0".to_vec();
    app1.extend_from_slice(&tiff);
    let mut spliced = out[..2].to_vec();
    spliced.extend_from_slice(&[0xFF, 0xE1]);
    spliced.extend_from_slice(&((app1.len() + 2) as u16).to_be_bytes());
    spliced.extend_from_slice(&app1);
    spliced.extend_from_slice(&out[2..]);
    spliced
}

fn webp_lossless_rgb(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let rgb = DynamicImage::ImageRgba8(pixels(w, h)).to_rgb8();
    image::codecs::webp::WebPEncoder::new_lossless(&mut out)
        .write_image(rgb.as_raw(), w, h, image::ExtendedColorType::Rgb8)
        .expect("encode webp");
    out
}

#[test]
fn decode_peak_memory_stays_within_the_probe_estimate() {
    let limits = DecodeLimits::default();
    let fixture = |name: &str| {
        std::fs::read(format!(
            "{}/tests/fixtures/images/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .expect("fixture")
    };
    let big = pixels(2400, 1600);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("gif-bomb 16000x4000 (62 bytes)", gif_bomb()),
        (
            "gif 2400x1600 full frame",
            encode(DynamicImage::ImageRgba8(big.clone()), ImageFormat::Gif),
        ),
        (
            "jpeg 2400x1600 baseline",
            encode(
                DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(big.clone()).to_rgb8()),
                ImageFormat::Jpeg,
            ),
        ),
        ("jpeg 2400x1600 exif rotate90", rotated_jpeg(2400, 1600)),
        (
            "png 2400x1600 rgba8",
            encode(DynamicImage::ImageRgba8(big.clone()), ImageFormat::Png),
        ),
        (
            "png 2400x1600 rgb16",
            encode(
                DynamicImage::ImageRgb16(DynamicImage::ImageRgba8(big.clone()).to_rgb16()),
                ImageFormat::Png,
            ),
        ),
        (
            "png 2400x1600 gray8",
            encode(
                DynamicImage::ImageLuma8(DynamicImage::ImageRgba8(big.clone()).to_luma8()),
                ImageFormat::Png,
            ),
        ),
        (
            "bmp 2400x1600 rgb8",
            encode(
                DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(big.clone()).to_rgb8()),
                ImageFormat::Bmp,
            ),
        ),
        ("webp 1200x800 lossless rgb", webp_lossless_rgb(1200, 800)),
        ("fixture landscape.jpg", fixture("landscape.jpg")),
        ("fixture wide-rotated.jpg", fixture("wide-rotated.jpg")),
        ("fixture portrait-alpha.png", fixture("portrait-alpha.png")),
        ("fixture small-gray.png", fixture("small-gray.png")),
    ];
    assert_eq!(cases[0].1.len(), 62, "the issue's GIF is 62 bytes");
    let mut report = String::new();
    for (name, bytes) in &cases {
        let info = probe(bytes, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
        let ((w, h), peak, elapsed) = measure(|| {
            let rgb = decode(bytes, &limits).unwrap_or_else(|e| panic!("{name}: {e}"));
            let tensor = preprocess(&rgb);
            assert_eq!(tensor.as_slice().len(), 3 * 224 * 224);
            rgb.dimensions()
        });
        let peak = peak as u64;
        report.push_str(&format!(
            "{name:32} {w:>5}x{h:<5} peak {:>9.1} MB  estimate {:>9.1} MB  ({:.2}x)  {:>7.1} ms\n",
            peak as f64 / 1e6,
            info.decode_bytes as f64 / 1e6,
            info.decode_bytes as f64 / peak as f64,
            elapsed.as_secs_f64() * 1000.0,
        ));
        assert!(
            peak <= info.decode_bytes,
            "{name}: decode held {peak} bytes, more than the estimate {}",
            info.decode_bytes
        );
        // Fixed costs (2 MiB of slack, row buffers) dominate small images; past them the
        // estimate stays within half again of the real peak.
        assert!(
            info.decode_bytes <= peak * 3 / 2 + (4 << 20),
            "{name}: estimate {} is far above the real peak {peak}",
            info.decode_bytes
        );
    }
    // The GIF really is a 16000×4000 canvas.
    let canvas = image::load_from_memory(&cases[0].1).expect("decodes");
    assert_eq!((canvas.width(), canvas.height()), (16000, 4000));
    eprintln!("{report}");
}
