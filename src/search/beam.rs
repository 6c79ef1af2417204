//! Batched beam search.
//!
//! Every sentence keeps `K` partial hypotheses (its beam), all sentences' beams stacked in one
//! `[active * K, ..]` batch. At each step the model scores all continuations; per sentence the
//! `2K` best `(beam, token)` pairs by accumulated log-probability are taken in order: a pair
//! ending in `</s>` among the first `K` becomes a finished hypothesis, the pairs not ending
//! fill the next beam up to `K` (taking `2K` guarantees `K` unfinished ones exist). A sentence is done when it has `K`
//! finished hypotheses; its rows then leave the batch. Finished hypotheses are ranked by the
//! length-normalized score ([`super::length_penalty`]).
//!
//! The encoder runs once per batch and its output stays one copy per sentence: the K rows of
//! a sentence's beam attend together over it (a `[sentences, K, ..]` batched attention), so
//! reordering a beam moves only the decoder state, and the encoder output shrinks only when
//! sentences finish. The only host transfer per step is the `2K` best
//! candidates per sentence, which the bookkeeping needs (and, with
//! [`DecodeConfig::attention`], the attention matrix of each hypothesis that ends).
use tch::{Device, Kind, Tensor};

use super::alignment::AttentionHistory;
use super::candidates;
use super::{encode_sources, length_penalty, step_recording, Hypothesis, StepModel};
use crate::config::{BeamStop, DecodeConfig};
use crate::error::{Error, Result};
use crate::tokenizer::{BOS_ID, EOS_ID};

/// Beam search over `sources` (subword ids without `</s>`); up to `n_best` hypotheses per
/// source, best (highest normalized score) first.
///
/// Every hypothesis ends at its length bound whatever the scores are; a NaN or infinite score
/// (a broken model) is [`Error::NonFiniteScores`], never a loop. With
/// [`DecodeConfig::attention`] each hypothesis carries its attention matrix.
pub fn beam_search<M: StepModel + ?Sized>(
    model: &M,
    sources: &[Vec<u32>],
    cfg: &DecodeConfig,
    device: Device,
) -> Result<Vec<Vec<Hypothesis>>> {
    let n = sources.len();
    let k = cfg.beam;
    let (mut enc, bounds) = encode_sources(model, sources, cfg, device);
    // Every sentence's K hypotheses are K rows of the decoder state, [s0, s0, .., s1, s1, ..],
    // that read the sentence's one copy of the encoder output (see `StepModel::step`).
    let expand: Vec<i64> = (0..n as i64)
        .flat_map(|s| std::iter::repeat_n(s, k))
        .collect();
    let mut state = model.select_state(
        &model.initial_state(&enc),
        &Tensor::from_slice(&expand).to_device(device),
    );
    let mut attention = cfg.attention.then(AttentionHistory::default);
    // All beams start identical: only beam 0 may extend at the first step.
    let first: Vec<f32> = (0..n * k)
        .map(|r| if r % k == 0 { 0.0 } else { f32::NEG_INFINITY })
        .collect();
    // The beams' accumulated log-probabilities, on the host.
    let mut scores = first;
    let mut prev = Tensor::full([(n * k) as i64], BOS_ID as i64, (Kind::Int64, device));
    let mut active: Vec<usize> = (0..n).collect();
    let mut histories: Vec<Vec<u32>> = vec![Vec::new(); n * k];
    let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); n];
    let mut t = 0;
    while !active.is_empty() {
        let (log_probs, next) = step_recording(model, &prev, &state, &enc, &mut attention)?;
        let row_bounds: Vec<usize> = active
            .iter()
            .flat_map(|&s| std::iter::repeat_n(bounds[s], k))
            .collect();
        let (host_scores, host_idx, vocab) =
            candidates::rank(log_probs, &scores, k, t, cfg.min_len, &row_bounds)?;
        // Log-probabilities are <= 0, so -inf (a banned token) is the only non-finite value a
        // sound model gives; NaN sorts above every number in topk and would never end.
        if host_scores
            .iter()
            .any(|s| s.is_nan() || *s == f32::INFINITY)
        {
            return Err(Error::NonFiniteScores { step: t + 1 });
        }

        let mut next_rows = Vec::new(); // rows of `next` to continue
        let mut next_tokens = Vec::new();
        let mut next_scores = Vec::new();
        let mut next_histories = Vec::new();
        let mut still_active = Vec::new();
        // A sentence is done with K finished hypotheses or when no live continuation is left.
        for (a, &s) in active.iter().enumerate() {
            let mut extended = 0;
            // Best first; exact ties go to the lower (beam, token) index, deterministically.
            let mut order: Vec<usize> = (a * 2 * k..(a + 1) * 2 * k).collect();
            order.sort_by(|&x, &y| {
                host_scores[y]
                    .total_cmp(&host_scores[x])
                    .then(host_idx[x].cmp(&host_idx[y]))
            });
            for (rank, j) in order.into_iter().enumerate() {
                let score = host_scores[j];
                if score == f32::NEG_INFINITY {
                    continue;
                }
                let beam = (host_idx[j] / vocab) as usize;
                let tok = (host_idx[j] % vocab) as u32;
                let row = a * k + beam;
                if tok == EOS_ID {
                    // Only an ending among the K best candidates counts (as in fairseq);
                    // otherwise beam 1 could end where greedy search continues.
                    let room = cfg.stop() == BeamStop::Patient || finished[s].len() < k;
                    if rank < k && room {
                        let tokens = histories[row].clone();
                        let normalized =
                            score as f64 / length_penalty(tokens.len() + 1, cfg.alpha());
                        let matrix = match &attention {
                            Some(h) => Some(h.matrix(row, sources[s].len() + 1)?),
                            None => None,
                        };
                        keep_best(
                            &mut finished[s],
                            Hypothesis {
                                tokens,
                                score: score as f64,
                                normalized,
                                attention: matrix,
                            },
                            k,
                        );
                    }
                } else if extended < k {
                    let mut h = histories[row].clone();
                    h.push(tok);
                    next_histories.push(h);
                    next_rows.push(row as i64);
                    next_tokens.push(tok as i64);
                    next_scores.push(score);
                    extended += 1;
                }
            }
            // At the length bound only `</s>` may follow (apply_length_rules); the host
            // enforces it too, so no sentence outlives its bound.
            let at_bound = t + 1 >= bounds[s];
            let live = &next_scores[next_scores.len() - extended..];
            let settled = at_bound
                || extended > 0 && cannot_improve(&finished[s], live, t + 2, bounds[s], cfg)
                || cfg.stop() == BeamStop::Patient && none_ahead(&finished[s], live, t + 2, cfg);
            let full = cfg.stop() == BeamStop::Finished && finished[s].len() >= k;
            if !full && extended > 0 && !settled {
                // Pad a beam that lacks continuations (tiny vocabularies) with dead rows.
                while extended < k {
                    next_histories.push(Vec::new());
                    next_rows.push((a * k) as i64);
                    next_tokens.push(EOS_ID as i64);
                    next_scores.push(f32::NEG_INFINITY);
                    extended += 1;
                }
                still_active.push(s);
            } else {
                // Done: drop the rows just added for this sentence.
                let keep = next_rows.len() - extended;
                next_rows.truncate(keep);
                next_tokens.truncate(keep);
                next_scores.truncate(keep);
                next_histories.truncate(keep);
            }
        }
        t += 1;
        if still_active.is_empty() {
            break;
        }
        let shrank = still_active.len() != active.len();
        (state, enc) = super::reorder_rows(
            model,
            &next,
            enc,
            &mut attention,
            &next_rows,
            k,
            shrank,
            device,
        );
        prev = Tensor::from_slice(&next_tokens).to_device(device);
        scores = next_scores;
        histories = next_histories;
        active = still_active;
    }
    Ok(finished
        .into_iter()
        .map(|mut hyps| {
            hyps.sort_by(|a, b| b.normalized.total_cmp(&a.normalized));
            hyps.truncate(cfg.n_best);
            hyps
        })
        .collect())
}

