//! The images the sweeps send.
//!
//! Either real files from a directory, or deterministic synthetic JPEGs sized like the seed's
//! uploads (the seed kept images under 150 KB). Synthetic images are real, decodable JPEGs so
//! that a node running GoogLeNet accepts them too; their size drives the payload Mbit/s.

use std::path::Path;

use bytes::Bytes;
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::LabError;

/// `distinct` different JPEGs of `width`×`height` (smooth gradients plus noise, which JPEG
/// compresses to roughly 60–120 KB at 480×360, quality 85).
pub fn synthetic(
    distinct: usize,
    width: u32,
    height: u32,
    seed: u64,
) -> Result<Vec<Bytes>, LabError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(distinct);
    for i in 0..distinct.max(1) {
        let phase: f32 = rng.random_range(0.0..std::f32::consts::TAU);
        let noise: u8 = 24 + (i % 4) as u8 * 8;
        let mut img = RgbImage::new(width, height);
        for (x, y, px) in img.enumerate_pixels_mut() {
            let fx = x as f32 / width as f32;
            let fy = y as f32 / height as f32;
            let n: i16 = rng.random_range(-(noise as i16)..=noise as i16);
            let ch = |v: f32| -> u8 { (v * 255.0 + n as f32).clamp(0.0, 255.0) as u8 };
            *px = Rgb([
                ch(0.5 + 0.5 * (fx * 6.0 + phase).sin()),
                ch(0.5 + 0.5 * (fy * 5.0 - phase).cos()),
                ch(0.5 + 0.5 * ((fx + fy) * 4.0 + phase).sin()),
            ]);
        }
        let mut buf = Vec::new();
        JpegEncoder::new_with_quality(&mut buf, 85)
            .encode_image(&img)
            .map_err(|e| LabError::Images(format!("encoding synthetic JPEG: {e}")))?;
        out.push(Bytes::from(buf));
    }
    Ok(out)
}

/// All `.jpg`, `.jpeg` and `.png` files of `dir`, sorted by name.
pub fn from_dir(dir: &Path) -> Result<Vec<Bytes>, LabError> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| LabError::Images(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(LabError::Images(format!(
            "no .jpg/.png files in {}",
            dir.display()
        )));
    }
    paths
        .iter()
        .map(|p| {
            std::fs::read(p)
                .map(Bytes::from)
                .map_err(|e| LabError::Images(format!("{}: {e}", p.display())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_images_are_deterministic_decodable_jpegs() {
        let a = synthetic(2, 120, 90, 9).unwrap();
        let b = synthetic(2, 120, 90, 9).unwrap();
        assert_eq!(a, b);
        assert_ne!(a[0], a[1]);
        let img = image::load_from_memory(&a[0]).unwrap();
        assert_eq!((img.width(), img.height()), (120, 90));
    }
}
