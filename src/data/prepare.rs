//! Prepare: corpora -> tokenizers and shards of token ids, once, on all cores.
//!
//! A prepared directory holds the tokenizers, `corpus-<c>/shard-<k>.bin` per training corpus
//! ([`super::store`]) and `manifest.json` ([`Manifest`]): the inputs with their sizes and
//! checksums, the key of the inputs and the data config, counts, the read/skip/filter
//! report, the tokenizers' hash and the target unigram counts. The manifest is written last
//! and atomically, after every shard: a directory without one (an interrupted prepare) is
//! prepared again from scratch, and one whose key differs from the request is stale.
//!
//! The steps: checksum the inputs (in parallel with the next step); draw a seeded reservoir
//! sample of at most `data.tokenizer_sample` pairs over all training corpora in file order
//! (every pair when the corpora are smaller, so the tokenizers are exactly those trained on
//! all of them) and train the tokenizers on it; then stream each corpus again: one thread
//! reads and normalizes, the others encode chunks of pairs in parallel (rayon), and the
//! filters (length, ratio, duplicates) run in file order, so the kept pairs and the report
//! are those of an in-memory pass.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::batch::Example;
use crate::config::DataConfig;
use crate::corpus::{self, CorpusError, CorpusSource, Pair, ReadOptions, SkipCounts, StreamFilter};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tokenizer::{Tokenizers, EOS_ID, FILES};

use super::folder::FolderLock;
use super::store::{id_width, ShardWriter};

/// The prepared-corpus format version (part of the key).
pub const FORMAT_VERSION: u32 = 1;
/// The manifest's file name in a prepared directory.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Pairs read and encoded together.
const CHUNK: usize = 8192;

/// One input file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: String,
    pub bytes: u64,
    /// xxh3-64 of the content, hex.
    pub checksum: String,
}

/// One shard file of a corpus.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ShardEntry {
    pub file: String,
    pub pairs: u64,
    pub bytes: u64,
    pub checksum: String,
}

/// One prepared training corpus.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CorpusEntry {
    pub source: String,
    pub read: u64,
    pub skipped: u64,
    pub kept: u64,
    pub shards: Vec<ShardEntry>,
    /// Target id counts of the kept pairs, `</s>` counted once per pair: `[tgt vocab]`.
    pub tgt_counts: Vec<u64>,
}

/// `manifest.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Manifest {
    pub version: u32,
    /// Hash of the format, the sources, their checksums, the data config and the tokenizer
    /// plan: a prepared directory serves a request with the same key.
    pub key: String,
    pub inputs: Vec<InputFile>,
    /// Hash of the tokenizer files.
    pub tokenizer_hash: String,
    /// Whether the tokenizers were trained here (else given, from a resumed model).
    pub tokenizers_trained: bool,
    pub id_width: u32,
    pub corpora: Vec<CorpusEntry>,
    /// The report lines of the prepare.
    pub report: Vec<String>,
    /// Hash of the shards' checksums: equal for equal prepared data.
    pub content_hash: String,
}

/// Where the tokenizers come from.
pub enum Plan<'a> {
    /// Train them on a sample of the training corpora.
    Train,
    /// Use these (a resumed model's), whose files hash to the string.
    Given(&'a Tokenizers, String),
}

/// What to prepare.
pub struct Request<'a> {
    pub train: &'a [CorpusSource],
    pub skip_bad_lines: bool,
    pub cfg: &'a DataConfig,
}

impl Request<'_> {
    pub fn read_options(&self) -> ReadOptions {
        ReadOptions {
            normalization: self.cfg.normalization,
            skip_bad_lines: self.skip_bad_lines,
            max_line_bytes: self.cfg.max_line_bytes,
        }
    }

    /// The input files, in order.
    pub fn files(&self) -> Vec<PathBuf> {
        self.train
            .iter()
            .flat_map(|s| match s {
                CorpusSource::Delimited { path, .. } => vec![path.clone()],
                CorpusSource::Aligned { src, tgt } => vec![src.clone(), tgt.clone()],
            })
            .collect()
    }

    /// Sizes and checksums of the input files, in parallel.
    pub fn inputs(&self) -> Result<Vec<InputFile>> {
        self.files().par_iter().map(|p| checksum_file(p)).collect()
    }

    /// The cache key of this request with `inputs` and `plan`.
    pub fn key(&self, inputs: &[InputFile], plan: &Plan<'_>) -> String {
        let mut cfg = self.cfg.clone();
        cfg.weights.clear(); // mixing happens at training time
        let text = format!(
            "v{FORMAT_VERSION}|{:?}|{}|{}|{}|{}",
            self.train,
            self.skip_bad_lines,
            serde_json::to_string(&cfg).unwrap_or_default(),
            serde_json::to_string(inputs).unwrap_or_default(),
            match plan {
                Plan::Train => "train".to_string(),
                Plan::Given(_, h) => format!("given:{h}"),
            }
        );
        hex(xxhash_rust::xxh3::xxh3_64(text.as_bytes()))
    }
}

