//! The decoder: a stacked GRU (or LSTM) that emits one target token per step.
//!
//! At step `t` it reads the previous target token's embedding and, with input feeding, the
//! previous attentional vector (or, without attention and without input feeding, the fixed
//! context vector of Cho et al. 2014); it advances every layer; the top state queries the
//! attention; and the attentional vector `a_t = tanh(W_c [s_t; context_t])` gives the logits
//! `W_o a_t + b_o`.
//!
//! [`Decoder::step`] is the one step function: training calls it with the embedding part of
//! the first layer's input projection precomputed for all steps (see [`Decoder::embed_proj`]);
//! search calls it through [`crate::model::Seq2Seq::step`] one token at a time.
use tch::{nn, Kind, Tensor};

use super::attention::Attention;
use super::cell::RecurrentLayer;
use super::encoder::EncoderOutput;
use super::flat::{self, RnnShape};
use super::fused_rnn::{self, Direction};
use super::linear::Linear;
use super::output_loss::{fused_output_loss, pad_rows, OutputLoss};
use crate::config::{AttentionType, CellType, DecoderConfig};

/// The recurrent state between steps.
#[derive(Debug)]
pub struct DecoderState {
    /// One `[batch, hidden]` tensor per layer.
    pub hidden: Vec<Tensor>,
    /// LSTM cell states, one `[batch, hidden]` per layer; empty for a GRU.
    pub cell: Vec<Tensor>,
    /// The previous attentional vector `[batch, hidden]` (zeros before the first step).
    pub att_vector: Tensor,
    /// The attention weights `[batch, src_len]` of the step that made this state (each row a
    /// distribution over the source positions, zero at padding); `None` for the initial state
    /// and for a decoder without attention.
    pub attention: Option<Tensor>,
}

impl StepCache {
    /// Selects (and repeats) batch rows, with the encoder output they belong to.
    pub fn index_select(&self, index: &Tensor) -> StepCache {
        StepCache {
            feed_weight: self.feed_weight.shallow_clone(),
            context_proj: self.context_proj.as_ref().map(|c| c.index_select(0, index)),
            output_weight_low: self.output_weight_low.as_ref().map(Tensor::shallow_clone),
            recurrent_low: self
                .recurrent_low
                .iter()
                .map(Tensor::shallow_clone)
                .collect(),
            att_vector_low: self.att_vector_low.as_ref().map(Tensor::shallow_clone),
        }
    }
}

impl DecoderState {
    /// Selects (and repeats) batch rows: beam reordering, dropping finished sentences.
    /// `index` is `[n]` int64.
    pub fn index_select(&self, index: &Tensor) -> DecoderState {
        DecoderState {
            hidden: self
                .hidden
                .iter()
                .map(|h| h.index_select(0, index))
                .collect(),
            cell: self.cell.iter().map(|c| c.index_select(0, index)).collect(),
            att_vector: self.att_vector.index_select(0, index),
            attention: self.attention.as_ref().map(|a| a.index_select(0, index)),
        }
    }
}

/// Step-invariant inputs of [`Decoder::step`], see [`Decoder::prepare`]; built once per
/// batch with the encoder output (it is part of [`EncoderOutput`]) and reordered with it.
#[derive(Debug)]
pub struct StepCache {
    /// Columns of the first layer's `w_ih` that read the fed vector, `[gates * hidden, feed]`.
    feed_weight: Tensor,
    /// The fixed context's share of the first layer's input projection, `[batch, gates * hidden]`.
    context_proj: Option<Tensor>,
    /// The output layer's weight cast once per batch for [`Decoder::step_logits`]
    /// (`[tgt_vocab, hidden]`, bfloat16), when decoding in low precision.
    output_weight_low: Option<Tensor>,
    /// When decoding in low precision: each layer's recurrent weight `w_hh` and the
    /// attentional layer's weight, cast once per batch (`[gates * hidden, hidden]`,
    /// `[hidden, hidden + context]`).
    recurrent_low: Vec<Tensor>,
    att_vector_low: Option<Tensor>,
}

