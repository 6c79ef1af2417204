//! The sampler: an epoch's batches from a seeded permutation, in windows, resumable.
//!
//! The epoch order is a permutation of the epoch's items drawn from `(seed, epoch)` (4 bytes
//! per item). It is read in windows of [`WINDOW`] items; a window is cut into pools of
//! [`POOL`] items, each pool sorted by length and cut into batches of at most
//! `train.batch_tokens` padded tokens, and the window's batches are shuffled. A corpus of at
//! most one window therefore gets exactly the batches of [`crate::batch::epoch_batches`] (the
//! same permutation, pools and final shuffle), and a bigger one keeps memory to one window's
//! batches. The position `(epoch, window, batch in window)` is all a resume needs: the window
//! is recomputed from it, nothing is replayed.
use serde::{Deserialize, Serialize};

use crate::batch::{cut_by, Example, POOL};
use crate::error::Result;
use crate::rng::Rng;

use super::mixer::{EpochView, TrainSet};

/// Items per window of the epoch order (256 pools).
pub const WINDOW: usize = 256 * POOL;

/// Where a run is in its data.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Position {
    pub epoch: u64,
    pub window: u64,
    pub batch_in_window: usize,
    /// Batches taken in this epoch (over all windows).
    pub batch_in_epoch: usize,
}

/// The seed of an epoch's order, as [`crate::batch::epoch_batches`] draws it.
fn epoch_rng(seed: u64, epoch: u64) -> Rng {
    Rng::new(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407))
}

/// The batches of one window of one epoch (items of the epoch's item space).
pub fn window_batches(
    view: &EpochView<'_>,
    order: &[u32],
    rng_after_order: &Rng,
    batch_tokens: usize,
    seed: u64,
    epoch: u64,
    (window, window_len): (u64, usize),
) -> Vec<Vec<usize>> {
    let from = (window as usize * window_len).min(order.len());
    let to = (from + window_len).min(order.len());
    let mut batches = Vec::new();
    let mut pool: Vec<(usize, usize, usize)> = Vec::with_capacity(POOL);
    for chunk in order[from..to].chunks(POOL) {
        pool.clear();
        pool.extend(chunk.iter().map(|&v| {
            let (s, t) = view.lens(v as usize);
            (v as usize, s, t)
        }));
        pool.sort_by_key(|&(_, s, t)| (t + 1, s));
        batches.extend(cut_by(
            pool.iter().map(|&(v, s, t)| (v, (t + 1).max(s + 1))),
            batch_tokens,
        ));
    }
    let mut rng = if window == 0 {
        *rng_after_order
    } else {
        Rng::new(
            seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407)
                ^ window.wrapping_mul(0xD6E8_FEB8_6659_FD93),
        )
    };
    rng.shuffle(&mut batches);
    batches
}

/// The batch source of a training run: it hands out the next batches and knows its
/// [`Position`].
pub struct BatchSource<'a> {
    set: &'a TrainSet,
    batch_tokens: usize,
    seed: u64,
    pos: Position,
    view: EpochView<'a>,
    order: Vec<u32>,
    rng_after_order: Rng,
    batches: Vec<Vec<usize>>,
    windows: u64,
    window_len: usize,
}

impl<'a> BatchSource<'a> {
    /// A source at `pos` (the start of a run: `Position::default()`).
    pub fn new(set: &'a TrainSet, batch_tokens: usize, seed: u64, pos: Position) -> Self {
        Self::with_window(set, batch_tokens, seed, pos, WINDOW)
    }

    /// [`BatchSource::new`] with windows of `window_len` items (a multiple of [`POOL`]).
    pub fn with_window(
        set: &'a TrainSet,
        batch_tokens: usize,
        seed: u64,
        pos: Position,
        window_len: usize,
    ) -> Self {
        let windows = set.len().div_ceil(window_len) as u64;
        let mut s = BatchSource {
            set,
            batch_tokens,
            seed,
            pos,
            view: set.epoch(seed, pos.epoch),
            order: Vec::new(),
            rng_after_order: Rng::new(0),
            batches: Vec::new(),
            windows,
            window_len,
        };
        s.start_epoch(pos.epoch);
        s.pos = pos;
        s.load_window();
        s.skip_finished_windows();
        s
    }

    fn start_epoch(&mut self, epoch: u64) {
        self.view = self.set.epoch(self.seed, epoch);
        let mut rng = epoch_rng(self.seed, epoch);
        self.order = (0..self.set.len() as u32).collect();
        rng.shuffle(&mut self.order);
        self.rng_after_order = rng;
        self.pos = Position {
            epoch,
            ..Position::default()
        };
    }

