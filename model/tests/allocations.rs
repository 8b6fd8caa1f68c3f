//! A forward pass on the default (fused) backend allocates nothing in steady state: once a
//! lane has run a batch, every activation, the kernels' scratch and the logits live in
//! buffers it reuses. Counted with a global allocator that counts every allocation and
//! reallocation on the threads of the pool the passes run in, while they run. Other threads
//! are not counted: libtest's own thread allocates to report a test running over 60 s, as
//! this one does under qemu-user (`scripts/test-aarch64`).
//!
//! The passes run inside a 2-thread rayon pool, as a node's inference lane runs them: work
//! items are spread over both threads by work stealing, so the test also covers a thread
//! meeting a layer's largest work item for the first time in a later pass.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Cursor;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use glimpse_model::{Backend, Classifier, DecodeLimits, ImageTensor, WeightsSource, prepare};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

/// The system allocator, counting while `COUNTING` is set, on threads marked `COUNTED`.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Whether this thread is one of the pool's (const-initialized and without a destructor,
    /// so reading it from the allocator never allocates).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.load(Ordering::Relaxed) && COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
// atomics and a thread-local `Cell`, never the heap.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn image() -> ImageTensor {
    let img = RgbImage::from_fn(320, 240, |x, y| {
        Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
    });
    let mut jpeg = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut jpeg, ImageFormat::Jpeg)
        .expect("encode");
    prepare(jpeg.get_ref(), &DecodeLimits::default()).expect("prepare")
}

/// Allocations during `passes` forward passes of `images` into `logits`.
fn allocations(
    classifier: &Classifier,
    images: &[ImageTensor],
    logits: &mut [f32],
    passes: usize,
) -> usize {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..passes {
        classifier.logits_into(images, logits).expect("forward");
    }
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCATIONS.load(Ordering::SeqCst)
}

#[test]
fn the_fused_forward_pass_allocates_nothing_after_the_first() {
    let classifier =
        Classifier::load(&WeightsSource::Random { seed: 3 }, Backend::default()).expect("load");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .expect("pool");
    pool.broadcast(|_| COUNTED.set(true));
    let one = vec![image(); 1];
    let three = vec![image(); 3];
    pool.install(|| {
        let mut logits1 = vec![0.0; 1000];
        let mut logits3 = vec![0.0; 3000];
        // The first pass at each batch size grows the lane's plan: allowed to allocate.
        assert!(
            allocations(&classifier, &one, &mut logits1, 1) > 0,
            "the first pass sizes the plan"
        );
        let first = logits1.clone();
        assert_eq!(
            allocations(&classifier, &one, &mut logits1, 5),
            0,
            "batch 1 after the first"
        );
        assert_eq!(logits1, first, "a reused plan gives the same logits");
        allocations(&classifier, &three, &mut logits3, 1);
        assert_eq!(
            allocations(&classifier, &three, &mut logits3, 3),
            0,
            "batch 3 after the first"
        );
        // A smaller batch fits in the buffers a larger one grew.
        assert_eq!(
            allocations(&classifier, &one, &mut logits1, 3),
            0,
            "batch 1 after batch 3"
        );
        assert_eq!(logits1, first);
        for (i, row) in logits3.chunks(1000).enumerate() {
            let diff = row
                .iter()
                .zip(&first)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(
                diff < 1e-4,
                "image {i} of the batch differs from the lone image by {diff}"
            );
        }
    });
}
