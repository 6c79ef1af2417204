//! The encoder-decoder (Sutskever et al. 2014; Cho et al. 2014) with attention (Bahdanau et
//! al. 2015; Luong et al. 2015).
//!
//! Search talks to the model through three calls only: [`Seq2Seq::encode`],
//! [`Seq2Seq::initial_state`] and [`Seq2Seq::step`]. Training uses [`Seq2Seq::loss`], which
//! runs the same [`Decoder::step`] under teacher forcing.
use tch::{nn, Kind, Tensor};

use super::bridge::Bridge;
use super::decoder::{Decoder, DecoderState};
use super::embedding::Embedding;
use super::encoder::{length_mask, Encoder, EncoderOutput};
use crate::batch::Batch;
use crate::config::ModelConfig;
use crate::tokenizer::PAD_ID;

/// Sums over the target tokens of one batch.
#[derive(Debug)]
pub struct Loss {
    /// The training objective (label-smoothed cross-entropy), summed; a scalar to
    /// backpropagate.
    pub loss: Tensor,
    /// Negative log-likelihood of the gold tokens, summed (for perplexity).
    pub nll: Tensor,
    /// Number of target tokens (padding excluded).
    pub tokens: i64,
}

/// The whole translation model.
#[derive(Debug)]
pub struct Seq2Seq {
    pub config: ModelConfig,
    src_embed: Embedding,
    tgt_embed: Embedding,
    encoder: Encoder,
    bridge: Bridge,
    decoder: Decoder,
    emb_dropout: f64,
    /// The fused output layer and loss ([`super::output_loss`]) in [`Seq2Seq::loss`]; on by
    /// default, off with `train.fused_loss = false` (the plain autograd path).
    fused_loss: bool,
    /// `Some(BFloat16)`: the encoder and the output layer multiply in bfloat16
    /// ([`Seq2Seq::set_low_precision`]); `None`: float32 (the default).
    low_precision: Option<Kind>,
}

impl Seq2Seq {
    /// Builds a freshly initialized model in `p` (the var store root). Parameter names:
    /// `src_embed.weight`, `tgt_embed.weight`, `encoder.rnn.*`, `bridge.*`, `attention.*`,
    /// `decoder.rnn.*`, `decoder.att_vector.*`, `decoder.output.*`.
    pub fn new(p: &nn::Path, config: &ModelConfig) -> Self {
        let emb = config.emb_size as i64;
        let src_embed = Embedding::new(&(p / "src_embed"), config.src_vocab as i64, emb);
        let tgt_embed = if config.tie_target_embeddings {
            Embedding::new_xavier(&(p / "tgt_embed"), config.tgt_vocab as i64, emb)
        } else {
            Embedding::new(&(p / "tgt_embed"), config.tgt_vocab as i64, emb)
        };
        let encoder = Encoder::new(&(p / "encoder"), &config.encoder, emb);
        let context_dim = encoder.output_dim();
        let bridge = Bridge::new(&(p / "bridge"), context_dim, config.decoder.hidden as i64);
        let tied = config.tie_target_embeddings.then_some(&tgt_embed.weight);
        let decoder = Decoder::new(
            p,
            &config.decoder,
            emb,
            context_dim,
            config.tgt_vocab as i64,
            tied,
        );
        Seq2Seq {
            config: config.clone(),
            src_embed,
            tgt_embed,
            encoder,
            bridge,
            decoder,
            emb_dropout: config.emb_dropout,
            fused_loss: true,
            low_precision: None,
        }
    }

    /// Runs the encoder's RNN and the output layer's matrix products in `kind` (bfloat16):
    /// the CPU's `--precision bf16`, where oneDNN runs them on bfloat16 instructions (AMX
    /// tiles where present). The weights, gradients and everything else stay float32: the
    /// weights are cast at each use and their gradients flow back through the cast. Only
    /// these two parts, because on the profiled CPU they are the ones that gain; the decoder
    /// RNN and attention were slower in bfloat16 (README, Speed). `None` (the default):
    /// float32 throughout. On CUDA, `--precision bf16` uses autocast instead.
    pub fn set_low_precision(&mut self, kind: Option<Kind>) {
        self.low_precision = kind;
    }

    /// Chooses the fused output layer and loss (`true`, the default) or the plain autograd
    /// path for [`Seq2Seq::loss`]; both give the same loss and gradients up to rounding.
    pub fn set_fused_loss(&mut self, fused: bool) {
        self.fused_loss = fused;
    }

    /// Chooses rnmt's fused recurrent layer (`true`, the default unless `RNMT_FUSED_RNN=0`) or
    /// libtorch's kernels for the encoder and the teacher-forced decoder RNN, in float32 on the
    /// CPU ([`super::fused_rnn`]); both give the same results up to rounding.
    pub fn set_fused_rnn(&mut self, fused: bool) {
        self.encoder.fused = fused;
        self.decoder.fused = fused;
    }

    /// Sets the output layer's bias to `log_prior [tgt_vocab]` (log unigram probabilities of
    /// the training targets), so the untrained model already predicts the word frequencies
    /// instead of a uniform distribution over the vocabulary.
    pub fn set_output_prior(&self, log_prior: &Tensor) {
        self.decoder.set_output_bias(log_prior);
    }

