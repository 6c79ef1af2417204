//! A beam step's best candidates on the CPU, in one pass over the logits.
//!
//! The tensor path of a beam step makes, per step, `log_softmax(logits)` (a `[rows, vocab]`
//! tensor), adds the beam scores (another), and runs `topk` over `[sentences, K * vocab]`,
//! which copies every row into a buffer of `(value, index)` pairs and partially sorts it. On
//! the CPU these three were a fifth of `rnmt-translate`'s time (perf, beam 5, batch 64). Here
//! libtorch computes only `logsumexp` per row, and the `2K` best `score + (logit - lse)` per
//! sentence are picked in one read of the logits, in place: a chunk of 16 logits is compared
//! with the running threshold (a loop the compiler vectorizes), and only chunks with a
//! logit above it are looked at one by one. The length rules of
//! [`super::apply_length_rules`] apply on the way. Greedy search ranks the same way (one row
//! per sentence), so a beam of one is exactly greedy search.
//!
//! The result is what the tensor path gives: the same candidates, the same order (best
//! first, ties to the lower `beam * vocab + token`), scores equal up to float rounding
//! (`score + (logit - lse)` against `score + log_softmax`), which a test checks.
use tch::{Device, Kind, Tensor};

use super::{apply_length_rules, host, Scores};
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

