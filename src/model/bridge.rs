//! The bridge from the encoder's context vector to the decoder's initial state
//! (Cho et al. 2014): `s_0 = tanh(W c + b)` with `c` the top encoder layer's final forward and
//! backward hidden states concatenated. Every decoder layer starts from the same `s_0`.
//!
//! **The LSTM cell state.** An LSTM encoder also ends with cell states `c_T`, the internal
//! memory behind `h_T = o ⊙ tanh(c_T)`. A GRU has no such memory: its hidden state is all its
//! state, and it plays the role of the LSTM's exposed `h`, not of `c`. So the bridge reads the
//! encoder's *hidden* states only and the cell states are dropped. With an LSTM decoder, its
//! cell states start at zero and its hidden states at `s_0`.
use tch::{nn, Tensor};

use super::linear::Linear;

/// `Linear(2 * enc_hidden -> dec_hidden) + tanh`, parameters `bridge.weight` / `bridge.bias`.
#[derive(Debug)]
pub struct Bridge {
    proj: Linear,
}

impl Bridge {
    pub fn new(p: &nn::Path, context_dim: i64, dec_hidden: i64) -> Self {
        Bridge {
            proj: Linear::new(p, context_dim, dec_hidden, true),
        }
    }

    /// `context [batch, 2*enc_hidden]` to the initial decoder state `[batch, dec_hidden]`.
    pub fn forward(&self, context: &Tensor) -> Tensor {
        self.proj.forward(context).tanh()
    }
}
