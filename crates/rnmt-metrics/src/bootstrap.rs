//! Paired bootstrap resampling, as sacrebleu's `--paired-bs`
//! (`significance._paired_bs_test`, Koehn 2004 / Moses'
//! `bootstrap-hypothesis-difference-significance.pl`).
//!
//! `n_samples` resamples (default 1000) of the segment indices are drawn
//! with replacement; the *same* resamples are applied to the baseline and to
//! the system, and each resample's score is computed from its summed
//! statistics. Then, exactly as sacrebleu:
//!
//! * mean and 95% CI of each system: `significance.estimate_ci` (sort the
//!   resampled scores; `lower = s[n / 40]`, `upper = s[n - n / 40 - 1]`,
//!   `ci = (upper - lower) / 2`, `mean` = average);
//! * p-value: `d_i = |sys_i - base_i|`, centred as `d_i - mean(d)`;
//!   `c` = number of centred differences strictly greater than the observed
//!   `|sys - base|`; `p = (c + 1) / (n_samples + 1)`
//!   (`significance._compute_p_value`).
//!
//! Only the random stream differs: sacrebleu draws indices with numpy's
//! `default_rng(seed).choice(...)` (PCG64); here a small seeded SplitMix64
//! generator with unbiased bounded sampling is used, so p-values, means and
//! CIs are statistically equivalent but not bit-identical to sacrebleu's.
//! (sacrebleu also sums the resampled statistics in float32; this module
//! uses exact integers.) The baseline's own mean/CI uses the same resamples,
//! which is what sacrebleu ends up doing since both draws use the same seed.

use super::metric::{sum_statistics, Metric};
use super::MetricsError;
use crate::rng::Rng;

/// sacrebleu's default number of bootstrap resamples for `--paired-bs`.
pub const DEFAULT_SAMPLES: usize = 1000;

/// sacrebleu's default seed (`SACREBLEU_SEED`, 12345).
pub const DEFAULT_SEED: u64 = 12345;

/// Bootstrap results of one system for one metric; mirrors
/// `significance.Result`.
#[derive(Debug, Clone, PartialEq)]
pub struct BootstrapResult {
    /// The actual corpus score.
    pub score: f64,
    /// p-value against the baseline (`None` for the baseline itself).
    pub p_value: Option<f64>,
    /// Mean of the resampled scores.
    pub mean: f64,
    /// Half-width of the 95% confidence interval.
    pub ci: f64,
}

/// The outcome of a paired test of one system against a baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct PairedBootstrap {
    /// Baseline score with its bootstrap mean and CI.
    pub baseline: BootstrapResult,
    /// System score, mean, CI and p-value.
    pub system: BootstrapResult,
}

/// Mean and 95% CI half-width of resampled scores; mirrors
/// `significance.estimate_ci`. Sorts `scores` in place.
pub fn estimate_ci(scores: &mut [f64]) -> (f64, f64) {
    if scores.is_empty() {
        return (0.0, 0.0);
    }
    scores.sort_by(f64::total_cmp);
    let n = scores.len();
    let lower_idx = n / 40;
    let upper_idx = n - lower_idx - 1;
    let ci = 0.5 * (scores[upper_idx] - scores[lower_idx]);
    let mean = scores.iter().sum::<f64>() / n as f64;
    (mean, ci)
}

/// p-value of an observed difference given centred resampled differences;
/// mirrors `significance._compute_p_value`: `(#{s > real} + 1) / (n + 1)`.
pub fn p_value(stats: &[f64], real_difference: f64) -> f64 {
    let c = stats.iter().filter(|&&s| s > real_difference).count();
    (c as f64 + 1.0) / (stats.len() as f64 + 1.0)
}

