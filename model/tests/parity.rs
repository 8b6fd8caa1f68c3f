//! Parity with torchvision, from fixtures made by scripts/make_fixtures.py (committed; CI
//! needs neither torch nor the internet). Every test here goes through the real `.pth`
//! loading path. Forward passes are few and small: these run on 2-core CI machines.

use std::path::{Path, PathBuf};

use burn::store::pytorch_reader::{DType, PytorchReader};
use glimpse_model::{
    Backend, Classifier, DecodeLimits, ImageTensor, LoadOptions, ModelError, WeightsSource,
    preprocess,
};

const IMAGES: [&str; 4] = [
    "landscape.jpg",
    "portrait-alpha.png",
    "small-gray.png",
    "wide-rotated.jpg",
];

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
}

fn fixture_weights() -> WeightsSource {
    WeightsSource::Path(fixtures().join("googlenet-fixture.pth"))
}

/// Reads a float or integer tensor from expected.pth as f64 values.
fn expected(reader: &PytorchReader, key: &str) -> (Vec<usize>, Vec<f64>) {
    let t = reader
        .get(key)
        .unwrap_or_else(|| panic!("expected.pth lacks {key}"));
    let bytes = t.read().expect("read expected tensor");
    let values = match t.dtype() {
        DType::F32 => bytes
            .chunks_exact(4)
            .map(|c| f64::from(f32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        DType::F16 => bytes
            .chunks_exact(2)
            .map(|c| f64::from(half::f16::from_bits(u16::from_ne_bytes([c[0], c[1]])).to_f32()))
            .collect(),
        DType::I64 => bytes
            .chunks_exact(8)
            .map(|c| i64::from_ne_bytes(c.try_into().expect("8 bytes")) as f64)
            .collect(),
        other => panic!("unexpected dtype {other:?} for {key}"),
    };
    (t.shape().to_vec(), values)
}

fn reader() -> PytorchReader {
    PytorchReader::new(fixtures().join("expected.pth")).expect("open expected.pth")
}

fn prepared_images() -> Vec<ImageTensor> {
    IMAGES
        .iter()
        .map(|name| {
            let bytes = std::fs::read(fixtures().join("images").join(name)).expect("read image");
            glimpse_model::prepare(&bytes, &DecodeLimits::default()).expect("prepare image")
        })
        .collect()
}

fn check_logits_and_top1(backend: Backend) {
    let classifier = Classifier::load(&fixture_weights(), backend).expect("load fixture .pth");
    assert!(classifier.identity().trained);
    assert_eq!(classifier.backend(), backend);
    if let Ok(asked) = std::env::var("GLIMPSE_KERNEL") {
        // A kernel asked for by name runs, rather than a quiet fallback.
        assert_eq!(glimpse_model::kernels::micro_kernel(), asked);
    }
    let reader = reader();

    // Two input tensors, one forward pass.
    let (shape, inputs) = expected(&reader, "inputs");
    assert_eq!(shape, [2, 3, 224, 224]);
    let tensors: Vec<ImageTensor> = inputs
        .chunks(ImageTensor::LEN)
        .map(|c| ImageTensor::from_chw(c.iter().map(|v| *v as f32).collect()).expect("tensor"))
        .collect();
    let logits = classifier.logits(&tensors).expect("forward");
    let (_, want) = expected(&reader, "logits");
    let got: Vec<f64> = logits.iter().flatten().map(|v| f64::from(*v)).collect();
    assert_eq!(got.len(), want.len());
    let max_diff = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max);
    let max_logit = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let kernel = match backend {
        Backend::Flex => format!(" (micro-kernel {})", glimpse_model::kernels::micro_kernel()),
        _ => String::new(),
    };
    eprintln!(
        "{backend}{kernel}: logits max abs diff {max_diff:.2e} (largest |logit| {max_logit:.1})"
    );
    assert!(max_logit > 5.0, "fixture logits should be non-trivial");
    assert!(max_diff <= 1e-3, "{backend}: logits differ by {max_diff}");

    // The images, preprocessed here, in one batch: same top-1 as torchvision.
    let answers = classifier
        .classify_batch(&prepared_images(), 5)
        .expect("classify");
    for (name, top) in IMAGES.iter().zip(&answers) {
        let (_, top5) = expected(&reader, &format!("image.{name}.top5"));
        assert_eq!(top.len(), 5);
        assert_eq!(
            top[0].index, top5[0] as usize,
            "{backend}: {name} top-1 differs from torchvision (ours {top:?}, torchvision {top5:?})"
        );
        assert!(top.windows(2).all(|w| w[0].probability >= w[1].probability));
    }
}

#[test]
fn logits_and_top1_match_torchvision_ndarray() {
    check_logits_and_top1(Backend::Ndarray);
}

#[test]
fn logits_and_top1_match_torchvision_flex() {
    check_logits_and_top1(Backend::Flex);
}

/// The fused path with every micro-kernel this CPU runs (the portable one everywhere; AVX2
/// and AVX-512 where the CPU has them, NEON on AArch64) and with Winograd everywhere and
/// nowhere: the test binary runs its own flex test again with `GLIMPSE_KERNEL` /
/// `GLIMPSE_WINOGRAD` set, since the kernel is chosen once per process.
#[test]
fn logits_and_top1_match_torchvision_flex_every_kernel_variant() {
    let kernels = glimpse_model::kernels::micro_kernels_available();
    assert!(kernels.contains(&"portable"), "{kernels:?}");
    let variants = kernels
        .into_iter()
        .map(|k| ("GLIMPSE_KERNEL", k))
        .chain([("GLIMPSE_WINOGRAD", "off"), ("GLIMPSE_WINOGRAD", "all")]);
    for (var, value) in variants {
        let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "logits_and_top1_match_torchvision_flex",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(var, value)
            .output()
            .expect("run the flex parity test again");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        eprintln!("{var}={value}: {}", stderr.trim());
        assert!(output.status.success(), "{var}={value}: {stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "{var}={value} ran no test: {stdout}"
        );
    }
}

#[test]
fn logits_and_top1_match_torchvision_flex_stock() {
    check_logits_and_top1(Backend::FlexStock);
}

/// One test above per backend: a backend added to `Backend::ALL` needs its own.
#[test]
fn every_backend_has_a_parity_test() {
    assert_eq!(
        Backend::ALL,
        [Backend::Flex, Backend::FlexStock, Backend::Ndarray]
    );
}

#[test]
fn preprocessing_matches_torchvision() {
    let reader = reader();
    for (name, ours) in IMAGES.iter().zip(prepared_images()) {
        let (shape, theirs) = expected(&reader, &format!("image.{name}.tensor"));
        assert_eq!(shape, [3, 224, 224]);
        let plane = 224 * 224;
        // Compare in pixel units ([0, 1] before normalization): the budget is 2/255.
        let mut sum = 0.0;
        let mut max: f64 = 0.0;
        for (i, (o, t)) in ours.as_slice().iter().zip(&theirs).enumerate() {
            let std = f64::from(preprocess::STD[i / plane]);
            let d = (f64::from(*o) - t).abs() * std;
            sum += d;
            max = max.max(d);
        }
        let mean = sum / theirs.len() as f64;
        eprintln!(
            "{name}: mean abs diff {:.3}/255, max {:.2}/255",
            mean * 255.0,
            max * 255.0
        );
        assert!(mean <= 2.0 / 255.0, "{name}: mean abs diff {mean}");
    }
}

#[test]
fn native_copy_gives_identical_logits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let native = dir.path().join("fixture.bpk");
    let from_pth = Classifier::load(&fixture_weights(), Backend::Flex).expect("load .pth");
    from_pth.save_native(&native).expect("save native");
    let from_native =
        Classifier::load(&WeightsSource::Path(native.clone()), Backend::Flex).expect("load .bpk");
    assert!(from_native.identity().trained);
    let image = vec![prepared_images().remove(0)];
    assert_eq!(
        from_pth.logits(&image).expect("forward"),
        from_native.logits(&image).expect("forward")
    );
}

