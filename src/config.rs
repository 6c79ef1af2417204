//! Configuration: serde structs with defaults for the model, the data pipeline, training and
//! decoding.
//!
//! `rnmt-train --config FILE` reads TOML or JSON whose top-level keys are `model`, `data`,
//! `train` (any key may be left out; defaults fill the rest, unknown keys are errors), and
//! `--set section.key=value` overrides single keys. The resolved [`Config`] is written to the
//! model directory as `config.json`, from which `rnmt-translate` rebuilds everything.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::corpus::{FilterConfig, Normalization};
use crate::error::{Error, Result};
use crate::tokenizer::TokenizerConfig;

/// Recurrent cell type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CellType {
    /// Long short-term memory (Hochreiter & Schmidhuber 1997): input, forget, cell and output
    /// gates; a separate cell state carries information across time.
    Lstm,
    /// Gated recurrent unit (Cho et al. 2014): reset and update gates, no cell state.
    Gru,
}

impl CellType {
    /// Number of gate blocks stacked in the weight matrices (`4` for LSTM, `3` for GRU).
    pub fn gates(self) -> i64 {
        match self {
            CellType::Lstm => 4,
            CellType::Gru => 3,
        }
    }
}

/// Attention over the encoder states.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AttentionType {
    /// No attention: the fixed context vector (the encoder's final states) is fed at every
    /// step, as in Cho et al. (2014).
    None,
    /// Additive attention, `v^T tanh(W_k k + W_q q)` (Bahdanau et al. 2015).
    Bahdanau,
    /// Multiplicative "general" attention, `q^T W k` (Luong et al. 2015).
    Luong,
}

/// Encoder hyper-parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EncoderConfig {
    pub cell: CellType,
    /// Stacked layers, each bidirectional.
    pub layers: usize,
    /// Hidden size per direction; the encoder states are `2 * hidden` wide.
    pub hidden: usize,
    /// Dropout between stacked layers.
    pub dropout: f64,
}

impl Default for EncoderConfig {
    fn default() -> Self {
        Self {
            cell: CellType::Lstm,
            layers: 2,
            hidden: 128,
            dropout: 0.1,
        }
    }
}

/// Decoder hyper-parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DecoderConfig {
    pub cell: CellType,
    pub layers: usize,
    pub hidden: usize,
    /// Dropout on the RNN input, between layers and before the output layer.
    pub dropout: f64,
    pub attention: AttentionType,
    /// Feed the previous attentional vector into the next step's input (Luong et al. 2015).
    /// Without it the recurrence reads only the target embeddings, so training runs the whole
    /// decoder RNN as one fused libtorch call per batch and the attention for all steps at
    /// once (about 2.5x faster on a CPU); search still steps it one token at a time.
    pub input_feeding: bool,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            cell: CellType::Gru,
            layers: 1,
            hidden: 256,
            dropout: 0.1,
            attention: AttentionType::Luong,
            input_feeding: false,
        }
    }
}

/// Model hyper-parameters. Vocabulary sizes are filled in from the tokenizers.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    pub src_vocab: usize,
    pub tgt_vocab: usize,
    pub emb_size: usize,
    /// Dropout on the source and target embeddings.
    pub emb_dropout: f64,
    /// Share the target embedding matrix with the output projection (Press & Wolf 2017);
    /// needs `emb_size == decoder.hidden`.
    pub tie_target_embeddings: bool,
    pub encoder: EncoderConfig,
    pub decoder: DecoderConfig,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            src_vocab: 0,
            tgt_vocab: 0,
            emb_size: 128,
            emb_dropout: 0.1,
            tie_target_embeddings: false,
            encoder: EncoderConfig::default(),
            decoder: DecoderConfig::default(),
        }
    }
}

/// Largest embedding or hidden size accepted (a typo such as `hidden=1000000` would otherwise
/// ask libtorch for terabytes).
pub const MAX_WIDTH: usize = 16_384;
/// Most stacked layers accepted in the encoder or the decoder.
pub const MAX_LAYERS: usize = 64;
/// Largest vocabulary accepted.
pub const MAX_VOCAB: usize = 1 << 20;

