//! Decoding options, flattened into the command lines of rnmt-translate and rnmt-serve.
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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
    /// Sample translations from the model (ancestral sampling, e.g. for back-translation)
    /// instead of searching for the most probable one; `--n-best N` gives N samples.
    #[arg(long)]
    pub sample: bool,
    /// With --sample: draw from the K most probable tokens only (0: the whole vocabulary).
    #[arg(long, default_value_t = DecodeConfig::DEFAULT.topk)]
    pub topk: usize,
    /// With --sample: divide the log-probabilities by T before sampling (below 1: closer to
    /// greedy, above 1: more varied).
    #[arg(long, default_value_t = DecodeConfig::DEFAULT.temperature)]
    pub temperature: f64,
    /// With --sample: the seed; a sentence's samples depend only on it, the sentence and
    /// its line number (not on the batch, the window or the workers).
    #[arg(long, default_value_t = DecodeConfig::DEFAULT.seed)]
    pub seed: u64,
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
        sample: false,
        topk: 0,
        temperature: 1.0,
        seed: 1,
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
        if self.sample {
            if self.n_best == 0 {
                return Err(Error::Config("n-best (samples) must be at least 1".into()));
            }
            if !self.temperature.is_finite() || self.temperature <= 0.0 {
                return Err(Error::Config(format!(
                    "temperature must be a finite number > 0, got {}",
                    self.temperature
                )));
            }
        } else if self.n_best == 0 || self.n_best > self.beam {
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
