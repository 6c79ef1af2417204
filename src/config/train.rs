//! The train section: optimizer, schedule, budgets, validation, checkpoints.
use serde::{Deserialize, Serialize};

use super::*;
use crate::error::{Error, Result};

/// The shape of the budgeted learning-rate decay (see [`crate::schedule`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum DecayShape {
    /// No budgeted decay: the peak rate until a plateau decay (rnmt before 2026-12).
    #[default]
    None,
    /// `1 - p` at progress `p` of the budget.
    Linear,
    /// `(1 + cos(pi p)) / 2`.
    Cosine,
}

impl DecayShape {
    /// The factor on the peak rate at progress `p` (clamped to `[0, 1]`).
    pub fn factor(self, p: f64) -> f64 {
        let p = p.clamp(0.0, 1.0);
        match self {
            DecayShape::None => 1.0,
            DecayShape::Linear => 1.0 - p,
            DecayShape::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
        }
    }
}

/// Training hyper-parameters and budgets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Target tokens per batch (padding included), with length bucketing.
    pub batch_tokens: usize,
    /// Batches per update on each process (gradient accumulation, as JoeyNMT's
    /// `batch_multiplier` or fairseq's `update_freq`): one update then sees `accumulate x
    /// world size` batches, and 1 process with `accumulate = N` takes exactly the updates of N
    /// data-parallel processes with 1.
    pub accumulate: usize,
    /// Adam learning rate (the peak, after warm-up).
    pub lr: f64,
    /// Updates over which the learning rate rises linearly to `lr`; 0 disables.
    pub warmup_steps: u64,
    pub adam_beta1: f64,
    pub adam_beta2: f64,
    pub adam_eps: f64,
    /// Decoupled weight decay (AdamW); 0 disables.
    pub weight_decay: f64,
    /// Clip gradients when their global L2 norm exceeds this; 0 disables.
    pub clip_norm: f64,
    pub label_smoothing: f64,
    /// Start the output layer's bias at the log unigram distribution of the training targets,
    /// so a fresh model predicts word frequencies from the first update. With a zero bias the
    /// model spends its first few hundred updates learning them (Adam moves a bias by about
    /// `lr` per update, and log-frequencies span ~10 nats): the plateau at the unigram stage.
    pub unigram_output_bias: bool,
    /// Probability of feeding the gold previous token (teacher forcing); below 1 the model's
    /// own greedy prediction is fed instead with probability `1 - ratio`, per step.
    pub teacher_forcing: f64,
    /// Validate every this many updates (and at the end of every epoch).
    pub valid_every: usize,
    /// Multiply the learning rate by this when validation BLEU has not improved for
    /// `lr_patience` validations.
    pub lr_decay: f64,
    pub lr_patience: usize,
    pub min_lr: f64,
    /// Stop after this many validations without a BLEU improvement; 0 disables.
    pub patience: usize,
    pub max_steps: Option<u64>,
    pub max_epochs: Option<u64>,
    /// Wall-clock budget such as `90s`, `10m`, `2h`.
    pub max_time: Option<String>,
    pub seed: u64,
    /// Validation sentences decoded for BLEU (all when `None`).
    pub valid_bleu_sentences: Option<usize>,
    /// Log a plain line every this many updates when stderr is not a terminal.
    pub log_every: usize,
    /// Keep the weights of the last this many validations as
    /// `checkpoints/step-NNNNNNNN.safetensors` (for `rnmt-average`); 0 keeps none.
    pub keep_checkpoints: usize,
    /// After the last update, validate the mean of the last this many kept checkpoints
    /// (`keep_checkpoints` must be at least as many) and make it the model when it scores a
    /// higher validation BLEU than the best validated weights (`crate::average`); 0 (the
    /// default) or 1: no averaging.
    pub average_last: usize,
    /// After the last update, choose the model's decoding defaults (`alpha` of beam search)
    /// by BLEU on the first `calibrate_sentences` validation sentences and write them to
    /// `decode.json` (`crate::calibrate`); rnmt-translate and rnmt-serve use them unless told
    /// otherwise.
    pub calibrate: bool,
    pub calibrate_sentences: usize,
    /// The budgeted learning-rate decay after warm-up (`crate::schedule`): `linear` (to zero
    /// at the end of the budget), `cosine`, or `none` (the peak rate until a plateau decay).
    pub decay: DecayShape,
    /// The budgeted decay's horizon in updates; unset: the time budget (`--max-time`), if any.
    pub decay_steps: Option<u64>,
    /// The decay takes this last fraction of the budget, in `(0, 1]`.
    pub decay_fraction: f64,
    /// Compute the output layer and the loss as one fused, chunked computation with a
    /// hand-written backward (`model::output_loss`); `false` runs the plain autograd path.
    /// Both give the same loss and gradients up to float rounding.
    pub fused_loss: bool,
    /// Take Adam's step with libtorch's fused multi-tensor AdamW kernel (`csrc/adam.cpp`);
    /// `false`: elementwise operations per parameter. The same update up to float rounding.
    pub fused_adam: bool,
    /// Run the encoder and the teacher-forced decoder RNN in float32 on the CPU through
    /// rnmt's fused recurrent layer (`csrc/fused_rnn.cpp`: one autograd node per layer, the two
    /// directions on two threads); `false`: libtorch's `lstm`/`gru`. The same results up to
    /// float rounding. No effect in bfloat16 or on CUDA (cuDNN). Off by default: on an AVX2
    /// AMD EPYC it trained 16% slower than libtorch's path (docs/performance.md, 2026-12-07).
    pub fused_rnn: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_tokens: 2000,
            accumulate: 1,
            lr: 3e-3,
            warmup_steps: 200,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_eps: 1e-8,
            weight_decay: 0.0,
            clip_norm: 1.0,
            label_smoothing: 0.1,
            unigram_output_bias: true,
            teacher_forcing: 1.0,
            valid_every: 500,
            lr_decay: 0.5,
            lr_patience: 2,
            min_lr: 1e-5,
            patience: 8,
            max_steps: None,
            max_epochs: Some(30),
            max_time: None,
            seed: 42,
            valid_bleu_sentences: None,
            log_every: 50,
            keep_checkpoints: 0,
            average_last: 0,
            fused_loss: true,
            fused_adam: true,
            fused_rnn: false,
            decay: DecayShape::Linear,
            decay_steps: None,
            decay_fraction: 0.3,
            calibrate: true,
            calibrate_sentences: 400,
        }
    }
}

