//! Glimpse's fused CPU operators for GoogLeNet, on channels-last activations in buffers the
//! caller owns. The network is loaded, folded and checked as a Burn model (Burn stays
//! unforked); at load its weights are packed once for these operators, and a forward pass
//! ([`crate::googlenet::fused`]) runs them on a plan of reused buffers instead of Burn
//! tensors, so that it allocates nothing:
//!
//! - [`conv`]: convolution + bias + ReLU in one pass, on weights packed for the
//!   micro-kernels of [`packed`], or as Winograd F(4×4, 3×3) ([`winograd`]);
//! - [`pool`]: max-pooling without leaving channels-last;
//! - [`inception`]: a whole Inception block, each branch writing into its slice of the
//!   output, the two 1×1 reductions merged into one GEMM.
//!
//! Why: burn-flex runs each convolution as NCHW→NHWC conversion, im2col, GEMM, a bias pass,
//! a ReLU op and a concat per block, each a full pass over memory into a fresh tensor.

pub(crate) mod conv;
pub(crate) mod inception;
pub(crate) mod packed;
pub(crate) mod pool;
pub(crate) mod profile;
pub(crate) mod winograd;

use std::cell::Cell;

use conv::ConvGeometry;

/// What every thread's kernel scratch must hold to run each layer of a network without
/// growing: the largest im2col tile and Winograd block any of its work items can need, on
/// any batch (the tiles' sizes are capped independently of the batch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ScratchNeed {
    /// im2col patches, floats.
    pub patches: usize,
    /// Winograd's transformed inputs, floats.
    pub inputs: usize,
    /// Winograd's products, floats.
    pub products: usize,
}

impl ScratchNeed {
    /// Widens the need to cover one more convolution.
    pub(crate) fn cover(&mut self, geometry: ConvGeometry, winograd: bool) {
        if winograd {
            let (inputs, products) = winograd::scratch(geometry.in_channels, geometry.out_channels);
            self.inputs = self.inputs.max(inputs);
            self.products = self.products.max(products);
        } else {
            self.patches = self.patches.max(conv::patch_scratch(geometry));
        }
    }

    fn covers(&self, other: &ScratchNeed) -> bool {
        self.patches >= other.patches
            && self.inputs >= other.inputs
            && self.products >= other.products
    }
}

thread_local! {
    /// What [`reserve_scratch`] has reserved on this thread.
    static RESERVED: Cell<ScratchNeed> = const {
        Cell::new(ScratchNeed { patches: 0, inputs: 0, products: 0 })
    };
}

/// What has been reserved on rayon's global pool (callers outside any pool run their
/// parallel work there).
static GLOBAL_RESERVED: parking_lot::Mutex<ScratchNeed> = parking_lot::const_mutex(ScratchNeed {
    patches: 0,
    inputs: 0,
    products: 0,
});

/// Reserves `need` in the scratch of every thread that may run this caller's work items:
/// the caller and each thread of its rayon pool (the global pool for a caller outside any).
/// Work items are spread over the threads by work stealing, so without this a thread could
/// meet its largest item for the first time in any later pass and allocate there. Once a
/// pool is reserved this only compares sizes: nothing allocates.
pub(crate) fn reserve_scratch(need: ScratchNeed) {
    if RESERVED.get().covers(&need) {
        return;
    }
    let reserve_here = || {
        let had = RESERVED.get();
        let need = ScratchNeed {
            patches: had.patches.max(need.patches),
            inputs: had.inputs.max(need.inputs),
            products: had.products.max(need.products),
        };
        conv::reserve_patches(need.patches);
        winograd::reserve(need.inputs, need.products);
        RESERVED.set(need);
    };
    if rayon::current_thread_index().is_some() {
        // Runs on every thread of the caller's pool, the caller included.
        rayon::broadcast(|_| reserve_here());
        return;
    }
    let mut global = GLOBAL_RESERVED.lock();
    if !global.covers(&need) {
        rayon::broadcast(|_| reserve_here());
        *global = need;
    }
    drop(global);
    reserve_here();
}

/// A convolution's folded PyTorch weight `[cout, cin, k, k]`, packed for the kernels: the
/// micro-kernel's panels, `[k·k·cin, cout rounded up to a panel]` row-major (`[36·cin, …]`:
/// the 36 transformed filters, with `winograd`, which needs a 3×3/1 convolution).
pub(crate) fn pack_conv(oihw: &[f32], geometry: ConvGeometry, winograd: bool) -> Vec<f32> {
    if winograd {
        assert_eq!(
            (geometry.kernel, geometry.stride),
            (3, 1),
            "Winograd is for 3×3/1"
        );
        winograd::pack_filter(oihw, geometry.in_channels, geometry.out_channels)
    } else {
        conv::pack_weight(oihw, geometry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work stealing decides which thread runs which work item, so a pass can hand a thread
    /// its largest tile long after the first pass: the reservation must reach every thread of
    /// the caller's pool up front, the caller included, and a smaller need must not shrink it.
    #[test]
    fn reserving_scratch_reaches_every_thread_of_the_callers_pool() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("pool");
        let need = ScratchNeed {
            patches: 1000,
            inputs: 2000,
            products: 3000,
        };
        pool.install(|| reserve_scratch(need));
        let smaller = ScratchNeed {
            patches: 10,
            inputs: 20,
            products: 30,
        };
        pool.install(|| reserve_scratch(smaller));
        let sizes = pool.broadcast(|_| (conv::patches_len(), winograd::scratch_len()));
        assert_eq!(sizes.len(), 3);
        for (patches, (inputs, products)) in sizes {
            assert!(patches >= 1000 && inputs >= 2000 && products >= 3000);
        }
    }

    /// The need covers the largest work item of each kind of layer, whatever the batch.
    #[test]
    fn the_need_covers_each_layer_kind() {
        let mut need = ScratchNeed::default();
        let g = |in_channels, out_channels, kernel, stride| ConvGeometry {
            in_channels,
            out_channels,
            kernel,
            stride,
            padding: kernel / 2,
        };
        need.cover(g(64, 64, 1, 1), false);
        assert_eq!(
            need,
            ScratchNeed::default(),
            "a 1×1 reads its input in place"
        );
        need.cover(g(3, 64, 7, 2), false);
        assert_eq!(need.patches, conv::patch_scratch(g(3, 64, 7, 2)));
        assert!(
            need.patches >= 147 * 16,
            "at least the smallest tile of 147-long patches"
        );
        need.cover(g(96, 128, 3, 1), true);
        assert_eq!((need.inputs, need.products), winograd::scratch(96, 128));
        assert!(need.inputs > 0 && need.products > 0);
    }
}
