//! Image decoding and torchvision's `GoogLeNet_Weights.IMAGENET1K_V1.transforms()`.
//!
//! The pretrained weights only answer like torchvision when they see the same pixels
//! torchvision feeds them: resize so the shorter side is 256 with PIL's antialiased bilinear
//! filter, center-crop 224×224, scale to [0, 1], normalize with ImageNet's mean and std.
//! The `image` crate's bilinear filter does not antialias when shrinking (it samples 2×2
//! pixels whatever the scale), so the resize here re-implements Pillow's separable
//! "triangle" resampling, including its 22-bit fixed-point coefficients and the 8-bit
//! rounding between the horizontal and vertical passes, which makes it match Pillow to
//! within a rounding step rather than merely resemble it.

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageReader, Limits, RgbImage};

/// ImageNet channel means (RGB), as torchvision normalizes.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (RGB).
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];
/// Shorter side after resizing.
pub const RESIZE: u32 = 256;
/// Side of the square center crop the network sees.
pub const CROP: u32 = 224;

/// Limits applied while decoding untrusted images. Checked against the encoded size first,
/// then against the dimensions in the image header, before any pixel buffer is allocated,
/// so a tiny file that claims to be 50000×50000 costs nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest encoded image accepted, in bytes. Default 32 MiB: well above any photo
    /// camera's JPEG, and what an upload limit would usually be.
    pub max_bytes: usize,
    /// Widest image accepted, in pixels. Default 16384.
    pub max_width: u32,
    /// Tallest image accepted, in pixels. Default 16384.
    pub max_height: u32,
    /// Most pixels accepted (width × height). Default 64 Mpx: a 64-Mpx RGBA image decodes
    /// into 256 MiB, the most one request may make a worker allocate.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_bytes: 32 << 20,
            max_width: 16384,
            max_height: 16384,
            max_pixels: 64_000_000,
        }
    }
}

/// Why an image could not be turned into a network input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// The encoded file or its declared dimensions exceed the [`DecodeLimits`].
    #[error("image too large: {detail}")]
    TooLarge {
        /// What exceeded which limit.
        detail: String,
    },
    /// Not one of the accepted formats (JPEG, PNG, GIF, WebP, BMP) or an unsupported variant.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// The file claims a supported format but cannot be decoded.
    #[error("corrupt image: {0}")]
    Corrupt(String),
}

/// One preprocessed image: `[3, 224, 224]` f32, channel-major, ImageNet-normalized — exactly
/// the tensor torchvision's transforms produce. Plain data, so it can be prepared on one
/// thread and batched on another.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageTensor(Vec<f32>);

impl ImageTensor {
    /// Number of values: 3 × 224 × 224.
    pub const LEN: usize = 3 * (CROP as usize) * (CROP as usize);

    /// Wraps an already normalized `[3, 224, 224]` tensor (channel-major). `None` when
    /// `values` has the wrong length or holds NaN/infinity.
    pub fn from_chw(values: Vec<f32>) -> Option<ImageTensor> {
        (values.len() == Self::LEN && values.iter().all(|v| v.is_finite()))
            .then_some(ImageTensor(values))
    }

    /// The values, channel-major (`[c][y][x]`).
    pub fn as_slice(&self) -> &[f32] {
        &self.0
    }
}

/// Decodes JPEG, PNG, GIF (first frame), WebP or BMP into 8-bit RGB, applying the EXIF
/// orientation. Grayscale is replicated to RGB, 16-bit samples are scaled to 8 bits, palettes
/// are expanded, and alpha is dropped without compositing, as Pillow's `convert("RGB")` does.
pub fn decode(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    if bytes.len() > limits.max_bytes {
        return Err(ImageError::TooLarge {
            detail: format!(
                "{} bytes exceeds the limit of {} bytes",
                bytes.len(),
                limits.max_bytes
            ),
        });
    }
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ImageError::Unsupported(
            "not a JPEG, PNG, GIF, WebP or BMP file".to_string(),
        ));
    }
    // Room for the largest allowed image at 16-bit RGBA (8 bytes/pixel) plus codec state.
    let max_alloc = limits.max_pixels.saturating_mul(8).saturating_add(64 << 20);

    // First read only the header, with the allocation cap but no dimension caps, so an
    // oversized image is refused with its actual dimensions in the message.
    let mut probe = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ImageError::Corrupt(e.to_string()))?;
    let mut probe_limits = Limits::default();
    probe_limits.max_alloc = Some(max_alloc);
    probe.limits(probe_limits);
    let (width, height) = probe.into_dimensions().map_err(codec_error)?;
    check_dimensions(width, height, limits)?;

    // Then decode, with every cap also enforced by the codec itself.
    let mut codec_limits = Limits::default();
    codec_limits.max_image_width = Some(limits.max_width);
    codec_limits.max_image_height = Some(limits.max_height);
    codec_limits.max_alloc = Some(max_alloc);
    reader.limits(codec_limits);
    let mut decoder = reader.into_decoder().map_err(codec_error)?;
    let (width, height) = decoder.dimensions();
    check_dimensions(width, height, limits)?;
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(codec_error)?;
    img.apply_orientation(orientation);
    Ok(img.into_rgb8())
}

