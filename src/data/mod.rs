//! Training data: prepare the corpora once into memory-mapped shards ([`prepare`],
//! [`store`]), mix several corpora with weights ([`mixer`]), and hand the trainer its
//! batches in a seeded, resumable order ([`sampler`]). The validation set is small and kept in
//! memory.
//!
//! [`load`] is what `rnmt-train` runs: it prepares the training corpora into the prepared
//! directory (by default `MODEL_DIR/prepared`) unless a prepare with the same key is there
//! already (a cache keyed by the inputs' checksums and the data config), and maps it. A
//! resumed run keeps its tokenizers; a training file changed since its data were prepared
//! stops it with one line.
pub mod args;
pub mod mixer;
pub mod prepare;
pub mod sampler;
pub mod store;

use std::path::{Path, PathBuf};

use crate::batch::Example;
use crate::config::DataConfig;
use crate::corpus::{self, CorpusSource, Pair, ReadOptions};
use crate::error::{Error, Result};
use crate::tokenizer::{Tokenizers, JOINT_FILE, SRC_FILE};

use mixer::TrainSet;
use prepare::{Manifest, Plan, Request};

/// Where the training and validation pairs come from.
#[derive(Debug, Clone)]
pub struct DataSpec {
    /// The training corpora (weights in `data.weights`).
    pub train: Vec<CorpusSource>,
    pub valid: CorpusSource,
    /// Skip malformed lines (counted and reported) instead of stopping at the first.
    pub skip_bad_lines: bool,
    /// Reuse the tokenizers found in the model directory (when resuming); otherwise they are
    /// trained anew and replace any there.
    pub reuse_tokenizers: bool,
    /// The prepared directory (default `MODEL_DIR/prepared`).
    pub data_dir: Option<PathBuf>,
    /// Where to prepare when `data_dir` does not hold this request (instead of replacing it):
    /// the other ranks of a data-parallel run, which never write rank 0's directory.
    pub fallback_dir: Option<PathBuf>,
}

/// The training corpora mapped, and the validation set in memory.
pub struct Prepared {
    pub tokenizers: Tokenizers,
    pub train: TrainSet,
    pub valid: Vec<Example>,
    /// Normalized validation targets, the BLEU references.
    pub valid_refs: Vec<String>,
    /// Human-readable lines: counts read, skipped, filtered.
    pub report: Vec<String>,
    /// Target id counts over an epoch's items (weights applied), `</s>` once per item.
    pub tgt_counts: Vec<f64>,
    /// The prepared directory in use.
    pub data_dir: PathBuf,
}

/// The default prepared directory of a model directory.
pub const PREPARED_DIR: &str = "prepared";

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
    let mut counts = vec![0.0f64; vocab];
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
    log_prior(&counts, vocab)
}

/// [`target_log_prior`] from token counts (`[vocab]`, `</s>` included).
pub fn log_prior(counts: &[f64], vocab: usize) -> Vec<f32> {
    let counts: Vec<f64> = (0..vocab)
        .map(|i| 1.0 + counts.get(i).copied().unwrap_or(0.0))
        .collect();
    let total: f64 = counts.iter().sum();
    counts.iter().map(|c| (c / total).ln() as f32).collect()
}

