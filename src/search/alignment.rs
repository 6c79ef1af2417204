//! The attention weights of the hypotheses in a search batch, kept on the device while
//! searching and copied to the host only for a hypothesis that ends.
use tch::Tensor;

use super::host;
use crate::error::{Error, Result};

/// Per batch row, the attention weights of every step so far: `[rows, steps, src_len]`.
#[derive(Debug, Default)]
pub(super) struct AttentionHistory(Option<Tensor>);

impl AttentionHistory {
    /// Appends one step's weights `att [rows, src_len]`; `None` (a model without attention)
    /// is [`Error::NoAttention`].
    pub(super) fn push(&mut self, att: Option<&Tensor>) -> Result<()> {
        let att = att.ok_or(Error::NoAttention)?.unsqueeze(1);
        self.0 = Some(match &self.0 {
            None => att,
            Some(h) => Tensor::cat(&[h, &att], 1),
        });
        Ok(())
    }

    /// Keeps (and repeats) rows `index [n]` (int64), as the decoder state.
    pub(super) fn select(&mut self, index: &Tensor) {
        self.0 = self.0.as_ref().map(|h| h.index_select(0, index));
    }

    /// Row `row`'s weights as a host matrix `[steps][src_len]`, cut to the sentence's
    /// `src_len` real source positions (its `</s>` included).
    pub(super) fn matrix(&self, row: usize, src_len: usize) -> Result<Vec<Vec<f32>>> {
        let h = self.0.as_ref().ok_or(Error::NoAttention)?;
        let m = h.get(row as i64).narrow(1, 0, src_len as i64);
        let flat: Vec<f32> = host(&m, "attention weights")?;
        Ok(flat.chunks(src_len.max(1)).map(<[f32]>::to_vec).collect())
    }
}
