//! Convolution + bias + ReLU on channels-last (NHWC) activations, as GEMMs.
//!
//! With NHWC, the pixels of a batch are the rows of a `[pixels, channels]` matrix, so a
//! convolution is `out[pixels, cout] = patches[pixels, k·k·cin] × weight[k·k·cin, cout]`:
//! - a 1×1 convolution needs no patches at all: the input rows *are* the GEMM's left operand,
//!   read in place (with any row stride, so a channel slice of a wider tensor works too);
//! - a k×k convolution builds its patches one tile of output rows at a time (tiled im2col),
//!   into a per-thread scratch buffer that stays in cache and is reused across calls.
//!
//! Each tile is finished in registers: the micro-kernel starts from the bias and applies ReLU
//! before it stores. The output can
//! be a column slice of a wider tensor (`dst.offset`, `dst.row_stride`): that is how an
//! Inception branch writes straight into its place in the block's output, with no concat.
//!
//! Work is split into (row tile × column tile) items run on the current rayon pool, so each
//! inference lane's pool sets how many threads a convolution uses. The GEMM is
//! [`super::packed`]'s: weights packed once at load into the micro-kernel's panels, bias
//! loaded into the accumulators and ReLU applied before the tile is stored.

use std::cell::RefCell;

use rayon::prelude::*;

use super::packed::{self, Kernel, Start};

/// Shape of one convolution: square kernel, same stride and zero padding on both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConvGeometry {
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
}

impl ConvGeometry {
    /// Length of one patch row: the GEMM's inner dimension.
    pub(crate) const fn patch_len(&self) -> usize {
        self.kernel * self.kernel * self.in_channels
    }

    /// Output side for an input side (PyTorch's floor rule; convolutions have no ceil mode).
    pub(crate) const fn out_side(&self, side: usize) -> usize {
        (side + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.padding == 0
    }
}

/// A batch of NHWC activations read from `data`: pixel `p`'s channel `c` is at
/// `data[offset + p * row_stride + c]`, for `c < channels`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Activations<'a> {
    pub data: &'a [f32],
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub row_stride: usize,
    pub offset: usize,
}

impl Activations<'_> {
    fn pixels(&self) -> usize {
        self.batch * self.height * self.width
    }
}

/// Where a convolution writes: pixel `p`'s output channel `c` goes to
/// `ptr[offset + p * row_stride + c]`. A raw pointer because parallel work items write
/// disjoint (rows × columns) rectangles of one buffer, which slices cannot express.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Destination {
    ptr: *mut f32,
    len: usize,
    pub row_stride: usize,
    pub offset: usize,
}

// SAFETY: a `Destination` is only used by `conv_bias_relu`, whose work items write disjoint
// element sets, and the borrow it was made from outlives the call.
unsafe impl Send for Destination {}
// SAFETY: shared between the work items of one call for the same reason: each writes only
// its own rectangle, and nothing reads through it.
unsafe impl Sync for Destination {}

impl Destination {
    /// Columns `offset..offset + channels` of the rows of `buffer` (each `row_stride` long).
    pub(crate) fn new(buffer: &mut [f32], row_stride: usize, offset: usize) -> Destination {
        Destination {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            row_stride,
            offset,
        }
    }

    /// Panics unless `pixels` rows of `channels` fit in the buffer.
    pub(crate) fn check(&self, pixels: usize, channels: usize) {
        if pixels > 0 {
            let last = self.offset + (pixels - 1) * self.row_stride + channels;
            assert!(last <= self.len, "destination too small");
        }
    }

    /// Pixel `p`'s output channels `cols`.
    ///
    /// # Safety
    /// `check(pixels, channels)` must have passed with `p < pixels` and
    /// `cols.end ≤ channels`, and no other live reference may overlap the returned slice.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn row_mut(&self, p: usize, cols: std::ops::Range<usize>) -> &mut [f32] {
        // SAFETY: in bounds by `check`; exclusive by the caller's contract.
        unsafe {
            std::slice::from_raw_parts_mut(
                self.ptr.add(self.offset + p * self.row_stride + cols.start),
                cols.len(),
            )
        }
    }
}

