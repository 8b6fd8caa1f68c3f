//! 3×3 stride-1 convolutions by Winograd's minimal filtering algorithm F(4×4, 3×3): each 4×4
//! tile of output takes 36 multiplications per (input, output) channel pair instead of 144.
//!
//! The transform matrices `Bᵀ`, `G` and `Aᵀ` are those of Lavin & Gray, "Fast Algorithms for
//! Convolutional Neural Networks" (CVPR 2016), section 4.2 (F(4×4, 3×3), interpolation points
//! 0, ±1, ±2 and ∞). With a 6×6 input tile `d`, a 3×3 filter `g` and `Y` the 4×4 output,
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`. Summed over input channels, the element-wise product at
//! each of the 36 points `ξ` is a GEMM: `M_ξ[tiles, cout] = V_ξ[tiles, cin] × U_ξ[cin, cout]`.
//!
//! - The filters are transformed (`U = G g Gᵀ`, in f64) and packed into the micro-kernel's
//!   panels once, at load ([`pack_filter`]).
//! - At run time a block of tiles is transformed into a per-thread buffer (`V = Bᵀ d B`, read
//!   straight from the NHWC input with the padding as zeros), the 36 GEMMs run through
//!   [`super::packed`], and the output transform (`Aᵀ M A`) adds the bias, applies ReLU and
//!   writes the tile's in-bounds pixels to the destination (which may be a channel slice of
//!   a wider tensor, as for an Inception branch).
//! - Work items are (block of tiles × group of output panels), so both cores have work even
//!   at batch 1 on a 7×7 map; with few tiles the output panels, not the tiles, are split
//!   over the threads ([`partition`]).

use std::cell::RefCell;

use rayon::prelude::*;

use super::conv::{Activations, Destination, copy_short, even_part};
use super::packed::{self, Kernel, PANEL, Start};

/// Output pixels per tile side (the "4" of F(4×4, 3×3)).
const OUT: usize = 4;
/// Input pixels per tile side: `OUT + 3 - 1`.
const IN: usize = 6;
/// Points of the transformed tile: one GEMM each.
pub(crate) const POINTS: usize = IN * IN;
/// Channels transformed together (one AVX2 register).
const LANES: usize = 8;

/// `G` (6×3), Lavin & Gray 2016, F(4×4, 3×3).
const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// Transforms a PyTorch `[cout, cin, 3, 3]` filter to `U_ξ = (G g Gᵀ)_ξ` and packs each
/// point's `[cin, cout]` matrix into panels, the 36 of them one after the other.
pub(crate) fn pack_filter(oihw: &[f32], cin: usize, cout: usize) -> Vec<f32> {
    assert_eq!(oihw.len(), cout * cin * 9, "3×3 filter size");
    let mut points = vec![vec![0.0f32; cin * cout]; POINTS];
    for o in 0..cout {
        for i in 0..cin {
            let g = &oihw[(o * cin + i) * 9..][..9];
            // G g Gᵀ in f64.
            let mut gg = [[0.0f64; 3]; IN];
            for (r, row) in gg.iter_mut().enumerate() {
                for (c, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|k| G[r][k] * f64::from(g[k * 3 + c])).sum();
                }
            }
            for r in 0..IN {
                for s in 0..IN {
                    let u: f64 = (0..3).map(|k| gg[r][k] * G[s][k]).sum();
                    points[r * IN + s][i * cout + o] = u as f32;
                }
            }
        }
    }
    points
        .iter()
        .flat_map(|u| packed::pack_panels(u, cin, cout))
        .collect()
}

/// Length of a packed filter.
pub(crate) const fn packed_len(cin: usize, cout: usize) -> usize {
    POINTS * packed::packed_len(cin, cout)
}

/// `Bᵀ x` for six vectors of channels (Lavin & Gray 2016, F(4×4, 3×3)).
#[inline(always)]
fn input_1d(d: &[[f32; LANES]; IN]) -> [[f32; LANES]; IN] {
    let mut r = [[0.0; LANES]; IN];
    for l in 0..LANES {
        let [d0, d1, d2, d3, d4, d5] = [d[0][l], d[1][l], d[2][l], d[3][l], d[4][l], d[5][l]];
        r[0][l] = 4.0 * d0 - 5.0 * d2 + d4;
        r[1][l] = -4.0 * d1 - 4.0 * d2 + d3 + d4;
        r[2][l] = 4.0 * d1 - 4.0 * d2 - d3 + d4;
        r[3][l] = -2.0 * d1 - d2 + 2.0 * d3 + d4;
        r[4][l] = 2.0 * d1 - d2 - 2.0 * d3 + d4;
        r[5][l] = 4.0 * d1 - 5.0 * d3 + d5;
    }
    r
}

/// `Aᵀ x` for six vectors of channels (Lavin & Gray 2016, F(4×4, 3×3)).
#[inline(always)]
fn output_1d(m: &[[f32; LANES]; IN]) -> [[f32; LANES]; OUT] {
    let mut y = [[0.0; LANES]; OUT];
    for l in 0..LANES {
        let [m0, m1, m2, m3, m4, m5] = [m[0][l], m[1][l], m[2][l], m[3][l], m[4][l], m[5][l]];
        let (p12, n12) = (m1 + m2, m1 - m2);
        let (p34, n34) = (m3 + m4, m3 - m4);
        y[0][l] = m0 + p12 + p34;
        y[1][l] = n12 + 2.0 * n34;
        y[2][l] = p12 + 4.0 * p34;
        y[3][l] = n12 + 8.0 * n34 + m5;
    }
    y
}

/// Where a block's tiles are: the first tile's index and the map's tiling.
#[derive(Debug, Clone, Copy)]
struct Tiling {
    height: usize,
    width: usize,
    tiles_y: usize,
    tiles_x: usize,
}

impl Tiling {
    /// Image, and top-left output pixel, of tile `t`.
    fn origin(&self, t: usize) -> (usize, usize, usize) {
        let per_image = self.tiles_y * self.tiles_x;
        let (b, r) = (t / per_image, t % per_image);
        (b, (r / self.tiles_x) * OUT, (r % self.tiles_x) * OUT)
    }
}

/// `V[i][ξ][c] = (Bᵀ d B)_ξ` for tiles `tiles` (`i` counts from the block's first), all
/// input channels; `v` is `[tiles.len(), POINTS, cin]`: a tile's 36 points are written
/// side by side (at a stride of a whole block per point, the 36 lines would fall into a
/// few cache sets and evict each other).
#[inline(always)]
fn input_transform(
    input: &Activations<'_>,
    tiling: Tiling,
    tiles: std::ops::Range<usize>,
    v: &mut [f32],
) {
    let cin = input.channels;
    let plane = input.height * input.width;
    for (i, t) in tiles.enumerate() {
        let (b, oy, ox) = tiling.origin(t);
        for c0 in (0..cin).step_by(LANES) {
            let lanes = LANES.min(cin - c0);
            let mut d = [[[0.0f32; LANES]; IN]; IN];
            for (y, row) in d.iter_mut().enumerate() {
                let iy = (oy + y) as isize - 1;
                if iy < 0 || iy >= tiling.height as isize {
                    continue;
                }
                for (x, cell) in row.iter_mut().enumerate() {
                    let ix = (ox + x) as isize - 1;
                    if ix < 0 || ix >= tiling.width as isize {
                        continue;
                    }
                    let pixel = b * plane + iy as usize * tiling.width + ix as usize;
                    let at = input.offset + pixel * input.row_stride + c0;
                    copy_short(&mut cell[..lanes], &input.data[at..at + lanes]);
                }
            }
            // Bᵀ over the columns of each row, then over the rows.
            let mut t1 = [[[0.0f32; LANES]; IN]; IN];
            for (y, row) in d.iter().enumerate() {
                let r = input_1d(row);
                for (x, v) in r.iter().enumerate() {
                    t1[x][y] = *v;
                }
            }
            for (x, column) in t1.iter().enumerate() {
                let r = input_1d(column);
                for (y, lane) in r.iter().enumerate() {
                    let at = ((i * IN + y) * IN + x) * cin + c0;
                    copy_short(&mut v[at..at + lanes], &lane[..lanes]);
                }
            }
        }
    }
}

/// `relu(Aᵀ M A + bias)` for tiles `tiles`, output channels `cols`, written to the
/// in-bounds pixels of each tile; `m` is `[tiles.len(), POINTS, m_stride]`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn output_transform(
    m: &[f32],
    m_stride: usize,
    tiling: Tiling,
    tiles: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    bias: &[f32],
    dst: &mut DestinationRows,
) {
    for (i, t) in tiles.enumerate() {
        let (b, oy, ox) = tiling.origin(t);
        for c0 in cols.clone().step_by(LANES) {
            let lanes = LANES.min(cols.end - c0);
            let mut p = [[[0.0f32; LANES]; IN]; IN];
            for (xi, row) in p.iter_mut().enumerate() {
                for (s, cell) in row.iter_mut().enumerate() {
                    let at = ((i * IN + xi) * IN + s) * m_stride + c0;
                    copy_short(&mut cell[..lanes], &m[at..at + lanes]);
                }
            }
            // Aᵀ over each row's six points, then over the rows.
            let mut t1 = [[[0.0f32; LANES]; IN]; OUT];
            for (r, row) in p.iter().enumerate() {
                let y = output_1d(row);
                for (s, v) in y.iter().enumerate() {
                    t1[s][r] = *v;
                }
            }
            let mut lane_bias = [0.0f32; LANES];
            copy_short(&mut lane_bias[..lanes], &bias[c0..c0 + lanes]);
            for (x, column) in t1.iter().enumerate() {
                let y = output_1d(column);
                if ox + x >= tiling.width {
                    continue;
                }
                for (dy, values) in y.iter().enumerate() {
                    if oy + dy >= tiling.height {
                        continue;
                    }
                    let pixel = (b * tiling.height + oy + dy) * tiling.width + ox + x;
                    let row = dst.row(pixel, c0..c0 + lanes);
                    for (l, out) in row.iter_mut().enumerate() {
                        *out = (values[l] + lane_bias[l]).max(0.0);
                    }
                }
            }
        }
    }
}

/// The destination, seen one pixel's run of output channels at a time.
struct DestinationRows {
    dst: Destination,
    pixels: usize,
    channels: usize,
}

impl DestinationRows {
    /// Pixel `p`'s output channels `cols`.
    fn row(&mut self, p: usize, cols: std::ops::Range<usize>) -> &mut [f32] {
        assert!(
            p < self.pixels && cols.end <= self.channels,
            "inside the output"
        );
        // SAFETY: `conv3x3` checked that every pixel's channels lie inside the destination;
        // each work item writes only its own tiles' pixels and columns, so the slices of two
        // items never overlap, and this one lives only until the next call.
        unsafe { self.dst.row_mut(p, cols) }
    }
}

thread_local! {
    /// The calling thread's transformed inputs and products, reused across calls.
    static SCRATCH: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// The most scratch one work item of a `cin → cout` layer can need on any batch, in floats:
/// the transformed inputs and the products of its largest block ([`max_block`] tiles).
pub(crate) fn scratch(cin: usize, cout: usize) -> (usize, usize) {
    let coutp = cout.next_multiple_of(PANEL);
    let tiles = max_block(block_cap(cin, coutp, Kernel::get().mr()));
    (POINTS * tiles * cin, POINTS * tiles * coutp)
}

/// Floats in the calling thread's `(inputs, products)` scratch.
#[cfg(test)]
pub(crate) fn scratch_len() -> (usize, usize) {
    SCRATCH.with_borrow(|(v, m)| (v.len(), m.len()))
}

/// Grows the calling thread's scratch to `(inputs, products)` floats, so that no later work
/// item of at most those sizes allocates.
pub(crate) fn reserve(inputs: usize, products: usize) {
    SCRATCH.with_borrow_mut(|(v, m)| {
        if v.len() < inputs {
            v.resize(inputs, 0.0);
        }
        if m.len() < products {
            m.resize(products, 0.0);
        }
    });
}

/// A block's transformed inputs and products together, at most (unless one register tile
/// of rows needs more): 256 KiB, half of the smallest L2 cache of the x86 cores Glimpse
/// runs on (Zen 2/3), so the input transform, the 36 GEMMs and the output transform pass
/// the block to each other in L2. Measured against 2 MiB, which left it in L3, in
/// BENCHMARKS.md.
const BLOCK_FLOATS: usize = 64 * 1024;

/// Tiles per block at most: enough rows for the micro-kernel, few enough that the block's
/// transformed input and products (36 points each) stay within [`BLOCK_FLOATS`].
fn block_cap(cin: usize, coutp: usize, mr: usize) -> usize {
    (BLOCK_FLOATS / (POINTS * (cin + coutp))).clamp(mr, 96)
}

/// Tiles per block when a layer has too few tiles to give every thread [`FEW_TILES`]: it
/// then runs as blocks of up to this many, each split over the threads by output
/// channels. The block outgrows [`BLOCK_FLOATS`] (for the larger layers), but each weight
/// panel is read by one thread and used for as many rows as there are tiles. Cut by
/// tiles instead, every thread would stream all of the layer's weights, 4× the size of
/// the direct filter, from memory, for blocks of 4 tiles or fewer, leaving the
/// micro-kernel 4 of its 6 rows or fewer. Measured per layer in BENCHMARKS.md: 0.54–0.75×
/// the time on the 7×7 maps at batch 1, 0.84–0.97× on the 14×14 ones.
const FEW_TILES: usize = 16;

/// The most tiles one block can hold for a layer whose [`block_cap`] is `cap`.
fn max_block(cap: usize) -> usize {
    cap.max(FEW_TILES)
}

/// How `tiles` tiles and `panels` panels of output channels are cut into work items:
/// `(blocks, groups)`, each item one block of tiles × one group of panels.
///
/// - With at least [`FEW_TILES`] tiles per thread: blocks no larger than `cap`, at least
///   one per thread, and a multiple of the threads, so that every thread gets the same
///   share (see `conv::row_tiles`); one group.
/// - With fewer: blocks of up to [`FEW_TILES`] tiles, and the output channels cut into
///   enough groups (in whole panels) to give every thread an item.
fn partition(tiles: usize, cap: usize, threads: usize, panels: usize) -> (usize, usize) {
    let threads = threads.max(1);
    let blocks = if tiles < FEW_TILES * threads {
        tiles.div_ceil(FEW_TILES)
    } else {
        tiles.div_ceil(cap).max(threads).next_multiple_of(threads)
    }
    .clamp(1, tiles.max(1));
    let groups = if blocks >= threads {
        1
    } else {
        threads.div_ceil(blocks).min(panels.max(1))
    };
    (blocks, groups)
}

/// `dst = relu(conv3×3(input, filter) + bias)`, stride 1, padding 1, with `filter` from
/// [`pack_filter`].
// Over 80 lines on purpose: the three Winograd phases share their tiles, buffers and loop bounds; split apart they would pass a dozen arguments per call.
pub(crate) fn conv3x3(
    input: Activations<'_>,
    out_channels: usize,
    filter: &[f32],
    bias: &[f32],
    dst: Destination,
) {
    let (cin, cout) = (input.channels, out_channels);
    let coutp = cout.next_multiple_of(PANEL);
    assert_eq!(filter.len(), packed_len(cin, cout), "packed filter size");
    assert_eq!(bias.len(), cout, "bias size");
    let pixels = input.batch * input.height * input.width;
    if pixels == 0 {
        return;
    }
    assert!(input.row_stride >= cin, "input rows overlap");
    let last_in = input.offset + (pixels - 1) * input.row_stride + cin;
    assert!(last_in <= input.data.len(), "input too small");
    dst.check(pixels, cout);

    let tiling = Tiling {
        height: input.height,
        width: input.width,
        tiles_y: input.height.div_ceil(OUT),
        tiles_x: input.width.div_ceil(OUT),
    };
    let tiles = input.batch * tiling.tiles_y * tiling.tiles_x;
    let kernel = Kernel::get();
    let threads = rayon::current_num_threads();
    let cap = block_cap(cin, coutp, kernel.mr());
    let (blocks, groups) = partition(tiles, cap, threads, coutp / PANEL);
    let group_cols = (coutp / PANEL).div_ceil(groups) * PANEL;
    let groups = coutp.div_ceil(group_cols);
    let point_len = packed::packed_len(cin, cout);

    let item = |index: usize| {
        let (block, group) = (index / groups, index % groups);
        let std::ops::Range { start: t0, end: t1 } = even_part(tiles, blocks, block);
        let count = t1 - t0;
        let c0 = group * group_cols;
        let c1 = (c0 + group_cols).min(cout);
        let (mut v, mut m) = SCRATCH.with_borrow_mut(std::mem::take);
        if v.len() < POINTS * count * cin {
            v.resize(POINTS * count * cin, 0.0);
        }
        if m.len() < POINTS * count * coutp {
            m.resize(POINTS * count * coutp, 0.0);
        }
        kernel.input_transform(&input, tiling, t0..t1, &mut v);
        for point in 0..POINTS {
            let a = &v[point * cin..POINTS * count * cin];
            let c = &mut m[point * coutp..POINTS * count * coutp];
            // SAFETY: `a` holds `count` rows of `cin` floats, `POINTS · cin` apart; `c`
            // holds `count` rows of `coutp ≥ c1` columns, `POINTS · coutp` apart; the filter
            // holds this point's packed `[cin, cout]` matrix.
            unsafe {
                packed::gemm(
                    kernel,
                    (a.as_ptr(), POINTS * cin),
                    count,
                    cin,
                    &filter[point * point_len..][..point_len],
                    c0..c1,
                    (c.as_mut_ptr(), POINTS * coutp),
                    &[],
                    (Start::Zero, false),
                );
            }
        }
        let mut rows = DestinationRows {
            dst,
            pixels,
            channels: cout,
        };
        kernel.output_transform(
            &m[..POINTS * count * coutp],
            coutp,
            tiling,
            t0..t1,
            c0..c1,
            bias,
            &mut rows,
        );
        SCRATCH.with_borrow_mut(|slot| *slot = (v, m));
    };
    let items = blocks * groups;
    if items == 1 || threads <= 1 {
        (0..items).for_each(item);
    } else {
        (0..items).into_par_iter().for_each(item);
    }
}

impl Kernel {
    /// [`input_transform`], compiled for this kernel's instruction set.
    fn input_transform(
        self,
        input: &Activations<'_>,
        tiling: Tiling,
        tiles: std::ops::Range<usize>,
        v: &mut [f32],
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2Fma` and `Avx512` are only picked when the CPU has AVX2 and FMA.
            Kernel::Avx2Fma | Kernel::Avx512 => unsafe {
                avx2::input_transform(input, tiling, tiles, v)
            },
            _ => input_transform(input, tiling, tiles, v),
        }
    }

    /// [`output_transform`], compiled for this kernel's instruction set.
    #[allow(clippy::too_many_arguments)]
    fn output_transform(
        self,
        m: &[f32],
        m_stride: usize,
        tiling: Tiling,
        tiles: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        bias: &[f32],
        dst: &mut DestinationRows,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Avx2Fma` and `Avx512` are only picked when the CPU has AVX2 and FMA.
            Kernel::Avx2Fma | Kernel::Avx512 => unsafe {
                avx2::output_transform(m, m_stride, tiling, tiles, cols, bias, dst)
            },
            _ => output_transform(m, m_stride, tiling, tiles, cols, bias, dst),
        }
    }
}

/// The transforms compiled with AVX2 and FMA enabled (the same code; wider vectors).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    // Named from the crate root, not `super::`: this inline module's parent is the file's
    // module, which scripts/module-cycles would read as `fused`.
    use crate::fused::conv::Activations;
    use crate::fused::winograd::{DestinationRows, Tiling};

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn input_transform(
        input: &Activations<'_>,
        tiling: Tiling,
        tiles: std::ops::Range<usize>,
        v: &mut [f32],
    ) {
        crate::fused::winograd::input_transform(input, tiling, tiles, v);
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) fn output_transform(
        m: &[f32],
        m_stride: usize,
        tiling: Tiling,
        tiles: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        bias: &[f32],
        dst: &mut DestinationRows,
    ) {
        crate::fused::winograd::output_transform(m, m_stride, tiling, tiles, cols, bias, dst);
    }
}

/// The environment variable that picks where Winograd runs: `off` (never), `all` (every
/// 3×3/1 convolution); unset or anything else, the default: maps of at least
/// [`MIN_SIDE`] pixels a side.
pub(crate) const WINOGRAD_VAR: &str = "GLIMPSE_WINOGRAD";

/// Smallest map side on which Winograd runs by default (measured: see BENCHMARKS.md).
pub(crate) const MIN_SIDE: usize = 7;

/// Whether a 3×3/1 convolution on a `side × side` map should run as Winograd.
pub(crate) fn wanted(side: usize) -> bool {
    match std::env::var(WINOGRAD_VAR).as_deref() {
        Ok("off") => false,
        Ok("all") => true,
        _ => side >= MIN_SIDE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct 3×3/1/1 convolution in f64 over NHWC, before bias and ReLU.
    fn direct(x: &[f32], (n, h, w, cin): (usize, usize, usize, usize), oihw: &[f32]) -> Vec<f64> {
        let cout = oihw.len() / (cin * 9);
        let mut out = vec![0.0; n * h * w * cout];
        for b in 0..n {
            for oy in 0..h {
                for ox in 0..w {
                    for o in 0..cout {
                        let mut acc = 0.0f64;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let (iy, ix) = (oy + ky, ox + kx);
                                if iy < 1 || ix < 1 || iy > h || ix > w {
                                    continue;
                                }
                                let pixel = (b * h + iy - 1) * w + ix - 1;
                                for i in 0..cin {
                                    acc += f64::from(x[pixel * cin + i])
                                        * f64::from(oihw[((o * cin + i) * 3 + ky) * 3 + kx]);
                                }
                            }
                        }
                        out[((b * h + oy) * w + ox) * cout + o] = acc;
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

    /// Runs [`conv3x3`] on `threads` threads into a channel slice of a wider output.
    fn run(
        x: &[f32],
        (n, h, w, cin): (usize, usize, usize, usize),
        oihw: &[f32],
        bias: &[f32],
        threads: usize,
        extra: usize,
    ) -> Vec<f32> {
        let cout = bias.len();
        let filter = pack_filter(oihw, cin, cout);
        let stride = cout + extra;
        let mut out = vec![-7.0; n * h * w * stride];
        let input = Activations {
            data: x,
            batch: n,
            height: h,
            width: w,
            channels: cin,
            row_stride: cin,
            offset: 0,
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool");
        pool.install(|| {
            conv3x3(
                input,
                cout,
                &filter,
                bias,
                Destination::new(&mut out, stride, extra),
            )
        });
        out
    }

    /// Blocks cover every tile, none over the scratch reserved for it; with tiles enough,
    /// none over the cap and each thread gets the same number; with few, the channels are
    /// cut so that every thread gets an item.
    #[test]
    fn work_items_are_even_and_fit_the_scratch() {
        // 28×28 at batch 1 (49 tiles), 14×14 at batch 8 (128) and 1 (16), 7×7 at batch 1 (4)
        // and 8 (32), 56×56 (196); a layer with a single panel of outputs.
        for (tiles, cin, cout) in [
            (49, 96, 128),
            (128, 112, 224),
            (16, 160, 320),
            (4, 160, 320),
            (32, 192, 384),
            (196, 64, 192),
            (4, 16, 16),
        ] {
            let coutp = usize::next_multiple_of(cout, PANEL);
            let cap = block_cap(cin, coutp, 6);
            for threads in [1, 2, 3] {
                let (n, groups) = partition(tiles, cap, threads, coutp / PANEL);
                let parts: Vec<_> = (0..n).map(|b| even_part(tiles, n, b)).collect();
                assert_eq!((parts[0].start, parts[n - 1].end), (0, tiles));
                assert!(parts.windows(2).all(|w| w[0].end == w[1].start));
                assert!(
                    parts
                        .iter()
                        .all(|p| !p.is_empty() && p.len() <= max_block(cap))
                );
                assert!((1..=coutp / PANEL).contains(&groups));
                if tiles >= FEW_TILES * threads {
                    assert!(parts.iter().all(|p| p.len() <= cap));
                    assert_eq!((n % threads, groups), (0, 1), "{tiles} tiles, {threads}");
                } else {
                    assert!(
                        n * groups >= threads.min(coutp / PANEL),
                        "{tiles} tiles, {threads} threads: {n} × {groups} items"
                    );
                    // As few blocks as FEW_TILES allows: the threads share a block's
                    // weights by channels rather than each streaming them all.
                    assert_eq!(n, tiles.div_ceil(FEW_TILES), "{tiles} tiles, {threads}");
                }
            }
        }
    }

    /// Odd channel counts, maps that are not multiples of the tile (7×7, 14×14, 5×9), batch
    /// 1 and 3, one and two threads, on the process's micro-kernel (the packed GEMM's tests
    /// run every kernel the CPU has, and the parity test the whole network on each).
    #[test]
    fn matches_the_direct_convolution_on_odd_shapes() {
        for (n, h, w, cin, cout) in [
            (1, 7, 7, 5, 19),
            (3, 14, 14, 17, 33),
            (1, 5, 9, 3, 16),
            (3, 7, 7, 24, 40),
            (1, 4, 4, 1, 1),
        ] {
            let x = values(n * h * w * cin, 1);
            let oihw = values(cout * cin * 9, 2);
            let bias = values(cout, 3);
            let want = direct(&x, (n, h, w, cin), &oihw);
            for threads in [1, 2] {
                let extra = 3;
                let got = run(&x, (n, h, w, cin), &oihw, &bias, threads, extra);
                let stride = cout + extra;
                for p in 0..n * h * w {
                    for c in 0..stride {
                        let g = got[p * stride + c];
                        if c < extra {
                            assert_eq!(g, -7.0, "column {c} outside the slice was written");
                            continue;
                        }
                        let o = c - extra;
                        let want = (want[p * cout + o] + f64::from(bias[o])).max(0.0);
                        // F(4×4, 3×3) loses a few bits: compare against the scale of the sum.
                        let scale = (cin * 9) as f64;
                        assert!(
                            (f64::from(g) - want).abs() < 2e-5 * scale,
                            "{n}×{h}×{w}×{cin}→{cout}, pixel {p} channel {o}: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn reads_a_channel_slice_of_a_wider_input() {
        let (n, h, w, cin, cout, wide, at) = (2, 6, 6, 4, 7, 11, 5);
        let x = values(n * h * w * wide, 4);
        let narrow: Vec<f32> = x
            .chunks(wide)
            .flat_map(|r| r[at..at + cin].to_vec())
            .collect();
        let oihw = values(cout * cin * 9, 5);
        let bias = values(cout, 6);
        let want = direct(&narrow, (n, h, w, cin), &oihw);
        let filter = pack_filter(&oihw, cin, cout);
        let mut out = vec![0.0; n * h * w * cout];
        let input = Activations {
            data: &x,
            batch: n,
            height: h,
            width: w,
            channels: cin,
            row_stride: wide,
            offset: at,
        };
        conv3x3(
            input,
            cout,
            &filter,
            &bias,
            Destination::new(&mut out, cout, 0),
        );
        for (i, g) in out.iter().enumerate() {
            let want = (want[i] + f64::from(bias[i % cout])).max(0.0);
            assert!((f64::from(*g) - want).abs() < 1e-3, "{i}: {g} vs {want}");
        }
    }

    /// Not a check: prints Winograd's error on each of GoogLeNet's 3×3 layers against a
    /// float64 direct convolution, with Kaiming-normal-like weights and ReLU-like inputs.
    /// `cargo test -p glimpse-model --release winograd_error -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check (minutes in a debug build)"]
    fn winograd_error_per_googlenet_layer() {
        // (name, side, cin, cout)
        let layers = [
            ("conv3", 56, 64, 192),
            ("3a.b2", 28, 96, 128),
            ("3a.b3", 28, 16, 32),
            ("3b.b2", 28, 128, 192),
            ("3b.b3", 28, 32, 96),
            ("4a.b2", 14, 96, 208),
            ("4a.b3", 14, 16, 48),
            ("4b.b2", 14, 112, 224),
            ("4b.b3", 14, 24, 64),
            ("4c.b2", 14, 128, 256),
            ("4c.b3", 14, 24, 64),
            ("4d.b2", 14, 144, 288),
            ("4d.b3", 14, 32, 64),
            ("4e.b2", 14, 160, 320),
            ("4e.b3", 14, 32, 128),
            ("5a.b2", 7, 160, 320),
            ("5a.b3", 7, 32, 128),
            ("5b.b2", 7, 192, 384),
            ("5b.b3", 7, 48, 128),
        ];
        println!("| layer | map | cin→cout | max abs error / max abs output | max abs error |");
        println!("|---|---|---|---:|---:|");
        for (name, side, cin, cout) in layers {
            // Uniform in [0, 1) inputs (post-ReLU-like); weights uniform with Kaiming's variance.
            let x: Vec<f32> = values(side * side * cin, 7)
                .iter()
                .map(|v| (v + 1.0) / 2.0)
                .collect();
            let std = (2.0 / (cin * 9) as f32).sqrt() * 3f32.sqrt();
            let oihw: Vec<f32> = values(cout * cin * 9, 8).iter().map(|v| v * std).collect();
            let bias = vec![0.0; cout];
            let want = direct(&x, (1, side, side, cin), &oihw);
            // With zero bias and without ReLU's clipping: compare the pre-activation values
            // where both are positive, i.e. where ReLU passes them.
            let got = run(&x, (1, side, side, cin), &oihw, &bias, 2, 0);
            let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let err = got
                .iter()
                .zip(&want)
                .map(|(g, w)| (f64::from(*g) - w.max(0.0)).abs())
                .fold(0.0f64, f64::max);
            println!(
                "| {name} | {side}×{side} | {cin}→{cout} | {:.2e} | {err:.2e} |",
                err / scale
            );
        }
    }
}