    fn load_window(&mut self) {
        self.batches = window_batches(
            &self.view,
            &self.order,
            &self.rng_after_order,
            self.batch_tokens,
            self.seed,
            self.pos.epoch,
            (self.pos.window, self.window_len),
        );
    }

    fn skip_finished_windows(&mut self) {
        while self.pos.batch_in_window >= self.batches.len() && self.pos.window + 1 < self.windows {
            self.pos.window += 1;
            self.pos.batch_in_window = 0;
            self.load_window();
        }
    }

    pub fn position(&self) -> Position {
        self.pos
    }

    /// Whether this epoch's batches are all taken.
    pub fn epoch_done(&self) -> bool {
        self.pos.window + 1 >= self.windows && self.pos.batch_in_window >= self.batches.len()
    }

    /// Up to `n` next batches of this epoch (fewer at its end), as examples; an error when a
    /// shard changed since it was checked (see [`super::store::Shard::get`]).
    pub fn next_batches(&mut self, n: usize) -> Result<Vec<Vec<Example>>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n && !self.epoch_done() {
            let idx = &self.batches[self.pos.batch_in_window];
            out.push(
                idx.iter()
                    .map(|&v| self.view.get(v))
                    .collect::<Result<_>>()?,
            );
            self.pos.batch_in_window += 1;
            self.pos.batch_in_epoch += 1;
            self.skip_finished_windows();
        }
        Ok(out)
    }

    /// Moves to the start of the next epoch.
    pub fn next_epoch(&mut self) {
        self.start_epoch(self.pos.epoch + 1);
        self.load_window();
        self.skip_finished_windows();
    }

    /// Batches of epoch 0 (for a progress bar's length): a pass over the lengths.
    pub fn count_epoch_batches(set: &TrainSet, batch_tokens: usize, seed: u64) -> usize {
        let mut s = BatchSource::new(set, batch_tokens, seed, Position::default());
        let mut count = s.batches.len();
        while s.pos.window + 1 < s.windows {
            s.pos.window += 1;
            s.load_window();
            count += s.batches.len();
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::{ShardStore, ShardWriter};
    use super::*;
    use crate::batch::epoch_batches;

    fn examples(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                src: vec![5; 1 + i % 37],
                tgt: vec![6; 1 + (i * 7) % 41],
            })
            .collect()
    }

    fn set(dir: &std::path::Path, ex: &[Example], per_shard: usize) -> TrainSet {
        let mut paths = Vec::new();
        for chunk in ex.chunks(per_shard) {
            let mut w = ShardWriter::new(2);
            chunk.iter().for_each(|e| w.push(e));
            let p = dir.join(format!("{}.bin", paths.len()));
            w.write(&p).unwrap();
            paths.push(p);
        }
        TrainSet::new(vec![ShardStore::open(&paths).unwrap()], &[], 0).unwrap()
    }

    #[test]
    fn one_window_gives_the_in_memory_batches_over_several_shards() {
        let dir = tempfile::tempdir().unwrap();
        let ex = examples(9000);
        let set = set(dir.path(), &ex, 1000);
        for epoch in [0, 3] {
            let want: Vec<Vec<Example>> = epoch_batches(&ex, 300, 11, epoch)
                .into_iter()
                .map(|b| b.into_iter().map(|i| ex[i].clone()).collect())
                .collect();
            let mut src = BatchSource::new(
                &set,
                300,
                11,
                Position {
                    epoch,
                    ..Position::default()
                },
            );
            let mut got = Vec::new();
            while !src.epoch_done() {
                got.extend(src.next_batches(3).unwrap());
            }
            assert_eq!(got, want);
        }
    }

    #[test]
    fn a_resumed_source_continues_exactly_across_windows() {
        let dir = tempfile::tempdir().unwrap();
        let ex = examples(5 * POOL + 17);
        let set = set(dir.path(), &ex, 7000);
        let window = 2 * POOL;
        let mut a = BatchSource::with_window(&set, 400, 5, Position::default(), window);
        let mut all = Vec::new();
        let mut positions = Vec::new();
        while !a.epoch_done() {
            positions.push(a.position());
            all.extend(a.next_batches(1).unwrap());
        }
        assert_eq!(a.position().window, 2, "three windows");
        let seen: usize = all.iter().map(Vec::len).sum();
        assert_eq!(seen, ex.len(), "every item once");
        for k in [0, 1, positions.len() / 2, positions.len() - 1] {
            let mut b = BatchSource::with_window(&set, 400, 5, positions[k], window);
            assert_eq!(
                b.next_batches(1).unwrap()[0],
                all[k],
                "resume at {:?}",
                positions[k]
            );
        }
        a.next_epoch();
        assert_eq!(a.position().epoch, 1);
        assert_ne!(a.next_batches(1).unwrap()[0], all[0]);
    }
}
