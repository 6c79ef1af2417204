//! Attention: at every decoder step, a distribution over the source positions and the
//! weighted average of the encoder states under it (the *context*).
//!
//! * Bahdanau et al. (2015), additive: `e_i = v^T tanh(W_k k_i + W_q q)`.
//! * Luong et al. (2015), "general": `e_i = q^T W_k k_i`.
//!
//! Scores at padding positions are set to `-inf` before the softmax, so padding gets exactly
//! zero weight. The key projections `W_k k_i` depend only on the encoder states, so they are
//! computed once per batch ([`Attention::keys`]), not once per step.
//!
//! The query `q` is the decoder's top-layer state *after* the current step (the ordering of
//! Luong et al., also used by JoeyNMT for both scorers); the context then forms the attentional
//! vector `tanh(W_c [q; context])` that predicts the word and, with input feeding, is fed to the
//! next step.
use tch::{nn, Kind, Tensor};

use super::linear::Linear;
use crate::config::AttentionType;

/// The scorer. A decoder without attention has none (`Option<Attention>`); its context is
/// the encoder's fixed summary vector.
#[derive(Debug)]
pub enum Attention {
    /// Parameters `attention.key_proj.weight`, `attention.query_proj.weight`, `attention.v.weight`.
    Bahdanau {
        key_proj: Linear,
        query_proj: Linear,
        v: Linear,
    },
    /// Parameter `attention.key_proj.weight`.
    Luong { key_proj: Linear },
}

impl Attention {
    /// `key_dim` is the encoder state width, `query_dim` the decoder's hidden size; `None`
    /// for [`AttentionType::None`].
    pub fn new(p: &nn::Path, kind: AttentionType, key_dim: i64, query_dim: i64) -> Option<Self> {
        match kind {
            AttentionType::None => None,
            AttentionType::Bahdanau => Some(Attention::Bahdanau {
                key_proj: Linear::new(&(p / "key_proj"), key_dim, query_dim, false),
                query_proj: Linear::new(&(p / "query_proj"), query_dim, query_dim, false),
                v: Linear::new(&(p / "v"), query_dim, 1, false),
            }),
            AttentionType::Luong => Some(Attention::Luong {
                key_proj: Linear::new(&(p / "key_proj"), key_dim, query_dim, false),
            }),
        }
    }

    /// Projected keys `[batch, src_len, query_dim]` from `states [batch, src_len, key_dim]`.
    pub fn keys(&self, states: &Tensor) -> Tensor {
        match self {
            Attention::Bahdanau { key_proj, .. } | Attention::Luong { key_proj } => {
                key_proj.forward(states)
            }
        }
    }

    /// Attention for `T` queries at once (one decoder step when `T == 1`, or every step of a
    /// teacher-forced sequence when the decoder's recurrence does not depend on the context).
    ///
    /// * `query`: `[batch, T, query_dim]`
    /// * `keys`: `[batch, src_len, query_dim]` from [`Attention::keys`]
    /// * `values`: encoder states `[batch, src_len, key_dim]`
    /// * `mask`: `[batch, src_len]` bool, true at real tokens
    ///
    /// Returns `(context [batch, T, key_dim], weights [batch, T, src_len])`.
    pub fn forward(
        &self,
        query: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        mask: &Tensor,
    ) -> (Tensor, Tensor) {
        let (batch, src_len) = (values.size()[0], values.size()[1]);
        let q_size = query.size();
        assert!(
            q_size.len() == 3 && q_size[0] == batch && keys.size()[..2] == [batch, src_len],
            "attention: query {q_size:?}, keys {:?} and values {:?} disagree on [batch, src_len]",
            keys.size(),
            values.size()
        );
        let scores = match self {
            Attention::Bahdanau { query_proj, v, .. } => {
                let q = query_proj.forward(query).unsqueeze(2); // [B, T, 1, A]
                v.forward(&(keys.unsqueeze(1) + q).tanh()).squeeze_dim(3) // [B, T, S]
            }
            Attention::Luong { .. } => query.bmm(&keys.transpose(1, 2)), // [B, T, S]
        };
        let weights = scores
            .masked_fill(&mask.logical_not().unsqueeze(1), f64::NEG_INFINITY)
            .softmax(-1, Kind::Float);
        let context = weights.bmm(values);
        (context, weights)
    }
}