    /// The decoder (for the profiler, `examples/profile.rs`, which times its parts).
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Target embeddings of `tgt [batch, tgt_len]` with embedding dropout when `train`:
    /// `[batch, tgt_len, emb]`.
    pub fn embed_target(&self, tgt: &Tensor, train: bool) -> Tensor {
        self.tgt_embed.forward(tgt).dropout(self.emb_dropout, train)
    }

    /// Whether the encoder's and the decoder's RNN weights are views of one cuDNN buffer each
    /// (see [`super::flat`]): `(encoder, decoder)`. Always `(false, false)` on the CPU; the
    /// decoder's is `false` with input feeding, which never makes a fused call.
    pub fn rnn_weights_are_flat(&self) -> (bool, bool) {
        (
            self.encoder.weights_are_flat(),
            self.decoder.weights_are_flat(),
        )
    }

    /// Encodes `src [batch, src_len]` (int64, `<pad>`-padded) with true `lengths`.
    pub fn encode(&self, src: &Tensor, lengths: &[i64], train: bool) -> EncoderOutput {
        let emb = self.src_embed.forward(src).dropout(self.emb_dropout, train);
        let (states, final_state) = self
            .encoder
            .forward(&emb, lengths, train, self.low_precision);
        let mask = length_mask(lengths, src.size()[1], src.device());
        let keys = self.decoder.attention_keys(&states);
        // The output weight in low precision only for inference: training's loss casts it
        // itself, with its gradient.
        let low = self.low_precision.filter(|_| !train);
        let step_cache = self.decoder.prepare(&final_state, low);
        EncoderOutput {
            states,
            mask,
            final_state,
            keys,
            step_cache,
        }
    }

    /// The decoder's initial state: the bridged context vector in every layer.
    pub fn initial_state(&self, enc: &EncoderOutput) -> DecoderState {
        self.decoder
            .initial_state(&self.bridge.forward(&enc.final_state))
    }

    /// Whether the decoder attends over the source, so that [`Seq2Seq::step`]'s next state
    /// carries the step's attention weights.
    pub fn has_attention(&self) -> bool {
        self.decoder.has_attention()
    }

    /// One inference step: `prev [batch]` (int64, the previous token, `<s>` first) to
    /// `(log_probs [batch, tgt_vocab], next state)`; with attention the next state's
    /// `attention [batch, src_len]` holds the step's weights. No dropout. `batch` may be a
    /// multiple `g` of `enc`'s batch: rows `i * g .. (i + 1) * g` belong to sentence `i` (a
    /// beam, see [`Decoder::step`]).
    pub fn step(
        &self,
        prev: &Tensor,
        state: &DecoderState,
        enc: &EncoderOutput,
    ) -> (Tensor, DecoderState) {
        let emb_proj = self.decoder.embed_proj(&self.tgt_embed.forward(prev));
        let next = self.decoder.step(&emb_proj, state, enc, false);
        let logits = self.decoder.step_logits(&next.att_vector, &enc.step_cache);
        (logits.log_softmax(-1, Kind::Float), next)
    }

    /// Runs the decoder over `tgt_in [batch, tgt_len]`, feeding the gold previous token with
    /// probability `teacher_forcing` per sentence and step, and the model's own greedy
    /// prediction otherwise. Returns the attentional vectors `[batch, tgt_len, hidden]`.
    fn run_decoder(
        &self,
        enc: &EncoderOutput,
        tgt_in: &Tensor,
        train: bool,
        teacher_forcing: f64,
    ) -> Tensor {
        let tgt_len = tgt_in.size()[1];
        let mut state = self.initial_state(enc);
        // Under full teacher forcing every input is known: embed all of them in one go.
        let gold_emb = (teacher_forcing >= 1.0).then(|| {
            self.tgt_embed
                .forward(tgt_in)
                .dropout(self.emb_dropout, train)
        });
        if let (Some(emb), true) = (&gold_emb, self.decoder.can_fuse()) {
            // No input feeding: the recurrence reads only the gold inputs, so the whole
            // sequence runs through libtorch's fused RNN and batched attention.
            return self.decoder.forward_fused(emb, &state, enc, train);
        }
        let mut outputs = Vec::with_capacity(tgt_len as usize);
        if let Some(emb) = gold_emb {
            let proj = self.decoder.embed_proj(&emb); // [B, T, G*H]
                                                      // unbind, not select per step: its backward stacks the step gradients once
                                                      // instead of writing each into a zeroed [B, T, G*H] tensor.
            for proj_t in proj.unbind(1) {
                state = self.decoder.step(&proj_t, &state, enc, train);
                outputs.push(state.att_vector.shallow_clone());
            }
        } else {
            let mut prev = tgt_in.select(1, 0);
            for t in 0..tgt_len {
                let emb = self
                    .tgt_embed
                    .forward(&prev)
                    .dropout(self.emb_dropout, train);
                state = self
                    .decoder
                    .step(&self.decoder.embed_proj(&emb), &state, enc, train);
                outputs.push(state.att_vector.shallow_clone());
                if t + 1 < tgt_len {
                    let gold = tgt_in.select(1, t + 1);
                    let predicted = tch::no_grad(|| {
                        self.decoder
                            .logits(&state.att_vector, false)
                            .argmax(-1, false)
                    });
                    let use_gold = Tensor::rand([gold.size()[0]], (Kind::Float, gold.device()))
                        .lt(teacher_forcing);
                    prev = gold.where_self(&use_gold, &predicted);
                }
            }
        }
        Tensor::stack(&outputs, 1)
    }

