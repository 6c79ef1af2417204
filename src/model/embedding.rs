//! Token embeddings.
use tch::{nn, Kind, Tensor};

use super::init;
use crate::tokenizer::PAD_ID;

/// An embedding table `[vocab, dim]`, parameter `<path>.weight`.
#[derive(Debug)]
pub struct Embedding {
    pub weight: Tensor,
}

impl Embedding {
    /// A table drawn from `N(0, 1)` (PyTorch's `nn.Embedding` default); the `<pad>` row
    /// starts at zero. Unit-variance inputs give the first RNN layer's Xavier-initialized
    /// input weights pre-activations of order one, so the gates see the tokens from the first
    /// update; a Xavier-uniform table (`U(±sqrt(6 / (vocab + dim)))`, about 0.02 for an 8k
    /// vocabulary) starves them and prolongs the first plateau.
    pub fn new(p: &nn::Path, vocab: i64, dim: i64) -> Self {
        Self::with_init(p, Tensor::randn([vocab, dim], (Kind::Float, p.device())))
    }

    /// A Xavier-uniform table, for a target embedding shared with the output layer (whose
    /// weights must start small, or the first logits would be far from uniform).
    pub fn new_xavier(p: &nn::Path, vocab: i64, dim: i64) -> Self {
        Self::with_init(p, init::xavier_uniform(vocab, dim, p.device()))
    }

    fn with_init(p: &nn::Path, w: Tensor) -> Self {
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