fn hex(x: u64) -> String {
    format!("{x:016x}")
}

/// Size and xxh3-64 of a file, read in 1 MiB blocks.
pub fn checksum_file(path: &Path) -> Result<InputFile> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        h.update(&buf[..n]);
    }
    Ok(InputFile {
        path: path.display().to_string(),
        bytes,
        checksum: hex(h.digest()),
    })
}

/// Checks the sizes of the data config before anything is allocated or written for them
/// (see [`crate::sizing`]): one line naming the key.
pub fn check_sizes(cfg: &DataConfig) -> Result<()> {
    use crate::sizing::{check, MAX_VOCAB_SIZE};
    check(
        "data.tokenizer.vocab_size",
        cfg.tokenizer.vocab_size,
        MAX_VOCAB_SIZE,
        "ids are stored in 32 bits and the tokenizer trainer's tables grow with it",
    )?;
    check(
        "data.tokenizer_sample",
        cfg.tokenizer_sample,
        usize::MAX,
        "pairs the tokenizers are trained on",
    )?;
    check(
        "data.max_line_bytes",
        cfg.max_line_bytes,
        usize::MAX,
        "bytes of one line",
    )?;
    Ok(())
}

/// Hash of the tokenizer files in `dir`.
pub fn tokenizer_hash(dir: &Path) -> Result<String> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for name in FILES {
        let path = dir.join(name);
        if path.is_file() {
            h.update(name.as_bytes());
            h.update(&crate::modelfile::read_bounded(
                &path,
                crate::tokenizer::MAX_TOKENIZER_BYTES,
                "a tokenizer file",
            )?);
        }
    }
    Ok(hex(h.digest()))
}

/// Copies the tokenizer files of `from` to `to` byte for byte (atomically), removing those
/// of the other layout.
pub fn copy_tokenizers(from: &Path, to: &Path) -> Result<()> {
    for name in FILES {
        let (a, b) = (from.join(name), to.join(name));
        if a.is_file() {
            let bytes = crate::modelfile::read_bounded(
                &a,
                crate::tokenizer::MAX_TOKENIZER_BYTES,
                "a tokenizer file",
            )?;
            crate::atomic::write_atomic(&b, &bytes)?;
        } else if b.is_file() {
            std::fs::remove_file(&b).map_err(|e| Error::io(&b, e))?;
        }
    }
    Ok(())
}

/// Most bytes of a `manifest.json` (it holds a count per target token, so it grows with
/// the vocabulary: about 12 bytes per token and corpus).
pub const MAX_MANIFEST_BYTES: u64 = 64 << 20;

/// Reads `dir/manifest.json`, if there is one that parses (a bounded read of a regular file:
/// a FIFO, a device or an oversized file counts as none).
pub fn read_manifest(dir: &Path) -> Option<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let bytes = crate::modelfile::read_bounded(&path, MAX_MANIFEST_BYTES, "a manifest").ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The sources of `req` as the manifest names them.
pub fn source_names(req: &Request<'_>) -> Vec<String> {
    req.train.iter().map(|s| s.to_string()).collect()
}

/// Reads every pair of `source` once (errors as the reader gives them), keeping a seeded
/// reservoir sample of at most `k` over `seen` pairs so far.
fn sample_into(
    source: &CorpusSource,
    opts: &ReadOptions,
    k: usize,
    rng: &mut Rng,
    seen: &mut u64,
    sample: &mut Vec<(u64, Pair)>,
) -> Result<()> {
    for pair in corpus::open(source, opts)? {
        let pair = pair?;
        if sample.len() < k {
            sample.push((*seen, pair));
        } else {
            let j = rng.below(*seen + 1) as usize;
            if j < k {
                sample[j] = (*seen, pair);
            }
        }
        *seen += 1;
    }
    Ok(())
}

