//! chrF and chrF++, a port of `sacrebleu.metrics.chrf.CHRF` (sacrebleu 2.6.0).
//!
//! Character n-grams (orders 1..=6 by default) are taken from the segment
//! with all whitespace removed (unless `whitespace` is set); chrF++ adds word
//! n-grams (orders 1..=`word_order`) over words whose leading or trailing
//! ASCII punctuation has been split off (`CHRF._remove_punctuation`).
//! Per order, the statistics are `[hyp n-grams, ref n-grams, matches]`
//! (hypothesis n-grams count as 0 when the reference has none). With several
//! references, the one giving the best sentence-level F-score is used.
//! Statistics are summed over the corpus; the score averages precision and
//! recall over the orders where both sides have n-grams ("effective order",
//! sacrebleu's default) or, with `eps_smoothing`, averages per-order
//! F-scores with epsilon smoothing.

use std::hash::Hash;

use super::metric::{check_lengths, sum_statistics, Metric, Signature};
use super::ngrams::{char_bounds, char_ngrams, word_ngrams, Counts};
use super::tokenize::py_split;
use super::MetricsError;

/// ASCII punctuation (`string.punctuation`) used by chrF++'s word splitter.
const PUNCTS: &str = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~";

/// chrF options; the defaults are those of `CHRF()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChrfConfig {
    /// Character n-gram order (default 6).
    pub char_order: usize,
    /// Word n-gram order (default 0; 2 gives chrF++).
    pub word_order: usize,
    /// Recall weight beta (default 2).
    pub beta: u32,
    /// Lowercase segments first (sacrebleu's `--chrf-lowercase`).
    pub lowercase: bool,
    /// Keep whitespace in character n-grams (`--chrf-whitespace`).
    pub whitespace: bool,
    /// chrF++.py-style epsilon smoothing instead of effective order.
    pub eps_smoothing: bool,
}

impl Default for ChrfConfig {
    fn default() -> Self {
        ChrfConfig {
            char_order: 6,
            word_order: 0,
            beta: 2,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

impl ChrfConfig {
    /// chrF++: the defaults with word order 2.
    pub fn chrf_plus_plus() -> Self {
        ChrfConfig {
            word_order: 2,
            ..ChrfConfig::default()
        }
    }
}

/// A chrF result; mirrors `CHRFScore`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChrfScore {
    /// The score in `[0, 100]`.
    pub score: f64,
    /// `chrF2`, `chrF2++`, ... (`chrF{beta}` plus one `+` per word order).
    pub name: String,
}

/// Character n-gram counts (orders 1..=char_order) followed by word n-gram
/// counts (orders 1..=word_order) of one segment, borrowing from it.
struct SegmentNgrams<'a> {
    chars: Vec<Counts<&'a str>>,
    words: Vec<Counts<&'a [&'a str]>>,
}

/// The text whose character n-grams are counted: the segment without any
/// whitespace unless `include_whitespace` (`helpers.extract_all_char_ngrams`).
fn char_text(line: &str, include_whitespace: bool) -> String {
    if include_whitespace {
        line.to_string()
    } else {
        py_split(line).collect()
    }
}

/// Split one leading or trailing ASCII punctuation character off each word;
/// mirrors `CHRF._remove_punctuation` (including its quirk of splitting
/// `(hi)` into `(hi` and `)`).
fn remove_punctuation(sent: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in py_split(sent) {
        let mut chars = w.chars();
        match (chars.next(), chars.next_back()) {
            (Some(f), Some(l)) => {
                if PUNCTS.contains(l) {
                    let cut = w.len() - l.len_utf8();
                    out.extend([&w[..cut], &w[cut..]]);
                } else if PUNCTS.contains(f) {
                    let cut = f.len_utf8();
                    out.extend([&w[..cut], &w[cut..]]);
                } else {
                    out.push(w);
                }
            }
            // single character (or empty, which py_split never yields)
            _ => out.push(w),
        }
    }
    out
}

