//! An ensemble: several models decoding together, each next token scored by the average of
//! the models' log-probabilities (the log of the geometric mean of their distributions, as
//! Marian's ensembles with equal weights). The models share the source and target
//! vocabularies (checked by [`crate::translate::Translator::load_ensemble`]); each keeps its
//! own encoder output and decoder state, reordered together by search.
use tch::{Kind, Tensor};

use crate::model::{DecoderState, EncoderOutput, Seq2Seq};
use crate::search::{Step, StepModel};

/// Models decoding as one; at least one.
#[derive(Debug)]
pub struct Ensemble<'a> {
    models: Vec<&'a Seq2Seq>,
}

impl<'a> Ensemble<'a> {
    /// `models` must be non-empty and share both vocabularies.
    pub fn new(models: Vec<&'a Seq2Seq>) -> Self {
        assert!(!models.is_empty(), "an ensemble needs at least one model");
        Ensemble { models }
    }

    /// Number of models.
    pub fn len(&self) -> usize {
        self.models.len()
    }

    /// Never true (see [`Ensemble::new`]).
    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

impl StepModel for Ensemble<'_> {
    /// One encoder output per model.
    type Encoded = Vec<EncoderOutput>;
    /// One decoder state per model.
    type State = Vec<DecoderState>;

    fn encode(&self, src: &Tensor, lengths: &[i64]) -> Vec<EncoderOutput> {
        self.models
            .iter()
            .map(|m| m.encode(src, lengths, false))
            .collect()
    }

    fn initial_state(&self, enc: &Vec<EncoderOutput>) -> Vec<DecoderState> {
        self.models
            .iter()
            .zip(enc)
            .map(|(m, e)| m.initial_state(e))
            .collect()
    }

    /// `log_probs [batch, tgt_vocab]` is the mean of the models' log-probabilities (for one
    /// model, exactly its own); `attention` the mean of the weights of the models that
    /// attend (rows still sum to 1), `None` when none does.
    fn step(
        &self,
        prev: &Tensor,
        state: &Vec<DecoderState>,
        enc: &Vec<EncoderOutput>,
    ) -> Step<Vec<DecoderState>> {
        let mut log_probs = Vec::with_capacity(self.models.len());
        let mut states = Vec::with_capacity(self.models.len());
        let mut weights = Vec::new();
        for ((m, s), e) in self.models.iter().zip(state).zip(enc) {
            let (lp, mut next) = m.step(prev, s, e);
            // As for one model: the weights leave the state that beam search reorders.
            if let Some(w) = next.attention.take() {
                weights.push(w);
            }
            log_probs.push(lp);
            states.push(next);
        }
        let mean = |ts: &[Tensor]| -> Tensor {
            if ts.len() == 1 {
                ts[0].shallow_clone()
            } else {
                Tensor::stack(ts, 0).sum_dim_intlist(0, false, Kind::Float) / ts.len() as f64
            }
        };
        Step {
            log_probs: mean(&log_probs),
            state: states,
            attention: (!weights.is_empty()).then(|| mean(&weights)),
        }
    }

    fn select_encoded(&self, enc: &Vec<EncoderOutput>, index: &Tensor) -> Vec<EncoderOutput> {
        enc.iter().map(|e| e.index_select(index)).collect()
    }

    fn select_state(&self, state: &Vec<DecoderState>, index: &Tensor) -> Vec<DecoderState> {
        state.iter().map(|s| s.index_select(index)).collect()
    }

    fn has_attention(&self) -> bool {
        self.models.iter().any(|m| m.has_attention())
    }
}
