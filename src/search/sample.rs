//! Ancestral sampling (`rnmt-translate --sample`): every output token is drawn from the
//! model's next-token distribution, optionally restricted to the `topk` most probable tokens
//! and sharpened or flattened by a temperature. Back-translation with sampled sources trains
//! better than with beam outputs (Edunov et al. 2018), and this is what Marian's
//! `--output-sampling` and fairseq's `--sampling` do.
//!
//! Reproducible and batch-independent: sample `j` of a sentence draws its uniform numbers from
//! its own SplitMix64 generator, seeded from `(seed, sentence key, j)`, where the key is the
//! input line number; one number per token, turned into a token by inverting the
//! distribution's cumulative sum in vocabulary order. Nothing else in the batch enters a
//! row's draw, so the same seed gives the same samples whatever the batch size, the length
//! ordering window or the number of workers (up to float rounding of the model's
//! log-probabilities, which a draw could only feel exactly at a boundary).
use tch::{Device, Kind, Tensor};

use super::alignment::AttentionHistory;
use super::{
    apply_length_rules, encode_sources, host, length_penalty, step_recording, Hypothesis, StepModel,
};
use crate::config::DecodeConfig;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tokenizer::{BOS_ID, EOS_ID};

/// The generator of sample `j` of the sentence with key `key` (its input line) under `seed`.
pub fn sample_rng(seed: u64, key: u64, j: usize) -> Rng {
    // Three SplitMix64 draws mix the parts, so that nearby seeds, keys and sample indices
    // start far apart.
    let mut r = Rng::new(seed);
    let a = r.next_u64();
    let mut r = Rng::new(a ^ key.wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let b = r.next_u64();
    Rng::new(b ^ (j as u64).wrapping_mul(0xA076_1D64_78BD_642F))
}

/// A uniform number in the open interval `(0, 1)`.
fn open_unit(rng: &mut Rng) -> f64 {
    ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// Draws `cfg.n_best` samples for each of `sources` (subword ids without `</s>`); `keys[i]`
/// identifies sentence `i` for its generators (the input line number). The samples of a
/// sentence are in sample order; each hypothesis's `score` is the model's log-probability of
/// it (untempered), `</s>` included. The length rules of beam search hold (`min_len`, the
/// output bound).
pub fn sample_search<M: StepModel + ?Sized>(
    model: &M,
    sources: &[Vec<u32>],
    keys: &[u64],
    cfg: &DecodeConfig,
    device: Device,
) -> Result<Vec<Vec<Hypothesis>>> {
    assert_eq!(keys.len(), sources.len(), "one key per source");
    let per = cfg.n_best.max(1);
    let (enc, bounds) = encode_sources(model, sources, cfg, device);
    // Row r is sample r % per of sentence r / per; each row has its own encoder copy, so
    // rows leave the batch one by one.
    let expand: Vec<i64> = (0..sources.len() as i64)
        .flat_map(|s| std::iter::repeat_n(s, per))
        .collect();
    let expand = Tensor::from_slice(&expand).to_device(device);
    let mut enc = model.select_encoded(&enc, &expand);
    let mut state = model.initial_state(&enc);
    let rows = sources.len() * per;
    let mut rngs: Vec<Rng> = (0..rows)
        .map(|r| sample_rng(cfg.seed, keys[r / per], r % per))
        .collect();
    let mut active: Vec<usize> = (0..rows).collect();
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); rows];
    let mut scores = vec![0.0f64; rows];
    let mut done: Vec<Option<Hypothesis>> = vec![None; rows];
    let mut prev = Tensor::full([rows as i64], BOS_ID as i64, (Kind::Int64, device));
    let mut attention = cfg.attention.then(AttentionHistory::default);
    let mut t = 0;
    while !active.is_empty() {
        let (mut log_probs, next) = step_recording(model, &prev, &state, &enc, &mut attention)?;
        let row_bounds: Vec<usize> = active.iter().map(|&r| bounds[r / per]).collect();
        apply_length_rules(&mut log_probs, t, cfg.min_len, &row_bounds);
        let uniforms: Vec<f64> = active.iter().map(|&r| open_unit(&mut rngs[r])).collect();
        let choice = draw(&log_probs, &uniforms, cfg.topk, cfg.temperature);
        let chosen_lp = log_probs.gather(1, &choice.unsqueeze(1), false);
        let host_tok: Vec<i64> = host(&choice, "sampled tokens")?;
        let host_lp: Vec<f32> = host(&chosen_lp, "sampled log-probabilities")?;
        if host_lp.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFiniteScores { step: t + 1 });
        }
        let mut keep = Vec::with_capacity(active.len());
        for (i, &r) in active.iter().enumerate() {
            let tok = host_tok[i] as u32;
            scores[r] += host_lp[i] as f64;
            if tok == EOS_ID || tokens[r].len() + 1 >= bounds[r / per] {
                let len = tokens[r].len() + 1;
                let matrix = match &attention {
                    Some(h) => Some(h.matrix(i, sources[r / per].len() + 1)?),
                    None => None,
                };
                done[r] = Some(Hypothesis {
                    tokens: std::mem::take(&mut tokens[r]),
                    score: scores[r],
                    normalized: scores[r] / length_penalty(len, cfg.alpha()),
                    attention: matrix,
                });
            } else {
                tokens[r].push(tok);
                keep.push(i as i64);
            }
        }
        t += 1;
        if keep.is_empty() {
            break;
        }
        if keep.len() == active.len() {
            state = next;
            prev = choice;
        } else {
            let idx = Tensor::from_slice(&keep).to_device(device);
            state = model.select_state(&next, &idx);
            enc = model.select_encoded(&enc, &idx);
            if let Some(h) = &mut attention {
                h.select(&idx);
            }
            prev = choice.index_select(0, &idx);
            active = keep.iter().map(|&i| active[i as usize]).collect();
        }
    }
    let mut out: Vec<Vec<Hypothesis>> = vec![Vec::with_capacity(per); sources.len()];
    for (r, h) in done.into_iter().enumerate() {
        out[r / per].push(h.expect("every sample ends at its bound"));
    }
    Ok(out)
}