/// `[hyp count, ref count, matches]` for one order; mirrors
/// `CHRF._get_match_statistics`.
fn match_statistics<K: Hash + Eq>(hyp: &Counts<K>, reference: &Counts<K>) -> [u64; 3] {
    let mut matches = 0;
    let mut hyp_count = 0;
    for (g, c) in hyp {
        hyp_count += c;
        if let Some(r) = reference.get(g) {
            matches += (*c).min(*r);
        }
    }
    let ref_count = reference.values().sum();
    let hyp_count = if reference.is_empty() { 0 } else { hyp_count };
    [hyp_count, ref_count, matches]
}

/// The chrF(++) metric with a fixed configuration.
#[derive(Debug, Clone)]
pub struct Chrf {
    config: ChrfConfig,
}

impl Chrf {
    /// Validate `config` and build the metric.
    pub fn new(config: ChrfConfig) -> Result<Self, MetricsError> {
        if config.char_order + config.word_order == 0 {
            return Err(MetricsError::InvalidConfig {
                name: "chrF n-gram orders",
                reason: "char order + word order must be at least 1".into(),
            });
        }
        Ok(Chrf { config })
    }

    /// The configuration.
    pub fn config(&self) -> &ChrfConfig {
        &self.config
    }

    fn order(&self) -> usize {
        self.config.char_order + self.config.word_order
    }

    /// Optional lowercasing (`CHRF._preprocess_segment`).
    fn preprocess(&self, sent: &str) -> String {
        if self.config.lowercase {
            sent.to_lowercase()
        } else {
            sent.to_string()
        }
    }

