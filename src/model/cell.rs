//! One recurrent layer of the decoder, stepped by hand with its gates written out.
//!
//! The decoder runs one time step at a time (its input at step `t` depends on step `t - 1`),
//! so it cannot use libtorch's whole-sequence kernels. Writing the cell out lets the
//! input-to-hidden product be computed separately from the recurrent one: during training the
//! embedding part of the first layer's input projection is done for all time steps in one
//! matrix multiply before the loop (teacher forcing makes every input known in advance).
//!
//! GRU (Cho et al. 2014), PyTorch's gate order `r, z, n`:
//! ```text
//! r = σ(W_r x + b_ir + U_r h + b_hr)          reset gate
//! z = σ(W_z x + b_iz + U_z h + b_hz)          update gate
//! n = tanh(W_n x + b_in + r ⊙ (U_n h + b_hn)) candidate state
//! h' = (1 - z) ⊙ n + z ⊙ h
//! ```
//! LSTM: gates `i, f, g, o` as in [`super::encoder`].
//!
//! Parameter names follow `nn.GRU`/`nn.LSTM`: `weight_ih_l{k}`, `weight_hh_l{k}`, `bias_ih_l{k}`,
//! `bias_hh_l{k}`.
use tch::{nn, Tensor};

use super::init;
use crate::config::CellType;

/// A single (unidirectional) recurrent layer.
#[derive(Debug)]
pub struct RecurrentLayer {
    pub cell: CellType,
    pub hidden: i64,
    /// `[gates * hidden, input]`
    pub w_ih: Tensor,
    /// `[gates * hidden, hidden]`
    pub w_hh: Tensor,
    pub b_ih: Tensor,
    pub b_hh: Tensor,
}

impl RecurrentLayer {
    /// Layer `index` under `p`, reading inputs of size `input`.
    pub fn new(p: &nn::Path, cell: CellType, index: usize, input: i64, hidden: i64) -> Self {
        let gates = cell.gates();
        let dev = p.device();
        let forget = (cell == CellType::Lstm).then_some(1.0);
        RecurrentLayer {
            cell,
            hidden,
            w_ih: p.var_copy(
                &format!("weight_ih_l{index}"),
                &init::xavier_uniform(gates * hidden, input, dev),
            ),
            w_hh: p.var_copy(
                &format!("weight_hh_l{index}"),
                &init::recurrent(gates, hidden, dev),
            ),
            b_ih: p.var_copy(
                &format!("bias_ih_l{index}"),
                &init::gate_bias(gates, hidden, forget, dev),
            ),
            b_hh: p.var_copy(
                &format!("bias_hh_l{index}"),
                &init::gate_bias(gates, hidden, None, dev),
            ),
        }
    }

    /// Input projection of the input columns `[offset, offset + width)`:
    /// `x [.., width]` to `[.., gates * hidden]`, with the input bias when `with_bias`.
    pub fn project_part(&self, x: &Tensor, offset: i64, width: i64, with_bias: bool) -> Tensor {
        let w = self.w_ih.narrow(1, offset, width);
        x.linear(&w, with_bias.then_some(&self.b_ih))
    }

    /// Full input projection `x [.., input]` to `[.., gates * hidden]`, bias included.
    pub fn project(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w_ih, Some(&self.b_ih))
    }

    /// One step from the projected input `gi [batch, gates * hidden]` and the previous state
    /// `h [batch, hidden]` (and `c [batch, hidden]` for an LSTM).
    /// Returns the new `(h, c)`; `c` is `None` for a GRU.
    pub fn step(&self, gi: &Tensor, h: &Tensor, c: Option<&Tensor>) -> (Tensor, Option<Tensor>) {
        self.step_low(gi, h, c, None)
    }

    /// [`RecurrentLayer::step`] with the recurrent product in low precision when `w_hh_low`
    /// (this layer's `w_hh` cast, see [`super::decoder::low_linear`]) is given.
    pub fn step_low(
        &self,
        gi: &Tensor,
        h: &Tensor,
        c: Option<&Tensor>,
        w_hh_low: Option<&Tensor>,
    ) -> (Tensor, Option<Tensor>) {
        if w_hh_low.is_none() {
            if let Some(out) = super::fused_rnn::step(self.cell, gi, h, c, &self.w_hh, &self.b_hh) {
                return out;
            }
        }
        let gh = match w_hh_low {
            Some(w) => super::decoder::low_linear(h, w, Some(&self.b_hh)),
            None => h.linear(&self.w_hh, Some(&self.b_hh)),
        };
        let hs = self.hidden;
        match self.cell {
            CellType::Gru => {
                let rz = (gi.narrow(1, 0, 2 * hs) + gh.narrow(1, 0, 2 * hs)).sigmoid();
                let r = rz.narrow(1, 0, hs);
                let z = rz.narrow(1, hs, hs);
                let n = (gi.narrow(1, 2 * hs, hs) + r * gh.narrow(1, 2 * hs, hs)).tanh();
                // h' = (1 - z) n + z h = n + z (h - n)
                let h_new = &n + z * (h - &n);
                (h_new, None)
            }
            CellType::Lstm => {
                let gates = gi + gh;
                let ifo_idx = [gates.narrow(1, 0, 2 * hs), gates.narrow(1, 3 * hs, hs)];
                let i_f = ifo_idx[0].sigmoid();
                let o = ifo_idx[1].sigmoid();
                let g = gates.narrow(1, 2 * hs, hs).tanh();
                let c_prev = match c {
                    Some(c) => c.shallow_clone(),
                    None => h.zeros_like(),
                };
                let c_new = i_f.narrow(1, hs, hs) * c_prev + i_f.narrow(1, 0, hs) * g;
                let h_new = o * c_new.tanh();
                (h_new, Some(c_new))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// The hand-written gates agree with libtorch's own `gru_cell` / `lstm_cell`.
    #[test]
    fn matches_libtorch_cells() {
        tch::manual_seed(3);
        for cell in [CellType::Gru, CellType::Lstm] {
            let vs = nn::VarStore::new(Device::Cpu);
            let mut l = RecurrentLayer::new(&vs.root(), cell, 0, 5, 4);
            let _ = tch::no_grad(|| l.b_hh.uniform_(-0.5, 0.5));
            let x = Tensor::randn([3, 5], (Kind::Float, Device::Cpu));
            let h = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
            let c = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
            let (ours, ours_c) = l.step(&l.project(&x), &h, Some(&c));
            let theirs = match cell {
                CellType::Gru => x.gru_cell(&h, &l.w_ih, &l.w_hh, Some(&l.b_ih), Some(&l.b_hh)),
                CellType::Lstm => {
                    let (h2, c2) =
                        x.lstm_cell(&[&h, &c], &l.w_ih, &l.w_hh, Some(&l.b_ih), Some(&l.b_hh));
                    let d = (ours_c.unwrap() - c2).abs().max().double_value(&[]);
                    assert!(d < 1e-6, "lstm c differs by {d}");
                    h2
                }
            };
            let d = (ours - theirs).abs().max().double_value(&[]);
            assert!(d < 1e-6, "{cell:?} h differs by {d}");
        }
    }
}
