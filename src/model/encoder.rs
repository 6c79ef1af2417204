//! The encoder: a stacked (deep) bidirectional RNN over the source embeddings.
//!
//! Each layer runs one RNN left to right and one right to left and concatenates their states,
//! so position `i` sees the whole sentence (Schuster & Paliwal 1997); layer `l + 1` reads the
//! `2 * hidden` outputs of layer `l`, with dropout in between. The default cell is the LSTM:
//!
//! ```text
//! i = σ(W_i x + U_i h + b_i)      input gate
//! f = σ(W_f x + U_f h + b_f)      forget gate
//! g = tanh(W_g x + U_g h + b_g)   candidate cell
//! o = σ(W_o x + U_o h + b_o)      output gate
//! c' = f ⊙ c + i ⊙ g              h' = o ⊙ tanh(c')
//! ```
//!
//! **Padding.** In a padded batch, the backward direction of a short sentence would read its
//! padding before its first real token. The batch is therefore *packed* (libtorch's
//! `_pack_padded_sequence`, sorted by length inside this module and unsorted afterwards) and
//! run with libtorch's fused `lstm`/`gru` kernels over the packed data, so every sentence is
//! encoded exactly as if it were alone. libtorch also batches the input-to-hidden products of
//! all time steps into one matrix multiply per layer and direction.
//!
//! Parameters use PyTorch's `nn.LSTM` names under `encoder.rnn`: `weight_ih_l{k}`,
//! `weight_hh_l{k}`, `bias_ih_l{k}`, `bias_hh_l{k}` and the same with `_reverse`.
use tch::{nn, Device, Kind, Tensor};

use super::flat::{self, RnnShape};
use super::init;
use crate::config::{CellType, EncoderConfig};

/// What the decoder reads from the encoder.
#[derive(Debug)]
pub struct EncoderOutput {
    /// Encoder states of the top layer, `[batch, src_len, 2 * hidden]` (zero at padding).
    pub states: Tensor,
    /// `true` at real source tokens, `[batch, src_len]` (bool).
    pub mask: Tensor,
    /// The top layer's final forward and backward states concatenated: the context vector
    /// that summarizes the sentence, `[batch, 2 * hidden]`.
    pub final_state: Tensor,
    /// Attention keys computed once per batch, `[batch, src_len, key_dim]` (absent without
    /// attention).
    pub keys: Option<Tensor>,
    /// The decoder's step-invariant inputs for this batch ([`crate::model::Decoder::prepare`]).
    pub step_cache: crate::model::StepCache,
}

impl EncoderOutput {
    /// Selects (and repeats) batch rows, e.g. to expand for beam search or drop finished
    /// sentences. `index` is `[n]` int64.
    pub fn index_select(&self, index: &Tensor) -> EncoderOutput {
        EncoderOutput {
            states: self.states.index_select(0, index),
            mask: self.mask.index_select(0, index),
            final_state: self.final_state.index_select(0, index),
            keys: self.keys.as_ref().map(|k| k.index_select(0, index)),
            step_cache: self.step_cache.index_select(index),
        }
    }
}

/// Stacked bidirectional LSTM or GRU over packed sequences.
#[derive(Debug)]
pub struct Encoder {
    cell: CellType,
    layers: i64,
    hidden: i64,
    dropout: f64,
    /// Flat parameter list in libtorch's order: per layer, per direction,
    /// `[w_ih, w_hh, b_ih, b_hh]`.
    params: Vec<Tensor>,
    /// On CUDA, the one cuDNN weight buffer the parameters are views of ([`flat`]).
    flat: Option<Tensor>,
}

impl Encoder {
    /// Builds the encoder under `p` (`encoder`) for inputs of size `input` (embedding size).
    pub fn new(p: &nn::Path, cfg: &EncoderConfig, input: i64) -> Self {
        let (layers, hidden) = (cfg.layers as i64, cfg.hidden as i64);
        let gates = cfg.cell.gates();
        let forget = (cfg.cell == CellType::Lstm).then_some(1.0);
        let p = p / "rnn";
        let dev = p.device();
        let mut params = Vec::new();
        for layer in 0..layers {
            let in_dim = if layer == 0 { input } else { 2 * hidden };
            for suffix in ["", "_reverse"] {
                let w_ih = init::xavier_uniform(gates * hidden, in_dim, dev);
                let w_hh = init::recurrent(gates, hidden, dev);
                // libtorch adds both biases; the forget bias goes in one of them only.
                let b_ih = init::gate_bias(gates, hidden, forget, dev);
                let b_hh = init::gate_bias(gates, hidden, None, dev);
                params.push(p.var_copy(&format!("weight_ih_l{layer}{suffix}"), &w_ih));
                params.push(p.var_copy(&format!("weight_hh_l{layer}{suffix}"), &w_hh));
                params.push(p.var_copy(&format!("bias_ih_l{layer}{suffix}"), &b_ih));
                params.push(p.var_copy(&format!("bias_hh_l{layer}{suffix}"), &b_hh));
            }
        }
        let shape = RnnShape {
            cell: cfg.cell,
            input,
            hidden,
            layers,
            bidirectional: true,
        };
        let flat = flat::flatten_for_cudnn(&params.iter().collect::<Vec<_>>(), shape);
        Encoder {
            cell: cfg.cell,
            layers,
            hidden,
            dropout: cfg.dropout,
            params,
            flat,
        }
    }