impl ModelConfig {
    /// The number of parameters a model of this config has (the same count as the var store
    /// after [`crate::model::Seq2Seq::new`]), computed without allocating anything.
    pub fn parameter_count(&self) -> u64 {
        let (e, sv, tv) = (
            self.emb_size as u64,
            self.src_vocab as u64,
            self.tgt_vocab as u64,
        );
        let enc = &self.encoder;
        let (eh, eg) = (enc.hidden as u64, enc.cell.gates() as u64);
        let mut n = sv * e + tv * e;
        for l in 0..enc.layers as u64 {
            let input = if l == 0 { e } else { 2 * eh };
            n += 2 * eg * eh * (input + eh + 2);
        }
        let ctx = 2 * eh;
        let dec = &self.decoder;
        let (dh, dg) = (dec.hidden as u64, dec.cell.gates() as u64);
        n += ctx * dh + dh; // bridge
        n += match dec.attention {
            AttentionType::None => 0,
            AttentionType::Luong => ctx * dh,
            AttentionType::Bahdanau => ctx * dh + dh * dh + dh,
        };
        let feed = match (dec.input_feeding, dec.attention) {
            (true, _) => dh,
            (false, AttentionType::None) => ctx,
            (false, _) => 0,
        };
        for l in 0..dec.layers as u64 {
            let input = if l == 0 { e + feed } else { dh };
            n += dg * dh * (input + dh + 2);
        }
        n += (dh + ctx) * dh + dh; // attentional vector
        n += if self.tie_target_embeddings {
            0
        } else {
            dh * tv
        } + tv;
        n
    }

    /// Checks the sizes fit together; the message names the offending key.
    pub fn validate(&self) -> Result<()> {
        if self.src_vocab < 5 || self.tgt_vocab < 5 {
            return Err(Error::Config(format!(
                "vocabulary sizes must be at least 5 (got src {}, tgt {})",
                self.src_vocab, self.tgt_vocab
            )));
        }
        self.validate_sizes()
    }

    /// [`ModelConfig::validate`] without the vocabulary sizes (known only once the tokenizers
    /// exist), so that a bad config fails before any data is read.
    pub fn validate_sizes(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        for (k, v) in [
            ("model.emb_size", self.emb_size),
            ("model.encoder.layers", self.encoder.layers),
            ("model.encoder.hidden", self.encoder.hidden),
            ("model.decoder.layers", self.decoder.layers),
            ("model.decoder.hidden", self.decoder.hidden),
        ] {
            if v == 0 {
                return bad(format!("{k} must be positive"));
            }
            let most = if k.ends_with("layers") {
                MAX_LAYERS
            } else {
                MAX_WIDTH
            };
            if v > most {
                return bad(format!("{k} is {v}; at most {most} is supported"));
            }
        }
        for (k, v) in [
            ("model.src_vocab", self.src_vocab),
            ("model.tgt_vocab", self.tgt_vocab),
        ] {
            if v > MAX_VOCAB {
                return bad(format!("{k} is {v}; at most {MAX_VOCAB} is supported"));
            }
        }
        for (k, v) in [
            ("model.emb_dropout", self.emb_dropout),
            ("model.encoder.dropout", self.encoder.dropout),
            ("model.decoder.dropout", self.decoder.dropout),
        ] {
            if !(0.0..1.0).contains(&v) {
                return bad(format!("{k} must be in [0, 1), got {v}"));
            }
        }
        if self.tie_target_embeddings && self.emb_size != self.decoder.hidden {
            return bad(format!(
                "model.tie_target_embeddings needs model.emb_size ({}) == model.decoder.hidden ({})",
                self.emb_size, self.decoder.hidden
            ));
        }
        Ok(())
    }

