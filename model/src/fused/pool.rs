//! Max pooling on channels-last (NHWC) activations.
//!
//! With channels last, a pooling window is a handful of contiguous channel vectors, so the
//! inner loop is an element-wise max over `channels` floats that the compiler vectorizes; no
//! layout change is needed around the convolutions.

use rayon::prelude::*;

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
        pool_rows(input, (batch, height, width, channels), geometry, output)
    });
}

fn pool_rows(
    input: &[f32],
    (_, height, width, channels): (usize, usize, usize, usize),
    geometry: PoolGeometry,
    output: &mut [f32],
) {
    let (oh, ow) = (geometry.out_side(height), geometry.out_side(width));
    let row_len = ow * channels;
    output
        .par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(row, out)| {
            let (b, oy) = (row / oh, row % oh);
            let y0 = (oy * geometry.stride).saturating_sub(geometry.padding);
            let y1 = (oy * geometry.stride + geometry.kernel - geometry.padding).min(height);
            for (ox, pixel) in out.chunks_exact_mut(channels).enumerate() {
                let x0 = (ox * geometry.stride).saturating_sub(geometry.padding);
                let x1 = (ox * geometry.stride + geometry.kernel - geometry.padding).min(width);
                pixel.fill(f32::NEG_INFINITY);
                for y in y0..y1 {
                    let line = &input[((b * height + y) * width) * channels..];
                    for x in x0..x1 {
                        let cell = &line[x * channels..(x + 1) * channels];
                        // `max` compiles to vector max instructions where a compare and
                        // branch did not; `o` is never NaN (it starts at −∞ and only takes
                        // `max`), so a NaN input is skipped exactly as `v > o` skipped it.
                        for (o, v) in pixel.iter_mut().zip(cell) {
                            *o = o.max(*v);
                        }
                    }
                }
            }
        });
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
        let (b, h, w, c) = (2, 6, 5, 3);
        let input: Vec<f32> = (0..b * h * w * c)
            .map(|i| ((i * 7919) % 97) as f32 - 40.0)
            .collect();
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
            max_pool(&input, (b, h, w, c), geometry, &mut out);
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
                                        want = want.max(
                                            input[((n * h + y as usize) * w + x as usize) * c + ch],
                                        );
                                    }
                                }
                            }
                            assert_eq!(out[((n * oh + oy) * ow + ox) * c + ch], want);
                        }
                    }
                }
            }
        }
    }
}
