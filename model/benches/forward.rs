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
    }
}

criterion_group!(forward, benches);
criterion_main!(forward);
