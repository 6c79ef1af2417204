//! Batched greedy search: the most probable next token at every step.
use tch::{Device, Kind, Tensor};

use super::alignment::AttentionHistory;
use super::candidates;
use super::{encode_sources, length_penalty, step_recording, Hypothesis, StepModel};
use crate::config::DecodeConfig;
use crate::error::{Error, Result};
use crate::tokenizer::{BOS_ID, EOS_ID};

/// Greedy search over `sources` (subword ids without `</s>`); one hypothesis each, in order.
///
/// Every output ends at its length bound whatever the scores are; a NaN or infinite score
/// (a broken model) is [`Error::NonFiniteScores`], never a loop. With
/// [`DecodeConfig::attention`] each hypothesis carries its attention matrix.
pub fn greedy_search<M: StepModel + ?Sized>(
    model: &M,
    sources: &[Vec<u32>],
    cfg: &DecodeConfig,
    device: Device,
) -> Result<Vec<Hypothesis>> {
    let n = sources.len();
    let (mut enc, bounds) = encode_sources(model, sources, cfg, device);
    let mut state = model.initial_state(&enc);
    // `active[r]` is the sentence in row r of the shrinking batch.
    let mut active: Vec<usize> = (0..n).collect();
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut done: Vec<Option<Hypothesis>> = vec![None; n];
    // Each row's accumulated log-probability, on the host.
    let mut scores = vec![0.0f32; n];
    let mut prev = Tensor::full([n as i64], BOS_ID as i64, (Kind::Int64, device));
    let mut attention = cfg.attention.then(AttentionHistory::default);
    let mut t = 0;
    while !active.is_empty() {
        let (log_probs, next) = step_recording(model, &prev, &state, &enc, &mut attention)?;
        let row_bounds: Vec<usize> = active.iter().map(|&s| bounds[s]).collect();
        // Rank `scores + log_probs` as beam search does (the same candidates with one row per
        // sentence, the lowest token id among exact ties): beam 1 is exactly greedy.
        let (cand_scores, cand_idx, _) =
            candidates::rank(log_probs, &scores, 1, t, cfg.min_len, &row_bounds)?;
        let host_scores: Vec<f32> = cand_scores.iter().step_by(2).copied().collect();
        let host_choice: Vec<i64> = cand_idx.iter().step_by(2).copied().collect();
        if host_scores.iter().any(|s| !s.is_finite()) {
            return Err(Error::NonFiniteScores { step: t + 1 });
        }
        scores = host_scores.clone();
        let choice = Tensor::from_slice(&host_choice).to_device(device);
        let mut keep = Vec::with_capacity(active.len());
        for (r, &s) in active.iter().enumerate() {
            let tok = host_choice[r] as u32;
            // The bound holds on the host too, whatever the tensor side chose.
            if tok == EOS_ID || tokens[s].len() + 1 >= bounds[s] {
                let len = tokens[s].len() + 1;
                let score = host_scores[r] as f64;
                let normalized = score / length_penalty(len, cfg.alpha());
                let matrix = match &attention {
                    Some(h) => Some(h.matrix(r, sources[s].len() + 1)?),
                    None => None,
                };
                done[s] = Some(Hypothesis {
                    tokens: std::mem::take(&mut tokens[s]),
                    score,
                    normalized,
                    attention: matrix,
                });
            } else {
                tokens[s].push(tok);
                keep.push(r as i64);
            }
        }
        t += 1;
        if keep.len() == active.len() {
            state = next;
            prev = choice;
        } else if !keep.is_empty() {
            let idx = Tensor::from_slice(&keep).to_device(device);
            state = model.select_state(&next, &idx);
            enc = model.select_encoded(&enc, &idx);
            if let Some(h) = &mut attention {
                h.select(&idx);
            }
            prev = choice.index_select(0, &idx);
            scores = keep.iter().map(|&r| scores[r as usize]).collect();
            active = keep.iter().map(|&r| active[r as usize]).collect();
        } else {
            active.clear();
        }
    }
    Ok(done
        .into_iter()
        .map(|h| {
            h.unwrap_or(Hypothesis {
                tokens: vec![],
                score: 0.0,
                normalized: 0.0,
                attention: None,
            })
        })
        .collect())
}