/// `x [rows, in] @ w_low^T (+ b)`: the product in `w_low`'s (low) kind with the rows padded
/// to a multiple of 64 (oneDNN compiles one kernel per shape), the result and the bias add
/// in float32: `[rows, out]`.
pub fn low_linear(x: &Tensor, w_low: &Tensor, b: Option<&Tensor>) -> Tensor {
    let rows = x.size()[0];
    let xp = pad_rows(&x.to_kind(w_low.kind()), 64);
    let mut z = xp.mm(&w_low.tr()).narrow(0, 0, rows).to_kind(Kind::Float);
    if let Some(b) = b {
        let _ = z.g_add_(b);
    }
    z
}

/// What is fed besides the embedding at every step.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Feed {
    Nothing,
    /// The previous attentional vector (input feeding).
    AttVector,
    /// The fixed context vector (no attention, no input feeding).
    Context,
}

/// Stacked recurrent decoder with attention.
#[derive(Debug)]
pub struct Decoder {
    layers: Vec<RecurrentLayer>,
    /// `None` without attention (the context is the encoder's fixed summary vector).
    attention: Option<Attention>,
    att_vector: Linear,
    output: Linear,
    dropout: f64,
    emb_dim: i64,
    feed: Feed,
    feed_dim: i64,
    /// On CUDA, the one cuDNN weight buffer the RNN weights are views of ([`flat`]), for
    /// [`Decoder::forward_fused`].
    flat: Option<Tensor>,
    /// Run [`Decoder::rnn_fused`] in float32 on the CPU through rnmt's fused layer
    /// ([`fused_rnn`]) instead of libtorch's `gru`/`lstm`.
    pub fused: bool,
}

impl Decoder {
    /// * `p`: the model root (parameters under `decoder.*` and `attention.*`)
    /// * `context_dim`: encoder state width (`2 * enc_hidden`)
    /// * `tied_output`: the target embedding `[tgt_vocab, emb]` to reuse as output weight
    pub fn new(
        p: &nn::Path,
        cfg: &DecoderConfig,
        emb_dim: i64,
        context_dim: i64,
        tgt_vocab: i64,
        tied_output: Option<&Tensor>,
    ) -> Self {
        let hidden = cfg.hidden as i64;
        let (feed, feed_dim) = match (cfg.input_feeding, cfg.attention) {
            (true, _) => (Feed::AttVector, hidden),
            (false, AttentionType::None) => (Feed::Context, context_dim),
            (false, _) => (Feed::Nothing, 0),
        };
        let d = p / "decoder";
        let rnn = &d / "rnn";
        let layers: Vec<RecurrentLayer> = (0..cfg.layers)
            .map(|l| {
                let input = if l == 0 { emb_dim + feed_dim } else { hidden };
                RecurrentLayer::new(&rnn, cfg.cell, l, input, hidden)
            })
            .collect();
        // Only the fused call (no input feeding) reads the weights as one buffer.
        let flat = (feed != Feed::AttVector)
            .then(|| {
                let shape = RnnShape {
                    cell: cfg.cell,
                    input: emb_dim + feed_dim,
                    hidden,
                    layers: cfg.layers as i64,
                    bidirectional: false,
                };
                flat::flatten_for_cudnn(&rnn_params(&layers), shape)
            })
            .flatten();
        let attention = Attention::new(&(p / "attention"), cfg.attention, context_dim, hidden);
        let att_vector = Linear::new(&(&d / "att_vector"), hidden + context_dim, hidden, true);
        let output = match tied_output {
            Some(w) => Linear {
                weight: w.shallow_clone(),
                bias: Some((&d / "output").zeros("bias", &[tgt_vocab])),
            },
            None => Linear::new(&(&d / "output"), hidden, tgt_vocab, true),
        };
        Decoder {
            layers,
            attention,
            att_vector,
            output,
            dropout: cfg.dropout,
            emb_dim,
            feed,
            feed_dim,
            flat,
            fused: fused_rnn::enabled_by_env(),
        }
    }

    /// Whether the RNN weights are views of one cuDNN buffer (on CUDA without input feeding;
    /// never on the CPU).
    pub fn weights_are_flat(&self) -> bool {
        self.flat
            .as_ref()
            .is_some_and(|b| flat::all_inside(&rnn_params(&self.layers), b))
    }

    /// Attention keys for the encoder states (once per batch).
    pub fn attention_keys(&self, states: &Tensor) -> Option<Tensor> {
        self.attention.as_ref().map(|a| a.keys(states))
    }

