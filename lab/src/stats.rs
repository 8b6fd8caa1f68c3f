//! Small-sample statistics for the sweeps: mean, 95% confidence interval with Student's t,
//! and latency percentiles.
//!
//! The seed reported "95% CI of throughput" over 5 runs; with so few runs the normal
//! approximation (1.96) understates the interval by ~30% (t₀.₉₇₅,₄ = 2.776), so the t
//! quantile matters. It is tabulated here rather than pulled from a statistics crate.

use serde::Serialize;

/// Two-sided 95% quantiles t₀.₉₇₅ for 1..=30 degrees of freedom.
const T975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
    2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
    2.052, 2.048, 2.045, 2.042,
];

/// t₀.₉₇₅ with `df` degrees of freedom (tabulated up to 30; above, the Cornish-Fisher
/// expansion around z = 1.959964, accurate to 1e-3 for df > 30). `df = 0` gives infinity:
/// one sample has no interval.
pub fn t_quantile_975(df: usize) -> f64 {
    if df == 0 {
        return f64::INFINITY;
    }
    if df <= T975.len() {
        return T975[df - 1];
    }
    let z: f64 = 1.959_964;
    let n = df as f64;
    let g1 = (z.powi(3) + z) / 4.0;
    let g2 = (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / 96.0;
    let g3 = (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / 384.0;
    z + g1 / n + g2 / (n * n) + g3 / (n * n * n)
}

/// Mean and half-width of the 95% confidence interval of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MeanCi {
    /// Arithmetic mean; NaN for an empty sample.
    pub mean: f64,
    /// Half-width: the interval is `mean ± ci95`. Zero for a single sample (reported as such,
    /// not as infinity, with `n` telling the reader there is no spread to speak of).
    pub ci95: f64,
    /// Number of values in the sample.
    pub n: usize,
}

/// Mean ± Student-t 95% CI of `xs`. Empty input gives NaN mean.
pub fn mean_ci(xs: &[f64]) -> MeanCi {
    let n = xs.len();
    if n == 0 {
        return MeanCi {
            mean: f64::NAN,
            ci95: f64::NAN,
            n,
        };
    }
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return MeanCi { mean, ci95: 0.0, n };
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let ci95 = t_quantile_975(n - 1) * (var / n as f64).sqrt();
    MeanCi { mean, ci95, n }
}

/// The `q`-quantile (0..=1) of `sorted` by linear interpolation between closest ranks
/// (numpy's default), NaN when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn t_table_and_expansion_agree_at_the_seam() {
        assert_eq!(t_quantile_975(4), 2.776);
        assert!((t_quantile_975(31) - 2.0395).abs() < 2e-3);
        assert!((t_quantile_975(60) - 2.0003).abs() < 2e-3);
        assert!((t_quantile_975(120) - 1.9799).abs() < 2e-3);
        assert!((t_quantile_975(100_000) - 1.96).abs() < 1e-3);
        // Monotone decreasing in df.
        for df in 1..200 {
            assert!(t_quantile_975(df) > t_quantile_975(df + 1), "df {df}");
        }
        assert!(t_quantile_975(0).is_infinite());
    }

    #[test]
    fn mean_ci_of_known_sample() {
        // mean 3, sample sd sqrt(2.5), n 5: 2.776 * sqrt(2.5/5) = 1.9629
        let m = mean_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(m.mean, 3.0);
        assert!((m.ci95 - 1.9629).abs() < 1e-3, "{}", m.ci95);
        assert_eq!(mean_ci(&[7.0]).ci95, 0.0);
        assert!(mean_ci(&[]).mean.is_nan());
    }

    #[test]
    fn percentiles_interpolate() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&v, 0.5) - 50.5).abs() < 1e-9);
        assert!((percentile(&v, 0.99) - 99.01).abs() < 1e-9);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