    /// Checks that `bytes_per_parameter` bytes for each parameter fit in `available` bytes
    /// of memory: 16 to train (weights, gradients and Adam's two moments, before any
    /// activation), 4 to translate.
    pub fn check_fits(&self, available: u64, bytes_per_parameter: u64) -> Result<()> {
        let need = self.parameter_count().saturating_mul(bytes_per_parameter);
        if need > available {
            return Err(Error::Config(format!(
                "the model has {} parameters and needs at least {:.1} GB, more than the {:.1} GB of memory available; use smaller model sizes",
                self.parameter_count(),
                need as f64 / 1e9,
                available as f64 / 1e9
            )));
        }
        Ok(())
    }
}

/// Data pipeline: normalization, line limit, tokenizer training and corpus filters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub normalization: Normalization,
    /// A corpus line longer than this many bytes is a bad line (an error, or skipped and
    /// counted with `--skip-bad-lines`); no longer line is ever held in memory.
    pub max_line_bytes: usize,
    pub tokenizer: TokenizerConfig,
    pub filter: FilterConfig,
    /// The tokenizers are trained on a seeded sample of at most this many training pairs
    /// (all of them when the corpora are smaller), so the corpus never sits in memory as text.
    pub tokenizer_sample: usize,
    /// Seed of that sample.
    pub sample_seed: u64,
    /// Training pairs per shard of the prepared corpus.
    pub shard_pairs: usize,
    /// One weight per training corpus (`--train` in order; empty: all 1): corpus `i`
    /// contributes `round(weight_i x pairs_i)` examples to every epoch (2 = each pair twice,
    /// 0.5 = a seeded half, drawn anew every epoch).
    pub weights: Vec<f64>,
}

/// Default of [`DataConfig::tokenizer_sample`].
pub const DEFAULT_TOKENIZER_SAMPLE: usize = 200_000;

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            normalization: Normalization::default(),
            max_line_bytes: crate::corpus::DEFAULT_MAX_LINE_BYTES,
            tokenizer: TokenizerConfig::default(),
            filter: FilterConfig::default(),
            tokenizer_sample: DEFAULT_TOKENIZER_SAMPLE,
            sample_seed: 1,
            shard_pairs: 1 << 18,
            weights: Vec::new(),
        }
    }
}

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

/// Decoding options; `rnmt-translate` flattens them into its command line, so the defaults
/// live here only ([`DecodeConfig::DEFAULT`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeConfig {
    /// Beam size (1 = greedy search).
    #[arg(long, default_value_t = DecodeConfig::DEFAULT.beam)]
    pub beam: usize,
    /// Length penalty exponent (GNMT): scores are divided by ((5 + len) / 6)^alpha
    /// [default: the model's calibrated value (decode.json), else 1.0].
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Output length bound: max-len-ratio * source tokens + max-len-offset...
    #[arg(long, default_value_t = DecodeConfig::DEFAULT.max_len_ratio)]
    pub max_len_ratio: f64,
    #[arg(long, default_value_t = DecodeConfig::DEFAULT.max_len_offset)]
    pub max_len_offset: usize,
    /// ...and at most this many tokens.
    #[arg(long, default_value_t = DecodeConfig::DEFAULT.max_len)]
    pub max_len: usize,
    /// Do not end a translation before this many tokens.
    #[arg(long, default_value_t = DecodeConfig::DEFAULT.min_len)]
    pub min_len: usize,
    /// Hypotheses returned per sentence (`rnmt-translate --n-best K`).
    #[arg(skip = DecodeConfig::DEFAULT.n_best)]
    pub n_best: usize,
    /// Source lines longer than this many subword tokens are truncated (with a warning).
    #[arg(long, default_value_t = DecodeConfig::DEFAULT.max_input_tokens)]
    pub max_input_tokens: usize,
    /// Bytes read of one input line; the rest of a longer line is skipped (with a warning),
    /// so memory stays bounded whatever the input.
    #[arg(long, default_value_t = DecodeConfig::DEFAULT.max_line_bytes)]
    pub max_line_bytes: usize,
    /// Return every hypothesis's attention matrix (`rnmt-translate --attention`); an error
    /// for a model without attention.
    #[arg(skip = DecodeConfig::DEFAULT.attention)]
    #[serde(skip)]
    pub attention: bool,
    /// When a sentence's beam search ends [default: the model's calibrated rule
    /// (decode.json), else finished].
    #[arg(long = "beam-stop", value_enum)]
    pub stop: Option<BeamStop>,
}