#[test]
fn random_weights_are_seeded_and_marked_untrained() {
    let a = Classifier::load(&WeightsSource::Random { seed: 7 }, Backend::Flex).expect("random");
    let b = Classifier::load(&WeightsSource::Random { seed: 7 }, Backend::Flex).expect("random");
    let c = Classifier::load(&WeightsSource::Random { seed: 8 }, Backend::Flex).expect("random");
    assert!(!a.identity().trained);
    assert_eq!(a.identity().name, "random-seed-7");
    let image = vec![prepared_images().remove(1)];
    let (la, lb, lc) = (
        a.logits(&image).expect("forward"),
        b.logits(&image).expect("forward"),
        c.logits(&image).expect("forward"),
    );
    assert_eq!(la, lb);
    assert_ne!(la, lc);
    let top = a.classify_batch(&image, 5).expect("classify");
    assert_eq!(top[0].len(), 5);
    let spread = la[0].iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        spread > 0.1,
        "untrained logits should not vanish ({spread})"
    );
}

#[test]
fn auto_offline_with_empty_cache_names_both_ways_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A closed local port: the download fails at once, as it does offline.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let options = LoadOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        url: format!("http://127.0.0.1:{port}/googlenet-1378be20.pth"),
        download: true,
        progress: false,
    };
    let err = Classifier::load_with(&WeightsSource::Auto, Backend::Flex, &options)
        .expect_err("nothing cached and no network");
    assert!(
        matches!(err, ModelError::WeightsUnavailable { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("--weights PATH") && msg.contains("--weights random"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "one line: {msg}");
    // Nothing half-written is left behind.
    let left: Vec<_> = std::fs::read_dir(dir.path()).expect("read dir").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn exif_orientation_is_applied() {
    let bytes = std::fs::read(fixtures().join("images/wide-rotated.jpg")).expect("read");
    let img = glimpse_model::decode(&bytes, &DecodeLimits::default()).expect("decode");
    // Stored 900x260 with EXIF orientation 6 (rotate 90° clockwise to display).
    assert_eq!(img.dimensions(), (260, 900));
}

#[test]
fn auto_starts_from_the_native_copy_without_network() {
    let dir = tempfile::tempdir().expect("tempdir");
    let from_pth = Classifier::load(&fixture_weights(), Backend::Flex).expect("load .pth");
    // What a first `auto` start leaves in the cache: the folded network in Burn's format.
    let native = dir.path().join("googlenet-1378be20.folded.bpk");
    from_pth.save_native(&native).expect("save native");
    let options = LoadOptions {
        cache_dir: Some(dir.path().to_path_buf()),
        url: "http://127.0.0.1:9/unreachable".to_string(),
        download: false,
        progress: false,
    };
    let auto = Classifier::load_with(&WeightsSource::Auto, Backend::Flex, &options)
        .expect("auto must use the native copy, not the network");
    assert_eq!(auto.identity().name, "googlenet-1378be20");
    assert!(auto.identity().trained);
}
