//! The shard store: sentence pairs as token ids in shard files.
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
//! batching). A [`ShardStore`] opens every shard of a corpus, keeps each pair's lengths in
//! memory (8 bytes a pair) and reads pair `i`'s ids with one positioned read (`pread`) into
//! a new buffer when it is batched. Nothing is memory-mapped: a shard truncated or
//! overwritten while training runs cannot fault the process (SIGBUS); a short read, or an
//! id outside the vocabulary, is the one-line "damaged prepared corpus" error instead.
//! Reading a batch this way costs microseconds, a training step milliseconds.
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

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

/// One shard file, read with positioned reads.
pub struct Shard {
    path: PathBuf,
    file: File,
    width: usize,
    /// (source, target) lengths of every pair, in memory: the sampler asks for them for
    /// every item of every window.
    lens: Vec<(u32, u32)>,
    /// Index of the first id of pair `MARK * k`, for every `k` (the offsets are consecutive,
    /// checked at open, so the others follow from the lengths).
    marks: Vec<u64>,
    /// Byte position of the first id in the file.
    ids_at: u64,
    /// (source, target) vocabulary sizes every id was checked against
    /// ([`Shard::check_ids`]); the ids of every read are checked again.
    vocab: Option<(usize, usize)>,
}

/// Pairs per entry of [`Shard::marks`].
const MARK: usize = 64;

/// Bytes read at a time when a shard is scanned whole.
const SCAN_BUFFER: usize = 1 << 20;

/// Fills `buf` from `file` at byte `at` (an error if the file ends first).
fn read_at(file: &File, buf: &mut [u8], at: u64) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, at)
    }
    #[cfg(windows)]
    {
        let mut done = 0;
        while done < buf.len() {
            let n =
                std::os::windows::fs::FileExt::seek_read(file, &mut buf[done..], at + done as u64)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            done += n;
        }
        Ok(())
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Ids of `width` bytes each, little-endian.
fn decode(b: &[u8], width: usize, out: &mut Vec<u32>) {
    out.clear();
    if width == 2 {
        out.extend(
            b.chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]) as u32),
        );
    } else {
        out.extend(
            b.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
    }
}

/// The shard's bytes from `at` on, read in order.
fn scan(file: &File, at: u64) -> std::io::Result<BufReader<&File>> {
    let mut r = BufReader::with_capacity(SCAN_BUFFER, file);
    r.seek(SeekFrom::Start(at))?;
    Ok(r)
}

impl Shard {
    fn damaged(path: &Path, what: impl std::fmt::Display) -> Error {
        Error::Input(format!(
            "{}: damaged prepared corpus: {what}; delete it or run rnmt-prepare",
            path.display()
        ))
    }

