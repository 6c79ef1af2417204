//! Validation during training: loss and perplexity under teacher forcing, and BLEU of greedy
//! translations against the references.
//!
//! Validation checks the stop flag between batches (so Ctrl-C and SIGTERM work during a long
//! validation) and fails with [`Error::NonFinite`] on a NaN or infinite loss or score, so a
//! diverged model never decodes for ever.
use std::sync::atomic::{AtomicBool, Ordering};

use tch::Device;

use crate::batch::{eval_batches, Batch, Example};
use crate::config::{Config, DecodeConfig};
use crate::data::Prepared;
use crate::error::{Error, Result};
use crate::metrics::bleu::{Bleu, BleuConfig};
use crate::model::Seq2Seq;
use crate::search;

/// One validation.
#[derive(Debug, Clone, Copy)]
pub struct Validation {
    /// Per-token negative log-likelihood.
    pub loss: f64,
    pub ppl: f64,
    pub bleu: f64,
}

/// Validation loss, perplexity and greedy BLEU of `model` on `data.valid` after update
/// `step`. [`Error::Interrupted`] when `stop` is set meanwhile.
pub fn validate(
    model: &Seq2Seq,
    data: &Prepared,
    config: &Config,
    device: Device,
    step: u64,
    stop: &AtomicBool,
) -> Result<Validation> {
    let t = &config.train;
    let (mut nll, mut tokens) = (0.0, 0i64);
    tch::no_grad(|| -> Result<()> {
        for idx in eval_batches(&data.valid, t.batch_tokens) {
            if stop.load(Ordering::SeqCst) {
                return Err(Error::Interrupted);
            }
            let ex: Vec<&Example> = idx.iter().map(|&i| &data.valid[i]).collect();
            let out = model.loss(&Batch::new(&ex, device), false, 1.0, 0.0);
            nll += out.nll.double_value(&[]);
            tokens += out.tokens;
        }
        Ok(())
    })?;
    let loss = nll / tokens.max(1) as f64;
    if !loss.is_finite() {
        return Err(Error::NonFinite {
            step,
            what: "validation loss".into(),
            value: loss,
        });
    }
    let n = t
        .valid_bleu_sentences
        .unwrap_or(data.valid.len())
        .min(data.valid.len());
    let decode = DecodeConfig {
        beam: 1,
        ..DecodeConfig::default()
    };
    let hyps = translate_examples(
        model,
        &data.valid[..n],
        &decode,
        data.tokenizers.tgt(),
        device,
        stop,
    )
    .map_err(|e| match e {
        Error::NonFiniteScores { .. } => Error::NonFinite {
            step,
            what: "validation decoding score".into(),
            value: f64::NAN,
        },
        other => other,
    })?;
    let refs = &data.valid_refs[..n];
    let bleu = Bleu::new(BleuConfig::default())?
        .corpus_score(&hyps, &[refs.to_vec()])?
        .score;
    Ok(Validation {
        loss,
        ppl: loss.exp(),
        bleu,
    })
}

/// Decodes the sources of `examples` to text, in order, in length-sorted batches;
/// [`Error::Interrupted`] when `stop` is set meanwhile.
pub fn translate_examples(
    model: &Seq2Seq,
    examples: &[Example],
    decode: &DecodeConfig,
    tgt: &crate::tokenizer::SubwordTokenizer,
    device: Device,
    stop: &AtomicBool,
) -> Result<Vec<String>> {
    decode_examples(model, examples, decode, device, stop)?
        .iter()
        .map(|h| match h.first() {
            Some(h) => Ok(tgt.decode(&h.tokens)?),
            None => Ok(String::new()),
        })
        .collect()
}

/// The hypotheses (up to `decode.n_best`) of the sources of `examples`, in order, decoded in
/// length-sorted batches of 64; [`Error::Interrupted`] when `stop` is set meanwhile.
pub fn decode_examples(
    model: &Seq2Seq,
    examples: &[Example],
    decode: &DecodeConfig,
    device: Device,
    stop: &AtomicBool,
) -> Result<Vec<Vec<search::Hypothesis>>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].src.len());
    let mut out = vec![Vec::new(); examples.len()];
    for chunk in order.chunks(64) {
        if stop.load(Ordering::SeqCst) {
            return Err(Error::Interrupted);
        }
        let sources: Vec<Vec<u32>> = chunk.iter().map(|&i| examples[i].src.clone()).collect();
        let hyps = search::decode(model, &sources, decode, device)?;
        for (&i, h) in chunk.iter().zip(hyps) {
            out[i] = h;
        }
    }
    Ok(out)
}
