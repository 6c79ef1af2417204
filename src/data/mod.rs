//! Training data: prepare the corpora once into shards of token ids ([`prepare`],
//! [`store`]), mix several corpora with weights ([`mixer`]), and hand the trainer its
//! batches in a seeded, resumable order ([`sampler`]). The validation set is small and kept in
//! memory.
//!
//! [`load`] is what `rnmt-train` runs: it prepares the training corpora into the prepared
//! directory (by default `MODEL_DIR/prepared`) unless a prepare with the same key is there
//! already (a cache keyed by the inputs' checksums and the data config), and opens it. A
//! resumed run keeps its tokenizers; a training file changed since its data were prepared
//! stops it with one line.
pub mod args;
pub mod folder;
pub mod mixer;
pub mod prepare;
pub mod sampler;
pub mod store;
pub mod verify;

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

/// The training corpora opened, and the validation set in memory.
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
    /// The shared lock on it, held while the data are in use (see [`folder`]).
    pub lock: folder::FolderLock,
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

/// Prepares (or finds prepared) the training corpora of `spec` and opens them; reads and
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
    prepare::check_sizes(cfg)?;
    let inputs = req.inputs()?;
    let shared = folder::lock_shared(&data_dir)?;
    let found = shared
        .as_ref()
        .and_then(|_| prepare::read_manifest(&data_dir));
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
    let sources = prepare::source_names(&req);
    // A usable manifest whose folder passes every check (see [`verify`]); a damaged one is
    // prepared again, with a line saying why.
    let mut cached = None;
    if let Some(m) = &found {
        if usable(m)? {
            match open_cached(&data_dir, m, &sources, given.as_ref().map(|g| &g.0)) {
                Ok(c) => cached = Some(c),
                Err(e) => report.push(format!("data: {e}; preparing it again")),
            }
        }
    }
    let (dir, manifest, tokenizers, stores, lock) = if let Some((stores, found_tok)) = cached {
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
                found_tok
            }
        };
        report.extend(m.report.iter().cloned());
        let lock = shared.expect("a manifest was read under it");
        (data_dir, m, tokenizers, stores, lock)
    } else {
        let (dir, lock) = match (&spec.fallback_dir, shared) {
            (Some(f), _) => (f.clone(), folder::lock_exclusive(f)?),
            (None, Some(l)) => (data_dir, l.upgrade()?),
            (None, None) => {
                let l = folder::lock_exclusive(&data_dir)?;
                (data_dir, l)
            }
        };
        let start = std::time::Instant::now();
        let plan = match &given {
            Some((t, h)) => Plan::Given(t, h.clone()),
            None => Plan::Train,
        };
        let (m, tokenizers) = prepare::prepare_dir(&req, plan, &lock)?;
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
        let stores = verify::open_verified(
            &dir,
            &m,
            &sources,
            tokenizers.src().vocab_size(),
            tokenizers.tgt().vocab_size(),
        )?;
        (dir, m, tokenizers, stores, lock.downgrade()?)
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
        lock,
    })
}

/// The stores of the prepared folder `dir` described by `m` after [`verify`]'s checks, with
/// the tokenizers they were encoded with: `given` (a resumed run's), else the folder's own,
/// whose files must hash to the manifest's `tokenizer_hash`.
pub fn open_cached(
    dir: &Path,
    m: &Manifest,
    sources: &[String],
    given: Option<&Tokenizers>,
) -> Result<(Vec<store::ShardStore>, Tokenizers)> {
    let tokenizers = match given {
        Some(t) => t.clone(),
        None => {
            let h = prepare::tokenizer_hash(dir)?;
            if h != m.tokenizer_hash {
                return Err(Error::Input(format!(
                    "damaged prepared corpus {}: its tokenizer files hash to {h}, the manifest says {} (another prepare's tokenizer?)",
                    dir.display(),
                    m.tokenizer_hash
                )));
            }
            Tokenizers::load_dir(dir)?
        }
    };
    let stores = verify::open_verified(
        dir,
        m,
        sources,
        tokenizers.src().vocab_size(),
        tokenizers.tgt().vocab_size(),
    )?;
    Ok((stores, tokenizers))
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
