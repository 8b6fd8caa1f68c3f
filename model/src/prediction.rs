//! Answers: the top-k classes of one image, by softmax over GoogLeNet's 1000 logits.

use crate::classes::IMAGENET_CLASSES;
use crate::googlenet::NUM_CLASSES;

/// One of the top-k answers for an image.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// ImageNet class index, 0..1000.
    pub index: usize,
    /// torchvision's name for the class.
    pub label: &'static str,
    /// Softmax probability over all 1000 classes.
    pub probability: f32,
}

/// Softmax probabilities of the `k` largest logits, best first (ties: lower index first).
pub fn top_k_softmax(logits: &[f32], k: usize) -> Vec<Prediction> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f64 = logits.iter().map(|l| f64::from(l - max).exp()).sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|a, b| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b)));
    order
        .into_iter()
        .take(k.min(NUM_CLASSES))
        .map(|index| Prediction {
            index,
            label: IMAGENET_CLASSES.get(index).copied().unwrap_or("?"),
            probability: (f64::from(logits[index] - max).exp() / total) as f32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_top_k_is_sorted_and_normalized() {
        let mut logits = vec![0.0f32; NUM_CLASSES];
        logits[3] = 5.0;
        logits[7] = 4.0;
        logits[1] = 4.0;
        let top = top_k_softmax(&logits, 3);
        assert_eq!(top.iter().map(|p| p.index).collect::<Vec<_>>(), [3, 1, 7]);
        assert_eq!(top[0].label, IMAGENET_CLASSES[3]);
        let denom = 5f64.exp() + 2.0 * 4f64.exp() + 997.0;
        assert!((f64::from(top[0].probability) - 5f64.exp() / denom).abs() < 1e-6);
        assert!(top_k_softmax(&logits, 5000).len() == NUM_CLASSES);
        let sum: f32 = top_k_softmax(&logits, 1000)
            .iter()
            .map(|p| p.probability)
            .sum();
        assert!((sum - 1.0).abs() < 1e-4);
    }
}
