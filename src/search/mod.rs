//! Search: turning a source sentence into the most probable target sentence.
//!
//! Both searches are batched: many sentences are decoded together, and a sentence that
//! finishes leaves the active batch (its rows are dropped from the encoder output and decoder
//! state) without stopping the others. They talk to the model only through the three calls
//! of [`StepModel`] (encode, initial state, step), so a single [`crate::model::Seq2Seq`] and
//! an [`crate::ensemble::Ensemble`] decode alike.
//!
//! With [`DecodeConfig::attention`] every hypothesis also carries its attention matrix
//! `[target tokens + </s>][source tokens + </s>]`, collected on the device along with the
//! search and copied to the host once per finished hypothesis.
//!
//! Length: a hypothesis may not end before `min_len` tokens, and at the bound
//! [`DecodeConfig::max_output_len`] it must end: `</s>` is forced there (as fairseq does), so
//! every output ends with `</s>` and its score is exactly the model's log-probability of the
//! output, `</s>` included.
mod alignment;
pub mod beam;
pub mod candidates;
pub mod constrained;
pub mod greedy;
pub mod sample;
pub mod step_model;

use tch::{Device, Tensor};

use crate::batch::{pad, source_ids};
use crate::config::DecodeConfig;
use crate::error::{Error, Result};
use crate::tokenizer::EOS_ID;

pub use beam::beam_search;
pub use constrained::{constrained_search, Phrases};
pub use greedy::greedy_search;
pub use sample::sample_search;
pub use step_model::{Step, StepModel};

/// One output sentence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Target subword ids, without `</s>`.
    pub tokens: Vec<u32>,
    /// Log-probability of `tokens` followed by `</s>` under the model.
    pub score: f64,
    /// `score` divided by the GNMT length penalty `((5 + len) / 6)^alpha`, `len` counting
    /// `</s>`; beam search ranks by it.
    pub normalized: f64,
    /// With [`DecodeConfig::attention`]: the attention weights, one row per output token
    /// (`tokens` then `</s>`), one column per source token (the source's `</s>` last); every
    /// row sums to 1. `None` otherwise.
    pub attention: Option<Vec<Vec<f32>>>,
}

/// GNMT length penalty (Wu et al. 2016).
pub fn length_penalty(len: usize, alpha: f64) -> f64 {
    ((5.0 + len as f64) / 6.0).powf(alpha)
}

/// Decodes `sources` (subword ids without `</s>`): `beam == 1` runs greedy search, otherwise
/// beam search. Returns up to `n_best` hypotheses per source, best first.
///
/// Decoding always ends: every output stops at its length bound, and a model whose scores
/// are NaN or infinite gives [`Error::NonFiniteScores`]. [`DecodeConfig::attention`] with a
/// model without attention is [`Error::NoAttention`].
pub fn decode<M: StepModel + ?Sized>(
    model: &M,
    sources: &[Vec<u32>],
    cfg: &DecodeConfig,
    device: Device,
) -> Result<Vec<Vec<Hypothesis>>> {
    if cfg.attention && !model.has_attention() {
        return Err(Error::NoAttention);
    }
    if sources.is_empty() {
        return Ok(vec![]);
    }
    tch::no_grad(|| {
        if cfg.beam <= 1 {
            Ok(greedy_search(model, sources, cfg, device)?
                .into_iter()
                .map(|h| vec![h])
                .collect())
        } else {
            beam_search(model, sources, cfg, device)
        }
    })
}

/// What one sentence asks of search besides its source: its key (the input line number,
/// which seeds its samples under [`DecodeConfig::sample`]) and its target phrases (for
/// [`constrained_search`]; none: unconstrained).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    pub key: u64,
    pub phrases: Phrases,
}

/// [`decode`] with per-sentence requests: [`DecodeConfig::sample`] samples (seeded per
/// sentence by its key), a batch where some sentence has phrases runs [`constrained_search`]
/// (sampling with phrases is refused), and otherwise [`decode`]'s search.
pub fn decode_requests<M: StepModel + ?Sized>(
    model: &M,
    sources: &[Vec<u32>],
    requests: &[Request],
    cfg: &DecodeConfig,
    device: Device,
) -> Result<Vec<Vec<Hypothesis>>> {
    assert_eq!(sources.len(), requests.len(), "a request per source");
    let constrained = requests.iter().any(|r| !r.phrases.is_empty());
    if !cfg.sample && !constrained {
        return decode(model, sources, cfg, device);
    }
    if cfg.attention && !model.has_attention() {
        return Err(Error::NoAttention);
    }
    if sources.is_empty() {
        return Ok(vec![]);
    }
    if cfg.sample && constrained {
        return Err(Error::Config(
            "sampling and constraints do not go together: constraints need beam search".into(),
        ));
    }
    tch::no_grad(|| {
        if cfg.sample {
            let keys: Vec<u64> = requests.iter().map(|r| r.key).collect();
            sample_search(model, sources, &keys, cfg, device)
        } else {
            let phrases: Vec<Phrases> = requests.iter().map(|r| r.phrases.clone()).collect();
            constrained_search(model, sources, &phrases, cfg, device)
        }
    })
}

