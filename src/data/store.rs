//! The shard store: sentence pairs as token ids in memory-mapped files.
//!
//! One shard file holds `n` pairs (after fairseq's `indexed_dataset`: a header, the sizes, the
//! offsets, then the ids, read in place):
//!
//! | bytes | content |
//! |---|---|
//! | 8 | magic `RNMTIDS1` |
//! | 4 | id width in bytes, 2 (`u16`, a vocabulary of at most 65536) or 4 (`u32`) |
//! | 4 | reserved, 0 |
//! | 8 | `n`, pairs |
//! | 8 | `t`, ids in the shard (both sides) |
//! | 8n | per pair: source length, target length (`u32` each) |
//! | 8(n+1) | per pair: the index of its first id (`u64`), then `t` |
//! | width x t | per pair: the source ids, then the target ids |
//!
//! All numbers are little-endian, without the special tokens (`</s>`, `<s>` are added when
//! batching). A [`ShardStore`] maps every shard of a corpus and reads pair `i` without
//! copying the file; resident memory stays bounded because [`ShardStore::release`] hands the
//! pages read so far back to the page cache.
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::atomic::AtomicFile;
use crate::batch::Example;
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"RNMTIDS1";
const HEADER: usize = 32;

/// The id width for a vocabulary: 2 bytes when every id fits in a `u16`, else 4.
pub fn id_width(vocab: usize) -> u32 {
    if vocab <= 1 << 16 {
        2
    } else {
        4
    }
}

/// Collects the pairs of one shard in memory, then writes it atomically.
pub struct ShardWriter {
    width: u32,
    sizes: Vec<(u32, u32)>,
    ids: Vec<u32>,
}

impl ShardWriter {
    pub fn new(width: u32) -> Self {
        ShardWriter {
            width,
            sizes: Vec::new(),
            ids: Vec::new(),
        }
    }

    /// Pairs so far.
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    pub fn push(&mut self, e: &Example) {
        self.sizes.push((e.src.len() as u32, e.tgt.len() as u32));
        self.ids.extend_from_slice(&e.src);
        self.ids.extend_from_slice(&e.tgt);
    }

    /// Writes the shard to `path` (atomically: a crash leaves no partial shard under that
    /// name) and empties the writer. Returns the file's size and checksum (xxh3-64).
    pub fn write(&mut self, path: &Path) -> Result<(u64, u64)> {
        let mut bytes = Vec::with_capacity(
            HEADER + 16 * self.sizes.len() + 8 + self.width as usize * self.ids.len(),
        );
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&self.width.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&(self.sizes.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&(self.ids.len() as u64).to_le_bytes());
        for &(s, t) in &self.sizes {
            bytes.extend_from_slice(&s.to_le_bytes());
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        let mut at = 0u64;
        for &(s, t) in &self.sizes {
            bytes.extend_from_slice(&at.to_le_bytes());
            at += s as u64 + t as u64;
        }
        bytes.extend_from_slice(&at.to_le_bytes());
        if self.width == 2 {
            for &id in &self.ids {
                bytes.extend_from_slice(&(id as u16).to_le_bytes());
            }
        } else {
            for &id in &self.ids {
                bytes.extend_from_slice(&id.to_le_bytes());
            }
        }
        let mut f = AtomicFile::create(path)?;
        f.write_all(&bytes).map_err(|e| Error::io(path, e))?;
        f.commit()?;
        self.sizes.clear();
        self.ids.clear();
        Ok((bytes.len() as u64, xxhash_rust::xxh3::xxh3_64(&bytes)))
    }
}

/// One memory-mapped shard.
pub struct Shard {
    path: PathBuf,
    map: Mmap,
    width: usize,
    pairs: usize,
    offsets_at: usize,
    ids_at: usize,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl Shard {
    /// Maps `path` and checks its header and size (one clear error naming the file otherwise).
    pub fn open(path: &Path) -> Result<Shard> {
        let bad = |what: String| {
            Error::Input(format!(
                "{}: not a complete rnmt shard ({what}): damaged prepared corpus; delete it or run rnmt-prepare",
                path.display()
            ))
        };
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the shard is only read; rnmt writes shards under temporary names and renames
        // them, so a mapped file is never modified in place by rnmt.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        if map.len() < HEADER || &map[..8] != MAGIC {
            return Err(bad("bad header".into()));
        }
        let width = u32_at(&map, 8) as usize;
        if width != 2 && width != 4 {
            return Err(bad(format!("id width {width}")));
        }
        let (pairs, ids) = (u64_at(&map, 16), u64_at(&map, 24));
        // Checked: a forged count must not wrap around to a size that matches.
        let want = pairs
            .checked_mul(16)
            .and_then(|x| x.checked_add(HEADER as u64 + 8))
            .and_then(|x| ids.checked_mul(width as u64).and_then(|y| x.checked_add(y)));
        if want != Some(map.len() as u64) {
            return Err(bad(format!(
                "{} bytes, but its header says {pairs} pairs and {ids} ids",
                map.len()
            )));
        }
        let pairs = pairs as usize;
        let offsets_at = HEADER + 8 * pairs;
        let ids_at = offsets_at + 8 * (pairs + 1);
        // Every pair's ids must lie where the offsets say, one after the other, so that no
        // read can go past the file.
        let mut at = 0u64;
        for i in 0..pairs {
            let (s, t) = (
                u32_at(&map, HEADER + 8 * i) as u64,
                u32_at(&map, HEADER + 8 * i + 4) as u64,
            );
            if u64_at(&map, offsets_at + 8 * i) != at {
                return Err(bad(format!(
                    "pair {i} does not start where the one before ends"
                )));
            }
            at += s + t;
            if at > ids {
                return Err(bad(format!(
                    "pair {i} ends past the {ids} ids of the shard"
                )));
            }
        }
        if u64_at(&map, offsets_at + 8 * pairs) != at || at != ids {
            return Err(bad(format!(
                "the pairs hold {at} ids, the header says {ids}"
            )));
        }
        Ok(Shard {
            path: path.to_path_buf(),
            map,
            width,
            pairs,
            offsets_at,
            ids_at,
        })
    }

