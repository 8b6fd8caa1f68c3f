//! Max pooling on channels-last (NHWC) activations.
//!
//! With channels last, a pooling window is a handful of contiguous channel vectors, so the
//! inner loop is an element-wise max over `channels` floats that the compiler vectorizes; no
//! layout change is needed around the convolutions. Each pixel's window is maxed in
//! registers, 32 channels at a time, and stored once; the loop is compiled for AVX2 where
//! the micro-kernel in use has it (measured in BENCHMARKS.md: 0.55× the time of a loop that
//! read and wrote the output once per window cell, on SSE2).

use rayon::prelude::*;

use super::packed::Kernel;
use super::profile::{self, LayerKind};

/// A square max-pooling window with PyTorch's `ceil_mode=True` rule, as every GoogLeNet pool
/// uses: padding cells never win (they act as -inf), and a last window that would start
/// entirely in the right/bottom padding is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolGeometry {
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl PoolGeometry {
    /// Output side for an input side (`ceil_mode=True`).
    pub(crate) fn out_side(&self, side: usize) -> usize {
        let span = (side + 2 * self.padding).saturating_sub(self.kernel);
        let mut out = span.div_ceil(self.stride) + 1;
        if (out - 1) * self.stride >= side + self.padding {
            out -= 1;
        }
        out
    }
}

/// Max-pools `input` (`[batch, height, width, channels]`, dense) into `output`
/// (`[batch, oh, ow, channels]`), one output row of pixels per rayon task.
pub(crate) fn max_pool(
    input: &[f32],
    (batch, height, width, channels): (usize, usize, usize, usize),
    geometry: PoolGeometry,
    output: &mut [f32],
) {
    let (oh, ow) = (geometry.out_side(height), geometry.out_side(width));
    assert_eq!(input.len(), batch * height * width * channels, "input size");
    assert_eq!(output.len(), batch * oh * ow * channels, "output size");
    if output.is_empty() {
        return;
    }
    profile::timed(LayerKind::Pool, 0, || {
        pool_rows(
            Kernel::get(),
            input,
            (height, width, channels),
            geometry,
            output,
        )
    });
}

/// The pool's output rows in parallel, with `kernel`'s instruction set.
fn pool_rows(
    kernel: Kernel,
    input: &[f32],
    (height, width, channels): (usize, usize, usize),
    geometry: PoolGeometry,
    output: &mut [f32],
) {
    let row_len = geometry.out_side(width) * channels;
    output
        .par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(row, out)| {
            kernel.pool_row(input, (height, width, channels), geometry, row, out)
        });
}

/// Channels one window is maxed over at once: four AVX2 registers, so that four
/// independent chains of `max` hide each other's latency.
const CHUNK: usize = 32;

/// Output row `row` (`image × oh + oy`) of the pool: each pixel's window is maxed in
/// registers, [`CHUNK`] channels at a time, and stored once.
#[inline(always)]
fn pool_row(
    input: &[f32],
    (height, width, channels): (usize, usize, usize),
    geometry: PoolGeometry,
    row: usize,
    out: &mut [f32],
) {
    let oh = geometry.out_side(height);
    let (b, oy) = (row / oh, row % oh);
    let y0 = (oy * geometry.stride).saturating_sub(geometry.padding);
    let y1 = (oy * geometry.stride + geometry.kernel - geometry.padding).min(height);
    let image = &input[b * height * width * channels..][..height * width * channels];
    for (ox, pixel) in out.chunks_exact_mut(channels).enumerate() {
        let x0 = (ox * geometry.stride).saturating_sub(geometry.padding);
        let x1 = (ox * geometry.stride + geometry.kernel - geometry.padding).min(width);
        let cell = |y: usize, x: usize| &image[(y * width + x) * channels..][..channels];
        let mut c0 = 0;
        for chunk in pixel.chunks_exact_mut(CHUNK) {
            let mut acc = [f32::NEG_INFINITY; CHUNK];
            for y in y0..y1 {
                for x in x0..x1 {
                    let v: &[f32; CHUNK] = cell(y, x)[c0..c0 + CHUNK]
                        .try_into()
                        .expect("a chunk of channels");
                    for (a, &v) in acc.iter_mut().zip(v) {
                        *a = max(*a, v);
                    }
                }
            }
            chunk.copy_from_slice(&acc);
            c0 += CHUNK;
        }
        let tail = &mut pixel[c0..];
        tail.fill(f32::NEG_INFINITY);
        for y in y0..y1 {
            for x in x0..x1 {
                for (a, &v) in tail.iter_mut().zip(&cell(y, x)[c0..]) {
                    *a = max(*a, v);
                }
            }
        }
    }
}

