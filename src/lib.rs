//! # rnmt: neural machine translation in Rust
//!
//! An attentional encoder-decoder (Sutskever et al. 2014; Cho et al. 2014; Bahdanau et al.
//! 2015; Luong et al. 2015) on libtorch through `tch`.
//!
//! The pipeline, in order:
//!
//! 1. **Read** sentence pairs from TSV/CSV files or two line-aligned files, with Unicode
//!    normalization and file:line errors ([`corpus`]).
//! 2. **Tokenize** into byte-level BPE subwords with a joint (or separate) vocabulary
//!    ([`tokenizer`]); filter by length, length ratio and duplicates ([`corpus::filter`]).
//! 3. **Batch** by token count with length bucketing and seeded shuffling ([`batch`]).
//! 4. **Encode** each source with a stacked bidirectional LSTM over packed sequences
//!    ([`model::encoder`]); the top layer's final forward and backward states form the
//!    **context vector**.
//! 5. **Bridge** the context vector into the initial state of every decoder layer
//!    ([`model::bridge`]).
//! 6. **Decode** with a stacked GRU that attends over the encoder states at every step
//!    ([`model::attention`], [`model::decoder`]), trained with **teacher forcing**.
//! 7. **Train**: token-level cross-entropy, backpropagation through time, gradient clipping by
//!    global norm, Adam, validation BLEU, checkpoints, exact resume ([`train`], [`optim`],
//!    [`checkpoint`]).
//! 8. **Search** for translations with batched greedy or beam search ([`search`]) and stream
//!    them line by line ([`translate`]).
//! 9. **Score** with sacrebleu-compatible BLEU and chrF ([`metrics`]).
//!
//! Tensor shapes are documented on every public function as `[batch, src_len, 2*hidden]`.
/// mimalloc for every Rust allocation of the binaries (libtorch keeps its own): the prepare's
/// tokenizer calls allocate small strings and vectors from all cores, where glibc's allocator
/// spent a third of the time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub mod alignment;
pub mod atomic;
pub mod average;
pub mod batch;
pub mod calibrate;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod corpus;
pub mod data;
pub mod device;
pub mod digest;
pub mod distributed;
pub mod ensemble;
pub mod error;
pub mod memory;
pub mod model;
pub mod modelfile;
pub mod optim;
pub mod panic;
pub mod plot;
pub mod precision;
pub mod schedule;
pub mod score;
pub mod search;
pub mod serve;
pub mod sizing;
pub mod tokenizer;
pub mod train;
pub mod translate;
pub mod validation;
pub mod word_alignment;

/// BLEU, chrF and paired bootstrap (the `rnmt-metrics` crate, which builds without libtorch).
pub use rnmt_metrics as metrics;
/// The seeded SplitMix64 generator of batch shuffling and bootstrap resampling.
pub use rnmt_metrics::rng;