    /// Opens `path` and checks its header, size, lengths and offsets (one clear error naming
    /// the file otherwise). Reads the file once, in order; keeps 8 bytes a pair.
    pub fn open(path: &Path) -> Result<Shard> {
        let bad = |what: String| {
            Error::Input(format!(
                "{}: not a complete rnmt shard ({what}): damaged prepared corpus; delete it or run rnmt-prepare",
                path.display()
            ))
        };
        let short = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                bad("shorter than its header says".into())
            } else {
                Error::io(path, e)
            }
        };
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut head = [0u8; HEADER];
        if len < HEADER as u64 {
            return Err(bad("bad header".into()));
        }
        read_at(&file, &mut head, 0).map_err(short)?;
        if &head[..8] != MAGIC {
            return Err(bad("bad header".into()));
        }
        let width = u32_at(&head, 8) as usize;
        if width != 2 && width != 4 {
            return Err(bad(format!("id width {width}")));
        }
        let (pairs, ids) = (u64_at(&head, 16), u64_at(&head, 24));
        // Checked: a forged count must not wrap around to a size that matches.
        let want = pairs
            .checked_mul(16)
            .and_then(|x| x.checked_add(HEADER as u64 + 8))
            .and_then(|x| ids.checked_mul(width as u64).and_then(|y| x.checked_add(y)));
        if want != Some(len) {
            return Err(bad(format!(
                "{len} bytes, but its header says {pairs} pairs and {ids} ids"
            )));
        }
        // The size matches, so `pairs` is at most a sixteenth of the file.
        let pairs = pairs as usize;
        let mut r = scan(&file, HEADER as u64).map_err(|e| Error::io(path, e))?;
        let mut b = [0u8; 8];
        let mut lens = Vec::with_capacity(pairs);
        for _ in 0..pairs {
            r.read_exact(&mut b).map_err(short)?;
            lens.push((u32_at(&b, 0), u32_at(&b, 4)));
        }
        // Every pair's ids must lie where the offsets say, one after the other, so that no
        // read can go past the ids.
        let mut marks = Vec::with_capacity(pairs / MARK + 1);
        let mut at = 0u64;
        for (i, &(s, t)) in lens.iter().enumerate() {
            r.read_exact(&mut b).map_err(short)?;
            if u64::from_le_bytes(b) != at {
                return Err(bad(format!(
                    "pair {i} does not start where the one before ends"
                )));
            }
            if i % MARK == 0 {
                marks.push(at);
            }
            at += s as u64 + t as u64;
            if at > ids {
                return Err(bad(format!(
                    "pair {i} ends past the {ids} ids of the shard"
                )));
            }
        }
        r.read_exact(&mut b).map_err(short)?;
        if u64::from_le_bytes(b) != at || at != ids {
            return Err(bad(format!(
                "the pairs hold {at} ids, the header says {ids}"
            )));
        }
        drop(r);
        Ok(Shard {
            path: path.to_path_buf(),
            file,
            width,
            lens,
            marks,
            ids_at: (HEADER + 16 * pairs + 8) as u64,
            vocab: None,
        })
    }

    /// Checks that every source id is below `src_vocab` and every target id below
    /// `tgt_vocab` (a forged id would index past the embeddings); every later
    /// [`Shard::get`] checks its ids against them too.
    pub fn check_ids(&mut self, src_vocab: usize, tgt_vocab: usize) -> Result<()> {
        let short = |e: std::io::Error| Shard::damaged(&self.path, format!("reading its ids: {e}"));
        let mut r = scan(&self.file, self.ids_at).map_err(short)?;
        let (mut bytes, mut ids) = (Vec::new(), Vec::new());
        for (i, &(s, t)) in self.lens.iter().enumerate() {
            bytes.resize((s as usize + t as usize) * self.width, 0);
            r.read_exact(&mut bytes).map_err(short)?;
            decode(&bytes, self.width, &mut ids);
            check_pair(&self.path, i, &ids, s as usize, (src_vocab, tgt_vocab))?;
        }
        self.vocab = Some((src_vocab, tgt_vocab));
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.lens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lens.is_empty()
    }

    /// (source, target) lengths of pair `i`, in tokens without specials.
    pub fn lens(&self, i: usize) -> (usize, usize) {
        let (s, t) = self.lens[i];
        (s as usize, t as usize)
    }

    /// Pair `i`, read from the file into new buffers. A shard that changed since it was
    /// opened (truncated, overwritten) gives the one-line "damaged prepared corpus" error:
    /// the read comes short, or an id is outside the vocabularies of [`Shard::check_ids`].
    pub fn get(&self, i: usize) -> Result<Example> {
        let (s, t) = self.lens(i);
        let first = i / MARK * MARK;
        let start = self.marks[i / MARK]
            + self.lens[first..i]
                .iter()
                .map(|&(s, t)| s as u64 + t as u64)
                .sum::<u64>();
        let mut bytes = vec![0u8; (s + t) * self.width];
        read_at(
            &self.file,
            &mut bytes,
            self.ids_at + start * self.width as u64,
        )
        .map_err(|e| {
            Shard::damaged(
                &self.path,
                format_args!(
                    "pair {i} could not be read ({e}): the shard changed after it was checked"
                ),
            )
        })?;
        let mut src = Vec::with_capacity(s + t);
        decode(&bytes, self.width, &mut src);
        if let Some(vocab) = self.vocab {
            check_pair(&self.path, i, &src, s, vocab)?;
        }
        let tgt = src.split_off(s);
        Ok(Example { src, tgt })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Checks the ids of pair `i` (`s` source ids, then the target's) against the
/// (source, target) vocabulary sizes.
fn check_pair(path: &Path, i: usize, ids: &[u32], s: usize, vocab: (usize, usize)) -> Result<()> {
    let (src, tgt) = ids.split_at(s);
    for (side, ids, vocab) in [("source", src, vocab.0), ("target", tgt, vocab.1)] {
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Shard::damaged(
                path,
                format!("pair {i} has {side} id {id}, the vocabulary has {vocab}"),
            ));
        }
    }
    Ok(())
}