/// `v` if it is greater than `a`, else `a`: a NaN input never wins, and as a select on a
/// comparison it compiles to one vector `max` instruction (where `f32::max`, which must
/// return the non-NaN operand whichever side it is on, needs three).
#[inline(always)]
fn max(a: f32, v: f32) -> f32 {
    if v > a { v } else { a }
}

impl Kernel {
    /// [`pool_row`], compiled for this kernel's instruction set.
    fn pool_row(
        self,
        input: &[f32],
        dims: (usize, usize, usize),
        geometry: PoolGeometry,
        row: usize,
        out: &mut [f32],
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2Fma` and `Avx512` are only picked when the CPU has AVX2 and FMA.
            Kernel::Avx2Fma | Kernel::Avx512 => unsafe {
                avx2::pool_row(input, dims, geometry, row, out)
            },
            _ => pool_row(input, dims, geometry, row, out),
        }
    }
}

/// [`pool_row`] compiled with AVX2 enabled (the same code; wider vectors).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    // Named from the crate root, not `super::`: see the same note in `winograd.rs`.
    use crate::fused::pool::PoolGeometry;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn pool_row(
        input: &[f32],
        dims: (usize, usize, usize),
        geometry: PoolGeometry,
        row: usize,
        out: &mut [f32],
    ) {
        crate::fused::pool::pool_row(input, dims, geometry, row, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PyTorch's output sizes for GoogLeNet's pools (`ceil_mode=True`).
    #[test]
    fn output_sides_follow_pytorch() {
        let g = |kernel, stride, padding| PoolGeometry {
            kernel,
            stride,
            padding,
        };
        assert_eq!(g(3, 2, 0).out_side(112), 56);
        assert_eq!(g(3, 2, 0).out_side(56), 28);
        assert_eq!(g(3, 2, 0).out_side(28), 14);
        assert_eq!(g(2, 2, 0).out_side(14), 7);
        assert_eq!(g(3, 1, 1).out_side(28), 28);
        assert_eq!(g(3, 2, 0).out_side(6), 3);
        // The ceil rule's edge case: a window starting in the padding is dropped.
        assert_eq!(g(2, 2, 1).out_side(4), 3);
    }

    #[test]
    fn matches_the_definition_at_the_edges() {
        // 3 channels: the scalar tail only; 45: a register chunk and a tail.
        for (kernel, c) in Kernel::available_here().flat_map(|k| [(k, 3), (k, 45)]) {
            matches_the_definition(kernel, c);
        }
    }

    fn matches_the_definition(kernel: Kernel, c: usize) {
        let (b, h, w) = (2, 6, 5);
        let mut input: Vec<f32> = (0..b * h * w * c)
            .map(|i| ((i * 7919) % 97) as f32 - 40.0)
            .collect();
        // A NaN never wins a window: the pool skips it, as the direct loop below does. Pixel
        // (1, 1) is the last cell of the 3×3/1 window at (0, 0), where a max that let NaN
        // in would keep it.
        input[(w + 1) * c + c.min(8) - 1] = f32::NAN;
        for geometry in [
            PoolGeometry {
                kernel: 3,
                stride: 2,
                padding: 0,
            },
            PoolGeometry {
                kernel: 3,
                stride: 1,
                padding: 1,
            },
            PoolGeometry {
                kernel: 2,
                stride: 2,
                padding: 0,
            },
        ] {
            let (oh, ow) = (geometry.out_side(h), geometry.out_side(w));
            let mut out = vec![0.0; b * oh * ow * c];
            pool_rows(kernel, &input, (h, w, c), geometry, &mut out);
            for n in 0..b {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ch in 0..c {
                            let mut want = f32::NEG_INFINITY;
                            for ky in 0..geometry.kernel {
                                for kx in 0..geometry.kernel {
                                    let y = (oy * geometry.stride + ky) as isize
                                        - geometry.padding as isize;
                                    let x = (ox * geometry.stride + kx) as isize
                                        - geometry.padding as isize;
                                    if y >= 0 && x >= 0 && (y as usize) < h && (x as usize) < w {
                                        let v =
                                            input[((n * h + y as usize) * w + x as usize) * c + ch];
                                        if v > want {
                                            want = v;
                                        }
                                    }
                                }
                            }
                            let got = out[((n * oh + oy) * ow + ox) * c + ch];
                            assert_eq!(got, want, "{kernel:?}, {c} channels, {geometry:?}");
                        }
                    }
                }
            }
        }
    }
}
