//! Corpus and sentence BLEU, a port of `sacrebleu.metrics.bleu.BLEU`
//! (sacrebleu 2.6.0).
//!
//! Pipeline per segment (as `BLEU._preprocess_segment` and
//! `BLEU._compute_segment_statistics`): optional lowercasing (`str.lower`),
//! `rstrip`, tokenization, n-gram extraction on whitespace-split tokens,
//! clipped matches against the element-wise maximum of the references'
//! n-gram counts, and the reference length closest to the hypothesis length
//! (ties go to the shorter reference). Statistics are summed over the corpus
//! and turned into a score by [`compute_bleu`], which ports
//! `BLEU.compute_bleu` including the "no match" early exit, the four
//! smoothing methods and effective order.

use std::fmt;
use std::str::FromStr;

use super::metric::{check_lengths, sum_statistics, Metric, Signature};
use super::ngrams::Counts;
use super::tokenize::{py_rstrip, py_split, Tokenizer};
use super::MetricsError;

/// Default maximum n-gram order (`MAX_NGRAM_ORDER`).
pub const MAX_NGRAM_ORDER: usize = 4;

/// BLEU smoothing methods (Chen & Cherry, 2014), as in `BLEU.SMOOTH_DEFAULTS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmoothMethod {
    /// NIST geometric smoothing (mteval-v13a): the k-th order with zero
    /// matches gets precision `100 / (2^k * total)`. sacrebleu's default.
    #[default]
    Exp,
    /// Zero-match orders get precision `100 * value / total` (default 0.1).
    Floor,
    /// Add `value` to matches and totals of orders 2..N (default 1).
    AddK,
    /// No smoothing: any zero precision makes BLEU 0.
    None,
}

impl SmoothMethod {
    /// All methods.
    pub const ALL: [SmoothMethod; 4] = [
        SmoothMethod::Exp,
        SmoothMethod::Floor,
        SmoothMethod::AddK,
        SmoothMethod::None,
    ];

    /// The name used on the command line and in the signature.
    pub fn name(self) -> &'static str {
        match self {
            SmoothMethod::Exp => "exp",
            SmoothMethod::Floor => "floor",
            SmoothMethod::AddK => "add-k",
            SmoothMethod::None => "none",
        }
    }

    /// The default smoothing value, `None` for methods that take none.
    pub fn default_value(self) -> Option<f64> {
        match self {
            SmoothMethod::Floor => Some(0.1),
            SmoothMethod::AddK => Some(1.0),
            SmoothMethod::Exp | SmoothMethod::None => None,
        }
    }
}

impl fmt::Display for SmoothMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SmoothMethod {
    type Err = MetricsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SmoothMethod::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| MetricsError::UnknownSmoothMethod(s.to_string()))
    }
}

/// BLEU options; the defaults are those of `BLEU()` / `corpus_bleu`.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuConfig {
    /// Tokenizer (default `13a`).
    pub tokenize: Tokenizer,
    /// Lowercase hypotheses and references first (`-lc`).
    pub lowercase: bool,
    /// Smoothing method (default `exp`).
    pub smooth_method: SmoothMethod,
    /// Smoothing value for `floor` / `add-k`; `None` uses the default.
    pub smooth_value: Option<f64>,
    /// Maximum n-gram order (default 4).
    pub max_ngram_order: usize,
    /// Stop at the first n-gram order with no hypothesis n-grams instead of
    /// counting it as zero precision. sacrebleu's CLI turns this on for
    /// `--sentence-level`, as does `sentence_bleu`.
    pub effective_order: bool,
}

impl Default for BleuConfig {
    fn default() -> Self {
        BleuConfig {
            tokenize: Tokenizer::Tok13a,
            lowercase: false,
            smooth_method: SmoothMethod::Exp,
            smooth_value: None,
            max_ngram_order: MAX_NGRAM_ORDER,
            effective_order: false,
        }
    }
}

impl BleuConfig {
    /// The configuration of sacrebleu's `sentence_bleu` and of the CLI's
    /// `--sentence-level`: the defaults plus effective order.
    pub fn sentence() -> Self {
        BleuConfig {
            effective_order: true,
            ..BleuConfig::default()
        }
    }
}

