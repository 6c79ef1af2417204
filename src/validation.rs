//! Validation during training: loss and perplexity under teacher forcing, and BLEU of greedy
//! translations against the references.
use tch::Device;

use crate::batch::{eval_batches, Batch, Example};
use crate::config::{Config, DecodeConfig};
use crate::data::Prepared;
use crate::error::Result;
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

/// Validation loss, perplexity and greedy BLEU of `model` on `data.valid`.
pub fn validate(
    model: &Seq2Seq,
    data: &Prepared,
    config: &Config,
    device: Device,
) -> Result<Validation> {
    let t = &config.train;
    let (mut nll, mut tokens) = (0.0, 0i64);
    tch::no_grad(|| {
        for idx in eval_batches(&data.valid, t.batch_tokens) {
            let ex: Vec<&Example> = idx.iter().map(|&i| &data.valid[i]).collect();
            let out = model.loss(&Batch::new(&ex, device), false, 1.0, 0.0);
            nll += out.nll.double_value(&[]);
            tokens += out.tokens;
        }
    });
    let loss = nll / tokens.max(1) as f64;
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
    )?;
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

/// Decodes the sources of `examples` to text, in order, in length-sorted batches.
pub fn translate_examples(
    model: &Seq2Seq,
    examples: &[Example],
    decode: &DecodeConfig,
    tgt: &crate::tokenizer::SubwordTokenizer,
    device: Device,
) -> Result<Vec<String>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| examples[i].src.len());
    let mut out = vec![String::new(); examples.len()];
    for chunk in order.chunks(64) {
        let sources: Vec<Vec<u32>> = chunk.iter().map(|&i| examples[i].src.clone()).collect();
        let hyps = search::translate(model, &sources, decode, device);
        for (&i, h) in chunk.iter().zip(hyps) {
            out[i] = match h.first() {
                Some(h) => tgt.decode(&h.tokens)?,
                None => String::new(),
            };
        }
    }
    Ok(out)
}