fn check_dimensions(width: u32, height: u32, limits: &DecodeLimits) -> Result<(), ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::Corrupt(format!(
            "image has no pixels ({width}x{height})"
        )));
    }
    let pixels = u64::from(width) * u64::from(height);
    if width > limits.max_width || height > limits.max_height || pixels > limits.max_pixels {
        return Err(ImageError::TooLarge {
            detail: format!(
                "{width}x{height} exceeds the limit of {}x{} and {} pixels",
                limits.max_width, limits.max_height, limits.max_pixels
            ),
        });
    }
    Ok(())
}

fn codec_error(e: image::ImageError) -> ImageError {
    match e {
        image::ImageError::Limits(e) => ImageError::TooLarge {
            detail: e.to_string(),
        },
        image::ImageError::Unsupported(e) => ImageError::Unsupported(e.to_string()),
        other => ImageError::Corrupt(other.to_string()),
    }
}

/// torchvision's IMAGENET1K_V1 transforms on a decoded image.
pub fn preprocess(img: &RgbImage) -> ImageTensor {
    let (w, h) = img.dimensions();
    let (new_w, new_h) = resized_size(w, h);
    let left = crop_offset(new_w);
    let top = crop_offset(new_h);
    let crop = CROP as usize;

    // Only the 224×224 window that survives the crop is computed: each output pixel of a
    // separable resize depends on nothing but its own row and column coefficients.
    let horizontal = Coefficients::new(w as usize, new_w as usize, left as usize, crop);
    let vertical = Coefficients::new(h as usize, new_h as usize, top as usize, crop);
    let first_row = vertical.first_input();
    let rows = vertical.last_input() - first_row;
    let src = img.as_raw();
    let stride = w as usize * 3;

    // Horizontal pass over just the input rows the vertical pass reads, rounded to 8 bits
    // as Pillow stores its intermediate image.
    let mut mid = vec![0u8; rows * crop * 3];
    for r in 0..rows {
        let row = &src[(first_row + r) * stride..(first_row + r + 1) * stride];
        let out = &mut mid[r * crop * 3..(r + 1) * crop * 3];
        for x in 0..crop {
            let (start, taps) = horizontal.taps(x);
            let mut acc = [HALF; 3];
            for (i, k) in taps.iter().enumerate() {
                let p = &row[(start + i) * 3..(start + i) * 3 + 3];
                for c in 0..3 {
                    acc[c] += i64::from(p[c]) * i64::from(*k);
                }
            }
            for c in 0..3 {
                out[x * 3 + c] = clip8(acc[c]);
            }
        }
    }

    // Vertical pass straight into the normalized CHW tensor.
    let mut values = vec![0f32; ImageTensor::LEN];
    let plane = crop * crop;
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / STD[c]);
    for y in 0..crop {
        let (start, taps) = vertical.taps(y);
        let start = start - first_row;
        for x in 0..crop {
            let mut acc = [HALF; 3];
            for (i, k) in taps.iter().enumerate() {
                let p = &mid[((start + i) * crop + x) * 3..((start + i) * crop + x) * 3 + 3];
                for c in 0..3 {
                    acc[c] += i64::from(p[c]) * i64::from(*k);
                }
            }
            for c in 0..3 {
                let v = f32::from(clip8(acc[c])) / 255.0;
                values[c * plane + y * crop + x] = (v - MEAN[c]) * scale[c];
            }
        }
    }
    ImageTensor(values)
}

/// [`decode`] then [`preprocess`].
pub fn prepare(bytes: &[u8], limits: &DecodeLimits) -> Result<ImageTensor, ImageError> {
    Ok(preprocess(&decode(bytes, limits)?))
}