/// Paired bootstrap resampling test of a system against a baseline from
/// per-segment statistics of `metric` (see the module docs).
pub fn paired_bootstrap(
    metric: &dyn Metric,
    baseline_stats: &[Vec<u64>],
    system_stats: &[Vec<u64>],
    n_samples: usize,
    seed: u64,
) -> Result<PairedBootstrap, MetricsError> {
    let n = baseline_stats.len();
    if n == 0 {
        return Err(MetricsError::NoData("no segments to resample".into()));
    }
    if system_stats.len() != n {
        return Err(MetricsError::LengthMismatch {
            what: "system statistics".into(),
            expected: n,
            got: system_stats.len(),
        });
    }
    if n_samples == 0 {
        return Err(MetricsError::InvalidConfig {
            name: "number of bootstrap samples",
            reason: "must be at least 1".into(),
        });
    }
    let bl_score = metric.score_from_statistics(&sum_statistics(baseline_stats));
    let sys_score = metric.score_from_statistics(&sum_statistics(system_stats));

    // contiguous copies for cache-friendly resampling
    let width = baseline_stats[0].len();
    let flatten = |stats: &[Vec<u64>]| -> Vec<u64> {
        stats
            .iter()
            .flat_map(|s| (0..width).map(move |j| s.get(j).copied().unwrap_or(0)))
            .collect()
    };
    let (bl_flat, sys_flat) = (flatten(baseline_stats), flatten(system_stats));
    let mut rng = Rng::new(seed);
    let mut bl_scores = Vec::with_capacity(n_samples);
    let mut sys_scores = Vec::with_capacity(n_samples);
    let mut bl_sum = vec![0u64; width];
    let mut sys_sum = vec![0u64; width];
    for _ in 0..n_samples {
        bl_sum.fill(0);
        sys_sum.fill(0);
        for _ in 0..n {
            let i = rng.below(n as u64) as usize * width;
            for (acc, v) in bl_sum.iter_mut().zip(&bl_flat[i..i + width]) {
                *acc += v;
            }
            for (acc, v) in sys_sum.iter_mut().zip(&sys_flat[i..i + width]) {
                *acc += v;
            }
        }
        bl_scores.push(metric.score_from_statistics(&bl_sum));
        sys_scores.push(metric.score_from_statistics(&sys_sum));
    }

    let diffs: Vec<f64> = sys_scores
        .iter()
        .zip(&bl_scores)
        .map(|(s, b)| (s - b).abs())
        .collect();
    let mean_diff = diffs.iter().sum::<f64>() / diffs.len() as f64;
    let centred: Vec<f64> = diffs.iter().map(|d| d - mean_diff).collect();
    let p = p_value(&centred, (bl_score - sys_score).abs());

    let (bl_mean, bl_ci) = estimate_ci(&mut bl_scores);
    let (sys_mean, sys_ci) = estimate_ci(&mut sys_scores);
    Ok(PairedBootstrap {
        baseline: BootstrapResult {
            score: bl_score,
            p_value: None,
            mean: bl_mean,
            ci: bl_ci,
        },
        system: BootstrapResult {
            score: sys_score,
            p_value: Some(p),
            mean: sys_mean,
            ci: sys_ci,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_bounded() {
        let a: Vec<u64> = (0..5).scan(Rng::new(7), |r, _| Some(r.below(10))).collect();
        let b: Vec<u64> = (0..5).scan(Rng::new(7), |r, _| Some(r.below(10))).collect();
        assert_eq!(a, b);
        let mut r = Rng::new(1);
        let mut seen = [false; 3];
        for _ in 0..100 {
            seen[r.below(3) as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn p_value_and_ci_formulas() {
        assert!((p_value(&[0.5, -0.5, 2.0], 1.0) - 0.5).abs() < 1e-12);
        let mut s: Vec<f64> = (0..40).map(f64::from).rev().collect();
        let (mean, ci) = estimate_ci(&mut s);
        assert!((mean - 19.5).abs() < 1e-12);
        assert!((ci - 0.5 * (38.0 - 1.0)).abs() < 1e-12);
    }
}
