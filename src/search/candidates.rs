//! A search step's best candidates on the CPU, read in place from the log-probabilities.
//!
//! The tensor path of a beam step adds the beam scores to `log_softmax(logits)` (a second
//! `[rows, vocab]` tensor) and runs `topk` over `[sentences, K * vocab]`, which copies every
//! row into a buffer of `(value, index)` pairs and partially sorts it. On the CPU these two
//! were a fifth of `rnmt-translate`'s time (perf, beam 5, batch 64). Here libtorch makes only
//! the log-softmax (one fused kernel), and the `2K` best `score + log_prob` per sentence are
//! picked in one read of it, in place: a chunk of 16 values is compared with the running
//! threshold (a loop the compiler vectorizes), and only chunks with a value above it are
//! looked at one by one. The length rules of [`super::apply_length_rules`] apply on the way.
//! Greedy search ranks the same way (one row per sentence), so a beam of one is exactly
//! greedy search.
//!
//! The result is exactly the tensor path's: the same float sums `score + log_prob`, the same
//! candidates, best first, ties to the lower `beam * vocab + token` (a test compares them).
//! Ranking the logits themselves, with a per-row `logsumexp` from libtorch, was slower: its
//! four passes cost more than the fused log-softmax.
use tch::{Device, Kind, Tensor};

use super::{apply_length_rules, host};
use crate::error::{Error, Result};
use crate::tokenizer::EOS_ID;

/// Logits read per threshold test.
const CHUNK: usize = 16;

/// The length rules of one step: `</s>` banned everywhere (`t < min_len`), and the rows
/// that must end now (only `</s>` allowed).
#[derive(Debug, Clone, Copy)]
pub struct Rules<'a> {
    pub ban_eos: bool,
    pub forced: &'a [bool],
}

/// Whether `logits` can be read in place by [`best_candidates`]: a float32 CPU tensor.
pub fn can_read_in_place(logits: &Tensor) -> bool {
    logits.device() == Device::Cpu && logits.kind() == Kind::Float && logits.dim() == 2
}

/// The `2k` best continuations of every sentence after a step: `log_probs` of the step
/// (`[sentences * k, vocab]`, rows grouped by sentence), `beam [rows]` the rows' accumulated
/// log-probabilities (`-inf`: a dead row), the length rules of step `t` (0-based) with each
/// row's bound. Returns per sentence `2k` `(beam[row] + log_prob, row_in_sentence * vocab +
/// token)` best first (ties to the lower index; `-inf` where none is left), and the
/// vocabulary size. On the CPU [`best_candidates`] reads the log-probabilities in place;
/// elsewhere the sum and `topk` run on the device and only the candidates come back.
pub fn rank(
    log_probs: Tensor,
    beam: &[f32],
    k: usize,
    t: usize,
    min_len: usize,
    row_bounds: &[usize],
) -> Result<(Vec<f32>, Vec<i64>, i64)> {
    if !can_read_in_place(&log_probs) {
        let mut log_probs = log_probs;
        let vocab = log_probs.size()[1];
        apply_length_rules(&mut log_probs, t, min_len, row_bounds);
        let device = log_probs.device();
        let beam = Tensor::from_slice(beam).to_device(device);
        let sentences = (beam.size()[0] as usize / k.max(1)) as i64;
        let cand = (beam.unsqueeze(1) + log_probs).view([sentences, k as i64 * vocab]);
        let (top_scores, top_idx) = cand.topk(2 * k as i64, 1, true, true);
        return Ok((
            host(&top_scores, "search scores")?,
            host(&top_idx, "search candidates")?,
            vocab,
        ));
    }
    let z = log_probs;
    let forced: Vec<bool> = row_bounds.iter().map(|&b| t + 1 >= b).collect();
    let rules = Rules {
        ban_eos: t < min_len,
        forced: &forced,
    };
    let (v, i) = best_candidates(&z, beam, k, rules, t + 1)?;
    Ok((v, i, z.size()[1]))
}

