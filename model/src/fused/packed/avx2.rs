//! The AVX2+FMA micro-kernel: a 6×16 tile of `c` in twelve 256-bit accumulators. Per step of
//! `k` it loads one panel row (two registers) and broadcasts six values of `a`: twelve FMAs
//! for eight loads, which keeps both FMA pipes of a core fed from L1/L2.

use std::arch::x86_64::*;

use super::{PANEL, Start, Tile};

/// Rows of the register tile.
pub(super) const MR: usize = 6;

/// Whether this CPU runs the kernel.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// # Safety
/// The CPU must have AVX2 and FMA; see [`super::Kernel::tile`] for the pointers.
pub(super) unsafe fn tile(t: &Tile) {
    // SAFETY: the caller's contract, passed on; one monomorphized body per row count so
    // the accumulators stay in registers.
    unsafe { by_rows!(t, rows, [1, 2, 3, 4, 5, 6]) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn rows<const M: usize>(t: &Tile) {
    // SAFETY: (whole body) the caller guarantees AVX2+FMA and that `a` has `M` rows of `k`
    // floats, `panel` `k × PANEL` floats, `c` `M` rows of `cols` floats and `bias` `cols`
    // floats when read. Full-width loads and stores only touch `PANEL` floats of the panel;
    // a partial tile goes through a stack buffer.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; M];
        if t.start == Start::Bias {
            let mut bias = [0.0f32; PANEL];
            std::ptr::copy_nonoverlapping(t.bias, bias.as_mut_ptr(), t.cols);
            let b0 = _mm256_loadu_ps(bias.as_ptr());
            let b1 = _mm256_loadu_ps(bias.as_ptr().add(8));
            for row in acc.iter_mut() {
                *row = [b0, b1];
            }
        }
        let mut a = [std::ptr::null::<f32>(); M];
        for (i, p) in a.iter_mut().enumerate() {
            *p = t.a.add(i * t.a_stride);
        }
        let mut b = t.panel;
        for kk in 0..t.k {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(8));
            for i in 0..M {
                let x = _mm256_broadcast_ss(&*a[i].add(kk));
                acc[i][0] = _mm256_fmadd_ps(x, b0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(x, b1, acc[i][1]);
            }
            b = b.add(PANEL);
        }
        if t.relu {
            let zero = _mm256_setzero_ps();
            for row in acc.iter_mut() {
                row[0] = _mm256_max_ps(row[0], zero);
                row[1] = _mm256_max_ps(row[1], zero);
            }
        }
        for (i, row) in acc.iter().enumerate() {
            let c = t.c.add(i * t.c_stride);
            if t.cols == PANEL {
                _mm256_storeu_ps(c, row[0]);
                _mm256_storeu_ps(c.add(8), row[1]);
            } else {
                let mut line = [0.0f32; PANEL];
                _mm256_storeu_ps(line.as_mut_ptr(), row[0]);
                _mm256_storeu_ps(line.as_mut_ptr().add(8), row[1]);
                std::ptr::copy_nonoverlapping(line.as_ptr(), c, t.cols);
            }
        }
    }
}

/// `iterations` rounds of twelve independent 8-wide FMA chains (enough to cover the FMA
/// latency on both pipes): returns the FLOPs done and a value to keep.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fma_chains(iterations: usize) -> (f64, f32) {
    let x = _mm256_set1_ps(0.999_999);
    let y = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for a in acc {
        sum = _mm256_add_ps(sum, a);
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds eight floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    ((iterations * 12 * 8 * 2) as f64, lanes.iter().sum())
}
