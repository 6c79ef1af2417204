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
use super::fused_rnn::{self, Direction};
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
    /// Run float32 on the CPU through rnmt's fused layer ([`fused_rnn`]) instead of libtorch's.
    pub fused: bool,
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
            fused: fused_rnn::enabled_by_env(),
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
    /// * `low`: run the RNN in this type (bfloat16), on the CPU path only
    ///
    /// Returns `(states [batch, src_len, 2*hidden], final_state [batch, 2*hidden])`, float32.
    pub fn forward(
        &self,
        embedded: &Tensor,
        lengths: &[i64],
        train: bool,
        low: Option<Kind>,
    ) -> (Tensor, Tensor) {
        if embedded.device().is_cuda() {
            self.forward_packed(embedded, lengths, train)
        } else {
            self.forward_padded(embedded, lengths, train, low)
        }
    }

    /// [`Encoder::forward`] over packed sequences: cuDNN's path, and the reference that the
    /// padded path is tested against.
    pub fn forward_packed(
        &self,
        embedded: &Tensor,
        lengths: &[i64],
        train: bool,
    ) -> (Tensor, Tensor) {
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

impl Encoder {
    /// [`Encoder::forward`] over the padded batch, one direction at a time: the CPU's path.
    ///
    /// libtorch runs an unpacked, one-directional LSTM on the CPU with oneDNN's fused RNN
    /// kernel (forward and backward), which is much faster than its step-by-step packed
    /// kernel. Padding is harmless left to right, since it comes after every real token. The
    /// right-to-left direction runs left to right over each sentence reversed *within its
    /// length* (`x_rev[t] = x[len - 1 - t]` for `t < len`, padding left in place), so it too
    /// reads the padding only after the whole sentence, and its outputs are put back in
    /// place with the same permutation. The final states are read from the outputs at each
    /// sentence's own last step, and the outputs are zeroed at padding, so every sentence is
    /// encoded as if it were alone (to floating-point rounding: the kernels differ).
    ///
    /// With `low` (bfloat16) the input, the weights (cast at each call; their gradients flow
    /// back through the cast to the float32 parameters) and the recurrence run in that type;
    /// the outputs come back as float32.
    pub fn forward_padded(
        &self,
        embedded: &Tensor,
        lengths: &[i64],
        train: bool,
        low: Option<Kind>,
    ) -> (Tensor, Tensor) {
        let (batch, src_len) = (embedded.size()[0], embedded.size()[1]);
        assert_eq!(
            lengths.len() as i64,
            batch,
            "encoder: {} lengths for a batch of {batch}",
            lengths.len()
        );
        let device = embedded.device();
        // Rows of the time-major flattening [src_len * batch]: row t * batch + b.
        let mut reverse = Vec::with_capacity((src_len * batch) as usize);
        for t in 0..src_len {
            for (b, &len) in lengths.iter().enumerate() {
                let src_t = if t < len { len - 1 - t } else { t };
                reverse.push(src_t * batch + b as i64);
            }
        }
        let last: Vec<i64> = lengths
            .iter()
            .enumerate()
            .map(|(b, &len)| (len - 1) * batch + b as i64)
            .collect();
        let reverse = Tensor::from_slice(&reverse).to_device(device);
        let last = Tensor::from_slice(&last).to_device(device);
        let flat_rows = |x: &Tensor| x.reshape([src_len * batch, -1]);

        let kind = low.unwrap_or(Kind::Float);
        let params: Vec<Tensor> = match low {
            Some(k) => self.params.iter().map(|p| p.to_kind(k)).collect(),
            None => self.params.iter().map(Tensor::shallow_clone).collect(),
        };
        // [src_len, batch, in]
        let mut x = embedded.transpose(0, 1).to_kind(kind).contiguous();
        let h0 = Tensor::zeros([1, batch, self.hidden], (kind, device));
        let c0 = h0.zeros_like();
        let mut finals = None;
        let fused = self.fused && low.is_none() && fused_rnn::supports(&x);
        for layer in 0..self.layers as usize {
            let reversed = flat_rows(&x)
                .index_select(0, &reverse)
                .reshape([src_len, batch, -1]);
            let inputs = [x.shallow_clone(), reversed];
            let layer_params = |dir: usize| -> Vec<&Tensor> {
                params[(2 * layer + dir) * 4..][..4].iter().collect()
            };
            let outs: Vec<Tensor> = if fused {
                let h0 = h0.get(0);
                let c0 = (self.cell == CellType::Lstm).then(|| h0.shallow_clone());
                let dir = |d: usize| {
                    let p = layer_params(d);
                    Direction {
                        x: &inputs[d],
                        h0: &h0,
                        c0: c0.as_ref(),
                        params: [p[0], p[1], p[2], p[3]],
                    }
                };
                fused_rnn::run(self.cell, &dir(0), Some(&dir(1)))
            } else {
                (0..2)
                    .map(|dir| {
                        let params = layer_params(dir);
                        let input = &inputs[dir];
                        match self.cell {
                            CellType::Lstm => {
                                input
                                    .lstm(&[&h0, &c0], &params, true, 1, 0.0, train, false, false)
                                    .0
                            }
                            CellType::Gru => {
                                input.gru(&h0, &params, true, 1, 0.0, train, false, false).0
                            }
                        }
                    })
                    .collect()
            };
            let top = layer + 1 == self.layers as usize;
            if top {
                // Left to right ends at len - 1; right to left ends at position 0, which is
                // row len - 1 of its reversed run.
                finals = Some(
                    Tensor::cat(
                        &[
                            flat_rows(&outs[0]).index_select(0, &last),
                            flat_rows(&outs[1]).index_select(0, &last),
                        ],
                        1,
                    )
                    .to_kind(Kind::Float),
                );
            }
            let backward = flat_rows(&outs[1])
                .index_select(0, &reverse)
                .reshape([src_len, batch, -1]);
            x = Tensor::cat(&[&outs[0], &backward], 2);
            if !top && train && self.dropout > 0.0 {
                x = x.dropout(self.dropout, true);
            }
        }
        let mask = length_mask(lengths, src_len, device)
            .transpose(0, 1)
            .unsqueeze(2)
            .to_kind(Kind::Float);
        let states = (x.to_kind(Kind::Float) * mask).transpose(0, 1).contiguous();
        (states, finals.expect("the encoder has at least one layer"))
    }
}

/// The padding mask `[batch, src_len]` (bool, true at real tokens) for `lengths`.
pub fn length_mask(lengths: &[i64], max_len: i64, device: Device) -> Tensor {
    let lens = Tensor::from_slice(lengths).to_device(device).unsqueeze(1);
    Tensor::arange(max_len, (Kind::Int64, device))
        .unsqueeze(0)
        .lt_tensor(&lens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device};

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// The padded path (the CPU's) equals the packed one (cuDNN's, and libtorch's reference):
    /// states, zeros at padding, final states and the gradients of every weight and of the
    /// input, for both cells, unsorted lengths and a sentence as long as the batch.
    #[test]
    fn padded_path_equals_the_packed_path() {
        tch::manual_seed(11);
        for cell in [CellType::Lstm, CellType::Gru] {
            let vs = VarStore::new(Device::Cpu);
            let cfg = EncoderConfig {
                cell,
                layers: 3,
                hidden: 16,
                dropout: 0.0,
            };
            let enc = Encoder::new(&vs.root(), &cfg, 12);
            let lengths = [5i64, 9, 1, 7, 9, 3];
            let x0 = Tensor::randn([6, 9, 12], (Kind::Float, Device::Cpu));
            let weight = Tensor::randn([6, 9, 32], (Kind::Float, Device::Cpu));
            let run = |padded: bool| {
                let x = x0.copy().set_requires_grad(true);
                let (states, finals) = if padded {
                    enc.forward_padded(&x, &lengths, true, None)
                } else {
                    enc.forward_packed(&x, &lengths, true)
                };
                for p in &enc.params {
                    p.shallow_clone().zero_grad();
                }
                ((&states * &weight).sum(Kind::Float) + finals.sin().sum(Kind::Float)).backward();
                let grads: Vec<Tensor> = enc.params.iter().map(|p| p.grad().copy()).collect();
                (states.detach(), finals.detach(), x.grad(), grads)
            };
            let (s1, f1, dx1, g1) = run(false);
            let (s2, f2, dx2, g2) = run(true);
            assert_eq!(s1.size(), s2.size());
            assert!(max_diff(&s1, &s2) < 1e-5, "{cell:?} states differ");
            assert!(max_diff(&f1, &f2) < 1e-5, "{cell:?} final states differ");
            assert!(
                max_diff(&dx1, &dx2) < 1e-4,
                "{cell:?} input gradients differ"
            );
            for (a, b) in g1.iter().zip(&g2) {
                let scale = a.abs().max().double_value(&[]).max(1e-3);
                assert!(
                    max_diff(a, b) < 1e-4 * scale,
                    "{cell:?} weight gradients differ"
                );
            }
            // In bfloat16 (the CPU's --precision bf16) the same within bfloat16 rounding,
            // float32 outputs, gradients reaching the float32 weights.
            let x = x0.copy().set_requires_grad(true);
            let (s3, f3) = enc.forward_padded(&x, &lengths, true, Some(Kind::BFloat16));
            assert_eq!((s3.kind(), f3.kind()), (Kind::Float, Kind::Float));
            assert!(max_diff(&s1, &s3) < 3e-2, "{cell:?} bf16 states differ");
            assert!(
                max_diff(&f1, &f3) < 3e-2,
                "{cell:?} bf16 final states differ"
            );
            s3.sum(Kind::Float).backward();
            assert!(enc.params.iter().all(|p| p.grad().kind() == Kind::Float));
            // Padding is zero: sentence 2 has one token.
            assert_eq!(
                s2.get(2)
                    .narrow(0, 1, 8)
                    .abs()
                    .sum(Kind::Float)
                    .double_value(&[]),
                0.0
            );
        }
    }
}