/// Adds `hyp` to `finished`, keeping at most `k`: the best by normalized score (the first
/// found among equals).
fn keep_best(finished: &mut Vec<Hypothesis>, hyp: Hypothesis, k: usize) {
    if finished.len() < k {
        finished.push(hyp);
        return;
    }
    let worst = (0..finished.len())
        .min_by(|&a, &b| {
            finished[a]
                .normalized
                .total_cmp(&finished[b].normalized)
                .then(b.cmp(&a))
        })
        .expect("k >= 1");
    if hyp.normalized > finished[worst].normalized {
        finished.remove(worst);
        finished.push(hyp);
    }
}

/// [`BeamStop::Patient`]'s stop: whether the sentence has its `n_best` finished hypotheses and
/// none of its live ones, ended at the next step (`len_next` tokens with `</s>`), would
/// normalize above the `n_best`-th of them. Live scores only fall as hypotheses grow, but the
/// length penalty grows too, so this is the usual heuristic (Hugging Face's beam scorer), not
/// a bound like [`cannot_improve`].
fn none_ahead(finished: &[Hypothesis], live: &[f32], len_next: usize, cfg: &DecodeConfig) -> bool {
    none_above(
        finished,
        live,
        length_penalty(len_next, cfg.alpha()),
        cfg.n_best,
    )
}

/// Whether `finished` holds `n_best` hypotheses and every finite live score divided by `lp`
/// is at most the `n_best`-th best normalized score among them.
fn none_above(finished: &[Hypothesis], live: &[f32], lp: f64, n_best: usize) -> bool {
    if finished.len() < n_best {
        return false;
    }
    let mut normalized: Vec<f64> = finished.iter().map(|h| h.normalized).collect();
    normalized.sort_by(|a, b| b.total_cmp(a));
    let nth = normalized[n_best - 1];
    live.iter()
        .filter(|s| s.is_finite())
        .all(|&s| (s as f64 / lp) <= nth)
}

/// Early stop: whether no live hypothesis of a sentence can still enter its `n_best`.
///
/// A live hypothesis with log-probability `score` can only lose probability by growing, and
/// will end with between `min_len_next` and `bound` tokens (`</s>` included), so its final
/// normalized score is at most `score / max(lp(min_len_next), lp(bound))` (scores are <= 0 and
/// the GNMT penalty is monotonic in the length). When the `n_best`-th finished hypothesis
/// already scores at least that for every live one, decoding this sentence further cannot
/// change its output: it stops, which saves most of the steps of sentences whose remaining
/// beams would otherwise run on to the length bound.
fn cannot_improve(
    finished: &[Hypothesis],
    live_scores: &[f32],
    min_len_next: usize,
    bound: usize,
    cfg: &DecodeConfig,
) -> bool {
    let lp = length_penalty(min_len_next, cfg.alpha()).max(length_penalty(bound, cfg.alpha()));
    none_above(finished, live_scores, lp, cfg.n_best)
}