/// When beam search is done with a sentence. Both also stop as soon as no live hypothesis
/// can still enter the n-best (an exact bound), and at the length bound.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BeamStop {
    /// When beam-size hypotheses have ended (fairseq's rule; rnmt's before 2026-12): ends
    /// that come early in the search fill the quota, which favours short outputs.
    Finished,
    /// When the n-best have ended and no live hypothesis, ended at the next step, would rank
    /// above them by length-normalized score; the beam-size best ended ones are kept.
    Patient,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl DecodeConfig {
    /// The defaults.
    pub const DEFAULT: DecodeConfig = DecodeConfig {
        beam: 5,
        alpha: None,
        max_len_ratio: 2.0,
        max_len_offset: 10,
        max_len: 256,
        min_len: 0,
        n_best: 1,
        max_input_tokens: 250,
        max_line_bytes: 1 << 16,
        attention: false,
        stop: None,
    };

    /// The length penalty exponent when neither the command nor the model states one.
    pub const DEFAULT_ALPHA: f64 = 1.0;
    /// The beam's stopping rule when neither the command nor the model states one.
    pub const DEFAULT_STOP: BeamStop = BeamStop::Finished;

    /// The length penalty exponent in force.
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(Self::DEFAULT_ALPHA)
    }

    /// The beam's stopping rule in force.
    pub fn stop(&self) -> BeamStop {
        self.stop.unwrap_or(Self::DEFAULT_STOP)
    }

    /// The output length bound for a source of `src_len` tokens.
    pub fn max_output_len(&self, src_len: usize) -> usize {
        let bound = (self.max_len_ratio * src_len as f64).ceil() as usize + self.max_len_offset;
        bound.min(self.max_len).max(1)
    }

    /// Checks ranges; the message names the option.
    pub fn validate(&self) -> Result<()> {
        if self.beam == 0 {
            return Err(Error::Config("beam must be at least 1".into()));
        }
        if self.n_best == 0 || self.n_best > self.beam {
            return Err(Error::Config(format!(
                "n-best must be between 1 and the beam size ({}), got {}",
                self.beam, self.n_best
            )));
        }
        if self.max_len == 0 {
            return Err(Error::Config("max-len must be positive".into()));
        }
        if self.max_input_tokens == 0 || self.max_line_bytes == 0 {
            return Err(Error::Config(
                "max-input-tokens and max-line-bytes must be positive".into(),
            ));
        }
        if !self.alpha().is_finite() || self.alpha() < 0.0 {
            return Err(Error::Config(format!(
                "alpha (the length penalty) must be a finite number >= 0, got {}",
                self.alpha()
            )));
        }
        if !self.max_len_ratio.is_finite() || self.max_len_ratio < 0.0 {
            return Err(Error::Config(format!(
                "max-len-ratio must be a finite number >= 0, got {}",
                self.max_len_ratio
            )));
        }
        if self.min_len > self.max_len {
            return Err(Error::Config(format!(
                "min-len {} is above max-len {}: no translation could end",
                self.min_len, self.max_len
            )));
        }
        Ok(())
    }
}

/// Everything `rnmt-train` resolves, saved as `config.json` in the model directory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
}