/// Rows per tile at most: enough for an efficient GEMM, few enough that a tile of patches
/// stays in the L2 cache (about 256 KiB of them).
fn cache_rows(patch_len: usize) -> usize {
    (64 * 1024 / patch_len.max(1)).clamp(16, 256)
}

/// How many row tiles `pixels` rows are cut into: enough that none exceeds
/// [`cache_rows`], at least one per thread, and a multiple of the threads, so that every
/// thread gets the same share. (Tiles of [`cache_rows`] and a remainder would not: 784
/// pixels of 256 rows are three full tiles and a sliver, which two threads share 2 : 1.)
fn row_tiles(pixels: usize, patch_len: usize, threads: usize) -> usize {
    let threads = threads.max(1);
    pixels
        .div_ceil(cache_rows(patch_len))
        .max(threads)
        .next_multiple_of(threads)
        .clamp(1, pixels.max(1))
}

/// Part `index` of `0..len` cut into `parts` near-equal ranges (sizes differ by at most 1).
pub(crate) fn even_part(len: usize, parts: usize, index: usize) -> std::ops::Range<usize> {
    index * len / parts..(index + 1) * len / parts
}

/// Columns per tile when there are too few row tiles to keep every thread busy (the 7×7 and
/// 14×14 layers at batch 1): the output channels are split instead, in whole panels of the
/// micro-kernel.
fn tile_cols(out_channels: usize, row_tiles: usize, threads: usize) -> usize {
    if row_tiles >= threads || threads <= 1 {
        return out_channels;
    }
    let splits = threads.div_ceil(row_tiles);
    out_channels
        .div_ceil(splits)
        .next_multiple_of(packed::PANEL)
        .min(out_channels)
}