/// Prepares (or finds prepared) the training corpora of `spec` and maps them; reads and
/// encodes the validation set. With `spec.reuse_tokenizers` (a resumed run) the tokenizers
/// in `model_dir` are used; otherwise the prepared directory's, trained there, are copied to
/// `model_dir`.
pub fn load(spec: &DataSpec, cfg: &DataConfig, model_dir: &Path) -> Result<Prepared> {
    let data_dir = spec
        .data_dir
        .clone()
        .unwrap_or_else(|| model_dir.join(PREPARED_DIR));
    let req = Request {
        train: &spec.train,
        skip_bad_lines: spec.skip_bad_lines,
        cfg,
    };
    let given = if spec.reuse_tokenizers
        && [JOINT_FILE, SRC_FILE]
            .iter()
            .any(|f| model_dir.join(f).exists())
    {
        Some((
            Tokenizers::load_dir(model_dir)?,
            prepare::tokenizer_hash(model_dir)?,
        ))
    } else {
        None
    };
    let inputs = req.inputs()?;
    let found = prepare::read_manifest(&data_dir);
    let mut report = Vec::new();
    // Does the prepared directory serve this request?
    let usable = |m: &Manifest| -> Result<bool> {
        match &given {
            None => Ok(m.key == req.key(&inputs, &Plan::Train)),
            Some((t, h)) => {
                if let Some((was, now)) = m
                    .inputs
                    .iter()
                    .zip(&inputs)
                    .find(|(a, b)| a.path == b.path && a.checksum != b.checksum)
                {
                    return Err(Error::Input(format!(
                        "{}: the file changed since this run's training data were prepared ({} bytes, xxh3 {}; now {} bytes, xxh3 {}): a resumed run must train on the same data; restore the file or train in a new --model-dir",
                        now.path, was.bytes, was.checksum, now.bytes, now.checksum
                    )));
                }
                Ok(
                    (m.key == req.key(&inputs, &Plan::Train) && &m.tokenizer_hash == h)
                        || m.key == req.key(&inputs, &Plan::Given(t, h.clone())),
                )
            }
        }
    };
    // A usable manifest whose shards are all there (a damaged shard is prepared again).
    let mut cached_stores = None;
    if let Some(m) = &found {
        if usable(m)? {
            cached_stores = prepare::open_stores(&data_dir, m).ok();
        }
    }
    let cached = cached_stores.is_some();
    let (dir, manifest, tokenizers) = if cached {
        let m = found.expect("checked");
        report.push(format!(
            "data: the prepared corpus in {} (prepared earlier; {} pairs in {} shard(s))",
            data_dir.display(),
            m.corpora.iter().map(|c| c.kept).sum::<u64>(),
            m.corpora.iter().map(|c| c.shards.len()).sum::<usize>()
        ));
        let tokenizers = match &given {
            Some((t, _)) => t.clone(),
            None => {
                prepare::copy_tokenizers(&data_dir, model_dir)?;
                Tokenizers::load_dir(model_dir)?
            }
        };
        (data_dir, m, tokenizers)
    } else {
        let dir = match (&found, &spec.fallback_dir) {
            (_, Some(f)) => f.clone(),
            _ => data_dir,
        };
        let start = std::time::Instant::now();
        let plan = match &given {
            Some((t, h)) => Plan::Given(t, h.clone()),
            None => Plan::Train,
        };
        let (m, tokenizers) = prepare::prepare_dir(&req, plan, &dir)?;
        if given.is_none() {
            prepare::copy_tokenizers(&dir, model_dir)?;
        } else {
            report.push(format!(
                "tokenizers: reusing those in {}",
                model_dir.display()
            ));
        }
        report.extend(m.report.iter().cloned());
        report.push(format!(
            "data: prepared {} pairs into {} in {:.1}s",
            m.corpora.iter().map(|c| c.kept).sum::<u64>(),
            dir.display(),
            start.elapsed().as_secs_f64()
        ));
        (dir, m, tokenizers)
    };
    if cached {
        report.extend(manifest.report.iter().cloned());
    }
    let stores = match cached_stores {
        Some(s) => s,
        None => prepare::open_stores(&dir, &manifest)?,
    };
    let content = u64::from_str_radix(&manifest.content_hash, 16).unwrap_or(0);
    let train = TrainSet::new(stores, &cfg.weights, content)?;
    let vocab = tokenizers.tgt().vocab_size();
    let mut tgt_counts = vec![0.0f64; vocab];
    for (c, entry) in manifest.corpora.iter().enumerate() {
        let times = train.items_per_corpus()[c] as f64 / (entry.kept.max(1)) as f64;
        for (t, &n) in entry.tgt_counts.iter().enumerate() {
            if let Some(x) = tgt_counts.get_mut(t) {
                *x += times * n as f64;
            }
        }
    }
    if train.corpora().len() > 1 {
        report.push(format!(
            "train: {} items per epoch from {} corpora ({})",
            train.len(),
            train.corpora().len(),
            train
                .items_per_corpus()
                .iter()
                .zip(&manifest.corpora)
                .map(|(m, c)| format!("{m} of the {} pairs of {}", c.kept, c.source))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let opts = ReadOptions {
        normalization: cfg.normalization,
        skip_bad_lines: spec.skip_bad_lines,
        max_line_bytes: cfg.max_line_bytes,
    };
    let (valid_pairs, skipped) = corpus::read_all(&spec.valid, &opts)?;
    report.push(format!(
        "valid: {} pairs read from {}",
        valid_pairs.len(),
        spec.valid
    ));
    if skipped.total() > 0 {
        report.push(format!("valid: {skipped}"));
    }
    let valid = encode_pairs(&tokenizers, &valid_pairs)?;
    let valid_refs = valid_pairs.into_iter().map(|p| p.tgt).collect();
    Ok(Prepared {
        tokenizers,
        train,
        valid,
        valid_refs,
        report,
        tgt_counts,
        data_dir: dir,
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
