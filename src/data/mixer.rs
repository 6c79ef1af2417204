//! The mixer: several training corpora with weights, seen as one dataset per epoch.
//!
//! Corpus `c` of `n_c` pairs and weight `w_c` contributes `m_c = round(w_c x n_c)` items to
//! every epoch, laid end to end in corpus order (the epoch's item space, which the sampler
//! shuffles). Item `j` of corpus `c` is its pair `j mod n_c` when `m_c` is a multiple of
//! `n_c` (every pair equally often, e.g. weight 1 or 3); otherwise pair `p_e(j mod n_c)` for a
//! permutation `p_e` of the corpus drawn from `(seed, epoch, c)`, so that the partial copy is
//! a fresh seeded subset every epoch. Everything is a function of `(seed, epoch)`: a resumed
//! run recomputes it.
use crate::batch::Example;
use crate::error::{Error, Result};
use crate::rng::Rng;

use super::store::ShardStore;

/// Most items of an epoch: its order is 4 bytes per item (512 MiB at this bound), and the
/// sampler shuffles it whole at the start of every epoch.
pub const MAX_EPOCH_ITEMS: usize = 1 << 27;

/// The training corpora and their weights.
pub struct TrainSet {
    corpora: Vec<ShardStore>,
    /// Items per epoch of each corpus, and where each corpus starts in the item space.
    items: Vec<usize>,
    starts: Vec<usize>,
    /// A hash of the prepared data (equal on every process that opened the same corpus).
    content_hash: u64,
}

/// One epoch's view of a [`TrainSet`]: item -> (corpus, pair).
pub struct EpochView<'a> {
    set: &'a TrainSet,
    /// Per corpus, the permutation of its partial copy (empty when not needed).
    perms: Vec<Vec<u32>>,
}

impl TrainSet {
    /// `weights` empty means all 1; otherwise one per corpus, each finite and >= 0, and the
    /// epoch must not be empty.
    pub fn new(corpora: Vec<ShardStore>, weights: &[f64], content_hash: u64) -> Result<Self> {
        if !weights.is_empty() && weights.len() != corpora.len() {
            return Err(Error::Config(format!(
                "data.weights has {} weight(s) for {} training corpora: give one per --train",
                weights.len(),
                corpora.len()
            )));
        }
        let mut items = Vec::new();
        for (c, store) in corpora.iter().enumerate() {
            let w = weights.get(c).copied().unwrap_or(1.0);
            if !w.is_finite() || w < 0.0 {
                return Err(Error::Config(format!(
                    "data.weights[{c}] is {w}: a weight is a number >= 0"
                )));
            }
            // In floating point first: a huge weight must not saturate or wrap around.
            let m = (w * store.len() as f64).round();
            if m > MAX_EPOCH_ITEMS as f64 {
                return Err(Error::Config(format!(
                    "data.weights[{c}] is {w}: {m:.0} items per epoch from the {} pairs of corpus {}; an epoch holds at most {MAX_EPOCH_ITEMS} items (its order takes 4 bytes per item): lower the weight",
                    store.len(),
                    c + 1
                )));
            }
            items.push(m as usize);
        }
        let mut starts = vec![0usize];
        for &m in &items {
            starts.push(starts.last().copied().unwrap_or(0).saturating_add(m));
        }
        let total = *starts.last().unwrap_or(&0);
        if total == 0 {
            return Err(Error::Config(
                "data.weights leave no training pair in an epoch".into(),
            ));
        }
        if total > MAX_EPOCH_ITEMS {
            return Err(Error::Config(format!(
                "data.weights give {total} training items per epoch: at most {MAX_EPOCH_ITEMS} are supported (the epoch's order takes 4 bytes per item); lower the weights"
            )));
        }
        Ok(TrainSet {
            corpora,
            items,
            starts,
            content_hash,
        })
    }

    /// Items per epoch.
    pub fn len(&self) -> usize {
        *self.starts.last().unwrap_or(&0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Distinct pairs over all corpora.
    pub fn pairs(&self) -> usize {
        self.corpora.iter().map(ShardStore::len).sum()
    }

    pub fn corpora(&self) -> &[ShardStore] {
        &self.corpora
    }

    pub fn content_hash(&self) -> u64 {
        self.content_hash
    }

    /// Items per epoch of each corpus.
    pub fn items_per_corpus(&self) -> &[usize] {
        &self.items
    }

    /// The mapping of `epoch` (4 bytes per pair of each corpus with a partial copy).
    pub fn epoch(&self, seed: u64, epoch: u64) -> EpochView<'_> {
        let perms = self
            .corpora
            .iter()
            .zip(&self.items)
            .enumerate()
            .map(|(c, (store, &m))| {
                let n = store.len();
                if n == 0 || m % n == 0 {
                    return Vec::new();
                }
                let mut rng = Rng::new(
                    seed ^ epoch.wrapping_mul(0x2545_F491_4F6C_DD1D)
                        ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                );
                let mut p: Vec<u32> = (0..n as u32).collect();
                rng.shuffle(&mut p);
                p
            })
            .collect();
        EpochView { set: self, perms }
    }
}

impl EpochView<'_> {
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// (corpus, pair) of item `v`.
    pub fn resolve(&self, v: usize) -> (usize, usize) {
        let c = self.set.starts.partition_point(|&s| s <= v) - 1;
        let j = v - self.set.starts[c];
        let n = self.set.corpora[c].len();
        let perm = &self.perms[c];
        let i = if perm.is_empty() {
            j % n
        } else {
            perm[j % n] as usize
        };
        (c, i)
    }

    /// (source, target) lengths of item `v`.
    pub fn lens(&self, v: usize) -> (usize, usize) {
        let (c, i) = self.resolve(v);
        self.set.corpora[c].lens(i)
    }

    /// Item `v` (read from its shard: an error when the shard changed since it was checked).
    pub fn get(&self, v: usize) -> Result<Example> {
        let (c, i) = self.resolve(v);
        self.set.corpora[c].get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::ShardWriter;
    use super::*;

    fn store(dir: &std::path::Path, name: &str, n: u32) -> ShardStore {
        let mut w = ShardWriter::new(2);
        for i in 0..n {
            w.push(&Example {
                src: vec![i + 4],
                tgt: vec![i + 4, 9],
            });
        }
        let p = dir.join(name);
        w.write(&p).unwrap();
        ShardStore::open(&[p]).unwrap()
    }

    #[test]
    fn weights_set_how_often_each_corpus_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let set = TrainSet::new(
            vec![store(dir.path(), "a", 10), store(dir.path(), "b", 4)],
            &[0.5, 2.0],
            0,
        )
        .unwrap();
        assert_eq!(set.len(), 5 + 8);
        for epoch in 0..3 {
            let view = set.epoch(7, epoch);
            let mut a: Vec<usize> = (0..5).map(|v| view.resolve(v).1).collect();
            a.sort();
            a.dedup();
            assert_eq!(a.len(), 5, "half of a, without repeats");
            let mut b: Vec<usize> = (5..13).map(|v| view.resolve(v).1).collect();
            b.sort();
            assert_eq!(b, vec![0, 0, 1, 1, 2, 2, 3, 3], "b twice");
        }
        let half = |e| {
            let view = set.epoch(7, e);
            (0..5).map(|v| view.resolve(v).1).collect::<Vec<_>>()
        };
        assert_ne!(half(0), half(1), "a fresh half every epoch");
        assert_eq!(half(1), half(1));
        let e = TrainSet::new(vec![store(dir.path(), "c", 3)], &[1.0, 1.0], 0)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("data.weights has 2 weight(s) for 1"), "{e}");
    }
}
