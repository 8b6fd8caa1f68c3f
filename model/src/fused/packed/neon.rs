//! The NEON micro-kernel (AArch64): a 6×16 tile of `c` in twenty-four 128-bit accumulators.
//! Per step of `k` it loads one panel row (four registers) and broadcasts six values of `a`
//! (`ld1r`): twenty-four FMAs for ten loads, within the 32 vector registers AArch64 has.
//! NEON is part of the AArch64 baseline, so the kernel needs no run-time detection.

use std::arch::aarch64::*;

use super::{PANEL, Start, Tile};

/// Rows of the register tile.
pub(super) const MR: usize = 6;

/// Registers per panel row.
const QUADS: usize = PANEL / 4;

/// # Safety
/// See [`super::Kernel::tile`] for the pointers.
pub(super) unsafe fn tile(t: &Tile) {
    // SAFETY: the caller's contract, passed on; one monomorphized body per row count so
    // the accumulators stay in registers.
    unsafe { by_rows!(t, rows, [1, 2, 3, 4, 5, 6]) }
}

#[target_feature(enable = "neon")]
unsafe fn rows<const M: usize>(t: &Tile) {
    // SAFETY: (whole body) the caller guarantees that `a` has `M` rows of `k` floats,
    // `panel` `k × PANEL` floats, `c` `M` rows of `cols` floats and `bias` `cols` floats
    // when read. Full-width loads only touch the `PANEL` floats of a panel row; a partial
    // tile's bias and stores go through stack buffers.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); QUADS]; M];
        if t.start == Start::Bias {
            let mut bias = [0.0f32; PANEL];
            std::ptr::copy_nonoverlapping(t.bias, bias.as_mut_ptr(), t.cols);
            let b: [float32x4_t; QUADS] =
                std::array::from_fn(|q| vld1q_f32(bias.as_ptr().add(4 * q)));
            for row in acc.iter_mut() {
                *row = b;
            }
        }
        let mut a = [std::ptr::null::<f32>(); M];
        for (i, p) in a.iter_mut().enumerate() {
            *p = t.a.add(i * t.a_stride);
        }
        let mut b = t.panel;
        for kk in 0..t.k {
            let line: [float32x4_t; QUADS] = std::array::from_fn(|q| vld1q_f32(b.add(4 * q)));
            for i in 0..M {
                let x = vld1q_dup_f32(a[i].add(kk));
                for q in 0..QUADS {
                    acc[i][q] = vfmaq_f32(acc[i][q], line[q], x);
                }
            }
            b = b.add(PANEL);
        }
        if t.relu {
            let zero = vdupq_n_f32(0.0);
            for row in acc.iter_mut() {
                for v in row.iter_mut() {
                    *v = vmaxq_f32(*v, zero);
                }
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let c = t.c.add(i * t.c_stride);
            if t.cols == PANEL {
                for (q, v) in row.iter().enumerate() {
                    vst1q_f32(c.add(4 * q), *v);
                }
            } else {
                let mut line = [0.0f32; PANEL];
                for (q, v) in row.iter().enumerate() {
                    vst1q_f32(line.as_mut_ptr().add(4 * q), *v);
                }
                std::ptr::copy_nonoverlapping(line.as_ptr(), c, t.cols);
            }
        }
    }
}

/// `iterations` rounds of twenty-four independent 4-wide FMA chains (enough to cover the
/// FMA latency on every pipe): returns the FLOPs done and a value to keep.
pub(super) fn fma_chains(iterations: usize) -> (f64, f32) {
    // SAFETY: NEON is part of the AArch64 baseline; no memory is touched but locals.
    unsafe {
        let x = vdupq_n_f32(0.999_999);
        let y = vdupq_n_f32(1e-7);
        let mut acc = [vdupq_n_f32(1.0); 24];
        for _ in 0..iterations {
            for a in acc.iter_mut() {
                *a = vfmaq_f32(y, *a, x);
            }
        }
        let mut sum = vdupq_n_f32(0.0);
        for a in acc {
            sum = vaddq_f32(sum, a);
        }
        ((iterations * 24 * 4 * 2) as f64, vaddvq_f32(sum))
    }
}
