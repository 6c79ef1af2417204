//! What BLEU and chrF have in common: sufficient statistics per segment,
//! a score computed from summed statistics, and a reproducibility signature.

use std::fmt;

use super::MetricsError;

/// The sacrebleu release whose scores, score lines and signatures this module
/// reproduces. It is what the `version:` field of every [`Signature`] says:
/// a score printed with `version:2.6.0` is the one `sacrebleu` 2.6.0 prints
/// for the same inputs and options (it is not rnmt's own version).
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// A corpus-level metric computed from additive per-segment statistics, like
/// sacrebleu's `Metric` base class. Bootstrap resampling works on any
/// implementation.
pub trait Metric {
    /// The metric's display name (`BLEU`, `chrF2`, `chrF2++`), i.e. sacrebleu's
    /// `Score.name`.
    fn name(&self) -> String;

    /// Per-segment sufficient statistics; mirrors
    /// `Metric._extract_corpus_statistics`. `refs` holds reference *streams*
    /// (`refs[k][i]` is the k-th reference of segment i), as in sacrebleu.
    fn segment_statistics(
        &self,
        hyps: &[String],
        refs: &[Vec<String>],
    ) -> Result<Vec<Vec<u64>>, MetricsError>;

    /// The score from statistics summed over segments; mirrors
    /// `Metric._compute_score_from_stats(...).score`.
    fn score_from_statistics(&self, stats: &[u64]) -> f64;

    /// The signature for `nrefs` references; mirrors `Metric.get_signature()`.
    fn signature(&self, nrefs: usize) -> Signature;
}

/// Sum per-segment statistics element-wise (sacrebleu's `sum_of_lists`).
pub fn sum_statistics(stats: &[Vec<u64>]) -> Vec<u64> {
    let width = stats.first().map_or(0, Vec::len);
    let mut total = vec![0u64; width];
    for seg in stats {
        for (t, s) in total.iter_mut().zip(seg) {
            *t += s;
        }
    }
    total
}

/// Check that every reference stream has one segment per hypothesis.
pub(crate) fn check_lengths(hyps: usize, refs: &[Vec<String>]) -> Result<(), MetricsError> {
    if hyps == 0 {
        return Err(MetricsError::NoData("no hypotheses".into()));
    }
    if refs.is_empty() {
        return Err(MetricsError::NoData("no references".into()));
    }
    for (k, stream) in refs.iter().enumerate() {
        if stream.len() != hyps {
            return Err(MetricsError::LengthMismatch {
                what: format!("reference stream {}", k + 1),
                expected: hyps,
                got: stream.len(),
            });
        }
    }
    Ok(())
}

/// sacrebleu's reproducibility signature, e.g.
/// `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.
///
/// Field order follows sacrebleu's `Signature.format()`: `nrefs`, then the
/// bootstrap fields `bs` and `seed` (paired tests only), then the
/// metric-specific fields, and `version` last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Number of references (`nrefs`).
    pub nrefs: usize,
    /// Number of bootstrap resamples (`bs`), for paired tests.
    pub bootstrap: Option<usize>,
    /// RNG seed (`seed`), for paired tests.
    pub seed: Option<u64>,
    /// Metric-specific `(key, value)` pairs, in order.
    pub fields: Vec<(&'static str, String)>,
}

impl Signature {
    /// A signature with metric-specific `fields`.
    pub fn new(nrefs: usize, fields: Vec<(&'static str, String)>) -> Self {
        Signature {
            nrefs,
            bootstrap: None,
            seed: None,
            fields,
        }
    }

    /// Add the paired bootstrap fields (`bs:N|seed:S`), as sacrebleu's
    /// `PairedTest` does.
    pub fn with_bootstrap(mut self, n_samples: usize, seed: u64) -> Self {
        self.bootstrap = Some(n_samples);
        self.seed = Some(seed);
        self
    }

    /// All `(key, value)` pairs in output order.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("nrefs", self.nrefs.to_string())];
        if let Some(bs) = self.bootstrap {
            out.push(("bs", bs.to_string()));
        }
        if let Some(seed) = self.seed {
            out.push(("seed", seed.to_string()));
        }
        out.extend(self.fields.iter().cloned());
        out.push(("version", SACREBLEU_VERSION.to_string()));
        out
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .pairs()
            .into_iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        f.write_str(&parts.join("|"))
    }
}

/// BLEU or chrF behind one type, for callers (like the CLI) that pick the
/// metric at run time and need sacrebleu's score lines.
#[derive(Debug, Clone)]
pub enum AnyMetric {
    /// BLEU.
    Bleu(super::Bleu),
    /// chrF / chrF++.
    Chrf(super::Chrf),
}

impl AnyMetric {
    /// The metric as a [`Metric`] trait object.
    pub fn as_metric(&self) -> &dyn Metric {
        match self {
            AnyMetric::Bleu(m) => m,
            AnyMetric::Chrf(m) => m,
        }
    }

    /// Sort key reproducing sacrebleu's `sorted(metrics)` over its upper-case
    /// metric names (`BLEU` < `CHRF`).
    pub fn sort_key(&self) -> &'static str {
        match self {
            AnyMetric::Bleu(_) => "BLEU",
            AnyMetric::Chrf(_) => "CHRF",
        }
    }

    /// Corpus score as a printable report (`corpus_score` + `get_signature`).
    pub fn corpus_report(
        &self,
        hyps: &[String],
        refs: &[Vec<String>],
    ) -> Result<super::ScoreReport, MetricsError> {
        let sig = self.as_metric().signature(refs.len());
        Ok(match self {
            AnyMetric::Bleu(m) => super::ScoreReport::bleu(&m.corpus_score(hyps, refs)?, sig),
            AnyMetric::Chrf(m) => super::ScoreReport::chrf(&m.corpus_score(hyps, refs)?, sig),
        })
    }

    /// Sentence score as a printable report (`sentence_score` +
    /// `get_signature`).
    pub fn sentence_report(
        &self,
        hyp: &str,
        refs: &[&str],
    ) -> Result<super::ScoreReport, MetricsError> {
        let sig = self.as_metric().signature(refs.len());
        Ok(match self {
            AnyMetric::Bleu(m) => super::ScoreReport::bleu(&m.sentence_score(hyp, refs)?, sig),
            AnyMetric::Chrf(m) => super::ScoreReport::chrf(&m.sentence_score(hyp, refs)?, sig),
        })
    }
}
