//! Time and work per layer kind, for the forward benchmark's GFLOP/s table. Off unless asked
//! for: then each operator costs one relaxed atomic load more.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

/// What a layer is, for the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// The 7×7/2 stem convolution.
    Stem,
    /// 1×1 convolutions.
    Pointwise,
    /// 3×3 stride-1 convolutions (GEMM or Winograd; work counted as direct convolution).
    ThreeByThree,
    /// Max-pooling (no multiply-adds).
    Pool,
}

impl LayerKind {
    /// Every kind, in table order.
    pub const ALL: [LayerKind; 4] = [
        LayerKind::Stem,
        LayerKind::Pointwise,
        LayerKind::ThreeByThree,
        LayerKind::Pool,
    ];

    /// A short name.
    pub fn name(self) -> &'static str {
        match self {
            LayerKind::Stem => "7×7/2 stem",
            LayerKind::Pointwise => "1×1",
            LayerKind::ThreeByThree => "3×3/1",
            LayerKind::Pool => "max-pool",
        }
    }
}

/// Wall time and multiply-adds spent in one kind of layer since the last [`take`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LayerTotals {
    /// Nanoseconds of wall time (all threads of the operator together count once).
    pub nanos: u64,
    /// Multiply-adds, as a direct convolution counts them.
    pub macs: u64,
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static MACS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

/// Turns the accounting on or off for the whole process.
pub fn set_enabled(enabled: bool) {
    ENABLED.store(enabled, Ordering::Relaxed);
}

/// The totals per kind (in [`LayerKind::ALL`] order) since the last call, reset to zero.
pub fn take() -> [LayerTotals; 4] {
    std::array::from_fn(|i| LayerTotals {
        nanos: NANOS[i].swap(0, Ordering::Relaxed),
        macs: MACS[i].swap(0, Ordering::Relaxed),
    })
}

/// Runs `f`, adding its time and `macs` to `kind` when accounting is on.
pub(crate) fn timed<R>(kind: LayerKind, macs: u64, f: impl FnOnce() -> R) -> R {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let result = f();
    let i = kind as usize;
    NANOS[i].fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    MACS[i].fetch_add(macs, Ordering::Relaxed);
    result
}