/// The shards of one corpus, read as one sequence of pairs (a burn-style `get`/`len`
/// dataset).
pub struct ShardStore {
    shards: Vec<Shard>,
    /// Index of each shard's first pair, then the total.
    starts: Vec<usize>,
}

impl ShardStore {
    /// Opens the shard files, in order.
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

    /// Pair `i` (see [`Shard::get`]).
    pub fn get(&self, i: usize) -> Result<Example> {
        let (s, j) = self.locate(i);
        s.get(j)
    }

    /// See [`Shard::check_ids`].
    pub fn check_ids(&mut self, src_vocab: usize, tgt_vocab: usize) -> Result<()> {
        self.shards
            .iter_mut()
            .try_for_each(|s| s.check_ids(src_vocab, tgt_vocab))
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
            // Shards of 140 pairs: offsets found past several marks.
            for i in 0..300u32 {
                let e = ex(i, big);
                w.push(&e);
                all.push(e);
                if w.len() == 140 || i == 299 {
                    let p = dir.path().join(format!("s{width}-{}.bin", paths.len()));
                    w.write(&p).unwrap();
                    paths.push(p);
                }
            }
            let mut store = ShardStore::open(&paths).unwrap();
            assert_eq!((store.len(), store.shard_count()), (300, 3));
            store
                .check_ids(big as usize + 20, big as usize + 20)
                .unwrap();
            for (i, e) in all.iter().enumerate() {
                assert_eq!(&store.get(i).unwrap(), e);
                assert_eq!(store.lens(i), (e.src.len(), e.tgt.len()));
            }
        }
        // A truncated shard is one clear error.
        let p = dir.path().join("s2-0.bin");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        let e = Shard::open(&p).err().unwrap().to_string();
        assert!(e.contains("s2-0.bin: not a complete rnmt shard"), "{e}");
    }

    /// A shard changed after it was opened and checked: reads are errors, never a fault or
    /// an id outside the vocabulary.
    #[test]
    fn a_shard_changed_under_an_open_store_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.bin");
        let mut w = ShardWriter::new(2);
        for i in 0..200u32 {
            w.push(&Example {
                src: vec![i % 50 + 4; 3],
                tgt: vec![9; 2],
            });
        }
        w.write(&p).unwrap();
        let mut shard = Shard::open(&p).unwrap();
        shard.check_ids(60, 60).unwrap();
        assert_eq!(shard.get(199).unwrap().src, vec![49 + 4; 3]);
        // Overwritten in place with the same size: an id beyond the vocabulary.
        let mut bytes = std::fs::read(&p).unwrap();
        let last = bytes.len() - 2;
        bytes[last..].copy_from_slice(&1000u16.to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let e = shard.get(199).unwrap_err().to_string();
        assert!(
            e.contains("pair 199 has target id 1000, the vocabulary has 60"),
            "{e}"
        );
        // Truncated to its header: the next read says so.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .set_len(HEADER as u64)
            .unwrap();
        let e = shard.get(3).unwrap_err().to_string();
        assert!(
            e.contains("s.bin: damaged prepared corpus: pair 3 could not be read"),
            "{e}"
        );
        assert!(e.ends_with("delete it or run rnmt-prepare"), "{e}");
        assert_eq!(shard.lens(3), (3, 2), "lengths stay in memory");
    }
}
