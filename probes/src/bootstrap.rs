//! Percentile bootstrap confidence interval for accuracy.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// 95% percentile bootstrap interval of the mean of `correct`, from `b` resamples of the test
/// samples with replacement (seeded). Percentiles interpolate linearly between order statistics
/// (numpy's default). With `b == 0` or no samples it returns `(NaN, NaN)`.
pub fn top1_ci(correct: &[bool], b: usize, seed: u64) -> (f64, f64) {
    let values: Vec<f64> = correct.iter().map(|&c| if c { 1.0 } else { 0.0 }).collect();
    mean_ci(&values, b, seed)
}

/// 95% percentile bootstrap interval of the mean of `values` (e.g. each test image's fraction
/// of right answers over several few-shot draws), resampled as [`top1_ci`] does: on 0/1 values
/// the two give the same interval.
pub fn mean_ci(values: &[f64], b: usize, seed: u64) -> (f64, f64) {
    let n = values.len();
    if b == 0 || n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut stats: Vec<f64> = (0..b)
        .map(|_| (0..n).map(|_| values[rng.gen_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    stats.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&stats, 2.5), percentile(&stats, 97.5))
}

/// Linear-interpolated percentile of sorted data.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let pos = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_brackets_mean_and_matches_binomial_width() {
        let correct: Vec<bool> = (0..2000).map(|i| i % 4 != 0).collect(); // p = 0.75
        let (lo, hi) = top1_ci(&correct, 1000, 0);
        assert!(lo < 0.75 && 0.75 < hi);
        let se = (0.75f64 * 0.25 / 2000.0).sqrt();
        let width = hi - lo;
        assert!(
            (width - 2.0 * 1.96 * se).abs() < 0.3 * 2.0 * 1.96 * se,
            "width {width}"
        );
        assert_eq!((lo, hi), top1_ci(&correct, 1000, 0));
    }

    #[test]
    fn percentile_interpolates() {
        assert_eq!(percentile(&[0.0, 1.0, 2.0, 3.0, 4.0], 50.0), 2.0);
        assert!((percentile(&[0.0, 10.0], 25.0) - 2.5).abs() < 1e-12);
    }
}
