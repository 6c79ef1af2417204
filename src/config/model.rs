//! The model section: encoder, decoder, attention, sizes and their bounds.
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