impl TrainConfig {
    /// Checks ranges; the message names the key.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.batch_tokens == 0 {
            return bad("train.batch_tokens must be positive");
        }
        if self.accumulate == 0 {
            return bad("train.accumulate must be positive");
        }
        if self.lr.is_nan() || self.lr <= 0.0 {
            return bad("train.lr must be positive");
        }
        if !(0.0..=1.0).contains(&self.teacher_forcing) {
            return bad("train.teacher_forcing must be in [0, 1]");
        }
        if !(self.decay_fraction > 0.0 && self.decay_fraction <= 1.0) {
            return bad("train.decay_fraction must be in (0, 1]");
        }
        if self.decay_steps == Some(0) {
            return bad("train.decay_steps must be positive");
        }
        if self.average_last > 1 && self.keep_checkpoints < self.average_last {
            return Err(Error::Config(format!(
                "train.average_last = {} averages kept checkpoints: set train.keep_checkpoints to at least {} (it is {})",
                self.average_last, self.average_last, self.keep_checkpoints
            )));
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return bad("train.label_smoothing must be in [0, 1)");
        }
        if self.valid_every == 0 {
            return bad("train.valid_every must be positive");
        }
        if let Some(t) = &self.max_time {
            parse_duration(t)?;
        }
        Ok(())
    }
}
