//! A GEMM on weights packed once, at load, into column panels for a register-blocked
//! micro-kernel (the layout MLAS and BLIS use for their right-hand side).
//!
//! `c[m×n] = a[m×k] × b[k×n]`, where `b` is a weight: it is packed into panels of
//! [`PANEL`] columns, each panel `k` rows of [`PANEL`] contiguous floats (the last panel
//! zero-padded), so the micro-kernel streams one panel linearly while it keeps an
//! `MR × PANEL` tile of `c` in registers. `a` (activations or im2col patches) is read in
//! place, row by row with any row stride: each of its values is broadcast once per panel.
//!
//! The micro-kernel is picked once per process ([`Kernel::get`]): AVX-512 or AVX2+FMA on
//! x86-64 by run-time detection, NEON on AArch64, and a portable one (plain Rust the
//! compiler vectorizes for the baseline target) elsewhere. `GLIMPSE_KERNEL` can ask for
//! any of them by name (`avx512`, `avx2`, `neon`, `portable`) that the CPU runs. They all
//! read the same packed layout, so packing never depends on the CPU.

/// `$body::<M>($tile)` for `M = $tile.rows`: one monomorphized body per row count, so a
/// kernel's accumulators stay in registers whatever the tile's height.
macro_rules! by_rows {
    ($tile:expr, $body:ident, [$($m:literal),+]) => {
        match $tile.rows {
            $($m => $body::<$m>($tile),)+
            rows => unreachable!("{rows} rows: more than the register tile"),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
mod portable;

use std::sync::OnceLock;

/// Columns per panel: one AVX-512 register of f32, two AVX2 ones, four NEON ones.
pub(crate) const PANEL: usize = 16;

/// The environment variable that can ask for a micro-kernel by [`Kernel::name`]: one the
/// CPU cannot run, or an unknown name, is ignored with a warning and the best one is used.
pub(crate) const KERNEL_VAR: &str = "GLIMPSE_KERNEL";

/// Packs a row-major `[k, n]` matrix into `n.div_ceil(PANEL)` panels of `k × PANEL`.
pub(crate) fn pack_panels(b: &[f32], k: usize, n: usize) -> Vec<f32> {
    assert_eq!(b.len(), k * n, "matrix size");
    let panels = n.div_ceil(PANEL);
    let mut packed = vec![0.0; panels * k * PANEL];
    for (p, panel) in packed.chunks_exact_mut(k * PANEL).enumerate() {
        let c0 = p * PANEL;
        let width = PANEL.min(n - c0);
        for (row, line) in panel.chunks_exact_mut(PANEL).enumerate() {
            line[..width].copy_from_slice(&b[row * n + c0..row * n + c0 + width]);
        }
    }
    packed
}

/// Length of a packed `[k, n]` matrix.
pub(crate) const fn packed_len(k: usize, n: usize) -> usize {
    n.div_ceil(PANEL) * k * PANEL
}

/// How a tile of `c` starts before the products are added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Start {
    /// From the bias (one value per column).
    Bias,
    /// From zero.
    Zero,
}

/// One micro-kernel call: `c[rows×cols] = start + a[rows×k] × panel[k×cols]`, then ReLU if
/// asked. `rows ≤ mr()` and `cols ≤ PANEL`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tile {
    pub a: *const f32,
    pub a_stride: usize,
    pub panel: *const f32,
    pub k: usize,
    pub c: *mut f32,
    pub c_stride: usize,
    pub rows: usize,
    pub cols: usize,
    /// `cols` values, read only with [`Start::Bias`].
    pub bias: *const f32,
    pub start: Start,
    pub relu: bool,
}

/// A micro-kernel implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// 12×16 tile in twelve 512-bit registers (x86-64 with AVX-512F, AVX2 and FMA).
    Avx512,
    /// 6×16 tile in twelve 256-bit registers (x86-64 with AVX2 and FMA).
    Avx2Fma,
    /// 6×16 tile in twenty-four 128-bit registers (AArch64).
    Neon,
    /// 4×16 tile in plain Rust: any CPU.
    Portable,
}

impl Kernel {
    /// Every kernel, best first.
    pub(crate) const ALL: [Kernel; 4] = [
        Kernel::Avx512,
        Kernel::Avx2Fma,
        Kernel::Neon,
        Kernel::Portable,
    ];