/// The `2k` best candidates of every sentence: `log_probs [sentences * k, vocab]` (float32,
/// on the CPU; rows `s * k .. (s + 1) * k` are sentence `s`'s beams), `scores [rows]` the
/// beams' accumulated log-probabilities (`-inf` for a dead beam, which is skipped). Returns
/// per sentence `2k` `(score + log_prob, beam * vocab + token)`, best first; missing
/// candidates are `(-inf, 0)`.
///
/// A NaN in a live row (a broken model) is [`Error::NonFiniteScores`] at `step`.
pub fn best_candidates(
    log_probs: &Tensor,
    scores: &[f32],
    k: usize,
    rules: Rules<'_>,
    step: usize,
) -> Result<(Vec<f32>, Vec<i64>)> {
    assert!(
        can_read_in_place(log_probs),
        "float32 CPU log-probabilities"
    );
    let logits = log_probs.contiguous();
    let (rows, vocab) = (logits.size()[0] as usize, logits.size()[1] as usize);
    assert_eq!(rows % k.max(1), 0, "rows are whole beams");
    assert_eq!((scores.len(), rules.forced.len()), (rows, rows));
    // SAFETY: `logits` is a contiguous float32 CPU tensor of rows * vocab elements that lives
    // (and is not written) until the end of this function.
    let data: &[f32] =
        unsafe { std::slice::from_raw_parts(logits.data_ptr() as *const f32, rows * vocab) };
    let width = 2 * k;
    let sentences = rows / k.max(1);
    let mut out_scores = Vec::with_capacity(sentences * width);
    let mut out_idx = Vec::with_capacity(sentences * width);
    let eos = EOS_ID as usize;
    let mut best = Best::new(width);
    for s in 0..sentences {
        best.clear();
        for b in 0..k {
            let r = s * k + b;
            let score = scores[r];
            if score == f32::NEG_INFINITY {
                continue;
            }
            if score.is_nan() {
                return Err(Error::NonFiniteScores { step });
            }
            let row = &data[r * vocab..(r + 1) * vocab];
            let offset = (b * vocab) as i64;
            if rules.forced[r] {
                if !rules.ban_eos && eos < vocab {
                    best.offer(score + row[eos], offset + eos as i64);
                }
                continue;
            }
            let mut start = 0;
            for chunk in row.chunks(CHUNK) {
                // Values that could enter: `score + x > worst`, with a margin for rounding
                // (the exact test follows).
                let bar = match best.worst() {
                    None => f32::NEG_INFINITY,
                    Some(w) => {
                        // The rounding of `score + x` grows with the scores' magnitude.
                        let d = w - score;
                        d - 1e-4 * (1.0 + d.abs()) - 8.0 * f32::EPSILON * (score.abs() + w.abs())
                    }
                };
                if any_at_or_above(chunk, bar) {
                    for (j, &x) in chunk.iter().enumerate() {
                        if x.is_nan() {
                            return Err(Error::NonFiniteScores { step });
                        }
                        let tok = start + j;
                        if x >= bar && !(rules.ban_eos && tok == eos) {
                            best.offer(score + x, offset + tok as i64);
                        }
                    }
                }
                start += chunk.len();
            }
        }
        best.emit(&mut out_scores, &mut out_idx);
    }
    Ok((out_scores, out_idx))
}

/// Whether a value of `chunk` is at or above `bar`, or NaN.
#[inline]
fn any_at_or_above(chunk: &[f32], bar: f32) -> bool {
    #[cfg(target_arch = "x86_64")]
    if chunk.len() == CHUNK {
        use std::arch::x86_64::{
            _mm_cmpnlt_ps, _mm_loadu_ps, _mm_movemask_ps, _mm_or_ps, _mm_set1_ps,
        };
        // SAFETY: SSE2 is part of x86_64; the four unaligned loads read the chunk's 16
        // floats.
        unsafe {
            let b = _mm_set1_ps(bar);
            let p = chunk.as_ptr();
            // not-less-than: true at or above the bar, and for NaN.
            let m0 = _mm_or_ps(
                _mm_cmpnlt_ps(_mm_loadu_ps(p), b),
                _mm_cmpnlt_ps(_mm_loadu_ps(p.add(4)), b),
            );
            let m1 = _mm_or_ps(
                _mm_cmpnlt_ps(_mm_loadu_ps(p.add(8)), b),
                _mm_cmpnlt_ps(_mm_loadu_ps(p.add(12)), b),
            );
            return _mm_movemask_ps(_mm_or_ps(m0, m1)) != 0;
        }
    }
    chunk.iter().any(|&x| x >= bar || x.is_nan())
}

/// The best `width` of the candidates offered, best first; among equal scores the one
/// offered first (offers come in increasing index order) ranks first.
struct Best {
    width: usize,
    items: Vec<(f32, i64)>,
}

impl Best {
    fn new(width: usize) -> Self {
        Best {
            width,
            items: Vec::with_capacity(width + 1),
        }
    }

    fn clear(&mut self) {
        self.items.clear();
    }

    /// The score a candidate must beat, once `width` are held.
    fn worst(&self) -> Option<f32> {
        (self.items.len() == self.width).then(|| self.items[self.width - 1].0)
    }