impl Config {
    /// Reads a TOML (`.toml`) or JSON (anything else) config file: a regular file of at most
    /// [`MAX_CONFIG_BYTES`], a leading byte order mark dropped; an error quotes at most a few
    /// hundred bytes of the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_config_text(path)?;
        let parsed = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| e.message().to_string())
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|m| Error::Config(format!("{}: {}", path.display(), cut_message(&m))))
    }

    /// Applies `key.path=value` overrides (see [`Stated::set_override`]).
    pub fn with_overrides(self, overrides: &[String]) -> Result<Self> {
        Stated::from_command(None, overrides)?.apply_to(&self)
    }

    /// Reads `config.json` from a model directory.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(crate::checkpoint::CONFIG_FILE);
        if !path.exists() {
            return Err(Error::ModelDir(format!(
                "{} has no {} (not an rnmt model directory?)",
                dir.display(),
                crate::checkpoint::CONFIG_FILE
            )));
        }
        let text = read_config_text(&path)?;
        // A config.json without its "model" section would build a model with no vocabulary.
        if let Ok(serde_json::Value::Object(top)) = serde_json::from_str(&text) {
            if !top.contains_key("model") {
                return Err(Error::ModelDir(format!(
                    "{} has no \"model\" section (it is not a config.json written by rnmt-train)",
                    path.display()
                )));
            }
        }
        Self::from_file(&path)
    }

    /// Writes `config.json` atomically.
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::json(crate::checkpoint::CONFIG_FILE, e))?;
        crate::checkpoint::write_atomic(&dir.join(crate::checkpoint::CONFIG_FILE), text.as_bytes())
    }
}

/// Largest config file read (`config.json`, `--config`): a resolved config is a few KB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The text of a config file: a regular file (a link to one is followed) of at most
/// [`MAX_CONFIG_BYTES`], valid UTF-8, without a leading byte order mark.
fn read_config_text(path: &Path) -> Result<String> {
    let bytes = crate::modelfile::read_bounded(path, MAX_CONFIG_BYTES, "a config file")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Config(format!("{}: not valid UTF-8", path.display())))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// A parser's message cut to its first 160 and last 80 bytes (a huge string value is echoed
/// by serde whole; the end holds the line and column).
pub fn cut_message(m: &str) -> String {
    const HEAD: usize = 160;
    const TAIL: usize = 80;
    if m.len() <= HEAD + TAIL + 40 {
        return m.replace('\n', " ");
    }
    let mut h = HEAD;
    while !m.is_char_boundary(h) {
        h -= 1;
    }
    let mut t = m.len() - TAIL;
    while !m.is_char_boundary(t) {
        t += 1;
    }
    format!("{} [... {} bytes cut ...] {}", &m[..h], t - h, &m[t..]).replace('\n', " ")
}

/// The keys a command states: the leaves of a `--config` file, `--set` overrides and flags,
/// as a JSON object tree (`{"train": {"lr": 0.001}}`). Unknown keys are errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stated(serde_json::Value);

impl Stated {
    /// Nothing stated.
    pub fn new() -> Self {
        Stated(serde_json::Value::Object(Default::default()))
    }

