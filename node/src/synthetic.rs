//! The synthetic model: a stand-in for GoogLeNet on machines too small to run it, and the
//! workload for transport experiments and failover tests.
//!
//! It never decodes the image and needs no weights. It spends a configured service time per
//! image and answers deterministically from the image bytes, so the same bytes always get the
//! same labels on every node: a test can check that an answer belongs to the image it was
//! asked about, and that failover did not mix answers up.

use std::time::Duration;

use glimpse_model::IMAGENET_CLASSES;
use glimpse_transport::Label;

/// Spends `service` per image and labels images by a hash of their bytes.
#[derive(Debug, Clone)]
pub struct SyntheticModel {
    service: Duration,
}

impl SyntheticModel {
    /// `service` is the time charged for one image; a batch of `n` images takes `n × service`,
    /// which models a CPU-bound machine whose batching saves nothing (the honest worst case).
    pub fn new(service: Duration) -> Self {
        Self { service }
    }

    /// Time charged for one image.
    pub fn service(&self) -> Duration {
        self.service
    }

    /// Runs one "forward pass" over a batch: sleeps `len × service`, then labels each image.
    /// Called only from an inference lane, never from the async runtime.
    pub fn classify_batch(&self, images: &[&[u8]], top_k: usize) -> Vec<Vec<Label>> {
        let count = u32::try_from(images.len()).unwrap_or(u32::MAX);
        let total = self.service.saturating_mul(count);
        if !total.is_zero() {
            std::thread::sleep(total);
        }
        images
            .iter()
            .map(|bytes| synthetic_labels(bytes, top_k))
            .collect()
    }
}

/// FNV-1a, 64 bit: tiny, dependency-free and stable across versions and platforms, which is all
/// a deterministic stand-in needs (this is not a security boundary).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// SplitMix64 step: turns the one 64-bit hash into a stream of well-mixed numbers.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in [0, 1) from the top 53 bits.
fn unit(state: &mut u64) -> f64 {
    (splitmix64(state) >> 11) as f64 / (1u64 << 53) as f64
}

/// The deterministic answer for `bytes`: `top_k` distinct classes (at most 1000) with strictly
/// decreasing probabilities that sum to less than 1, like a real softmax top-k.
///
/// Probabilities come from stick breaking with fractions in [0.5, 0.9): each class takes at
/// least half of the remaining mass, so every probability is larger than the next one.
/// The first entries do not depend on `top_k` (asking for 10 extends the answer for 5).
pub fn synthetic_labels(bytes: &[u8], top_k: usize) -> Vec<Label> {
    let k = top_k.min(IMAGENET_CLASSES.len());
    let mut state = fnv1a64(bytes);
    let mut remaining = 1.0f64;
    let mut chosen: Vec<usize> = Vec::with_capacity(k);
    let mut out = Vec::with_capacity(k);
    while out.len() < k {
        let index = (splitmix64(&mut state) % IMAGENET_CLASSES.len() as u64) as usize;
        if chosen.contains(&index) {
            continue;
        }
        chosen.push(index);
        let fraction = 0.5 + 0.4 * unit(&mut state);
        let probability = remaining * fraction;
        remaining -= probability;
        out.push(Label {
            index: index as u32,
            label: IMAGENET_CLASSES[index].to_string(),
            probability: probability as f32,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bytes_same_answer_different_bytes_differ() {
        let a = synthetic_labels(b"an image", 5);
        let b = synthetic_labels(b"an image", 5);
        let c = synthetic_labels(b"another image", 5);
        assert_eq!(a.len(), 5);
        let idx = |v: &[Label]| v.iter().map(|l| l.index).collect::<Vec<_>>();
        assert_eq!(idx(&a), idx(&b));
        assert_ne!(idx(&a), idx(&c));
    }

    #[test]
    fn probabilities_decrease_and_sum_below_one_and_indices_distinct() {
        for seed in 0u32..200 {
            let labels = synthetic_labels(&seed.to_le_bytes(), 20);
            let sum: f32 = labels.iter().map(|l| l.probability).sum();
            assert!(sum <= 1.0 + 1e-6 && sum > 0.5, "sum {sum}");
            for pair in labels.windows(2) {
                assert!(pair[0].probability > pair[1].probability);
            }
            let mut idx: Vec<u32> = labels.iter().map(|l| l.index).collect();
            idx.sort_unstable();
            idx.dedup();
            assert_eq!(idx.len(), 20);
            for l in &labels {
                assert_eq!(l.label, IMAGENET_CLASSES[l.index as usize]);
            }
        }
    }

    #[test]
    fn longer_top_k_extends_shorter() {
        let five = synthetic_labels(b"prefix", 5);
        let ten = synthetic_labels(b"prefix", 10);
        assert_eq!(five.len(), 5);
        assert_eq!(ten.len(), 10);
        for (a, b) in five.iter().zip(&ten) {
            assert_eq!(a.index, b.index);
            assert_eq!(a.probability, b.probability);
        }
    }

    #[test]
    fn top_k_is_capped_at_the_number_of_classes() {
        assert_eq!(synthetic_labels(b"x", 5000).len(), 1000);
        assert!(synthetic_labels(b"x", 0).is_empty());
    }

    #[test]
    fn batch_takes_service_time_per_image() {
        let model = SyntheticModel::new(Duration::from_millis(10));
        let started = std::time::Instant::now();
        let out = model.classify_batch(&[b"a", b"b", b"c"], 3);
        // A lower bound only: sleeping never takes less than asked.
        assert!(started.elapsed() >= Duration::from_millis(30));
        assert_eq!(out.len(), 3);
    }
}
