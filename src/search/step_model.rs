//! What search needs from a model: encode a batch once, start a decoder state, advance it by
//! one token. [`Seq2Seq`] is one such model, [`crate::ensemble::Ensemble`] (several models
//! whose log-probabilities are averaged) another; greedy and beam search are written against
//! this trait only, so they treat both alike.
use tch::Tensor;

use crate::model::{DecoderState, EncoderOutput, Seq2Seq};

/// The outcome of one step.
#[derive(Debug)]
pub struct Step<S> {
    /// Next-token log-probabilities `[batch, tgt_vocab]`.
    pub log_probs: Tensor,
    /// The state after the step.
    pub state: S,
    /// The step's attention weights `[batch, src_len]` (rows sum to 1 over the real source
    /// positions, 0 at padding); `None` for a model without attention.
    pub attention: Option<Tensor>,
}

/// A model search can decode with. Every tensor's first dimension is the batch row; the
/// `select_*` methods pick (and repeat) rows, for beam reordering and dropping finished
/// sentences.
pub trait StepModel {
    /// The encoded batch (states, masks, step caches).
    type Encoded;
    /// The decoder state between steps.
    type State;

    /// Encodes `src [batch, src_len]` (int64, `<pad>`-padded, `</s>`-terminated) with the
    /// true `lengths`, without dropout.
    fn encode(&self, src: &Tensor, lengths: &[i64]) -> Self::Encoded;
    /// The state before the first step.
    fn initial_state(&self, enc: &Self::Encoded) -> Self::State;
    /// One step from `prev [batch]` (int64, `<s>` first). `batch` is the encoded batch's or a
    /// multiple `g` of it: rows `i * g .. (i + 1) * g` are hypotheses of sentence `i` (beam
    /// search keeps one copy of each sentence's encoder output).
    fn step(&self, prev: &Tensor, state: &Self::State, enc: &Self::Encoded) -> Step<Self::State>;
    /// Rows `index [n]` (int64) of an encoded batch.
    fn select_encoded(&self, enc: &Self::Encoded, index: &Tensor) -> Self::Encoded;
    /// Rows `index [n]` (int64) of a state.
    fn select_state(&self, state: &Self::State, index: &Tensor) -> Self::State;
    /// Whether [`Step::attention`] is `Some`.
    fn has_attention(&self) -> bool;
}

impl StepModel for Seq2Seq {
    type Encoded = EncoderOutput;
    type State = DecoderState;

    fn encode(&self, src: &Tensor, lengths: &[i64]) -> EncoderOutput {
        Seq2Seq::encode(self, src, lengths, false)
    }

    fn initial_state(&self, enc: &EncoderOutput) -> DecoderState {
        Seq2Seq::initial_state(self, enc)
    }

    fn step(&self, prev: &Tensor, state: &DecoderState, enc: &EncoderOutput) -> Step<DecoderState> {
        let (log_probs, mut state) = Seq2Seq::step(self, prev, state, enc);
        // The weights leave the state: the next step does not read them, so beam reordering
        // need not carry them.
        let attention = state.attention.take();
        Step {
            log_probs,
            state,
            attention,
        }
    }

    fn select_encoded(&self, enc: &EncoderOutput, index: &Tensor) -> EncoderOutput {
        enc.index_select(index)
    }

    fn select_state(&self, state: &DecoderState, index: &Tensor) -> DecoderState {
        state.index_select(index)
    }

    fn has_attention(&self) -> bool {
        Seq2Seq::has_attention(self)
    }
}