    /// The process's kernel, chosen on first use: the one `GLIMPSE_KERNEL` names if the
    /// CPU runs it, else the best one it runs.
    pub(crate) fn get() -> Kernel {
        static KERNEL: OnceLock<Kernel> = OnceLock::new();
        *KERNEL.get_or_init(|| {
            let Ok(name) = std::env::var(KERNEL_VAR) else {
                return Kernel::detect();
            };
            match Kernel::ALL.into_iter().find(|k| k.name() == name) {
                Some(kernel) if kernel.available() => kernel,
                found => {
                    let best = Kernel::detect();
                    tracing::warn!(
                        "{KERNEL_VAR}={name}: {}; using {}",
                        if found.is_some() {
                            "this CPU cannot run that micro-kernel"
                        } else {
                            "no such micro-kernel (avx512, avx2, neon or portable)"
                        },
                        best.name()
                    );
                    best
                }
            }
        })
    }

    /// The best kernel this CPU runs.
    pub(crate) fn detect() -> Kernel {
        Kernel::ALL
            .into_iter()
            .find(|k| k.available())
            .unwrap_or(Kernel::Portable)
    }

    /// Every kernel this CPU runs, best first.
    pub(crate) fn available_here() -> impl Iterator<Item = Kernel> {
        Kernel::ALL.into_iter().filter(|k| k.available())
    }

    /// Whether this CPU runs the kernel.
    pub(crate) fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::available(),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => avx2::available(),
            // NEON is part of the AArch64 baseline.
            Kernel::Neon => cfg!(target_arch = "aarch64"),
            Kernel::Portable => true,
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 | Kernel::Avx2Fma => false,
        }
    }

    /// The kernel's name, as `GLIMPSE_KERNEL` takes it.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2Fma => "avx2",
            Kernel::Neon => "neon",
            Kernel::Portable => "portable",
        }
    }

    /// Rows of the register tile.
    pub(crate) const fn mr(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => avx512::MR,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => avx2::MR,
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => neon::MR,
            _ => portable::MR,
        }
    }

    /// Runs one tile.
    ///
    /// # Safety
    /// Every pointer in `tile` must be valid for what it describes: `a` for `rows` rows of
    /// `k` floats `a_stride` apart, `panel` for `k × PANEL` floats, `c` for `rows` rows of
    /// `cols` floats `c_stride` apart (not aliasing `a` or `panel`), `bias` for `cols`
    /// floats when `start` is [`Start::Bias`]; `rows ≤ self.mr()`, `cols ≤ PANEL`; and the
    /// CPU must run the kernel ([`Kernel::available`]), which [`Kernel::get`] ensures.
    pub(crate) unsafe fn tile(self, tile: &Tile) {
        debug_assert!(self.available(), "{self:?} on a CPU without it");
        match self {
            // SAFETY: the caller's contract (the CPU has AVX-512F, AVX2 and FMA; the
            // pointers are valid).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { avx512::tile(tile) },
            // SAFETY: the caller's contract (the CPU has AVX2 and FMA; the pointers).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => unsafe { avx2::tile(tile) },
            // SAFETY: the caller's contract (the pointers; NEON is baseline on AArch64).
            #[cfg(target_arch = "aarch64")]
            Kernel::Neon => unsafe { neon::tile(tile) },
            // SAFETY: the caller's contract.
            Kernel::Portable => unsafe { portable::tile(tile) },
            #[allow(unreachable_patterns)]
            _ => unreachable!("{self:?} is never available on this architecture"),
        }
    }
}

/// See [`crate::kernels::fma_peak_gflops`].
pub(crate) fn fma_peak_gflops(threads: usize, duration: std::time::Duration) -> f64 {
    let kernel = Kernel::get();
    let flops = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || {
                    let start = std::time::Instant::now();
                    let mut flops = 0.0f64;
                    let mut sink = 0.0f32;
                    while start.elapsed() < duration {
                        let (f, s) = match kernel {
                            // SAFETY: `Avx512` is only picked when the CPU has AVX-512F.
                            #[cfg(target_arch = "x86_64")]
                            Kernel::Avx512 => unsafe { avx512::fma_chains(1 << 20) },
                            // SAFETY: `Avx2Fma` is only picked when the CPU has AVX2 and FMA.
                            #[cfg(target_arch = "x86_64")]
                            Kernel::Avx2Fma => unsafe { avx2::fma_chains(1 << 20) },
                            #[cfg(target_arch = "aarch64")]
                            Kernel::Neon => neon::fma_chains(1 << 20),
                            _ => portable::fma_chains(1 << 18),
                        };
                        flops += f;
                        sink += s;
                    }
                    std::hint::black_box(sink);
                    flops / start.elapsed().as_secs_f64()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("peak worker"))
            .sum::<f64>()
    });
    flops / 1e9
}