thread_local! {
    /// Each thread's im2col tile, grown to the largest tile it has seen (or was reserved, see
    /// [`reserve_patches`]) and then reused.
    static PATCHES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The most im2col scratch one work item of `geometry` can need on any batch, in floats
/// (0 for a 1×1/1 convolution, which reads its input in place): [`cache_rows`] times the
/// patch length.
pub(crate) fn patch_scratch(geometry: ConvGeometry) -> usize {
    if geometry.is_pointwise() {
        return 0;
    }
    let k = geometry.patch_len();
    cache_rows(k) * k
}

/// Floats in the calling thread's im2col scratch.
#[cfg(test)]
pub(crate) fn patches_len() -> usize {
    PATCHES.with_borrow(Vec::len)
}

/// Grows the calling thread's im2col scratch to `len` floats, so that no later tile of at
/// most that size allocates.
pub(crate) fn reserve_patches(len: usize) {
    PATCHES.with_borrow_mut(|p| {
        if p.len() < len {
            p.resize(len, 0.0);
        }
    });
}

/// `dst = relu(conv(input, weight) + bias)`, with `weight` the panels of `[k, k, cin, cout]`
/// (row-major: `(ky·k + kx)·cin + ci` rows of `cout`) and `bias` `[cout]`.
///
/// Panics if the slices are shorter than the geometry says (a bug in the caller, never
/// input-dependent: shapes are fixed by the network).
pub(crate) fn conv_bias_relu(
    input: Activations<'_>,
    geometry: ConvGeometry,
    weight: &[f32],
    bias: &[f32],
    dst: Destination,
) {
    let ConvGeometry {
        out_channels: cout, ..
    } = geometry;
    assert_eq!(input.channels, geometry.in_channels, "input channels");
    assert_eq!(
        weight.len(),
        packed::packed_len(geometry.patch_len(), cout),
        "packed weight size"
    );
    assert_eq!(bias.len(), cout, "bias size");
    let (oh, ow) = (
        geometry.out_side(input.height),
        geometry.out_side(input.width),
    );
    let pixels = input.batch * oh * ow;
    if pixels == 0 {
        return;
    }
    let last = dst.offset + (pixels - 1) * dst.row_stride + cout;
    assert!(last <= dst.len, "destination too small");
    assert!(input.row_stride >= input.channels, "input rows overlap");
    let last_in = input.offset + (input.pixels() - 1) * input.row_stride + input.channels;
    assert!(last_in <= input.data.len(), "input too small");

    let threads = rayon::current_num_threads();
    let row_tiles = row_tiles(pixels, geometry.patch_len(), threads);
    let cols = tile_cols(cout, row_tiles, threads);
    let col_tiles = cout.div_ceil(cols);
    let item = |index: usize| {
        let (rt, ct) = (index / col_tiles, index % col_tiles);
        let c0 = ct * cols;
        let c1 = (c0 + cols).min(cout);
        let rows = even_part(pixels, row_tiles, rt);
        tile(input, geometry, (oh, ow), weight, bias, dst, rows, c0..c1);
    };
    let items = row_tiles * col_tiles;
    if items == 1 || threads <= 1 {
        (0..items).for_each(item);
    } else {
        (0..items).into_par_iter().for_each(item);
    }
}

/// One work item: output rows `rows` (pixels in NHW order), output channels `cols`.
#[allow(clippy::too_many_arguments)]
fn tile(
    input: Activations<'_>,
    geometry: ConvGeometry,
    (oh, ow): (usize, usize),
    weight: &[f32],
    bias: &[f32],
    dst: Destination,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
) {
    let k = geometry.patch_len();
    let m = rows.len();
    // SAFETY: (pointer arithmetic) `conv_bias_relu` checked that every row of the output
    // and input lies inside its buffer; this item touches only its own rows × columns.
    let dst_base = unsafe { dst.ptr.add(dst.offset + rows.start * dst.row_stride) };
    let run = |lhs: *const f32, lhs_stride: usize| {
        // SAFETY: `lhs` holds `m` rows of `k` floats (the input rows of a 1×1 convolution,
        // checked by `conv_bias_relu`, or this thread's patch tile); the destination rows
        // are this item's; `weight` is packed `[k, cout]` (its length was checked).
        unsafe {
            packed::gemm(
                Kernel::get(),
                (lhs, lhs_stride),
                m,
                k,
                weight,
                cols.clone(),
                (dst_base, dst.row_stride),
                bias,
                (Start::Bias, true),
            );
        }
    };
    if geometry.is_pointwise() {
        let lhs = &input.data[input.offset + rows.start * input.row_stride..];
        run(lhs.as_ptr(), input.row_stride);
    } else {
        // Taken out of the thread-local and put back, so it is never borrowed twice.
        let mut patches = PATCHES.with_borrow_mut(std::mem::take);
        if patches.len() < m * k {
            patches.resize(m * k, 0.0);
        }
        im2col(
            input,
            geometry,
            (oh, ow),
            rows.clone(),
            &mut patches[..m * k],
        );
        run(patches.as_ptr(), k);
        PATCHES.with_borrow_mut(|slot| *slot = patches);
    }
}

/// Patches for output pixels `rows`: one row of `k·k·cin` per pixel, zeros where the kernel
/// hangs over the padding. Each (ky, kx) tap is one contiguous copy of `cin` channels.
fn im2col(
    input: Activations<'_>,
    geometry: ConvGeometry,
    (oh, ow): (usize, usize),
    rows: std::ops::Range<usize>,
    patches: &mut [f32],
) {
    let ConvGeometry {
        in_channels: cin,
        kernel,
        stride,
        padding,
        ..
    } = geometry;
    let (h, w) = (input.height as isize, input.width as isize);
    let plane = input.height * input.width;
    // With densely packed input rows, the taps of one kernel row are one contiguous run of
    // `kernel·cin` floats wherever the kernel does not hang over the left or right edge.
    let dense = input.row_stride == cin;
    let run = kernel * cin;
    for (pixel, patch) in rows.zip(patches.chunks_exact_mut(geometry.patch_len())) {
        let b = pixel / (oh * ow);
        let oy = (pixel / ow) % oh;
        let ox = pixel % ow;
        let image = &input.data[input.offset + b * plane * input.row_stride..];
        let ix0 = (ox * stride) as isize - padding as isize;
        let inside = ix0 >= 0 && ix0 + kernel as isize <= w;
        for (ky, line) in patch.chunks_exact_mut(run).enumerate() {
            let iy = (oy * stride + ky) as isize - padding as isize;
            if iy < 0 || iy >= h {
                line.fill(0.0);
                continue;
            }
            let row = iy as usize * input.width;
            if dense && inside {
                let at = (row + ix0 as usize) * cin;
                copy_short(line, &image[at..at + run]);
                continue;
            }
            for (kx, tap) in line.chunks_exact_mut(cin).enumerate() {
                let ix = ix0 + kx as isize;
                if ix < 0 || ix >= w {
                    tap.fill(0.0);
                } else {
                    let at = (row + ix as usize) * input.row_stride;
                    copy_short(tap, &image[at..at + cin]);
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)` for the short runs im2col and Winograd's transforms copy (the
/// stem's are 3 and 21 floats, a transform's 8), in fixed blocks the compiler keeps in
/// registers instead of calling `memcpy`.
#[inline(always)]
pub(crate) fn copy_short(dst: &mut [f32], src: &[f32]) {
    const BLOCK: usize = 8;
    let mut d = dst.chunks_exact_mut(BLOCK);
    let mut s = src.chunks_exact(BLOCK);
    for (d, s) in (&mut d).zip(&mut s) {
        let s: &[f32; BLOCK] = s.try_into().expect("a whole block");
        d.copy_from_slice(s);
    }
    for (d, s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = *s;
    }
}

/// Packs a PyTorch `[cout, cin, k, k]` weight into the micro-kernel's panels of the
/// `[k·k·cin, cout]` GEMM operand (row `(ky·k + kx)·cin + ci`), once at load time.
pub(crate) fn pack_weight(oihw: &[f32], geometry: ConvGeometry) -> Vec<f32> {
    let ConvGeometry {
        in_channels: cin,
        out_channels: cout,
        kernel: k,
        ..
    } = geometry;
    let mut rows = vec![0.0; oihw.len()];
    for o in 0..cout {
        for i in 0..cin {
            for ky in 0..k {
                for kx in 0..k {
                    rows[((ky * k + kx) * cin + i) * cout + o] =
                        oihw[((o * cin + i) * k + ky) * k + kx];
                }
            }
        }
    }
    packed::pack_panels(&rows, geometry.patch_len(), cout)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook definition, NCHW-free: direct loops over NHWC.
    fn reference(
        x: &[f32],
        (n, h, w): (usize, usize, usize),
        g: ConvGeometry,
        oihw: &[f32],
        bias: &[f32],
    ) -> Vec<f32> {
        let (oh, ow) = (g.out_side(h), g.out_side(w));
        let mut out = vec![0.0; n * oh * ow * g.out_channels];
        for b in 0..n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for o in 0..g.out_channels {
                        let mut acc = f64::from(bias[o]);
                        for ky in 0..g.kernel {
                            for kx in 0..g.kernel {
                                let iy = (oy * g.stride + ky) as isize - g.padding as isize;
                                let ix = (ox * g.stride + kx) as isize - g.padding as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                for i in 0..g.in_channels {
                                    let xv = x[((b * h + iy as usize) * w + ix as usize)
                                        * g.in_channels
                                        + i];
                                    let wv = oihw
                                        [((o * g.in_channels + i) * g.kernel + ky) * g.kernel + kx];
                                    acc += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        out[((b * oh + oy) * ow + ox) * g.out_channels + o] = acc.max(0.0) as f32;
                    }
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (v % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn check(n: usize, side: usize, g: ConvGeometry, extra_cols: usize, threads: usize) {
        let x = values(n * side * side * g.in_channels, 1);
        let w = values(g.patch_len() * g.out_channels, 2);
        let bias = values(g.out_channels, 3);
        let want = reference(&x, (n, side, side), g, &w, &bias);
        let (oh, ow) = (g.out_side(side), g.out_side(side));
        // Write into a column slice of a wider buffer, as Inception branches do.
        let stride = g.out_channels + extra_cols;
        let mut out = vec![-7.0; n * oh * ow * stride];
        let packed = pack_weight(&w, g);
        let input = Activations {
            data: &x,
            batch: n,
            height: side,
            width: side,
            channels: g.in_channels,
            row_stride: g.in_channels,
            offset: 0,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| {
            conv_bias_relu(
                input,
                g,
                &packed,
                &bias,
                Destination::new(&mut out, stride, extra_cols),
            )
        });
        for p in 0..n * oh * ow {
            for c in 0..stride {
                let got = out[p * stride + c];
                if c < extra_cols {
                    assert_eq!(got, -7.0, "column {c} outside the slice was written");
                } else {
                    let w = want[p * g.out_channels + c - extra_cols];
                    assert!(
                        (got - w).abs() < 1e-4,
                        "pixel {p} channel {c}: {got} vs {w}"
                    );
                }
            }
        }
    }

    fn geometry(cin: usize, cout: usize, kernel: usize, stride: usize) -> ConvGeometry {
        ConvGeometry {
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            padding: kernel / 2,
        }
    }

    #[test]
    fn pointwise_matches_the_definition() {
        for threads in [1, 2, 3] {
            check(2, 5, geometry(7, 19, 1, 1), 0, threads);
            check(1, 9, geometry(16, 40, 1, 1), 5, threads);
        }
    }

    #[test]
    fn three_by_three_matches_the_definition() {
        for threads in [1, 2] {
            check(2, 7, geometry(5, 33, 3, 1), 3, threads);
            check(1, 4, geometry(3, 2, 3, 1), 0, threads);
        }
    }

    #[test]
    fn strided_seven_by_seven_matches_the_definition() {
        check(2, 15, geometry(3, 8, 7, 2), 0, 2);
        check(1, 16, geometry(3, 17, 7, 2), 1, 1);
    }

    #[test]
    fn reads_a_channel_slice_of_a_wider_input() {
        // 1×1 reads the rows in place; a strided k×k copies its taps one by one (the rows
        // are not dense, so a kernel row is not one run).
        for (g, side) in [(geometry(4, 6, 1, 1), 3), (geometry(4, 6, 3, 2), 7)] {
            reads_a_channel_slice(g, side);
        }
    }

    fn reads_a_channel_slice(g: ConvGeometry, side: usize) {
        let (n, wide) = (1, 10);
        let x = values(n * side * side * wide, 4);
        let narrow: Vec<f32> = x.chunks(wide).flat_map(|row| row[3..7].to_vec()).collect();
        let w = values(g.patch_len() * 6, 5);
        let bias = values(6, 6);
        let want = reference(&narrow, (n, side, side), g, &w, &bias);
        let out_side = g.out_side(side);
        let mut out = vec![0.0; n * out_side * out_side * 6];
        let input = Activations {
            data: &x,
            batch: n,
            height: side,
            width: side,
            channels: 4,
            row_stride: wide,
            offset: 3,
        };
        conv_bias_relu(
            input,
            g,
            &pack_weight(&w, g),
            &bias,
            Destination::new(&mut out, 6, 0),
        );
        assert_eq!(out.len(), want.len());
        for (got, want) in out.iter().zip(&want) {
            assert!((got - want).abs() < 1e-4, "{g:?}: {got} vs {want}");
        }
    }

    #[test]
    fn tiles_cover_every_row_and_column() {
        for (pixels, patch, threads) in [
            (49, 1728, 2),
            (12544, 147, 2),
            (1, 9, 4),
            (196, 832, 3),
            (784, 192, 2),
        ] {
            let tiles = row_tiles(pixels, patch, threads);
            assert!((1..=pixels).contains(&tiles));
            let parts: Vec<_> = (0..tiles).map(|i| even_part(pixels, tiles, i)).collect();
            assert_eq!(parts[0].start, 0);
            assert_eq!(parts[tiles - 1].end, pixels);
            assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
            assert!(parts.iter().all(|p| p.len() <= cache_rows(patch)));
            if pixels >= threads {
                assert_eq!(tiles % threads, 0, "{pixels} rows, {threads} threads");
            }
            let cols = tile_cols(128, tiles, threads);
            assert!((1..=128).contains(&cols));
        }
    }
}
