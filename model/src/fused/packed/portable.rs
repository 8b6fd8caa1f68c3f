//! The portable micro-kernel: a 4×16 tile in plain Rust, which the compiler vectorizes for
//! whatever the baseline target offers. It is the reference for the ISA kernels and what
//! runs where none applies.

use super::{PANEL, Start, Tile};

/// Rows of the register tile.
pub(super) const MR: usize = 4;

/// # Safety
/// See [`super::Kernel::tile`].
pub(super) unsafe fn tile(t: &Tile) {
    let mut acc = [[0.0f32; PANEL]; MR];
    if t.start == Start::Bias {
        // SAFETY: `bias` holds `cols` floats (caller's contract).
        let bias = unsafe { std::slice::from_raw_parts(t.bias, t.cols) };
        for row in acc.iter_mut().take(t.rows) {
            row[..t.cols].copy_from_slice(bias);
        }
    }
    // SAFETY: `panel` holds `k × PANEL` floats (caller's contract).
    let panel = unsafe { std::slice::from_raw_parts(t.panel, t.k * PANEL) };
    for (i, row) in acc.iter_mut().enumerate().take(t.rows) {
        // SAFETY: row `i < rows` of `a` holds `k` floats (caller's contract).
        let a = unsafe { std::slice::from_raw_parts(t.a.add(i * t.a_stride), t.k) };
        for (av, line) in a.iter().zip(panel.chunks_exact(PANEL)) {
            for (c, b) in row.iter_mut().zip(line) {
                *c += av * b;
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(t.rows) {
        // SAFETY: row `i < rows` of `c` holds `cols` writable floats (caller's contract).
        let c = unsafe { std::slice::from_raw_parts_mut(t.c.add(i * t.c_stride), t.cols) };
        for (dst, v) in c.iter_mut().zip(row) {
            *dst = if t.relu { v.max(0.0) } else { *v };
        }
    }
}

/// `iterations` rounds of independent multiply-add chains over a 4×16 tile, as the kernel
/// does them: returns the FLOPs done and a value to keep.
pub(super) fn fma_chains(iterations: usize) -> (f64, f32) {
    let mut acc = [[1.0f32; PANEL]; MR];
    for _ in 0..iterations {
        for row in acc.iter_mut() {
            for v in row.iter_mut() {
                *v = *v * 0.999_999 + 1e-7;
            }
        }
    }
    (
        (iterations * MR * PANEL * 2) as f64,
        acc.iter().flatten().sum(),
    )
}