/// torchvision `Resize(256)`: the shorter side becomes 256, the longer one
/// `int(256 * long / short)` (truncated).
fn resized_size(w: u32, h: u32) -> (u32, u32) {
    let long_of = |short: u32, long: u32| {
        ((u64::from(RESIZE) * u64::from(long)) / u64::from(short.max(1))) as u32
    };
    if w <= h {
        (RESIZE, long_of(w, h).max(RESIZE))
    } else {
        (long_of(h, w).max(RESIZE), RESIZE)
    }
}

/// torchvision `CenterCrop(224)` offset: `int(round((size - 224) / 2.0))`, with Python's
/// round-half-to-even.
fn crop_offset(size: u32) -> u32 {
    let d = size.saturating_sub(CROP);
    let half = d / 2;
    if d % 2 == 1 && half % 2 == 1 {
        half + 1
    } else {
        half
    }
}

/// Pillow's fixed-point precision for 8-bit resampling (`PRECISION_BITS = 32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;
/// Rounding offset Pillow starts each accumulator with.
const HALF: i64 = 1 << (PRECISION_BITS - 1);

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `precompute_coeffs` for the bilinear (triangle) filter, restricted to output
/// positions `offset..offset + count`, in Pillow's fixed-point form.
struct Coefficients {
    /// First input index of each output position.
    starts: Vec<usize>,
    /// Taps of each output position, `ksize` slots each (unused slots are zero).
    weights: Vec<i32>,
    /// Number of meaningful taps of each output position.
    lens: Vec<usize>,
    ksize: usize,
}

impl Coefficients {
    fn new(in_size: usize, out_size: usize, offset: usize, count: usize) -> Coefficients {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // the triangle filter's support is 1.0
        let ksize = support.ceil() as usize * 2 + 1;
        let mut starts = Vec::with_capacity(count);
        let mut lens = Vec::with_capacity(count);
        let mut weights = vec![0i32; count * ksize];
        let mut k = vec![0f64; ksize];
        for (i, xx) in (offset..offset + count).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C casts truncate toward zero, which `as` does too.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let mut total = 0.0;
            for (x, kx) in k.iter_mut().enumerate().take(n) {
                let w = triangle((x as f64 + xmin as f64 - center + 0.5) * ss);
                *kx = w;
                total += w;
            }
            for (x, kx) in k.iter().enumerate().take(n) {
                let w = if total != 0.0 { kx / total } else { *kx };
                let fixed = w * f64::from(1u32 << PRECISION_BITS);
                weights[i * ksize + x] = if w < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            starts.push(xmin);
            lens.push(n);
        }
        Coefficients {
            starts,
            weights,
            lens,
            ksize,
        }
    }

    fn taps(&self, i: usize) -> (usize, &[i32]) {
        let base = i * self.ksize;
        (self.starts[i], &self.weights[base..base + self.lens[i]])
    }

    fn first_input(&self) -> usize {
        self.starts.iter().copied().min().unwrap_or(0)
    }

    fn last_input(&self) -> usize {
        self.starts
            .iter()
            .zip(&self.lens)
            .map(|(s, n)| s + n)
            .max()
            .unwrap_or(0)
    }
}

fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_follows_torchvision_rounding() {
        assert_eq!(resized_size(640, 427), (383, 256));
        assert_eq!(resized_size(300, 517), (256, 441));
        assert_eq!(resized_size(256, 256), (256, 256));
        assert_eq!(resized_size(1, 5000), (256, 1_280_000));
    }

    #[test]
    fn crop_offset_rounds_half_to_even() {
        // (383 - 224) / 2 = 79.5 -> 80; (381 - 224) / 2 = 78.5 -> 78; 256 -> 16.
        assert_eq!(crop_offset(383), 80);
        assert_eq!(crop_offset(381), 78);
        assert_eq!(crop_offset(256), 16);
        assert_eq!(crop_offset(224), 0);
    }

    #[test]
    fn uniform_image_stays_uniform() {
        let img = RgbImage::from_pixel(500, 300, image::Rgb([10, 128, 250]));
        let t = preprocess(&img);
        let plane = 224 * 224;
        for c in 0..3 {
            let px = [10.0f32, 128.0, 250.0][c] / 255.0;
            let want = (px - MEAN[c]) / STD[c];
            for v in &t.as_slice()[c * plane..(c + 1) * plane] {
                assert!((v - want).abs() < 1e-5, "{v} vs {want}");
            }
        }
    }
}