/// `c = start + a × b` (then ReLU if asked) over `m` rows and the packed columns
/// `cols` (`cols.start` a multiple of [`PANEL`]), `a` read with row stride `a_stride`,
/// `c` written with row stride `c_stride`, `bias` indexed by absolute column.
///
/// # Safety
/// `a` must hold `m` rows of `k` floats `a_stride` apart; `c` must be valid for writes of
/// `m` rows at `c_stride` covering columns `cols` (relative to `c`), aliasing neither `a`
/// nor `packed`; `packed` must be a packed `[k, n]` matrix with `cols.end ≤ n`, and `bias`
/// at least `cols.end` long when `start` is [`Start::Bias`].
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    kernel: Kernel,
    (a, a_stride): (*const f32, usize),
    m: usize,
    k: usize,
    packed: &[f32],
    cols: std::ops::Range<usize>,
    (c, c_stride): (*mut f32, usize),
    bias: &[f32],
    (start, relu): (Start, bool),
) {
    debug_assert_eq!(cols.start % PANEL, 0, "columns start on a panel");
    let mr = kernel.mr();
    let mut c0 = cols.start;
    while c0 < cols.end {
        let width = PANEL.min(cols.end - c0);
        let panel = &packed[(c0 / PANEL) * k * PANEL..][..k * PANEL];
        let mut r0 = 0;
        while r0 < m {
            let rows = mr.min(m - r0);
            // SAFETY: rows r0..r0+rows and columns c0..c0+width lie inside the caller's
            // ranges; the pointer offsets stay inside the buffers the contract describes.
            unsafe {
                kernel.tile(&Tile {
                    a: a.add(r0 * a_stride),
                    a_stride,
                    panel: panel.as_ptr(),
                    k,
                    c: c.add(r0 * c_stride + c0),
                    c_stride,
                    rows,
                    cols: width,
                    bias: if start == Start::Bias {
                        bias[c0..c0 + width].as_ptr()
                    } else {
                        std::ptr::null()
                    },
                    start,
                    relu,
                });
            }
            r0 += rows;
        }
        c0 += width;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (v % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// Every kernel this CPU runs (the portable one everywhere).
    fn kernels() -> Vec<Kernel> {
        Kernel::available_here().collect()
    }

    /// Every kernel against direct loops, for sizes around the register tile.
    #[test]
    fn matches_direct_loops_on_odd_shapes() {
        for kernel in kernels() {
            for (m, k, n) in [
                (1, 1, 1),
                (5, 3, 17),
                (6, 7, 16),
                (13, 33, 40),
                (7, 147, 64),
                (9, 600, 21),
            ] {
                let a_stride = k + 3;
                let a = values(m * a_stride, 1);
                let b = values(k * n, 2);
                let bias = values(n, 3);
                let packed = pack_panels(&b, k, n);
                assert_eq!(packed.len(), packed_len(k, n));
                for (start, relu) in [(Start::Bias, true), (Start::Zero, false)] {
                    let c_stride = n + 2;
                    let mut c = vec![9.0; m * c_stride];
                    // SAFETY: the buffers are sized as the contract asks.
                    unsafe {
                        gemm(
                            kernel,
                            (a.as_ptr(), a_stride),
                            m,
                            k,
                            &packed,
                            0..n,
                            (c.as_mut_ptr(), c_stride),
                            &bias,
                            (start, relu),
                        );
                    }
                    for i in 0..m {
                        for j in 0..c_stride {
                            let got = c[i * c_stride + j];
                            if j >= n {
                                assert_eq!(got, 9.0, "{kernel:?} wrote past the columns");
                                continue;
                            }
                            let mut want = if start == Start::Bias { bias[j] } else { 0.0 };
                            for p in 0..k {
                                want += a[i * a_stride + p] * b[p * n + j];
                            }
                            if relu {
                                want = want.max(0.0);
                            }
                            assert!(
                                (got - want).abs() < 1e-4,
                                "{kernel:?} m={m} k={k} n={n} [{i},{j}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_column_range_writes_only_its_columns() {
        for kernel in kernels() {
            let (m, k, n) = (9, 5, 48);
            let a = values(m * k, 4);
            let b = values(k * n, 5);
            let packed = pack_panels(&b, k, n);
            let mut c = vec![0.0; m * n];
            // SAFETY: the buffers are sized as the contract asks.
            unsafe {
                gemm(
                    kernel,
                    (a.as_ptr(), k),
                    m,
                    k,
                    &packed,
                    16..40,
                    (c.as_mut_ptr(), n),
                    &[],
                    (Start::Zero, false),
                );
            }
            for i in 0..m {
                for j in 0..n {
                    let got = c[i * n + j];
                    if !(16..40).contains(&j) {
                        assert_eq!(got, 0.0);
                    } else {
                        let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
                        assert!((got - want).abs() < 1e-4);
                    }
                }
            }
        }
    }
}