    /// The keys of a TOML (`.toml`) or JSON config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Config::from_file(path)?; // unknown keys and bad values, with the file's name
        let text = read_config_text(path)?;
        let value: serde_json::Value = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {}", path.display(), e.message())))?
        } else {
            serde_json::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
        };
        Ok(Stated(value))
    }

    /// What a command states: its `--config` file, if any, with its `--set key=value`
    /// overrides on top (each key at most once).
    pub fn from_command(config: Option<&Path>, overrides: &[String]) -> Result<Self> {
        check_unique_overrides(overrides)?;
        let mut stated = match config {
            Some(p) => Stated::from_file(p)?,
            None => Stated::new(),
        };
        for o in overrides {
            stated.set_override(o)?;
        }
        Ok(stated)
    }

    /// States `key.path=value`; `value` is parsed as JSON when it can be (numbers, booleans,
    /// `null`) and taken as a string otherwise.
    pub fn set_override(&mut self, o: &str) -> Result<()> {
        let (key, raw) = o
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("override '{o}' is not key=value")))?;
        let value = serde_json::from_str(raw)
            .unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
        self.set(key, value)
    }

    /// States `key` (a dotted path that must exist in [`Config`]) with `value`.
    pub fn set(&mut self, key: &str, value: serde_json::Value) -> Result<()> {
        let known = serde_json::to_value(Config::default())
            .map_err(|e| Error::json("the default config", e))?;
        let mut probe = &known;
        for part in key.split('.') {
            probe = probe
                .get(part)
                .ok_or_else(|| Error::Config(format!("unknown config key '{key}'")))?;
        }
        let mut slot = &mut self.0;
        for part in key.split('.') {
            if !slot.is_object() {
                *slot = serde_json::Value::Object(Default::default());
            }
            slot = slot
                .as_object_mut()
                .expect("an object")
                .entry(part.to_string())
                .or_insert(serde_json::Value::Null);
        }
        *slot = value;
        Ok(())
    }

    /// `base` with the stated keys laid over it.
    pub fn apply_to(&self, base: &Config) -> Result<Config> {
        let mut value = serde_json::to_value(base).map_err(|e| Error::json("the config", e))?;
        merge(&mut value, &self.0);
        serde_json::from_value(value).map_err(|e| Error::Config(format!("override: {e}")))
    }
}

/// `--set` overrides must name each key once: a repeated key is an error naming it (which of
/// two values was meant cannot be known).
pub fn check_unique_overrides(overrides: &[String]) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for o in overrides {
        let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k).trim();
        if let Some(first) = seen.insert(key.to_string(), o.clone()) {
            return Err(Error::Config(format!(
                "--set {key} is given twice ('{first}' and '{o}'); give each key once"
            )));
        }
    }
    Ok(())
}

/// Lays `over` onto `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The leaves of a JSON tree as `(dotted.key, value)`.
fn leaves(v: &serde_json::Value, prefix: &str, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &key, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// One setting a resumed run changes, applied from the resumed update on.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.key, self.from, self.to)
    }
}

/// Settings that may change when a run resumes: they act from the next update on and do not
/// change what was computed so far. Everything else in `model`, `data` and `train` fixes the
/// model's shape, its tokenizers or the order of the data (`train.seed`,
/// `train.batch_tokens`), and a resumed run cannot honour a new value.
pub const CHANGEABLE_ON_RESUME: &[&str] = &[
    // Only together with the number of processes, so that every update still sees the same
    // batches (checked by the trainer against the saved state).
    "train.accumulate",
    "train.lr",
    "train.warmup_steps",
    "train.adam_beta1",
    "train.adam_beta2",
    "train.adam_eps",
    "train.weight_decay",
    "train.clip_norm",
    "train.label_smoothing",
    "train.unigram_output_bias",
    "train.teacher_forcing",
    "train.valid_every",
    "train.lr_decay",
    "train.lr_patience",
    "train.min_lr",
    "train.patience",
    "train.valid_bleu_sentences",
    "train.log_every",
    "train.keep_checkpoints",
    "train.average_last",
    "train.fused_loss",
    "train.fused_adam",
    "train.decay",
    "train.decay_steps",
    "train.decay_fraction",
    "train.calibrate",
    "train.calibrate_sentences",
];

/// Budgets belong to each command: a resumed run takes this command's (or the defaults).
pub const BUDGETS: &[&str] = &["train.max_steps", "train.max_epochs", "train.max_time"];