    /// Character and word n-grams of a preprocessed segment: `text` is its
    /// [`char_text`], `words` its [`remove_punctuation`] words.
    fn ngrams<'a>(&self, text: &'a str, words: &'a [&'a str]) -> SegmentNgrams<'a> {
        let bounds = char_bounds(text);
        SegmentNgrams {
            chars: (1..=self.config.char_order)
                .map(|n| char_ngrams(text, &bounds, n))
                .collect(),
            words: (1..=self.config.word_order)
                .map(|n| word_ngrams(words, n))
                .collect(),
        }
    }

    /// chrF++'s words (none when the word order is 0).
    fn words<'a>(&self, sent: &'a str) -> Vec<&'a str> {
        if self.config.word_order > 0 {
            remove_punctuation(sent)
        } else {
            Vec::new()
        }
    }

    /// The match statistics of a hypothesis against one reference, chars first.
    fn match_all(hyp: &SegmentNgrams<'_>, reference: &SegmentNgrams<'_>) -> Vec<u64> {
        let chars = hyp.chars.iter().zip(&reference.chars);
        let words = hyp.words.iter().zip(&reference.words);
        chars
            .flat_map(|(h, r)| match_statistics(h, r))
            .chain(words.flat_map(|(h, r)| match_statistics(h, r)))
            .collect()
    }

    /// The F-score from (summed) statistics; mirrors `CHRF._compute_f_score`
    /// operation by operation.
    pub fn compute_f_score(&self, stats: &[u64]) -> f64 {
        let eps = 1e-16;
        let factor = f64::from(self.config.beta) * f64::from(self.config.beta);
        let mut score = 0.0;
        let mut effective_order = 0u32;
        let (mut avg_prec, mut avg_rec) = (0.0, 0.0);
        for i in 0..self.order() {
            let get = |j: usize| stats.get(3 * i + j).copied().unwrap_or(0);
            let (n_hyp, n_ref, n_match) = (get(0), get(1), get(2));
            let prec = if n_hyp > 0 {
                n_match as f64 / n_hyp as f64
            } else {
                eps
            };
            let rec = if n_ref > 0 {
                n_match as f64 / n_ref as f64
            } else {
                eps
            };
            let denom = factor * prec + rec;
            score += if denom > 0.0 {
                (1.0 + factor) * prec * rec / denom
            } else {
                eps
            };
            if n_hyp > 0 && n_ref > 0 {
                avg_prec += prec;
                avg_rec += rec;
                effective_order += 1;
            }
        }
        if self.config.eps_smoothing {
            return 100.0 * score / self.order() as f64;
        }
        if effective_order == 0 {
            avg_prec = 0.0;
            avg_rec = 0.0;
        } else {
            avg_prec /= f64::from(effective_order);
            avg_rec /= f64::from(effective_order);
        }
        if avg_prec + avg_rec != 0.0 {
            let mut s = (1.0 + factor) * avg_prec * avg_rec;
            s /= (factor * avg_prec) + avg_rec;
            100.0 * s
        } else {
            0.0
        }
    }

    /// Statistics of one segment against the best of its references;
    /// mirrors `CHRF._compute_segment_statistics`.
    pub fn segment_stats(&self, hyp: &str, refs: &[&str]) -> Vec<u64> {
        let ws = self.config.whitespace;
        let hyp = self.preprocess(hyp);
        let hyp_text = char_text(&hyp, ws);
        let hyp_words = self.words(&hyp);
        let hyp_grams = self.ngrams(&hyp_text, &hyp_words);
        let mut best: Vec<u64> = Vec::new();
        let mut best_f = -1.0;
        for r in refs {
            let r = self.preprocess(r);
            let ref_text = char_text(&r, ws);
            let ref_words = self.words(&r);
            let stats = Self::match_all(&hyp_grams, &self.ngrams(&ref_text, &ref_words));
            let f = self.compute_f_score(&stats);
            if f > best_f {
                best_f = f;
                best = stats;
            }
        }
        best
    }

    /// Corpus chrF; mirrors `CHRF.corpus_score` (`refs[k][i]` is the k-th
    /// reference of hypothesis `i`).
    pub fn corpus_score(
        &self,
        hyps: &[String],
        refs: &[Vec<String>],
    ) -> Result<ChrfScore, MetricsError> {
        let stats = self.segment_statistics(hyps, refs)?;
        Ok(self.score(&sum_statistics(&stats)))
    }

    /// chrF of one hypothesis; mirrors `CHRF.sentence_score`.
    pub fn sentence_score(&self, hyp: &str, refs: &[&str]) -> Result<ChrfScore, MetricsError> {
        if refs.is_empty() {
            return Err(MetricsError::NoData("no references".into()));
        }
        Ok(self.score(&self.segment_stats(hyp, refs)))
    }

    fn score(&self, stats: &[u64]) -> ChrfScore {
        ChrfScore {
            score: self.compute_f_score(stats),
            name: self.name(),
        }
    }

    /// The signature fields `case`, `eff`, `nc`, `nw`, `space` (`CHRFSignature`).
    pub fn signature_fields(&self) -> Vec<(&'static str, String)> {
        let c = &self.config;
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        vec![
            ("case", if c.lowercase { "lc" } else { "mixed" }.to_string()),
            ("eff", yes_no(!c.eps_smoothing)),
            ("nc", c.char_order.to_string()),
            ("nw", c.word_order.to_string()),
            ("space", yes_no(c.whitespace)),
        ]
    }
}

impl Metric for Chrf {
    fn name(&self) -> String {
        format!(
            "chrF{}{}",
            self.config.beta,
            "+".repeat(self.config.word_order)
        )
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
        self.compute_f_score(stats)
    }

    fn signature(&self, nrefs: usize) -> Signature {
        Signature::new(nrefs, self.signature_fields())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_splitting_quirks() {
        assert_eq!(
            remove_punctuation("(hi) a ,b c. é!"),
            ["(hi", ")", "a", ",", "b", "c", ".", "é", "!"]
        );
    }

    #[test]
    fn names_and_identity() {
        let c = Chrf::new(ChrfConfig::chrf_plus_plus()).unwrap();
        assert_eq!(c.name(), "chrF2++");
        let s = c
            .sentence_score("Hello, world!", &["Hello, world!"])
            .unwrap();
        assert!((s.score - 100.0).abs() < 1e-9);
        assert_eq!(c.sentence_score("", &["x"]).unwrap().score, 0.0);
    }
}