/// One token per row of `log_probs [rows, vocab]` (banned tokens at `-inf`): the token at
/// which the cumulative sum of the tempered, top-k restricted distribution (in vocabulary
/// order; in rank order with top-k) first reaches `uniforms[row]` (in `(0, 1)`) times its
/// total. Returns `[rows]` int64.
pub fn draw(log_probs: &Tensor, uniforms: &[f64], topk: usize, temperature: f64) -> Tensor {
    let vocab = log_probs.size()[1];
    let tempered = log_probs.to_kind(Kind::Float) / temperature;
    let (values, index) = if topk > 0 && (topk as i64) < vocab {
        let (v, i) = tempered.topk(topk as i64, 1, true, true);
        (v, Some(i))
    } else {
        (tempered, None)
    };
    let cdf = values.softmax(-1, Kind::Double).cumsum(1, Kind::Double);
    let width = cdf.size()[1];
    let u = Tensor::from_slice(uniforms).to_device(cdf.device());
    let target = cdf.narrow(1, width - 1, 1).squeeze_dim(1) * u;
    let pos = cdf
        .lt_tensor(&target.unsqueeze(1))
        .sum_dim_intlist(1, false, Kind::Int64)
        .clamp_max(width - 1);
    match index {
        Some(i) => i.gather(1, &pos.unsqueeze(1), false).squeeze_dim(1),
        None => pos,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_inverts_the_cumulative_distribution() {
        // p = [0.1, 0, 0.6, 0.3]: u in (0, 0.1] -> 0, (0.1, 0.7] -> 2, above -> 3.
        let p = Tensor::from_slice(&[0.1f32, 0.0, 0.6, 0.3])
            .view([1, 4])
            .log();
        let pick = |u: f64, k: usize| host::<i64>(&draw(&p, &[u], k, 1.0), "t").unwrap()[0];
        assert_eq!(pick(0.05, 0), 0);
        assert_eq!(pick(0.11, 0), 2);
        assert_eq!(pick(0.69, 0), 2);
        assert_eq!(pick(0.71, 0), 3);
        assert_eq!(pick(1e-12, 0), 0);
        // The banned (probability 0) token is never drawn, even at the top.
        assert_ne!(pick(0.999_999, 0), 1);
        // Top-2 keeps tokens 2 and 3 (0.6 and 0.3, renormalized): rank order.
        assert_eq!(pick(0.5, 2), 2);
        assert_eq!(pick(0.7, 2), 3);
        assert!([2, 3].contains(&pick(1e-9, 2)));
    }

    #[test]
    fn a_low_temperature_approaches_the_most_probable_token() {
        let p = Tensor::from_slice(&[0.3f32, 0.4, 0.3]).view([1, 3]).log();
        for u in [0.01, 0.3, 0.6, 0.99] {
            let tok = host::<i64>(&draw(&p, &[u], 0, 0.01), "t").unwrap()[0];
            assert_eq!(tok, 1, "u = {u}");
        }
    }

    #[test]
    fn generators_differ_by_seed_key_and_sample() {
        let first = |s, k, j| sample_rng(s, k, j).next_u64();
        let base = first(1, 1, 0);
        assert_eq!(base, first(1, 1, 0));
        assert_ne!(base, first(2, 1, 0));
        assert_ne!(base, first(1, 2, 0));
        assert_ne!(base, first(1, 1, 1));
    }
}