/// The resume policy: the config of a run that resumes from `saved` when this command states
/// `stated`. Budgets come from the command (`budgets`, already resolved with defaults); a
/// changed key of [`CHANGEABLE_ON_RESUME`] is applied and returned as a [`Change`] (to log and
/// record); any other changed key is an error naming it. Vocabulary sizes stay as saved (they
/// come from the tokenizers).
pub fn resume_config(
    saved: &Config,
    stated: &Stated,
    budgets: &TrainConfig,
) -> Result<(Config, Vec<Change>)> {
    let mut wanted = stated.apply_to(saved)?;
    wanted.model.src_vocab = saved.model.src_vocab;
    wanted.model.tgt_vocab = saved.model.tgt_vocab;
    wanted.train.max_steps = budgets.max_steps;
    wanted.train.max_epochs = budgets.max_epochs;
    wanted.train.max_time = budgets.max_time.clone();
    let (mut before, mut after) = (Vec::new(), Vec::new());
    leaves(
        &serde_json::to_value(saved).map_err(|e| Error::json("the saved config", e))?,
        "",
        &mut before,
    );
    leaves(
        &serde_json::to_value(&wanted).map_err(|e| Error::json("the config", e))?,
        "",
        &mut after,
    );
    let mut changes = Vec::new();
    for ((key, from), (_, to)) in before.into_iter().zip(after) {
        if from == to || BUDGETS.contains(&key.as_str()) {
            continue;
        }
        if !CHANGEABLE_ON_RESUME.contains(&key.as_str()) {
            return Err(Error::Config(format!(
                "{key} cannot change when resuming (saved {from}, now {to}): it fixes the model, its tokenizers or the data order; resume with {from} or train in a new --model-dir"
            )));
        }
        changes.push(Change { key, from, to });
    }
    Ok((wanted, changes))
}