    /// The initial state from the bridged context `init [batch, hidden]`.
    pub fn initial_state(&self, init: &Tensor) -> DecoderState {
        let n = self.layers.len();
        let cell = match self.layers[0].cell {
            CellType::Gru => vec![],
            CellType::Lstm => (0..n).map(|_| init.zeros_like()).collect(),
        };
        DecoderState {
            hidden: (0..n).map(|_| init.shallow_clone()).collect(),
            cell,
            att_vector: init.zeros_like(),
            attention: None,
        }
    }

    /// The embedding part of the first layer's input projection, bias included:
    /// `emb [.., emb]` to `[.., gates * hidden]`. Works on a whole `[batch, tgt_len, emb]`
    /// sequence at once (training) or on one step `[batch, emb]` (search).
    pub fn embed_proj(&self, emb: &Tensor) -> Tensor {
        self.layers[0].project_part(emb, 0, self.emb_dim, true)
    }

    /// Per-batch inputs of [`Decoder::step`] that do not change from step to step: the
    /// feed columns of the first layer's input weights, taken as a view once (so training
    /// backpropagates into them once per batch, not once per step) and, for the fixed
    /// context of Cho et al., its projection.
    ///
    /// * `final_state`: the context vector `[batch, context_dim]`
    pub fn prepare(&self, final_state: &Tensor, low: Option<Kind>) -> StepCache {
        let feed_weight = self.layers[0].w_ih.narrow(1, self.emb_dim, self.feed_dim);
        let context_proj =
            (self.feed == Feed::Context).then(|| final_state.matmul(&feed_weight.tr()));
        StepCache {
            feed_weight,
            context_proj,
            output_weight_low: low.map(|k| self.output.weight.detach().to_kind(k)),
            recurrent_low: match low {
                Some(k) => self
                    .layers
                    .iter()
                    .map(|l| l.w_hh.detach().to_kind(k))
                    .collect(),
                None => Vec::new(),
            },
            att_vector_low: low.map(|k| self.att_vector.weight.detach().to_kind(k)),
        }
    }

    /// One decoder step.
    ///
    /// * `emb_proj`: `[batch, gates * hidden]` from [`Decoder::embed_proj`]; `batch` is the
    ///   encoder output's batch or a multiple `g` of it: then rows `i * g .. (i + 1) * g` are
    ///   hypotheses of sentence `i` (a beam), which read one copy of its encoder output
    /// * `state`: the previous state
    /// * `enc`: the encoder output (states, mask, keys, and the step cache from
    ///   [`Decoder::prepare`])
    ///
    /// Returns the new state; its `att_vector [batch, hidden]` is what
    /// [`Decoder::logits`] turns into word scores, its `attention [batch, src_len]` the
    /// step's attention weights (with attention).
    pub fn step(
        &self,
        emb_proj: &Tensor,
        state: &DecoderState,
        enc: &EncoderOutput,
        train: bool,
    ) -> DecoderState {
        let cache = &enc.step_cache;
        let gi = match (self.feed, &cache.context_proj) {
            (Feed::AttVector, _) => emb_proj + state.att_vector.matmul(&cache.feed_weight.tr()),
            (Feed::Context, Some(c)) => add_per_sentence(emb_proj, c),
            _ => emb_proj.shallow_clone(),
        };
        let mut hidden: Vec<Tensor> = Vec::with_capacity(self.layers.len());
        let mut cell = Vec::with_capacity(state.cell.len());
        let mut gi = gi;
        for (l, layer) in self.layers.iter().enumerate() {
            if l > 0 {
                let x = hidden[l - 1].dropout(self.dropout, train);
                gi = layer.project(&x);
            }
            let (h, c) = layer.step_low(
                &gi,
                &state.hidden[l],
                state.cell.get(l),
                cache.recurrent_low.get(l),
            );
            hidden.push(h);
            if let Some(c) = c {
                cell.push(c);
            }
        }
        let query = &hidden[hidden.len() - 1];
        let (rows, sentences) = (query.size()[0], enc.states.size()[0]);
        // Rows in groups per sentence (beam search): the group's queries attend together
        // over their one copy of the encoder output, [sentences, group, hidden].
        let group = rows / sentences.max(1);
        assert!(
            group >= 1 && group * sentences == rows,
            "decoder step: {rows} rows for an encoder output of {sentences} sentences"
        );
        let (att_vector, weights) = self.attentional_vectors(
            &query.view([sentences, group, -1]),
            enc,
            cache.att_vector_low.as_ref(),
        );
        let att_vector = att_vector.view([rows, 1, -1]);
        let weights = weights.map(|w| w.view([rows, 1, -1]));
        DecoderState {
            hidden,
            cell,
            att_vector: att_vector.squeeze_dim(1),
            attention: weights.map(|w| w.squeeze_dim(1)),
        }
    }