/// A BLEU result; mirrors `BLEUScore`.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScore {
    /// BLEU in `[0, 100]`.
    pub score: f64,
    /// Matched n-grams per order (raw counts: unlike sacrebleu's
    /// `BLEUScore.counts`, `add-k` smoothing is not added in).
    pub counts: Vec<u64>,
    /// Hypothesis n-grams per order (raw counts, see `counts`).
    pub totals: Vec<u64>,
    /// (Smoothed) n-gram precisions in percent.
    pub precisions: Vec<f64>,
    /// Brevity penalty.
    pub bp: f64,
    /// Hypothesis length in tokens.
    pub sys_len: u64,
    /// Effective reference length in tokens.
    pub ref_len: u64,
}

impl BleuScore {
    /// `sys_len / ref_len`, 0 when `ref_len` is 0 (as `BLEUScore.ratio`).
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }

    /// The verbose part of the score line, e.g.
    /// `58.1/32.6/20.4/13.1 (BP = 0.995 ratio = 0.995 hyp_len = 61000 ref_len = 61300)`
    /// (`BLEUScore._verbose`).
    pub fn verbose(&self) -> String {
        let precs: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        format!(
            "{} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            precs.join("/"),
            self.bp,
            self.ratio(),
            self.sys_len,
            self.ref_len
        )
    }
}

/// sacrebleu's `my_log`: `ln(x)`, with `ln(0)` floored to -9999999999.
fn my_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// BLEU from summed statistics `[sys_len, ref_len, correct_1..N, total_1..N]`;
/// a line-by-line port of the static method `BLEU.compute_bleu`, so that the
/// floating point operations happen in the same order.
pub fn compute_bleu(
    stats: &[u64],
    max_order: usize,
    smooth_method: SmoothMethod,
    smooth_value: Option<f64>,
    effective_order: bool,
) -> BleuScore {
    let get = |i: usize| stats.get(i).copied().unwrap_or(0);
    let (sys_len, ref_len) = (get(0), get(1));
    let counts: Vec<u64> = (0..max_order).map(|n| get(2 + n)).collect();
    let totals: Vec<u64> = (0..max_order).map(|n| get(2 + max_order + n)).collect();
    let k = smooth_value
        .or(smooth_method.default_value())
        .unwrap_or(0.0);

    let bp = if sys_len < ref_len {
        if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        }
    } else {
        1.0
    };
    let mut precisions = vec![0.0; max_order];
    let mut result = BleuScore {
        score: 0.0,
        counts: counts.clone(),
        totals: totals.clone(),
        precisions: precisions.clone(),
        bp,
        sys_len,
        ref_len,
    };
    // Early stop if there are no matches (sacrebleu #141)
    if counts.iter().all(|&c| c == 0) {
        return result;
    }

    let mut correct: Vec<f64> = counts.iter().map(|&c| c as f64).collect();
    let mut total: Vec<f64> = totals.iter().map(|&t| t as f64).collect();
    let mut smooth_mteval = 1.0;
    let mut eff_order = max_order;
    for n in 1..=max_order {
        let i = n - 1;
        if smooth_method == SmoothMethod::AddK && n > 1 {
            correct[i] += k;
            total[i] += k;
        }
        if total[i] == 0.0 {
            break;
        }
        if effective_order {
            eff_order = n;
        }
        if correct[i] == 0.0 {
            match smooth_method {
                SmoothMethod::Exp => {
                    smooth_mteval *= 2.0;
                    precisions[i] = 100.0 / (smooth_mteval * total[i]);
                }
                SmoothMethod::Floor => precisions[i] = 100.0 * k / total[i],
                SmoothMethod::AddK | SmoothMethod::None => {}
            }
        } else {
            precisions[i] = 100.0 * correct[i] / total[i];
        }
    }
    let log_sum = precisions[..eff_order]
        .iter()
        .fold(0.0, |acc, &p| acc + my_log(p));
    result.score = bp * (log_sum / eff_order as f64).exp();
    result.precisions = precisions;
    result
}