    /// Checks that every source id is below `src_vocab` and every target id below
    /// `tgt_vocab` (a forged id would index past the embeddings).
    pub fn check_ids(&self, src_vocab: usize, tgt_vocab: usize) -> Result<()> {
        for i in 0..self.pairs {
            let e = self.get(i);
            let bad = |side: &str, id: u32, vocab: usize| {
                Error::Input(format!(
                    "{}: damaged prepared corpus: pair {i} has {side} id {id}, the vocabulary has {vocab}; delete it or run rnmt-prepare",
                    self.path.display()
                ))
            };
            if let Some(&id) = e.src.iter().find(|&&id| id as usize >= src_vocab) {
                return Err(bad("source", id, src_vocab));
            }
            if let Some(&id) = e.tgt.iter().find(|&&id| id as usize >= tgt_vocab) {
                return Err(bad("target", id, tgt_vocab));
            }
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.pairs
    }

    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }

    /// (source, target) lengths of pair `i`, in tokens without specials.
    pub fn lens(&self, i: usize) -> (usize, usize) {
        let at = HEADER + 8 * i;
        (
            u32_at(&self.map, at) as usize,
            u32_at(&self.map, at + 4) as usize,
        )
    }

    fn ids(&self, from: usize, n: usize) -> Vec<u32> {
        let at = self.ids_at + from * self.width;
        let b = &self.map[at..at + n * self.width];
        if self.width == 2 {
            b.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)
                .collect()
        } else {
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
    }

    /// Pair `i`.
    pub fn get(&self, i: usize) -> Example {
        let (s, t) = self.lens(i);
        let start = u64_at(&self.map, self.offsets_at + 8 * i) as usize;
        Example {
            src: self.ids(start, s),
            tgt: self.ids(start + s, t),
        }
    }

    /// Hands the pages read so far back to the page cache (they are read again on demand).
    pub fn release(&self) {
        // SAFETY: a read-only file mapping: dropping its pages only means reading them from
        // the page cache (or the file) again on the next access.
        #[cfg(unix)]
        let _ = unsafe {
            self.map
                .unchecked_advise(memmap2::UncheckedAdvice::DontNeed)
        };
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The shards of one corpus, read as one sequence of pairs (a burn-style `get`/`len`
/// dataset).
pub struct ShardStore {
    shards: Vec<Shard>,
    /// Index of each shard's first pair, then the total.
    starts: Vec<usize>,
}

impl ShardStore {
    /// Maps the shard files, in order.
    pub fn open(paths: &[PathBuf]) -> Result<ShardStore> {
        let mut shards = Vec::new();
        let mut starts = vec![0];
        for p in paths {
            let s = Shard::open(p)?;
            starts.push(starts.last().copied().unwrap_or(0) + s.len());
            shards.push(s);
        }
        Ok(ShardStore { shards, starts })
    }

    pub fn len(&self) -> usize {
        self.starts.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn locate(&self, i: usize) -> (&Shard, usize) {
        let s = self.starts.partition_point(|&start| start <= i) - 1;
        (&self.shards[s], i - self.starts[s])
    }

    /// (source, target) lengths of pair `i`.
    pub fn lens(&self, i: usize) -> (usize, usize) {
        let (s, j) = self.locate(i);
        s.lens(j)
    }

    /// Pair `i`.
    pub fn get(&self, i: usize) -> Example {
        let (s, j) = self.locate(i);
        s.get(j)
    }

    /// See [`Shard::check_ids`].
    pub fn check_ids(&self, src_vocab: usize, tgt_vocab: usize) -> Result<()> {
        self.shards
            .iter()
            .try_for_each(|s| s.check_ids(src_vocab, tgt_vocab))
    }

    /// See [`Shard::release`].
    pub fn release(&self) {
        self.shards.iter().for_each(Shard::release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_round_trip_in_both_widths() {
        let dir = tempfile::tempdir().unwrap();
        let ex = |i: u32, big: u32| Example {
            src: (0..i % 5).map(|k| k + big).collect(),
            tgt: (0..1 + i % 3).map(|k| k * 7 + big).collect(),
        };
        for (width, big) in [(2, 60_000), (4, 100_000)] {
            let mut paths = Vec::new();
            let mut w = ShardWriter::new(width);
            let mut all = Vec::new();
            for i in 0..50u32 {
                let e = ex(i, big);
                w.push(&e);
                all.push(e);
                if w.len() == 20 || i == 49 {
                    let p = dir.path().join(format!("s{width}-{}.bin", paths.len()));
                    w.write(&p).unwrap();
                    paths.push(p);
                }
            }
            let store = ShardStore::open(&paths).unwrap();
            assert_eq!((store.len(), store.shard_count()), (50, 3));
            for (i, e) in all.iter().enumerate() {
                assert_eq!(&store.get(i), e);
                assert_eq!(store.lens(i), (e.src.len(), e.tgt.len()));
            }
            store.release();
            assert_eq!(store.get(49), all[49]);
        }
        // A truncated shard is one clear error.
        let p = dir.path().join("s2-0.bin");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let e = Shard::open(&p).err().unwrap().to_string();
        assert!(e.contains("s2-0.bin: not a complete rnmt shard"), "{e}");
    }
}