    /// Token-level cross-entropy of a batch, padding ignored, with label smoothing `eps`
    /// (`(1 - eps) * nll + eps * mean_k(-log p_k)`, as PyTorch's `cross_entropy`).
    /// The output layer runs on the real target positions only.
    pub fn loss(&self, batch: &Batch, train: bool, teacher_forcing: f64, eps: f64) -> Loss {
        let enc = self.encode(&batch.src, &batch.src_lens, train);
        let att = self.run_decoder(&enc, &batch.tgt_in, train, teacher_forcing);
        let hidden = att.size()[2];
        let gold = batch.tgt_out.reshape([-1]);
        let keep = gold.ne(PAD_ID as i64).nonzero().squeeze_dim(1);
        let att = att.reshape([-1, hidden]).index_select(0, &keep);
        let gold = gold.index_select(0, &keep);
        let tokens = keep.size()[0];
        if self.fused_loss {
            let att = match self.low_precision {
                Some(k) => att.to_kind(k),
                None => att,
            };
            let out = self.decoder.output_loss(&att, &gold, eps, train);
            return Loss {
                loss: out.loss,
                nll: out.nll,
                tokens,
            };
        }
        let log_probs = self
            .decoder
            .logits(&att, train)
            .log_softmax(-1, Kind::Float);
        let nll = -log_probs
            .gather(1, &gold.unsqueeze(1), false)
            .sum(Kind::Float);
        let loss = if eps > 0.0 {
            let smooth = -log_probs.mean_dim(-1, false, Kind::Float).sum(Kind::Float);
            &nll * (1.0 - eps) + smooth * eps
        } else {
            nll.shallow_clone()
        };
        Loss { loss, nll, tokens }
    }

    /// Log-probability of each target sentence under the model (teacher forcing, no dropout),
    /// `[batch]`: the sum over `tgt_out`'s real tokens, `</s>` included.
    pub fn score(&self, batch: &Batch) -> Tensor {
        let enc = self.encode(&batch.src, &batch.src_lens, false);
        let att = self.run_decoder(&enc, &batch.tgt_in, false, 1.0);
        let log_probs = self
            .decoder
            .logits(&att, false)
            .log_softmax(-1, Kind::Float);
        let gold = log_probs
            .gather(2, &batch.tgt_out.unsqueeze(2), false)
            .squeeze_dim(2);
        let mask = batch.tgt_out.ne(PAD_ID as i64);
        (gold * mask).sum_dim_intlist(1, false, Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use tch::{nn::VarStore, Device};

    /// `--precision bf16` decoding on a CPU with bfloat16 instructions (encoder, recurrent
    /// and attentional products, output layer in bfloat16): each step's log-probabilities
    /// within bfloat16 rounding of the float32 model's, over several steps of a beam-shaped
    /// batch.
    #[test]
    fn bfloat16_decoding_steps_match_float32_within_rounding() {
        if !crate::precision::cpu_has_bf16() {
            eprintln!("skipped: this CPU has no bfloat16 instructions");
            return;
        }
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let cfg = ModelConfig {
            src_vocab: 300,
            tgt_vocab: 300,
            ..ModelConfig::default()
        };
        let mut model = Seq2Seq::new(&vs.root(), &cfg);
        let src = Tensor::randint(300, [4, 7], (Kind::Int64, Device::Cpu));
        let lengths = [7i64, 5, 7, 2];
        let expand = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
        let run = |model: &Seq2Seq| {
            tch::no_grad(|| {
                let enc = model.encode(&src, &lengths, false);
                let mut state = model.initial_state(&enc).index_select(&expand);
                let mut prev = Tensor::full([12], 2, (Kind::Int64, Device::Cpu));
                let mut out = Vec::new();
                for _ in 0..4 {
                    let (lp, next) = model.step(&prev, &state, &enc);
                    prev = lp.argmax(1, false);
                    out.push(lp);
                    state = next;
                }
                out
            })
        };
        let full = run(&model);
        model.set_low_precision(Some(Kind::BFloat16));
        let low = run(&model);
        let mut largest = 0.0f64;
        for (t, (a, b)) in full.iter().zip(&low).enumerate() {
            let diff = (a - b).abs().max().double_value(&[]);
            eprintln!("step {t}: largest difference {diff:.2e}");
            assert!(diff < 0.02, "step {t}: log-probabilities differ by {diff}");
            largest = largest.max(diff);
        }
        assert!(largest > 0.0, "the bfloat16 path ran");
    }
}