/// All n-grams of orders 1..=`max_order` of a token list, keyed by token
/// slices; mirrors `helpers.extract_all_word_ngrams`.
fn extract_ngrams<'a>(tokens: &'a [&'a str], max_order: usize) -> Counts<&'a [&'a str]> {
    let mut ngrams = Counts::with_capacity_and_hasher(tokens.len() * max_order, Default::default());
    for n in 1..=max_order {
        for w in tokens.windows(n) {
            *ngrams.entry(w).or_insert(0) += 1;
        }
    }
    ngrams
}

/// The BLEU metric with a fixed configuration.
#[derive(Debug, Clone)]
pub struct Bleu {
    config: BleuConfig,
}

impl Bleu {
    /// Validate `config` and build the metric.
    pub fn new(config: BleuConfig) -> Result<Self, MetricsError> {
        if config.max_ngram_order == 0 {
            return Err(MetricsError::InvalidConfig {
                name: "max_ngram_order",
                reason: "must be at least 1".into(),
            });
        }
        if let Some(v) = config.smooth_value {
            if !v.is_finite() || v < 0.0 {
                return Err(MetricsError::InvalidConfig {
                    name: "smooth_value",
                    reason: format!("must be a finite number >= 0, got {v}"),
                });
            }
        }
        Ok(Bleu { config })
    }

    /// The configuration.
    pub fn config(&self) -> &BleuConfig {
        &self.config
    }

    /// Lowercase (optionally), right-strip and tokenize one segment;
    /// mirrors `BLEU._preprocess_segment`.
    pub fn preprocess(&self, sent: &str) -> String {
        if self.config.lowercase {
            self.config
                .tokenize
                .tokenize(py_rstrip(&sent.to_lowercase()))
        } else {
            self.config.tokenize.tokenize(py_rstrip(sent))
        }
    }

    /// Statistics `[hyp_len, ref_len, correct.., total..]` of one segment
    /// against its references; mirrors `_extract_reference_info` +
    /// `_compute_segment_statistics` + `_get_closest_ref_len`.
    pub fn segment_stats(&self, hyp: &str, refs: &[&str]) -> Vec<u64> {
        let order = self.config.max_ngram_order;
        let ref_texts: Vec<String> = refs.iter().map(|r| self.preprocess(r)).collect();
        let ref_tokens: Vec<Vec<&str>> = ref_texts.iter().map(|t| py_split(t).collect()).collect();
        let longest = ref_tokens.iter().map(Vec::len).max().unwrap_or(0);
        let mut ref_ngrams: Counts<&[&str]> =
            Counts::with_capacity_and_hasher(longest * order, Default::default());
        let mut ref_lens = Vec::with_capacity(refs.len());
        for tokens in &ref_tokens {
            ref_lens.push(tokens.len() as u64);
            for (g, c) in extract_ngrams(tokens, order) {
                let e = ref_ngrams.entry(g).or_insert(0);
                *e = (*e).max(c);
            }
        }
        let hyp_text = self.preprocess(hyp);
        let hyp_tokens: Vec<&str> = py_split(&hyp_text).collect();
        let hyp_len = hyp_tokens.len() as u64;
        let hyp_ngrams = extract_ngrams(&hyp_tokens, order);

        // closest reference length, ties broken towards the shorter one
        let mut closest: Option<(u64, u64)> = None; // (diff, len)
        for &len in &ref_lens {
            let diff = hyp_len.abs_diff(len);
            closest = match closest {
                Some((d, l)) if d < diff || (d == diff && l <= len) => Some((d, l)),
                _ => Some((diff, len)),
            };
        }
        let ref_len = closest.map_or(0, |(_, l)| l);

        let mut stats = vec![0u64; 2 + 2 * order];
        stats[0] = hyp_len;
        stats[1] = ref_len;
        for (g, c) in &hyp_ngrams {
            let n = g.len() - 1;
            stats[2 + order + n] += c;
            if let Some(rc) = ref_ngrams.get(g) {
                stats[2 + n] += (*c).min(*rc);
            }
        }
        stats
    }

    /// BLEU from summed statistics with this configuration
    /// (`BLEU._compute_score_from_stats`).
    pub fn score_from_stats(&self, stats: &[u64]) -> BleuScore {
        compute_bleu(
            stats,
            self.config.max_ngram_order,
            self.config.smooth_method,
            self.config.smooth_value,
            self.config.effective_order,
        )
    }

    /// Corpus BLEU; mirrors `BLEU.corpus_score`. `refs` are reference streams:
    /// `refs[k][i]` is the k-th reference of hypothesis `i`.
    pub fn corpus_score(
        &self,
        hyps: &[String],
        refs: &[Vec<String>],
    ) -> Result<BleuScore, MetricsError> {
        let stats = self.segment_statistics(hyps, refs)?;
        Ok(self.score_from_stats(&sum_statistics(&stats)))
    }

    /// BLEU of one hypothesis against its references; mirrors
    /// `BLEU.sentence_score` (use [`BleuConfig::sentence`] for sacrebleu's
    /// sentence-level defaults).
    pub fn sentence_score(&self, hyp: &str, refs: &[&str]) -> Result<BleuScore, MetricsError> {
        if refs.is_empty() {
            return Err(MetricsError::NoData("no references".into()));
        }
        Ok(self.score_from_stats(&self.segment_stats(hyp, refs)))
    }

    /// The signature fields `case`, `eff`, `tok`, `smooth`
    /// (`BLEUSignature`); a smoothing value is shown as `floor[0.10]`.
    pub fn signature_fields(&self) -> Vec<(&'static str, String)> {
        let c = &self.config;
        let mut smooth = c.smooth_method.name().to_string();
        if let Some(default) = c.smooth_method.default_value() {
            smooth.push_str(&format!("[{:.2}]", c.smooth_value.unwrap_or(default)));
        }
        vec![
            ("case", if c.lowercase { "lc" } else { "mixed" }.to_string()),
            (
                "eff",
                if c.effective_order { "yes" } else { "no" }.to_string(),
            ),
            ("tok", c.tokenize.name().to_string()),
            ("smooth", smooth),
        ]
    }
}

impl Metric for Bleu {
    fn name(&self) -> String {
        "BLEU".to_string()
    }

    fn segment_statistics(
        &self,
        hyps: &[String],
        refs: &[Vec<String>],
    ) -> Result<Vec<Vec<u64>>, MetricsError> {
        check_lengths(hyps.len(), refs)?;
        Ok(hyps
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let seg_refs: Vec<&str> = refs.iter().map(|s| s[i].as_str()).collect();
                self.segment_stats(h, &seg_refs)
            })
            .collect())
    }

    fn score_from_statistics(&self, stats: &[u64]) -> f64 {
        self.score_from_stats(stats).score
    }

    fn signature(&self, nrefs: usize) -> Signature {
        Signature::new(nrefs, self.signature_fields())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_and_disjoint() {
        let bleu = Bleu::new(BleuConfig::default()).unwrap();
        let s = bleu
            .sentence_score("the cat sat on the mat", &["the cat sat on the mat"])
            .unwrap();
        assert!((s.score - 100.0).abs() < 1e-9);
        let s = bleu.sentence_score("a b c d", &["e f g h"]).unwrap();
        assert_eq!(s.score, 0.0);
        assert_eq!(s.precisions, vec![0.0; 4]);
    }

    #[test]
    fn closest_ref_len_prefers_shorter_on_ties() {
        let bleu = Bleu::new(BleuConfig::default()).unwrap();
        let st = bleu.segment_stats("a b c", &["a b c d", "a b"]);
        assert_eq!((st[0], st[1]), (3, 2));
    }

    #[test]
    fn signature_shows_smoothing_value() {
        let cfg = BleuConfig {
            smooth_method: SmoothMethod::Floor,
            ..BleuConfig::default()
        };
        let s = Bleu::new(cfg).unwrap().signature(1).to_string();
        assert_eq!(
            s,
            "nrefs:1|case:mixed|eff:no|tok:13a|smooth:floor[0.10]|version:2.6.0"
        );
        assert!(Bleu::new(BleuConfig {
            smooth_value: Some(f64::NAN),
            ..BleuConfig::default()
        })
        .is_err());
    }
}