/// What the reading thread sends.
enum Msg {
    Chunk(Vec<Pair>),
    Failed(CorpusError),
    Done(SkipCounts, u64),
}

/// Prepares `req` into the folder locked by `lock` (replacing rnmt's files there, see
/// [`super::folder`]) and returns the manifest. Report lines go to the manifest's `report`.
pub fn prepare_dir(
    req: &Request<'_>,
    plan: Plan<'_>,
    lock: &FolderLock,
) -> Result<(Manifest, Tokenizers)> {
    if !lock.is_exclusive() {
        return Err(Error::Input(format!(
            "{}: preparing needs the folder's exclusive lock",
            lock.dir().display()
        )));
    }
    let dir = lock.dir();
    // First the manifest, so that no manifest ever describes shards half replaced.
    let manifest_path = dir.join(MANIFEST_FILE);
    super::folder::clear(lock)?;
    let opts = req.read_options();
    let mut report = Vec::new();
    // Checksums on one thread while the sample is read on another.
    let (inputs, tokenizers) = rayon::join(
        || req.inputs(),
        || -> Result<(Tokenizers, Vec<String>)> {
            match &plan {
                Plan::Given(t, _) => Ok(((*t).clone(), Vec::new())),
                Plan::Train => {
                    let start = std::time::Instant::now();
                    let mut rng = Rng::new(req.cfg.sample_seed ^ 0x5A3D_1E5E_ED00_0001);
                    let (mut seen, mut sample) = (0u64, Vec::new());
                    for s in req.train {
                        sample_into(
                            s,
                            &opts,
                            req.cfg.tokenizer_sample,
                            &mut rng,
                            &mut seen,
                            &mut sample,
                        )?;
                    }
                    sample.sort_by_key(|(i, _)| *i);
                    let pairs: Vec<Pair> = sample.into_iter().map(|(_, p)| p).collect();
                    let (t, cut) = Tokenizers::train_counting_cuts(&pairs, &req.cfg.tokenizer)?;
                    let mut lines = vec![format!(
                        "tokenizers: trained {} BPE on {} of {seen} pairs, vocabulary {}/{} in {:.1}s",
                        if t.is_joint() { "joint" } else { "separate" },
                        pairs.len(),
                        t.src().vocab_size(),
                        t.tgt().vocab_size(),
                        start.elapsed().as_secs_f64()
                    )];
                    if cut > 0 {
                        lines.push(format!(
                            "tokenizers: {cut} word(s) longer than {} characters were cut to that length for tokenizer training (they are still encoded whole)",
                            crate::tokenizer::MAX_TRAINING_WORD_CHARS
                        ));
                    }
                    Ok((t, lines))
                }
            }
        },
    );
    let (inputs, (tokenizers, mut lines)) = (inputs?, tokenizers?);
    let trained = matches!(plan, Plan::Train);
    report.append(&mut lines);
    if trained {
        tokenizers.save_dir(dir)?;
    }
    let tok_hash = match &plan {
        Plan::Given(_, h) => h.clone(),
        Plan::Train => tokenizer_hash(dir)?,
    };
    let width = id_width(
        tokenizers
            .src()
            .vocab_size()
            .max(tokenizers.tgt().vocab_size()),
    );
    let mut corpora = Vec::new();
    let many = req.train.len() > 1;
    for (c, source) in req.train.iter().enumerate() {
        let name = if many {
            format!("train {}", c + 1)
        } else {
            "train".to_string()
        };
        let sub = format!("corpus-{c}");
        std::fs::create_dir_all(dir.join(&sub)).map_err(|e| Error::io(&dir.join(&sub), e))?;
        let entry = encode_corpus(
            source,
            &opts,
            req,
            &tokenizers,
            width,
            dir,
            &sub,
            &name,
            &mut report,
        )?;
        corpora.push(entry);
    }
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for s in corpora.iter().flat_map(|c| &c.shards) {
        h.update(s.checksum.as_bytes());
        h.update(&s.pairs.to_le_bytes());
    }
    let manifest = Manifest {
        version: FORMAT_VERSION,
        key: req.key(&inputs, &plan),
        inputs,
        tokenizer_hash: tok_hash,
        tokenizers_trained: trained,
        id_width: width,
        corpora,
        report,
        content_hash: hex(h.digest()),
    };
    let json =
        serde_json::to_string_pretty(&manifest).map_err(|e| Error::json(MANIFEST_FILE, e))?;
    crate::atomic::write_atomic(&manifest_path, json.as_bytes())?;
    Ok((manifest, tokenizers))
}

