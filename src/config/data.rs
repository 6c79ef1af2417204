//! The data section: normalization, line limit, tokenizer training, filters, shards.
use serde::{Deserialize, Serialize};

use crate::corpus::{FilterConfig, Normalization};
use crate::tokenizer::TokenizerConfig;

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
