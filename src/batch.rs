//! Batches: examples as subword ids, length bucketing under a token budget, padding, and
//! seeded shuffling.
//!
//! An epoch's batches are a pure function of `(seed, epoch)`: shuffle the examples, cut them
//! into pools, sort each pool by length, cut each pool into batches of at most `batch_tokens`
//! padded target tokens, shuffle the batches. Sorting inside a pool keeps padding low
//! (sentences of similar length share a batch) while the pools keep randomness. Because the
//! order is recomputable, a resumed run only needs `(epoch, batch index)`.
use tch::{Device, Tensor};

use crate::rng::Rng;
use crate::tokenizer::{BOS_ID, EOS_ID, PAD_ID};

/// One sentence pair as subword ids, without special tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub src: Vec<u32>,
    pub tgt: Vec<u32>,
}

/// A padded batch on a device.
#[derive(Debug)]
pub struct Batch {
    /// Source ids followed by `</s>`, padded: `[batch, src_len]` int64.
    pub src: Tensor,
    /// True source lengths (with `</s>`).
    pub src_lens: Vec<i64>,
    /// Decoder inputs `<s> y_1 .. y_n`, padded: `[batch, tgt_len]` int64.
    pub tgt_in: Tensor,
    /// Decoder targets `y_1 .. y_n </s>`, padded: `[batch, tgt_len]` int64.
    pub tgt_out: Tensor,
    /// Real (non-padding) target tokens.
    pub tgt_tokens: usize,
}

/// Pads `rows` with `<pad>` into a `[rows, max_len]` int64 tensor.
pub fn pad(rows: &[Vec<i64>], device: Device) -> Tensor {
    let width = rows.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let mut flat = Vec::with_capacity(rows.len() * width);
    for r in rows {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(PAD_ID as i64, width - r.len()));
    }
    Tensor::from_slice(&flat)
        .view([rows.len() as i64, width as i64])
        .to_device(device)
}

/// Source ids as the encoder reads them: the subwords then `</s>`.
pub fn source_ids(src: &[u32]) -> Vec<i64> {
    src.iter()
        .map(|&x| x as i64)
        .chain(std::iter::once(EOS_ID as i64))
        .collect()
}

impl Batch {
    /// Builds a batch from examples.
    pub fn new(examples: &[&Example], device: Device) -> Batch {
        let src: Vec<Vec<i64>> = examples.iter().map(|e| source_ids(&e.src)).collect();
        let tgt_in: Vec<Vec<i64>> = examples
            .iter()
            .map(|e| {
                std::iter::once(BOS_ID as i64)
                    .chain(e.tgt.iter().map(|&x| x as i64))
                    .collect()
            })
            .collect();
        let tgt_out: Vec<Vec<i64>> = examples
            .iter()
            .map(|e| {
                e.tgt
                    .iter()
                    .map(|&x| x as i64)
                    .chain(std::iter::once(EOS_ID as i64))
                    .collect()
            })
            .collect();
        Batch {
            src_lens: src.iter().map(|s| s.len() as i64).collect(),
            src: pad(&src, device),
            tgt_in: pad(&tgt_in, device),
            tgt_out: pad(&tgt_out, device),
            tgt_tokens: tgt_out.iter().map(Vec::len).sum(),
        }
    }
}

/// Examples in a pool sorted by length before cutting into batches.
pub const POOL: usize = 4096;

/// Padded target length of an example (with `</s>`).
fn tgt_len(e: &Example) -> usize {
    e.tgt.len() + 1
}

/// Cuts `order` (indices into `examples`) into consecutive batches of at most `batch_tokens`
/// padded target (and source) tokens; a single longer example still forms a batch.
fn cut(examples: &[Example], order: &[usize], batch_tokens: usize) -> Vec<Vec<usize>> {
    cut_by(
        order
            .iter()
            .map(|&i| (i, tgt_len(&examples[i]).max(examples[i].src.len() + 1))),
        batch_tokens,
    )
}

/// Cuts `(item, padded length)` in order into consecutive batches of at most `batch_tokens`
/// padded tokens (the widest length times the batch size); a single longer item still forms
/// a batch.
pub fn cut_by(
    items: impl IntoIterator<Item = (usize, usize)>,
    batch_tokens: usize,
) -> Vec<Vec<usize>> {
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut widest = 0;
    for (i, len) in items {
        let w = widest.max(len);
        if !current.is_empty() && w * (current.len() + 1) > batch_tokens {
            batches.push(std::mem::take(&mut current));
            widest = len;
        } else {
            widest = w;
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// The batches of one training epoch (indices into `examples`), a function of `(seed, epoch)`.
pub fn epoch_batches(
    examples: &[Example],
    batch_tokens: usize,
    seed: u64,
    epoch: u64,
) -> Vec<Vec<usize>> {
    let mut rng = Rng::new(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut order: Vec<usize> = (0..examples.len()).collect();
    rng.shuffle(&mut order);
    let mut batches = Vec::new();
    for pool in order.chunks_mut(POOL) {
        pool.sort_by_key(|&i| (tgt_len(&examples[i]), examples[i].src.len()));
        batches.extend(cut(examples, pool, batch_tokens));
    }
    rng.shuffle(&mut batches);
    batches
}

/// Batches for evaluation: sorted by length, no shuffling.
pub fn eval_batches(examples: &[Example], batch_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| (tgt_len(&examples[i]), examples[i].src.len()));
    cut(examples, &order, batch_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: usize, t: usize) -> Example {
        Example {
            src: vec![5; s],
            tgt: vec![6; t],
        }
    }

    #[test]
    fn batches_cover_everything_once_within_budget() {
        let examples: Vec<Example> = (0..500).map(|i| ex(1 + i % 37, 1 + (i * 7) % 41)).collect();
        let b = epoch_batches(&examples, 200, 1, 0);
        let mut seen: Vec<usize> = b.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..500).collect::<Vec<_>>());
        for batch in &b {
            let w = batch
                .iter()
                .map(|&i| tgt_len(&examples[i]).max(examples[i].src.len() + 1))
                .max()
                .unwrap();
            assert!(w * batch.len() <= 200, "batch over budget");
        }
        assert_eq!(b, epoch_batches(&examples, 200, 1, 0));
        assert_ne!(b, epoch_batches(&examples, 200, 1, 1));
        assert_ne!(b, epoch_batches(&examples, 200, 2, 0));
    }

    #[test]
    fn padding_and_specials() {
        let (a, b) = (ex(2, 3), ex(1, 1));
        let batch = Batch::new(&[&a, &b], Device::Cpu);
        assert_eq!(batch.src_lens, vec![3, 2]);
        assert_eq!(batch.src.size(), vec![2, 3]);
        let tin: Vec<i64> = Vec::try_from(batch.tgt_in.reshape([-1])).unwrap();
        let tout: Vec<i64> = Vec::try_from(batch.tgt_out.reshape([-1])).unwrap();
        let (p, s, e) = (PAD_ID as i64, BOS_ID as i64, EOS_ID as i64);
        assert_eq!(tin, vec![s, 6, 6, 6, s, 6, p, p]);
        assert_eq!(tout, vec![6, 6, 6, e, 6, e, p, p]);
        assert_eq!(batch.tgt_tokens, 6);
    }
}