    /// `a_t = tanh(W_c [q_t; context_t])` for top-layer states `query [batch, T, hidden]`:
    /// `([batch, T, hidden], attention weights [batch, T, src_len] or None without attention)`.
    fn attentional_vectors(
        &self,
        query: &Tensor,
        enc: &EncoderOutput,
        low: Option<&Tensor>,
    ) -> (Tensor, Option<Tensor>) {
        let (context, weights) = match (&self.attention, &enc.keys) {
            (Some(attention), Some(keys)) => {
                let (c, w) = attention.forward(query, keys, &enc.states, &enc.mask);
                (c, Some(w))
            }
            _ => (
                enc.final_state
                    .unsqueeze(1)
                    .expand([-1, query.size()[1], -1], false),
                None,
            ),
        };
        let joined = Tensor::cat(&[query, &context], 2);
        let att = match low {
            Some(w) => {
                let size = joined.size();
                let flat = joined.view([-1, size[2]]);
                low_linear(&flat, w, self.att_vector.bias.as_ref())
                    .view([size[0], size[1], -1])
                    .tanh()
            }
            None => self.att_vector.forward(&joined).tanh(),
        };
        (att, weights)
    }

    /// Whether the decoder attends over the source (`model.decoder.attention` is not `none`).
    pub fn has_attention(&self) -> bool {
        self.attention.is_some()
    }

    /// Whether the recurrence reads only inputs known before decoding (no input feeding), so
    /// that a teacher-forced sequence can run through [`Decoder::forward_fused`].
    pub fn can_fuse(&self) -> bool {
        self.feed != Feed::AttVector
    }

    /// The whole teacher-forced sequence at once, for a decoder without input feeding: the
    /// stacked RNN runs as one fused libtorch call (`gru`/`lstm`) over all steps, then the
    /// attention and the attentional vectors are computed for all steps together (Luong et al.
    /// 2015 without input feeding). The same function as calling [`Decoder::step`] per step.
    ///
    /// * `emb`: target input embeddings `[batch, tgt_len, emb]` (dropout already applied)
    /// * `state`: the initial state from [`Decoder::initial_state`]
    ///
    /// Returns the attentional vectors `[batch, tgt_len, hidden]`.
    pub fn forward_fused(
        &self,
        emb: &Tensor,
        state: &DecoderState,
        enc: &EncoderOutput,
        train: bool,
    ) -> Tensor {
        let top = self.rnn_fused(emb, state, enc, train);
        self.attend(&top, enc)
    }

    /// The recurrent part of [`Decoder::forward_fused`]: the top layer's states
    /// `[batch, tgt_len, hidden]` for `emb [batch, tgt_len, emb]`.
    pub fn rnn_fused(
        &self,
        emb: &Tensor,
        state: &DecoderState,
        enc: &EncoderOutput,
        train: bool,
    ) -> Tensor {
        assert!(
            self.can_fuse(),
            "forward_fused needs a decoder without input feeding"
        );
        let input = match self.feed {
            Feed::Context => {
                let steps = emb.size()[1];
                let context = enc.final_state.unsqueeze(1).expand([-1, steps, -1], false);
                Tensor::cat(&[emb, &context], 2)
            }
            _ => emb.shallow_clone(),
        };
        let dropout = if train { self.dropout } else { 0.0 };
        if self.fused && fused_rnn::supports(&input) {
            // Layer by layer, time-major, with dropout between layers as libtorch applies it.
            let mut x = input.transpose(0, 1).contiguous();
            for (i, l) in self.layers.iter().enumerate() {
                if i > 0 && dropout > 0.0 {
                    x = x.dropout(dropout, train);
                }
                let dir = Direction {
                    x: &x,
                    h0: &state.hidden[i],
                    c0: state.cell.get(i),
                    params: [&l.w_ih, &l.w_hh, &l.b_ih, &l.b_hh],
                };
                x = fused_rnn::run(l.cell, &dir, None).remove(0);
            }
            return x.transpose(0, 1);
        }
        let params = rnn_params(&self.layers);
        let n = self.layers.len() as i64;
        let h0 = Tensor::stack(&state.hidden, 0); // [layers, batch, hidden]
        match self.layers[0].cell {
            CellType::Gru => {
                input
                    .gru(&h0, &params, true, n, dropout, train, false, true)
                    .0
            }
            CellType::Lstm => {
                let c0 = Tensor::stack(&state.cell, 0);
                input
                    .lstm(&[&h0, &c0], &params, true, n, dropout, train, false, true)
                    .0
            }
        }
    }