    fn offer(&mut self, v: f32, idx: i64) {
        if v.is_nan() || v == f32::NEG_INFINITY {
            return;
        }
        if self.items.len() == self.width && v <= self.items[self.width - 1].0 {
            return;
        }
        // After every held one with a score >= v: equal scores keep the offer order.
        let at = self.items.partition_point(|&(u, _)| u >= v);
        self.items.insert(at, (v, idx));
        self.items.truncate(self.width);
    }

    fn emit(&self, scores: &mut Vec<f32>, idx: &mut Vec<i64>) {
        for &(v, i) in &self.items {
            scores.push(v);
            idx.push(i);
        }
        for _ in self.items.len()..self.width {
            scores.push(f32::NEG_INFINITY);
            idx.push(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tensor path: `topk(2k)` of `scores + log_probs` with the length rules.
    fn reference(
        lp: &Tensor,
        scores: &[f32],
        k: usize,
        ban_eos: bool,
        forced: &[bool],
    ) -> (Vec<f32>, Vec<i64>) {
        let mut lp = lp.copy();
        let bounds: Vec<usize> = forced.iter().map(|&f| if f { 1 } else { 99 }).collect();
        apply_length_rules(&mut lp, 0, usize::from(ban_eos), &bounds);
        let vocab = lp.size()[1];
        let cand = (Tensor::from_slice(scores).unsqueeze(1) + lp).view([-1, k as i64 * vocab]);
        let (v, i) = cand.topk(2 * k as i64, 1, true, true);
        (
            Vec::<f32>::try_from(v.reshape([-1])).unwrap(),
            Vec::<i64>::try_from(i.reshape([-1])).unwrap(),
        )
    }

    fn check(seed: i64, sentences: usize, k: usize, vocab: i64, ban: bool, forced_every: usize) {
        tch::manual_seed(seed);
        let rows = sentences * k;
        let logits = Tensor::randn([rows as i64, vocab], (Kind::Float, Device::Cpu)) * 3.0;
        let lp = logits.log_softmax(-1, Kind::Float);
        let mut scores: Vec<f32> = (0..rows).map(|r| -((r % 7) as f32) * 0.37).collect();
        scores[1] = f32::NEG_INFINITY; // a dead beam
        let forced: Vec<bool> = (0..rows)
            .map(|r| forced_every > 0 && r % forced_every == 0)
            .collect();
        let rules = Rules {
            ban_eos: ban,
            forced: &forced,
        };
        let (ours_v, ours_i) = best_candidates(&lp, &scores, k, rules, 1).unwrap();
        let (ref_v, ref_i) = reference(&lp, &scores, k, ban, &forced);
        // The same float sums: equal, not close.
        assert_eq!(ours_v, ref_v);
        for (j, v) in ref_v.iter().enumerate() {
            if v.is_finite() {
                assert_eq!(ours_i[j], ref_i[j], "candidate {j}");
            }
        }
        // And through `rank`, as the searches call it.
        let bounds: Vec<usize> = forced.iter().map(|&f| if f { 1 } else { 99 }).collect();
        let (v, i, n) = rank(lp.copy(), &scores, k, 0, usize::from(ban), &bounds).unwrap();
        assert_eq!((v, i, n), (ours_v, ours_i, vocab));
    }

    #[test]
    fn the_candidates_are_the_tensor_paths() {
        check(1, 8, 5, 4000, false, 0);
        check(2, 3, 4, 300, true, 0);
        check(3, 6, 5, 1000, false, 3);
        check(4, 6, 5, 1000, true, 4);
        check(5, 2, 1, 50, false, 0);
    }

    #[test]
    fn a_tiny_vocabulary_pads_with_minus_infinity() {
        // 2 beams x 3 tokens; beam 1 dead: only 3 candidates exist for 4 places.
        let lp = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 5.0, 5.0, 5.0])
            .view([2, 3])
            .log_softmax(-1, Kind::Float);
        let forced = [false, false];
        let rules = Rules {
            ban_eos: false,
            forced: &forced,
        };
        let (v, i) = best_candidates(&lp, &[0.0, f32::NEG_INFINITY], 2, rules, 1).unwrap();
        assert_eq!(i[..3], [2, 1, 0]);
        assert_eq!(v[3], f32::NEG_INFINITY);
    }

    #[test]
    fn nan_is_an_error() {
        let lp = Tensor::from_slice(&[0.0f32, f32::NAN, 1.0, 2.0])
            .view([1, 4])
            .log_softmax(-1, Kind::Float);
        let rules = Rules {
            ban_eos: false,
            forced: &[false],
        };
        assert!(matches!(
            best_candidates(&lp, &[0.0], 1, rules, 3),
            Err(Error::NonFiniteScores { step: 3 })
        ));
    }
}