/// Copies a small tensor to the host; `what` names it in the error.
/// Reorders the search's device state after a step of a `k`-row-per-sentence search: the
/// decoder states and attention history follow `rows` (the row each kept hypothesis came
/// from), and, when some sentences ended (`shrank`), the encoder output keeps one row per
/// sentence still decoding. Returns the new state and encoder output.
#[allow(clippy::too_many_arguments)]
fn reorder_rows<M: StepModel + ?Sized>(
    model: &M,
    next: &M::State,
    enc: M::Encoded,
    attention: &mut Option<alignment::AttentionHistory>,
    rows: &[i64],
    k: usize,
    shrank: bool,
    device: Device,
) -> (M::State, M::Encoded) {
    let idx = Tensor::from_slice(rows).to_device(device);
    let state = model.select_state(next, &idx);
    if let Some(h) = attention {
        h.select(&idx);
    }
    if !shrank {
        return (state, enc);
    }
    // The encoder rows (one per sentence) of the sentences still decoding.
    let sentence_rows: Vec<i64> = rows.chunks(k).map(|c| c[0] / k as i64).collect();
    let enc = model.select_encoded(&enc, &Tensor::from_slice(&sentence_rows).to_device(device));
    (state, enc)
}

fn host<T: tch::kind::Element + Copy>(t: &Tensor, what: &str) -> Result<Vec<T>> {
    Vec::<T>::try_from(t.reshape([-1])).map_err(|source| Error::ToHost {
        what: what.to_string(),
        source,
    })
}

/// One step of `model`, its attention weights appended to `history` when search collects
/// them: `(log_probs [rows, tgt_vocab], next state)`.
fn step_recording<M: StepModel + ?Sized>(
    model: &M,
    prev: &Tensor,
    state: &M::State,
    enc: &M::Encoded,
    history: &mut Option<alignment::AttentionHistory>,
) -> Result<(Tensor, M::State)> {
    let step = model.step(prev, state, enc);
    if let Some(h) = history {
        h.push(step.attention.as_ref())?;
    }
    Ok((step.log_probs, step.state))
}

/// Encodes a batch of sources; returns the encoder output and each sentence's output bound.
fn encode_sources<M: StepModel + ?Sized>(
    model: &M,
    sources: &[Vec<u32>],
    cfg: &DecodeConfig,
    device: Device,
) -> (M::Encoded, Vec<usize>) {
    let rows: Vec<Vec<i64>> = sources.iter().map(|s| source_ids(s)).collect();
    let lengths: Vec<i64> = rows.iter().map(|r| r.len() as i64).collect();
    let src = pad(&rows, device);
    let enc = model.encode(&src, &lengths);
    let bounds = sources
        .iter()
        .map(|s| cfg.max_output_len(s.len()))
        .collect();
    (enc, bounds)
}

/// Applies the length rules in place to `log_probs [rows, vocab]` at step `t` (0-based;
/// a token chosen now is token number `t + 1`): `</s>` is banned while `t + 1 <= min_len`
/// and is the only choice when `t + 1 == bound` of the row.
fn apply_length_rules(log_probs: &mut Tensor, t: usize, min_len: usize, row_bounds: &[usize]) {
    let eos = EOS_ID as i64;
    if t < min_len {
        let _ = log_probs.narrow(1, eos, 1).fill_(f64::NEG_INFINITY);
    }
    let forced: Vec<i64> = row_bounds
        .iter()
        .enumerate()
        .filter(|(_, &b)| t + 1 >= b)
        .map(|(i, _)| i as i64)
        .collect();
    if !forced.is_empty() {
        let idx = Tensor::from_slice(&forced).to_device(log_probs.device());
        let rows = log_probs.index_select(0, &idx);
        let only_eos = rows.full_like(f64::NEG_INFINITY);
        only_eos.narrow(1, eos, 1).copy_(&rows.narrow(1, eos, 1));
        let _ = log_probs.index_copy_(0, &idx, &only_eos);
    }
}
