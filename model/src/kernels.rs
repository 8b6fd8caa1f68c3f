//! What the fused path's kernels do on this machine: which micro-kernel runs, the cores'
//! FMA peak, and time and work per layer kind (for the forward benchmark's table).

pub use crate::fused::profile::{LayerKind, LayerTotals, set_enabled as profile_layers, take};

/// The micro-kernel this process runs: `avx512`, `avx2`, `neon` or `portable`
/// (`GLIMPSE_KERNEL` can ask for any of them that the CPU runs).
pub fn micro_kernel() -> &'static str {
    crate::fused::packed::Kernel::get().name()
}

/// The micro-kernels this CPU runs, best first (what `GLIMPSE_KERNEL` may name here).
pub fn micro_kernels_available() -> Vec<&'static str> {
    crate::fused::packed::Kernel::available_here()
        .map(|k| k.name())
        .collect()
}

/// The FMA peak of `threads` cores in GFLOP/s (an FMA counts as two), measured for about
/// `duration` with the current micro-kernel's instruction set: independent FMA chains on
/// registers, no memory traffic.
pub fn fma_peak_gflops(threads: usize, duration: std::time::Duration) -> f64 {
    crate::fused::packed::fma_peak_gflops(threads.max(1), duration)
}