    /// Whether the RNN weights are views of one cuDNN buffer (on CUDA; never on the CPU).
    pub fn weights_are_flat(&self) -> bool {
        let params: Vec<&Tensor> = self.params.iter().collect();
        self.flat
            .as_ref()
            .is_some_and(|b| flat::all_inside(&params, b))
    }

    /// Width of the encoder states, `2 * hidden`.
    pub fn output_dim(&self) -> i64 {
        2 * self.hidden
    }

    /// Encodes embedded sources.
    ///
    /// * `embedded`: `[batch, src_len, emb]`
    /// * `lengths`: true lengths, each in `1..=src_len`
    ///
    /// Returns `(states [batch, src_len, 2*hidden], final_state [batch, 2*hidden])`.
    pub fn forward(&self, embedded: &Tensor, lengths: &[i64], train: bool) -> (Tensor, Tensor) {
        let (batch, src_len) = (embedded.size()[0], embedded.size()[1]);
        let device = embedded.device();
        // Packing needs decreasing lengths: sort, run, then restore the original order.
        let mut order: Vec<i64> = (0..batch).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(lengths[i as usize]));
        let sorted_lengths: Vec<i64> = order.iter().map(|&i| lengths[i as usize]).collect();
        let mut inverse = vec![0i64; order.len()];
        for (pos, &i) in order.iter().enumerate() {
            inverse[i as usize] = pos as i64;
        }
        let already_sorted = order.iter().enumerate().all(|(pos, &i)| pos as i64 == i);
        let order_t = Tensor::from_slice(&order).to_device(device);
        let inverse_t = Tensor::from_slice(&inverse).to_device(device);

        let input = if already_sorted {
            embedded.shallow_clone()
        } else {
            embedded.index_select(0, &order_t)
        };
        let lengths_t = Tensor::from_slice(&sorted_lengths); // must stay on the CPU
        let (data, batch_sizes) = input.internal_pack_padded_sequence(&lengths_t, true);
        let h0 = Tensor::zeros([self.layers * 2, batch, self.hidden], (Kind::Float, device));
        let dropout = if train { self.dropout } else { 0.0 };
        let (out, h_n) = match self.cell {
            CellType::Lstm => {
                let params: Vec<&Tensor> = self.params.iter().collect();
                let c0 = h0.zeros_like();
                let (out, h, _c) = Tensor::lstm_data(
                    &data,
                    &batch_sizes,
                    &[&h0, &c0],
                    &params,
                    true,
                    self.layers,
                    dropout,
                    train,
                    true,
                );
                // The LSTM's final cell states stay here: the decoder is initialized from
                // the exposed hidden states h = o ⊙ tanh(c), see `bridge`.
                (out, h)
            }
            CellType::Gru => Tensor::gru_data(
                &data,
                &batch_sizes,
                &h0,
                &self.params,
                true,
                self.layers,
                dropout,
                train,
                true,
            ),
        };
        let (states, _) =
            Tensor::internal_pad_packed_sequence(&out, &batch_sizes, true, 0.0, src_len);
        // h_n is [layers * 2, batch, hidden]; the top layer's directions are the last two.
        let final_state = Tensor::cat(
            &[h_n.get(2 * self.layers - 2), h_n.get(2 * self.layers - 1)],
            1,
        );
        if already_sorted {
            (states, final_state)
        } else {
            (
                states.index_select(0, &inverse_t),
                final_state.index_select(0, &inverse_t),
            )
        }
    }
}

/// The padding mask `[batch, src_len]` (bool, true at real tokens) for `lengths`.
pub fn length_mask(lengths: &[i64], max_len: i64, device: Device) -> Tensor {
    let lens = Tensor::from_slice(lengths).to_device(device).unsqueeze(1);
    Tensor::arange(max_len, (Kind::Int64, device))
        .unsqueeze(0)
        .lt_tensor(&lens)
}
