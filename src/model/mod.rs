//! The translation model: embeddings, a bidirectional stacked RNN encoder, a bridge from the
//! context vector to the decoder state, attention, and a stacked GRU decoder.
pub mod attention;
pub mod bridge;
pub mod cell;
pub mod decoder;
pub mod embedding;
pub mod encoder;
pub mod flat;
pub mod fused_rnn;
pub mod init;
pub mod linear;
pub mod output_loss;
pub mod seq2seq;

pub use decoder::{Decoder, DecoderState, StepCache};
pub use encoder::EncoderOutput;
pub use seq2seq::{Loss, Seq2Seq};

/// Builds a freshly initialized model in `p` after checking its config, turning a libtorch
/// failure (out of memory for an outsized model, say) into an error instead of a panic.
pub fn build(
    p: &tch::nn::Path,
    config: &crate::config::ModelConfig,
) -> crate::error::Result<Seq2Seq> {
    config.validate()?;
    crate::panic::contain(|| Seq2Seq::new(p, config)).map_err(|m| {
        crate::error::Error::Config(format!(
            "cannot build the model ({} parameters): {m}",
            config.parameter_count()
        ))
    })
}