/// The `2k` best continuations of every sentence after a step: `scores` of the step
/// (`[sentences * k, vocab]`, rows grouped by sentence), `beam [rows]` the rows' accumulated
/// log-probabilities (`-inf`: a dead row), the length rules of step `t` (0-based) with each
/// row's bound. Returns per sentence `2k` `(beam[row] + log_prob, row_in_sentence * vocab +
/// token)` best first (ties to the lower index; `-inf` where none is left), and the
/// vocabulary size. On the CPU [`best_candidates`] reads the scores in place; elsewhere
/// libtorch's `log_softmax` and `topk` run on the device and only the candidates come back.
pub fn rank(
    scores: Scores,
    beam: &[f32],
    k: usize,
    t: usize,
    min_len: usize,
    row_bounds: &[usize],
) -> Result<(Vec<f32>, Vec<i64>, i64)> {
    let (z, lse) = match scores {
        Scores::Logits(z) if can_read_in_place(&z) => {
            let lse: Vec<f32> = host(&z.logsumexp([1i64], false), "log-sum-exp")?;
            (z, lse)
        }
        Scores::LogProbs(lp) if can_read_in_place(&lp) => {
            let zeros = vec![0.0; beam.len()];
            (lp, zeros)
        }
        other => {
            let mut log_probs = other.log_probs();
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
    };
    let forced: Vec<bool> = row_bounds.iter().map(|&b| t + 1 >= b).collect();
    let rules = Rules {
        ban_eos: t < min_len,
        forced: &forced,
    };
    let (v, i) = best_candidates(&z, &lse, beam, k, rules, t + 1)?;
    Ok((v, i, z.size()[1]))
}

/// The `2k` best candidates of every sentence: `logits [sentences * k, vocab]` (float32, on
/// the CPU; rows `s * k .. (s + 1) * k` are sentence `s`'s beams), `lse [rows]` their
/// log-sum-exp (0 for log-probabilities), `scores [rows]` the beams' accumulated
/// log-probabilities (`-inf` for a dead beam, which is skipped). Returns per sentence `2k`
/// `(score, beam * vocab + token)`, best first; missing candidates are `(-inf, 0)`.
///
/// A live row whose `lse` is not finite (NaN or infinite logits) is
/// [`Error::NonFiniteScores`] at `step`.
pub fn best_candidates(
    logits: &Tensor,
    lse: &[f32],
    scores: &[f32],
    k: usize,
    rules: Rules<'_>,
    step: usize,
) -> Result<(Vec<f32>, Vec<i64>)> {
    assert!(can_read_in_place(logits), "float32 CPU logits");
    let logits = logits.contiguous();
    let (rows, vocab) = (logits.size()[0] as usize, logits.size()[1] as usize);
    assert_eq!(rows % k.max(1), 0, "rows are whole beams");
    assert_eq!(
        (lse.len(), scores.len(), rules.forced.len()),
        (rows, rows, rows)
    );
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
            if !lse[r].is_finite() || score.is_nan() {
                return Err(Error::NonFiniteScores { step });
            }
            let row = &data[r * vocab..(r + 1) * vocab];
            let lse = lse[r];
            let offset = (b * vocab) as i64;
            if rules.forced[r] {
                if !rules.ban_eos && eos < vocab {
                    best.offer(score + (row[eos] - lse), offset + eos as i64);
                }
                continue;
            }
            let mut start = 0;
            for chunk in row.chunks(CHUNK) {
                // Logits that could enter: `score + (x - lse) > worst`, with a margin for
                // rounding (the exact test follows).
                let bar = match best.worst() {
                    None => f32::NEG_INFINITY,
                    Some(w) => {
                        let d = w - score + lse;
                        d - 1e-4 * (1.0 + d.abs())
                    }
                };
                if chunk
                    .iter()
                    .fold(false, |hit, &x| hit | (x >= bar) | x.is_nan())
                {
                    for (j, &x) in chunk.iter().enumerate() {
                        if x.is_nan() {
                            return Err(Error::NonFiniteScores { step });
                        }
                        let tok = start + j;
                        if x >= bar && !(rules.ban_eos && tok == eos) {
                            best.offer(score + (x - lse), offset + tok as i64);
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

    /// The tensor path: `topk(2k)` of `scores + log_softmax` with the length rules.
    fn reference(
        logits: &Tensor,
        scores: &[f32],
        k: usize,
        ban_eos: bool,
        forced: &[bool],
    ) -> (Vec<f32>, Vec<i64>) {
        let lp = logits.log_softmax(-1, Kind::Float);
        let eos = EOS_ID as i64;
        if ban_eos {
            let _ = lp.narrow(1, eos, 1).fill_(f64::NEG_INFINITY);
        }
        for (r, &f) in forced.iter().enumerate() {
            if f {
                let mut row = lp.get(r as i64);
                let keep = row.get(eos).double_value(&[]);
                let _ = row.fill_(f64::NEG_INFINITY);
                let _ = row.get(eos).fill_(keep);
            }
        }
        let vocab = logits.size()[1];
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
        let mut scores: Vec<f32> = (0..rows).map(|r| -((r % 7) as f32) * 0.37).collect();
        scores[1] = f32::NEG_INFINITY; // a dead beam
        let forced: Vec<bool> = (0..rows)
            .map(|r| forced_every > 0 && r % forced_every == 0)
            .collect();
        let lse = Vec::<f32>::try_from(logits.logsumexp([1i64], false)).unwrap();
        let rules = Rules {
            ban_eos: ban,
            forced: &forced,
        };
        let (ours_v, ours_i) = best_candidates(&logits, &lse, &scores, k, rules, 1).unwrap();
        let (ref_v, ref_i) = reference(&logits, &scores, k, ban, &forced);
        for (j, (a, b)) in ours_v.iter().zip(&ref_v).enumerate() {
            if b.is_finite() {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{j}: {a} vs {b}");
                assert_eq!(ours_i[j], ref_i[j], "candidate {j}");
            } else {
                assert_eq!(*a, f32::NEG_INFINITY, "{j}");
            }
        }
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
        let logits = Tensor::from_slice(&[0.0f32, 1.0, 2.0, 5.0, 5.0, 5.0]).view([2, 3]);
        let lse = Vec::<f32>::try_from(logits.logsumexp([1i64], false)).unwrap();
        let forced = [false, false];
        let rules = Rules {
            ban_eos: false,
            forced: &forced,
        };
        let (v, i) =
            best_candidates(&logits, &lse, &[0.0, f32::NEG_INFINITY], 2, rules, 1).unwrap();
        assert_eq!(i[..3], [2, 1, 0]);
        assert_eq!(v[3], f32::NEG_INFINITY);
    }

    #[test]
    fn non_finite_logits_are_an_error() {
        let logits = Tensor::from_slice(&[0.0f32, f32::NAN, 1.0, 2.0]).view([1, 4]);
        let lse = Vec::<f32>::try_from(logits.logsumexp([1i64], false)).unwrap();
        let rules = Rules {
            ban_eos: false,
            forced: &[false],
        };
        assert!(matches!(
            best_candidates(&logits, &lse, &[0.0], 1, rules, 3),
            Err(Error::NonFiniteScores { step: 3 })
        ));
    }
}