    /// The attentional part of [`Decoder::forward_fused`]: top-layer states
    /// `top [batch, tgt_len, hidden]` to attentional vectors `[batch, tgt_len, hidden]`.
    pub fn attend(&self, top: &Tensor, enc: &EncoderOutput) -> Tensor {
        self.attentional_vectors(top, enc, None).0
    }

    /// Overwrites the output bias with `bias [tgt_vocab]`.
    pub fn set_output_bias(&self, bias: &Tensor) {
        if let Some(b) = &self.output.bias {
            tch::no_grad(|| {
                let mut b = b.shallow_clone();
                b.copy_(bias);
            });
        }
    }

    /// The output layer and the label-smoothed cross-entropy fused
    /// ([`super::output_loss`]): attentional vectors `att [n, hidden]` (dropout is applied
    /// here, as in [`Decoder::logits`]) and their gold words `gold [n]` to the summed loss.
    pub fn output_loss(&self, att: &Tensor, gold: &Tensor, eps: f64, train: bool) -> OutputLoss {
        let x = att.dropout(self.dropout, train);
        fused_output_loss(
            &x,
            &self.output.weight,
            self.output.bias.as_ref(),
            gold,
            eps,
        )
    }

    /// [`Decoder::logits`] without dropout, the product in the type of `cache`'s
    /// low-precision output weight ([`Decoder::prepare`] with `low`; bfloat16, the CPU's
    /// `--precision bf16`), float32 scores; float32 throughout without it.
    /// `att_vector [rows, hidden]`; the rows are padded to a multiple of 64 so that a beam
    /// whose row count shrinks step by step meets only a few shapes.
    pub fn step_logits(&self, att_vector: &Tensor, cache: &StepCache) -> Tensor {
        let Some(w) = &cache.output_weight_low else {
            return self.logits(att_vector, false);
        };
        let rows = att_vector.size()[0];
        let x = pad_rows(&att_vector.to_kind(w.kind()), 64);
        let mut z = x.mm(&w.tr()).narrow(0, 0, rows).to_kind(Kind::Float);
        if let Some(b) = &self.output.bias {
            let _ = z.g_add_(b); // in place: a [rows, vocab] pass fewer per step
        }
        z
    }

    /// Word scores from attentional vectors: `[.., hidden]` to `[.., tgt_vocab]`.
    pub fn logits(&self, att_vector: &Tensor, train: bool) -> Tensor {
        self.output
            .forward(&att_vector.dropout(self.dropout, train))
    }
}

/// `rows [rows, d] + per_sentence [sentences, d]`, rows in groups per sentence (see
/// [`Decoder::step`]), broadcast without copying `per_sentence` to every row.
fn add_per_sentence(rows: &Tensor, per_sentence: &Tensor) -> Tensor {
    let (n, sentences) = (rows.size()[0], per_sentence.size()[0]);
    (rows.view([sentences, n / sentences.max(1), -1]) + per_sentence.unsqueeze(1)).view([n, -1])
}

/// The layers' weights in the order of libtorch's fused `gru`/`lstm` call.
fn rnn_params(layers: &[RecurrentLayer]) -> Vec<&Tensor> {
    layers
        .iter()
        .flat_map(|l| [&l.w_ih, &l.w_hh, &l.b_ih, &l.b_hh])
        .collect()
}
