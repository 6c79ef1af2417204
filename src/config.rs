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

impl ModelConfig {
    /// Checks the sizes fit together; the message names the offending key.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.src_vocab < 5 || self.tgt_vocab < 5 {
            return bad(format!(
                "vocabulary sizes must be at least 5 (got src {}, tgt {})",
                self.src_vocab, self.tgt_vocab
            ));
        }
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
}

/// Data pipeline: normalization, tokenizer training and corpus filters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    pub normalization: Normalization,
    pub tokenizer: TokenizerConfig,
    pub filter: FilterConfig,
}

/// Training hyper-parameters and budgets.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Target tokens per batch (padding included), with length bucketing.
    pub batch_tokens: usize,
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
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_tokens: 2000,
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
        if self.lr.is_nan() || self.lr <= 0.0 {
            return bad("train.lr must be positive");
        }
        if !(0.0..=1.0).contains(&self.teacher_forcing) {
            return bad("train.teacher_forcing must be in [0, 1]");
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

/// Decoding options.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DecodeConfig {
    /// Beam size; 1 is greedy search.
    pub beam: usize,
    /// GNMT length penalty exponent: scores are divided by `((5 + len) / 6)^alpha`.
    pub alpha: f64,
    /// Output length bound: `max_len_ratio * source_len + max_len_offset` tokens...
    pub max_len_ratio: f64,
    pub max_len_offset: usize,
    /// ...and never more than this.
    pub max_len: usize,
    /// `</s>` is not allowed before this many tokens.
    pub min_len: usize,
    /// Hypotheses returned per sentence.
    pub n_best: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            beam: 5,
            alpha: 1.0,
            max_len_ratio: 2.0,
            max_len_offset: 10,
            max_len: 256,
            min_len: 0,
            n_best: 1,
        }
    }
}

impl DecodeConfig {
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
    /// Reads a TOML (`.toml`) or JSON (anything else) config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let parsed = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| e.message().to_string())
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|m| Error::Config(format!("{}: {m}", path.display())))
    }

    /// Applies `key.path=value` overrides; `value` is parsed as JSON when it can be (numbers,
    /// booleans, `null`) and taken as a string otherwise.
    pub fn with_overrides(self, overrides: &[String]) -> Result<Self> {
        if overrides.is_empty() {
            return Ok(self);
        }
        let mut value = serde_json::to_value(&self).map_err(|e| Error::Config(e.to_string()))?;
        for o in overrides {
            let (key, raw) = o
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("override '{o}' is not key=value")))?;
            let mut slot = &mut value;
            for part in key.split('.') {
                slot = slot
                    .as_object_mut()
                    .and_then(|m| m.get_mut(part))
                    .ok_or_else(|| Error::Config(format!("unknown config key '{key}'")))?;
            }
            *slot = serde_json::from_str(raw)
                .unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
        }
        serde_json::from_value(value).map_err(|e| Error::Config(format!("override: {e}")))
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
        Self::from_file(&path)
    }

    /// Writes `config.json` atomically.
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Config(e.to_string()))?;
        crate::checkpoint::write_atomic(&dir.join(crate::checkpoint::CONFIG_FILE), text.as_bytes())
    }
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
    Ok(std::time::Duration::from_secs_f64(n * mult))
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
}
