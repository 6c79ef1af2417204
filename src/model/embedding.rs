//! Token embeddings.
use tch::{nn, Tensor};

use super::init;
use crate::tokenizer::PAD_ID;

/// An embedding table `[vocab, dim]`, parameter `<path>.weight`.
#[derive(Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    /// Xavier-uniform table; the `<pad>` row starts at zero.
    pub fn new(p: &nn::Path, vocab: i64, dim: i64) -> Self {
        let w = init::xavier_uniform(vocab, dim, p.device());
        let _ = w.get(PAD_ID as i64).zero_();
        Embedding {
            weight: p.var_copy("weight", &w),
        }
    }

    /// `ids [..]` (int64) to `[.., dim]`. The `<pad>` row receives no gradient.
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        Tensor::embedding(&self.weight, ids, PAD_ID as i64, false, false)
    }
}
