//! The AVX-512 micro-kernel: a 12×16 tile of `c` in twelve 512-bit accumulators, one per
//! row (a panel row is exactly one register). Per step of `k` it loads one panel row and
//! broadcasts twelve values of `a`: twelve FMAs for thirteen loads, which the two or three
//! load ports of an AVX-512 core (Sapphire Rapids, Zen 4) sustain beside its FMA pipes.
//! A partial tile is loaded and stored under a lane mask, so it needs no stack buffer.

use std::arch::x86_64::*;

use super::{PANEL, Start, Tile};

/// Rows of the register tile.
pub(super) const MR: usize = 12;

/// Whether this CPU runs the kernel. AVX2 and FMA are asked for too, because the rest of
/// the fused path (the Winograd transforms) runs its AVX2 build beside this kernel.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
}

/// # Safety
/// The CPU must have AVX-512F; see [`super::Kernel::tile`] for the pointers.
pub(super) unsafe fn tile(t: &Tile) {
    // SAFETY: the caller's contract, passed on; one monomorphized body per row count so
    // the accumulators stay in registers.
    unsafe { by_rows!(t, rows, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]) }
}

#[target_feature(enable = "avx512f")]
unsafe fn rows<const M: usize>(t: &Tile) {
    debug_assert!(t.cols <= PANEL);
    // The columns of the tile: all 16 lanes of a full panel, the first `cols` of the last.
    let mask: __mmask16 = if t.cols >= PANEL {
        !0
    } else {
        (1u16 << t.cols) - 1
    };
    // SAFETY: (whole body) the caller guarantees AVX-512F and that `a` has `M` rows of `k`
    // floats, `panel` `k × PANEL` floats, `c` `M` rows of `cols` floats and `bias` `cols`
    // floats when read. Full-width loads only touch the `PANEL` floats of a panel row; the
    // bias and `c` are touched only under `mask`, whose lanes past `cols` are never
    // accessed (masked-off lanes of a masked load or store do not fault).
    unsafe {
        let start = if t.start == Start::Bias {
            _mm512_maskz_loadu_ps(mask, t.bias)
        } else {
            _mm512_setzero_ps()
        };
        let mut acc = [start; M];
        let mut a = [std::ptr::null::<f32>(); M];
        for (i, p) in a.iter_mut().enumerate() {
            *p = t.a.add(i * t.a_stride);
        }
        let mut b = t.panel;
        for kk in 0..t.k {
            let line = _mm512_loadu_ps(b);
            for i in 0..M {
                let x = _mm512_set1_ps(*a[i].add(kk));
                acc[i] = _mm512_fmadd_ps(x, line, acc[i]);
            }
            b = b.add(PANEL);
        }
        if t.relu {
            let zero = _mm512_setzero_ps();
            for v in acc.iter_mut() {
                *v = _mm512_max_ps(*v, zero);
            }
        }
        for (i, v) in acc.iter().enumerate() {
            _mm512_mask_storeu_ps(t.c.add(i * t.c_stride), mask, *v);
        }
    }
}

/// `iterations` rounds of twelve independent 16-wide FMA chains (enough to cover the FMA
/// latency on two pipes): returns the FLOPs done and a value to keep.
///
/// # Safety
/// The CPU must have AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn fma_chains(iterations: usize) -> (f64, f32) {
    let x = _mm512_set1_ps(0.999_999);
    let y = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..iterations {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for a in acc {
        sum = _mm512_add_ps(sum, a);
    }
    ((iterations * 12 * 16 * 2) as f64, _mm512_reduce_add_ps(sum))
}