/// Streams one corpus into shards: reading on one thread, encoding in parallel, filtering in
/// order.
#[allow(clippy::too_many_arguments)]
fn encode_corpus(
    source: &CorpusSource,
    opts: &ReadOptions,
    req: &Request<'_>,
    tok: &Tokenizers,
    width: u32,
    dir: &Path,
    sub: &str,
    name: &str,
    report: &mut Vec<String>,
) -> Result<CorpusEntry> {
    let mut reader = corpus::open(source, opts)?;
    let (tx, rx) = mpsc::sync_channel::<Msg>(2);
    let mut filter = StreamFilter::new(&req.cfg.filter);
    let mut writer = ShardWriter::new(width);
    let mut shards = Vec::new();
    let vocab = tok.tgt().vocab_size();
    let mut tgt_counts = vec![0u64; vocab];
    let shard_pairs = req.cfg.shard_pairs.max(1);
    let flush = |writer: &mut ShardWriter, shards: &mut Vec<ShardEntry>| -> Result<()> {
        let file = format!("{sub}/shard-{:05}.bin", shards.len());
        let pairs = writer.len() as u64;
        let (bytes, sum) = writer.write(&dir.join(&file))?;
        shards.push(ShardEntry {
            file,
            pairs,
            bytes,
            checksum: hex(sum),
        });
        Ok(())
    };
    let outcome: Result<(SkipCounts, u64)> = std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut chunk = Vec::with_capacity(CHUNK);
            for pair in reader.by_ref() {
                match pair {
                    Ok(p) => {
                        chunk.push(p);
                        if chunk.len() == CHUNK
                            && tx
                                .send(Msg::Chunk(std::mem::replace(
                                    &mut chunk,
                                    Vec::with_capacity(CHUNK),
                                )))
                                .is_err()
                        {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Msg::Failed(e));
                        return;
                    }
                }
            }
            if !chunk.is_empty() && tx.send(Msg::Chunk(chunk)).is_err() {
                return;
            }
            let _ = tx.send(Msg::Done(*reader.skipped(), reader.pairs_read()));
        });
        for msg in rx.iter() {
            match msg {
                Msg::Chunk(pairs) => {
                    let encoded: Vec<Result<Example>> = pairs
                        .par_iter()
                        .map(|p| {
                            Ok(Example {
                                src: tok.src().encode(&p.src)?,
                                tgt: tok.tgt().encode(&p.tgt)?,
                            })
                        })
                        .collect();
                    for (p, e) in pairs.iter().zip(encoded) {
                        let e = e?;
                        if !filter.keep(&p.src, &p.tgt, (e.src.len(), e.tgt.len())) {
                            continue;
                        }
                        for &t in &e.tgt {
                            if let Some(c) = tgt_counts.get_mut(t as usize) {
                                *c += 1;
                            }
                        }
                        if let Some(c) = tgt_counts.get_mut(EOS_ID as usize) {
                            *c += 1;
                        }
                        writer.push(&e);
                        if writer.len() >= shard_pairs {
                            flush(&mut writer, &mut shards)?;
                        }
                    }
                }
                Msg::Failed(e) => return Err(e.into()),
                Msg::Done(skipped, read) => return Ok((skipped, read)),
            }
        }
        Err(Error::Input(format!(
            "{source}: reading stopped unexpectedly"
        )))
    });
    let (skipped, read) = outcome?;
    if !writer.is_empty() {
        flush(&mut writer, &mut shards)?;
    }
    let filtered = filter.report();
    report.push(format!("{name}: {read} pairs read from {source}"));
    if skipped.total() > 0 {
        report.push(format!("{name}: {skipped}"));
    }
    report.push(format!("{name}: {filtered}; {} pairs kept", filtered.kept));
    if filtered.kept == 0 {
        return Err(Error::Input(format!(
            "{name}: the filters removed all {read} pairs ({filtered}); loosen data.filter (max_len, max_ratio) or check {source}"
        )));
    }
    Ok(CorpusEntry {
        source: source.to_string(),
        read,
        skipped: skipped.total(),
        kept: filtered.kept as u64,
        shards,
        tgt_counts,
    })
}
