//! Training data preparation: read the corpora, train (or reuse) the tokenizers, encode,
//! filter, and report what was read, skipped and filtered.
use std::path::Path;

use crate::batch::Example;
use crate::config::DataConfig;
use crate::corpus::{self, CorpusSource, Pair, ReadOptions};
use crate::error::{Error, Result};
use crate::tokenizer::{Tokenizers, JOINT_FILE, SRC_FILE};

/// Where the training and validation pairs come from.
#[derive(Debug, Clone)]
pub struct DataSpec {
    pub train: CorpusSource,
    pub valid: CorpusSource,
    /// Skip malformed lines (counted and reported) instead of stopping at the first.
    pub skip_bad_lines: bool,
    /// Reuse the tokenizers found in the model directory (when resuming); otherwise they are
    /// trained anew and replace any there.
    pub reuse_tokenizers: bool,
}

/// Encoded training and validation data.
#[derive(Debug)]
pub struct Prepared {
    pub tokenizers: Tokenizers,
    pub train: Vec<Example>,
    pub valid: Vec<Example>,
    /// Normalized validation targets, the BLEU references.
    pub valid_refs: Vec<String>,
    /// Human-readable lines: counts read, skipped, filtered.
    pub report: Vec<String>,
}

/// Encodes pairs with the tokenizers.
pub fn encode_pairs(tok: &Tokenizers, pairs: &[Pair]) -> Result<Vec<Example>> {
    pairs
        .iter()
        .map(|p| {
            Ok(Example {
                src: tok.src().encode(&p.src)?,
                tgt: tok.tgt().encode(&p.tgt)?,
            })
        })
        .collect()
}

/// Log unigram probabilities of the target tokens of `examples` (each sentence's `</s>`
/// included), add-one smoothed over a vocabulary of `vocab`: `[vocab]`, summing to 1 after
/// `exp`. Used as the output layer's initial bias (see `train.unigram_output_bias`).
pub fn target_log_prior(examples: &[Example], vocab: usize) -> Vec<f32> {
    let mut counts = vec![1.0f64; vocab];
    for e in examples {
        for &t in &e.tgt {
            if let Some(c) = counts.get_mut(t as usize) {
                *c += 1.0;
            }
        }
        if let Some(c) = counts.get_mut(crate::tokenizer::EOS_ID as usize) {
            *c += 1.0;
        }
    }
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| (c / total).ln() as f32).collect()
}

/// Reads, tokenizes and filters. With `spec.reuse_tokenizers` the tokenizers in `model_dir`
/// are used; otherwise they are trained on the training pairs and saved there. A training set
/// that the filters empty is an error.
pub fn prepare(spec: &DataSpec, cfg: &DataConfig, model_dir: &Path) -> Result<Prepared> {
    let opts = ReadOptions {
        normalization: cfg.normalization,
        skip_bad_lines: spec.skip_bad_lines,
        max_line_bytes: cfg.max_line_bytes,
    };
    let mut report = Vec::new();
    let mut read = |name: &str, source: &CorpusSource| -> Result<Vec<Pair>> {
        let (pairs, skipped) = corpus::read_all(source, &opts)?;
        report.push(format!("{name}: {} pairs read from {source}", pairs.len()));
        if skipped.total() > 0 {
            report.push(format!("{name}: {skipped}"));
        }
        Ok(pairs)
    };
    let train_pairs = read("train", &spec.train)?;
    let valid_pairs = read("valid", &spec.valid)?;

    let tokenizers = if spec.reuse_tokenizers
        && [JOINT_FILE, SRC_FILE]
            .iter()
            .any(|f| model_dir.join(f).exists())
    {
        report.push(format!(
            "tokenizers: reusing those in {}",
            model_dir.display()
        ));
        Tokenizers::load_dir(model_dir)?
    } else {
        let start = std::time::Instant::now();
        let (t, cut) = Tokenizers::train_counting_cuts(&train_pairs, &cfg.tokenizer)?;
        t.save_dir(model_dir)?;
        report.push(format!(
            "tokenizers: trained {} BPE, vocabulary {}/{} in {:.1}s",
            if t.is_joint() { "joint" } else { "separate" },
            t.src().vocab_size(),
            t.tgt().vocab_size(),
            start.elapsed().as_secs_f64()
        ));
        if cut > 0 {
            report.push(format!(
                "tokenizers: {cut} word(s) longer than {} characters were cut to that length for tokenizer training (they are still encoded whole)",
                crate::tokenizer::MAX_TRAINING_WORD_CHARS
            ));
        }
        t
    };

    // Tokenized once: the length filters read the same ids the model trains on.
    let ids = encode_pairs(&tokenizers, &train_pairs)?;
    let read = train_pairs.len();
    let (kept, filtered) = corpus::filter_items(
        train_pairs.into_iter().zip(ids).collect(),
        &cfg.filter,
        |(p, _)| p,
        |(_, e)| (e.src.len(), e.tgt.len()),
    );
    report.push(format!("train: {filtered}; {} pairs kept", kept.len()));
    if kept.is_empty() {
        return Err(Error::Input(format!(
            "train: the filters removed all {read} pairs ({filtered}); loosen data.filter (max_len, max_ratio) or check {}",
            spec.train
        )));
    }
    let train = kept.into_iter().map(|(_, e)| e).collect();
    let valid = encode_pairs(&tokenizers, &valid_pairs)?;
    let valid_refs = valid_pairs.into_iter().map(|p| p.tgt).collect();
    Ok(Prepared {
        tokenizers,
        train,
        valid,
        valid_refs,
        report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_prior_is_a_smoothed_distribution() {
        let ex = |tgt: Vec<u32>| Example { src: vec![5], tgt };
        let p = target_log_prior(&[ex(vec![4, 4, 5]), ex(vec![4])], 7);
        let total: f64 = p.iter().map(|&l| (l as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        // counts + 1: pad 1, unk 1, bos 1, eos 3, tok4 4, tok5 2, tok6 1 -> 13
        let want = [1.0, 1.0, 1.0, 3.0, 4.0, 2.0, 1.0].map(|c: f64| (c / 13.0).ln() as f32);
        for (a, b) in p.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{p:?}");
        }
    }
}