/// Parses `90`, `90s`, `10m`, `1.5h` into seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let mult = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(Error::Config(format!(
                "bad duration '{s}': use e.g. 90s, 10m, 2h"
            )))
        }
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("bad duration '{s}': use e.g. 90s, 10m, 2h")))?;
    if !n.is_finite() || n < 0.0 {
        return Err(Error::Config(format!("bad duration '{s}'")));
    }
    std::time::Duration::try_from_secs_f64(n * mult)
        .map_err(|_| Error::Config(format!("bad duration '{s}': at most {} seconds", u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_json_and_toml() {
        let mut c = Config::default();
        c.model.src_vocab = 100;
        c.model.decoder.attention = AttentionType::Luong;
        c.train.max_time = Some("10m".into());
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&j).unwrap(), c);
        let t = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<Config>(&t).unwrap(), c);
    }

    #[test]
    fn partial_file_and_overrides() {
        let c: Config = toml::from_str("[model.encoder]\nlayers = 3\n").unwrap();
        assert_eq!(c.model.encoder.layers, 3);
        assert_eq!(c.model.encoder.hidden, EncoderConfig::default().hidden);
        let c = c
            .with_overrides(&[
                "model.decoder.attention=none".into(),
                "train.lr=0.01".into(),
                "train.max_steps=7".into(),
            ])
            .unwrap();
        assert_eq!(c.model.decoder.attention, AttentionType::None);
        assert_eq!(c.train.lr, 0.01);
        assert_eq!(c.train.max_steps, Some(7));
        let err = Config::default()
            .with_overrides(&["train.nope=1".into()])
            .unwrap_err();
        assert!(err.to_string().contains("train.nope"), "{err}");
        assert!(toml::from_str::<Config>("[train]\nbogus = 1\n").is_err());
        // Nested sections too (a misspelt filter key used to train without a word).
        assert!(toml::from_str::<Config>("[data.filter]\nmax_lenn = 50\n").is_err());
        assert!(toml::from_str::<Config>("[data.tokenizer]\nvocab = 50\n").is_err());
    }

    #[test]
    fn durations_and_bounds() {
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("1.5h").unwrap().as_secs(), 5400);
        assert!(parse_duration("ten").is_err());
        let d = DecodeConfig::default();
        assert_eq!(d.max_output_len(10), 30);
        assert_eq!(d.max_output_len(1000), 256);
    }

    /// Every preset in `presets/` parses (unknown keys are errors) and passes validation.
    #[test]
    fn presets_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let mut c = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
                c.model.src_vocab = c.data.tokenizer.vocab_size;
                c.model.tgt_vocab = c.data.tokenizer.vocab_size;
                c.model.validate().unwrap();
                c.train.validate().unwrap();
                n += 1;
            }
        }
        assert!(
            n >= 2,
            "expected the joeynmt and gpu presets in {}",
            dir.display()
        );
        let joey = Config::from_file(&dir.join("joeynmt.toml")).unwrap();
        assert_eq!(joey.model.decoder.attention, AttentionType::Bahdanau);
        assert!(joey.model.decoder.input_feeding);
        assert_eq!(
            (
                joey.model.encoder.hidden,
                joey.model.decoder.hidden,
                joey.model.decoder.layers
            ),
            (256, 512, 2)
        );
    }

    fn stated(sets: &[&str]) -> Stated {
        let mut s = Stated::new();
        for o in sets {
            s.set_override(o).unwrap();
        }
        s
    }

    /// The resume policy: safe keys are applied and reported, others refused by name,
    /// budgets always come from the command, unstated keys stay as saved.
    #[test]
    fn resume_policy() {
        let mut saved = Config::default();
        saved.model.src_vocab = 400;
        saved.model.tgt_vocab = 400;
        saved.model.encoder.hidden = 64; // e.g. from a preset: not restated, not a change
        saved.train.max_steps = Some(10);
        let budgets = TrainConfig {
            max_steps: Some(20),
            ..TrainConfig::default()
        };
        let (c, changes) = resume_config(&saved, &Stated::new(), &budgets).unwrap();
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(c.model, saved.model);
        assert_eq!(c.train.max_steps, Some(20), "budgets are the command's");

        let (c, changes) = resume_config(
            &saved,
            &stated(&["train.lr=0.001", "train.patience=3"]),
            &budgets,
        )
        .unwrap();
        assert_eq!(c.train.lr, 0.001);
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["train.lr", "train.patience"]);
        assert_eq!(changes[0].to_string(), "train.lr 0.003 -> 0.001");

        for (set, key) in [
            ("train.batch_tokens=4000", "train.batch_tokens"),
            ("train.seed=1", "train.seed"),
            ("model.encoder.hidden=32", "model.encoder.hidden"),
            ("data.tokenizer.vocab_size=500", "data.tokenizer.vocab_size"),
            ("data.filter.max_len=10", "data.filter.max_len"),
        ] {
            let err = resume_config(&saved, &stated(&[set]), &budgets).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("{key} cannot change when resuming")),
                "{err}"
            );
        }
        // Restating the saved value is no change.
        let (_, changes) =
            resume_config(&saved, &stated(&["model.encoder.hidden=64"]), &budgets).unwrap();
        assert!(changes.is_empty());
        // Vocabulary sizes come from the tokenizers, never from the command.
        let (c, _) = resume_config(&saved, &stated(&["model.src_vocab=9"]), &budgets).unwrap();
        assert_eq!(c.model.src_vocab, 400);
    }

    #[test]
    fn stated_keys_must_exist() {
        let mut s = Stated::new();
        let err = s.set_override("train.nope=1").unwrap_err();
        assert!(
            err.to_string().contains("unknown config key 'train.nope'"),
            "{err}"
        );
        assert!(s.set_override("no-equals-sign").is_err());
        s.set_override("model.decoder.attention=none").unwrap();
        let c = s.apply_to(&Config::default()).unwrap();
        assert_eq!(c.model.decoder.attention, AttentionType::None);
        assert_eq!(c.model.decoder.hidden, DecoderConfig::default().hidden);
    }

    #[test]
    fn outsized_models_are_rejected_by_key() {
        let mut m = ModelConfig {
            src_vocab: 100,
            tgt_vocab: 100,
            ..ModelConfig::default()
        };
        m.encoder.hidden = 1_000_000;
        let err = m.validate().unwrap_err().to_string();
        assert!(err.contains("model.encoder.hidden is 1000000"), "{err}");
        m.encoder.hidden = 128;
        m.validate().unwrap();
        assert!(m.check_fits(1 << 40, 16).is_ok());
        let err = m.check_fits(1000, 16).unwrap_err().to_string();
        assert!(err.contains("parameters"), "{err}");
    }
}
