//! Training-data filters: maximum length, maximum length ratio, exact duplicates.
//!
//! Lengths are counted by a caller-supplied function (normally the subword tokenizer's token
//! count), so this module does not depend on the tokenizer.

use std::collections::HashSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{Pair, Side};

/// Which pairs to drop from training data.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FilterConfig {
    /// Drop a pair if either side has more than this many tokens (default 100).
    pub max_len: Option<usize>,
    /// Drop a pair if `max(len_src, len_tgt) / min(len_src, len_tgt)` exceeds this (default 3.0).
    pub max_ratio: Option<f64>,
    /// Drop exact duplicate (source, target) pairs, keeping the first (default true).
    pub dedup: bool,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            max_len: Some(100),
            max_ratio: Some(3.0),
            dedup: true,
        }
    }
}

/// What [`filter`] kept and dropped. Each dropped pair is counted once, under the first check
/// it failed, in the order length, ratio, duplicate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FilterReport {
    /// Pairs given.
    pub input: usize,
    /// Pairs kept.
    pub kept: usize,
    /// Dropped because a side was longer than `max_len`.
    pub too_long: usize,
    /// Dropped because the length ratio exceeded `max_ratio`.
    pub bad_ratio: usize,
    /// Dropped as exact duplicates of an earlier pair.
    pub duplicate: usize,
}

impl fmt::Display for FilterReport {
    /// E.g. `kept 95 of 100 pairs (dropped 3 too long, 1 length ratio, 1 duplicate)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kept {} of {} pairs (dropped {} too long, {} length ratio, {} duplicate)",
            self.kept, self.input, self.too_long, self.bad_ratio, self.duplicate
        )
    }
}

/// Ratio check: a side with zero tokens against a non-empty one has an infinite ratio.
fn ratio_exceeds(a: usize, b: usize, max_ratio: f64) -> bool {
    let (lo, hi) = (a.min(b), a.max(b));
    if lo == 0 {
        return hi > 0;
    }
    hi as f64 / lo as f64 > max_ratio
}

/// [`filter_items`] one pair at a time, for corpora that do not fit in memory: the same
/// checks in the same order and the same report; duplicates are found by a 128-bit hash of
/// the pair (16 bytes per distinct pair kept in memory).
#[derive(Debug)]
pub struct StreamFilter {
    cfg: FilterConfig,
    seen: HashSet<u128>,
    report: FilterReport,
}

impl StreamFilter {
    pub fn new(cfg: &FilterConfig) -> Self {
        StreamFilter {
            cfg: *cfg,
            seen: HashSet::new(),
            report: FilterReport::default(),
        }
    }

    /// Whether to keep the pair `(src, tgt)` of `lens` tokens per side.
    pub fn keep(&mut self, src: &str, tgt: &str, (ls, lt): (usize, usize)) -> bool {
        let cfg = &self.cfg;
        let r = &mut self.report;
        r.input += 1;
        if cfg.max_len.is_some_and(|m| ls > m || lt > m) {
            r.too_long += 1;
            return false;
        }
        if cfg.max_ratio.is_some_and(|m| ratio_exceeds(ls, lt, m)) {
            r.bad_ratio += 1;
            return false;
        }
        if cfg.dedup {
            // 0xFF never occurs in UTF-8: the boundary between the sides is unambiguous.
            let mut h = xxhash_rust::xxh3::Xxh3::new();
            h.update(src.as_bytes());
            h.update(&[0xFF]);
            h.update(tgt.as_bytes());
            if !self.seen.insert(h.digest128()) {
                r.duplicate += 1;
                return false;
            }
        }
        r.kept += 1;
        true
    }

    pub fn report(&self) -> FilterReport {
        self.report
    }
}

/// Filters `pairs` by `cfg`, keeping order; `len` counts the tokens of one side's text (the
/// side matters when source and target have separate tokenizers).
pub fn filter<F>(pairs: Vec<Pair>, cfg: &FilterConfig, mut len: F) -> (Vec<Pair>, FilterReport)
where
    F: FnMut(Side, &str) -> usize,
{
    filter_items(
        pairs,
        cfg,
        |p| p,
        |p| (len(Side::Source, &p.src), len(Side::Target, &p.tgt)),
    )
}

/// [`filter`] over any items that hold a pair (`pair`), with their side lengths in tokens
/// computed by `lens` (called only when a length or ratio filter is on), e.g. pairs kept
/// together with their token ids so that they are tokenized once.
pub fn filter_items<T, P, L>(
    items: Vec<T>,
    cfg: &FilterConfig,
    pair: P,
    mut lens: L,
) -> (Vec<T>, FilterReport)
where
    P: Fn(&T) -> &Pair,
    L: FnMut(&T) -> (usize, usize),
{
    let mut report = FilterReport {
        input: items.len(),
        ..FilterReport::default()
    };
    let mut keep = vec![false; items.len()];
    {
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            if cfg.max_len.is_some() || cfg.max_ratio.is_some() {
                let (ls, lt) = lens(item);
                if cfg.max_len.is_some_and(|m| ls > m || lt > m) {
                    report.too_long += 1;
                    continue;
                }
                if cfg.max_ratio.is_some_and(|r| ratio_exceeds(ls, lt, r)) {
                    report.bad_ratio += 1;
                    continue;
                }
            }
            let p = pair(item);
            if cfg.dedup && !seen.insert((&p.src, &p.tgt)) {
                report.duplicate += 1;
                continue;
            }
            keep[i] = true;
        }
    }
    let kept: Vec<T> = items
        .into_iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(p))
        .collect();
    report.kept = kept.len();
    (kept, report)
}
