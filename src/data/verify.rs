//! Checking a prepared folder before training on it: the manifest may have been edited and
//! the shards forged (or damaged) with their sizes kept. A folder is used only when
//!
//! - it lists exactly the requested corpora, once each, in order, each with at least one
//!   shard;
//! - every shard is the regular file `corpus-<c>/shard-<k>.bin` inside the folder (no other
//!   path, no link out of it), of the size and xxh3 checksum the manifest records;
//! - each shard's header, lengths and offsets agree ([`super::store::Shard::open`]), every id
//!   is inside the vocabularies, and the pair counts and the content hash add up;
//! - the tokenizer files hash to the manifest's `tokenizer_hash` (checked by the caller).
//!
//! Otherwise the error says what is wrong, and rnmt-train and rnmt-prepare prepare the folder
//! again.
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::prepare::{checksum_file, Manifest};
use super::store::ShardStore;

fn damaged(dir: &Path, what: String) -> Error {
    Error::Input(format!(
        "damaged prepared corpus {}: {what}; delete it or run rnmt-prepare",
        dir.display()
    ))
}

/// The path a prepare writes for shard `k` of corpus `c`.
pub fn shard_file(c: usize, k: usize) -> String {
    format!("corpus-{c}/shard-{k:05}.bin")
}

/// Opens the shards of `m` in `dir` after the checks of the module docs. `sources` are the
/// requested corpora (as [`crate::corpus::CorpusSource`] prints them), `src_vocab` and
/// `tgt_vocab` the tokenizers' vocabulary sizes.
pub fn open_verified(
    dir: &Path,
    m: &Manifest,
    sources: &[String],
    src_vocab: usize,
    tgt_vocab: usize,
) -> Result<Vec<ShardStore>> {
    if m.corpora.len() != sources.len() {
        return Err(damaged(
            dir,
            format!(
                "the manifest lists {} corpora, {} were asked for",
                m.corpora.len(),
                sources.len()
            ),
        ));
    }
    let mut content = xxhash_rust::xxh3::Xxh3::new();
    let mut stores = Vec::with_capacity(m.corpora.len());
    for (c, (entry, source)) in m.corpora.iter().zip(sources).enumerate() {
        if &entry.source != source {
            return Err(damaged(
                dir,
                format!(
                    "corpus {c} of the manifest is {}, not {source}",
                    entry.source
                ),
            ));
        }
        if entry.shards.is_empty() {
            return Err(damaged(dir, format!("corpus {c} lists no shard")));
        }
        let sub = dir.join(format!("corpus-{c}"));
        let is_dir = std::fs::symlink_metadata(&sub).is_ok_and(|t| t.file_type().is_dir());
        if !is_dir {
            return Err(damaged(
                dir,
                format!("{} is not a folder inside it", sub.display()),
            ));
        }
        let mut paths: Vec<PathBuf> = Vec::with_capacity(entry.shards.len());
        let mut pairs = 0u64;
        for (k, s) in entry.shards.iter().enumerate() {
            if s.file != shard_file(c, k) {
                return Err(damaged(
                    dir,
                    format!(
                        "shard {k} of corpus {c} is listed as {:?}; only {:?} is allowed",
                        s.file,
                        shard_file(c, k)
                    ),
                ));
            }
            let p = dir.join(&s.file);
            let meta = std::fs::symlink_metadata(&p).map_err(|e| Error::io(&p, e))?;
            if !meta.file_type().is_file() {
                return Err(damaged(
                    dir,
                    format!("{} is not a regular file", p.display()),
                ));
            }
            if meta.len() != s.bytes {
                return Err(damaged(
                    dir,
                    format!(
                        "{}: {} bytes, the manifest says {}",
                        p.display(),
                        meta.len(),
                        s.bytes
                    ),
                ));
            }
            let sum = checksum_file(&p)?;
            if sum.checksum != s.checksum {
                return Err(damaged(
                    dir,
                    format!(
                        "{}: xxh3 {}, the manifest says {}",
                        p.display(),
                        sum.checksum,
                        s.checksum
                    ),
                ));
            }
            pairs = pairs.saturating_add(s.pairs);
            content.update(s.checksum.as_bytes());
            content.update(&s.pairs.to_le_bytes());
            paths.push(p);
        }
        let mut store = ShardStore::open(&paths)?;
        if store.len() as u64 != pairs || pairs != entry.kept {
            return Err(damaged(
                dir,
                format!(
                    "corpus {c}: the shards hold {} pairs, the manifest says {pairs} in its shards and {} kept",
                    store.len(),
                    entry.kept
                ),
            ));
        }
        store.check_ids(src_vocab, tgt_vocab)?;
        stores.push(store);
    }
    let hash = format!("{:016x}", content.digest());
    if hash != m.content_hash {
        return Err(damaged(
            dir,
            format!(
                "its content hash is {hash}, the manifest says {}",
                m.content_hash
            ),
        ));
    }
    Ok(stores)
}
