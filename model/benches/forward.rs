//! `cargo bench -p glimpse-model`: GoogLeNet forward at batch 1 and 8 on each backend, and
//! decode + preprocessing of a 1200×675 JPEG. Random weights: speed does not depend on the
//! values. Sample counts are small on purpose (shared 2-core machine); compare with
//! scripts/bench_reference.py run right after (see BENCHMARKS.md).

use std::hint::black_box;
use std::io::Cursor;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use glimpse_model::{Backend, Classifier, DecodeLimits, ImageTensor, WeightsSource, prepare};
use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

/// A deterministic photo-sized JPEG with gradients and texture (so the codec has work).
fn test_jpeg() -> Vec<u8> {
    let img = RgbImage::from_fn(1200, 675, |x, y| {
        let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) % 32;
        Rgb([
            ((x * 255 / 1200) as u8).wrapping_add(n as u8),
            (y * 255 / 675) as u8,
            (((x + y) / 3) % 256) as u8,
        ])
    });
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut out, ImageFormat::Jpeg)
        .expect("encode benchmark JPEG");
    out.into_inner()
}

fn benches(c: &mut Criterion) {
    let jpeg = test_jpeg();
    let limits = DecodeLimits::default();
    let tensor = prepare(&jpeg, &limits).expect("prepare benchmark JPEG");

    let mut group = c.benchmark_group("preprocess");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(3));
    group.bench_function("decode_jpeg_1200x675", |b| {
        b.iter(|| glimpse_model::decode(black_box(&jpeg), &limits).expect("decode"))
    });
    group.bench_function("decode_and_preprocess_jpeg_1200x675", |b| {
        b.iter(|| prepare(black_box(&jpeg), &limits).expect("prepare"))
    });
    group.finish();

    let backends: Vec<Backend> = match std::env::var("GLIMPSE_BENCH_BACKENDS") {
        Ok(list) => list.split(',').filter_map(|b| b.parse().ok()).collect(),
        Err(_) => Backend::ALL.to_vec(),
    };
    for backend in backends {
        let classifier =
            Classifier::load(&WeightsSource::Random { seed: 1 }, backend).expect("random weights");
        let mut group = c.benchmark_group(format!("forward_{backend}"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(8));
        for batch in [1usize, 8] {
            let images: Vec<ImageTensor> = vec![tensor.clone(); batch];
            // Warm up allocators and thread pools outside the measurement.
            classifier.logits(&images).expect("warm-up forward");
            group.throughput(Throughput::Elements(batch as u64));
            group.bench_function(format!("batch_{batch}"), |b| {
                b.iter(|| {
                    classifier
                        .classify_batch(black_box(&images), 5)
                        .expect("forward")
                })
            });
        }
        group.finish();
        if backend == Backend::Flex {
            layer_table(&classifier, &tensor);
        }
    }
}

/// The fused path's GFLOP/s per layer kind against the cores' FMA peak, printed after its
/// criterion timings (a few extra passes with the per-operator accounting on).
fn layer_table(classifier: &Classifier, tensor: &ImageTensor) {
    use glimpse_model::kernels;
    let threads = rayon::current_num_threads();
    let peak = kernels::fma_peak_gflops(threads, Duration::from_secs(1));
    println!(
        "\nfused path, micro-kernel {}, {threads} threads: FMA peak {peak:.1} GFLOP/s",
        kernels::micro_kernel()
    );
    for batch in [1usize, 8] {
        let images: Vec<ImageTensor> = vec![tensor.clone(); batch];
        let passes = 5;
        kernels::profile_layers(true);
        kernels::take();
        let start = std::time::Instant::now();
        for _ in 0..passes {
            classifier.logits(&images).expect("forward");
        }
        let total = start.elapsed().as_secs_f64() * 1e3 / passes as f64;
        kernels::profile_layers(false);
        let totals = kernels::take();
        println!("| batch {batch} | ms/pass | share of pass | GFLOP/s | share of peak |");
        println!("|---|---:|---:|---:|---:|");
        for (kind, t) in kernels::LayerKind::ALL.iter().zip(totals) {
            let ms = t.nanos as f64 / 1e6 / passes as f64;
            let gflops = 2.0 * t.macs as f64 / t.nanos.max(1) as f64;
            let (gflops, share) = if t.macs == 0 {
                ("—".to_string(), "—".to_string())
            } else {
                (
                    format!("{gflops:.1}"),
                    format!("{:.0}%", 100.0 * gflops / peak),
                )
            };
            println!(
                "| {} | {ms:.2} | {:.0}% | {gflops} | {share} |",
                kind.name(),
                100.0 * ms / total
            );
        }
        println!("| whole pass | {total:.2} | 100% | | |");
    }
}

criterion_group!(forward, benches);
criterion_main!(forward);
