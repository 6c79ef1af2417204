//! The translation model: embeddings, a bidirectional stacked RNN encoder, a bridge from the
//! context vector to the decoder state, attention, and a stacked GRU decoder.
pub mod attention;
pub mod bridge;
pub mod cell;
pub mod decoder;
pub mod embedding;
pub mod encoder;
pub mod init;
pub mod linear;
pub mod seq2seq;

pub use decoder::{DecoderState, StepCache};
pub use encoder::EncoderOutput;
pub use seq2seq::{Loss, Seq2Seq};
