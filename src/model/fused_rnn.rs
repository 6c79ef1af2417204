//! rnmt's own fused recurrent layer for the CPU (`csrc/fused_rnn.cpp`): one LSTM or GRU layer
//! over a whole padded sequence as one autograd node, for one direction or for the two
//! directions of a bidirectional layer side by side.
//!
//! libtorch runs a GRU on the CPU as a loop of about ten small operations per time step, each
//! recorded by autograd and replayed one by one in backward. The fused layer follows the cuDNN
//! design (Appleyard et al. 2016): the input projection of all steps as one matrix product, then
//! per step one recurrent product added in place into that step's gates and one pass over the
//! gates; backward per step one pass over the gates and one product for the previous state's
//! gradient, then the input and weight gradients as one product over all steps (backpropagation
//! through time with the per-step work cut to what the recurrence needs). The two directions of
//! a bidirectional layer run on two threads at once, each with single-threaded products.
//!
//! Tested against libtorch's `lstm`/`gru` (outputs, final states and every gradient) in
//! `tests/model.rs`; `train.fused_rnn = false` (or `RNMT_FUSED_RNN=0` for decoding) turns it off.
use std::ffi::{c_char, CStr};
use std::ptr;

use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

use crate::config::CellType;

extern "C" {
    fn rnmt_fused_rnn(
        cell: i64,
        seq0: *const *const C_tensor,
        seq1: *const *const C_tensor,
        out: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn rnmt_rnn_step(
        cell: i64,
        gi: *const C_tensor,
        h: *const C_tensor,
        c: *const C_tensor,
        w_hh: *const C_tensor,
        b_hh: *const C_tensor,
        out_h: *mut *mut C_tensor,
        out_c: *mut *mut C_tensor,
    ) -> *mut c_char;
    fn rnmt_grad_enabled() -> i32;
    fn rnmt_fused_rnn_free_message(message: *mut c_char);
}

/// One direction of a layer: its input and initial state and its weights in `nn.LSTM`/`nn.GRU`
/// layout (`w_ih [G*H, I]`, `w_hh [G*H, H]`, `b_ih`, `b_hh [G*H]`, `G` = 4 for an LSTM, 3 for
/// a GRU).
#[derive(Debug)]
pub struct Direction<'a> {
    /// `[T, B, I]`, time-major, float32.
    pub x: &'a Tensor,
    /// `[B, H]`
    pub h0: &'a Tensor,
    /// `[B, H]`, LSTM only.
    pub c0: Option<&'a Tensor>,
    /// `[w_ih, w_hh, b_ih, b_hh]`
    pub params: [&'a Tensor; 4],
}

/// Whether the fused layer can run these inputs: float32 on the CPU.
pub fn supports(x: &Tensor) -> bool {
    x.device() == Device::Cpu && x.kind() == Kind::Float
}

/// Whether the fused layer and step are on by default: `RNMT_FUSED_RNN=0` turns them off
/// (training also reads `train.fused_rnn`). Read once per process.
pub fn enabled_by_env() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var("RNMT_FUSED_RNN").map_or(true, |v| v != "0"))
}

fn cell_code(cell: CellType) -> i64 {
    match cell {
        CellType::Lstm => 0,
        CellType::Gru => 1,
    }
}

/// Takes a message returned by the C++ side (NULL: none).
fn take_message(msg: *mut c_char) -> Option<String> {
    if msg.is_null() {
        return None;
    }
    let text = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .lines()
        .next()
        .unwrap_or("")
        .to_owned();
    unsafe { rnmt_fused_rnn_free_message(msg) };
    Some(text)
}

/// One decoding step of `cell` in one fused pass, without autograd: `gi [B, G*H]` (the step's
/// input projection, `b_ih` included), `h [B, H]`, `c [B, H]` (LSTM), this layer's `w_hh` and
/// `b_hh`. Returns the new `(h, c)` (`c` `None` for a GRU), or `None` where it does not apply
/// (autograd recording, not float32 on the CPU, or turned off), for libtorch's operations.
pub fn step(
    cell: CellType,
    gi: &Tensor,
    h: &Tensor,
    c: Option<&Tensor>,
    w_hh: &Tensor,
    b_hh: &Tensor,
) -> Option<(Tensor, Option<Tensor>)> {
    if !enabled_by_env()
        || !supports(gi)
        || h.kind() != Kind::Float
        || w_hh.kind() != Kind::Float
        || unsafe { rnmt_grad_enabled() } != 0
        || (cell == CellType::Lstm && c.is_none())
    {
        return None;
    }
    let mut out_h: *mut C_tensor = ptr::null_mut();
    let mut out_c: *mut C_tensor = ptr::null_mut();
    let msg = unsafe {
        rnmt_rnn_step(
            cell_code(cell),
            gi.as_ptr(),
            h.as_ptr(),
            c.map_or(ptr::null(), |c| c.as_ptr()),
            w_hh.as_ptr(),
            b_hh.as_ptr(),
            &mut out_h,
            &mut out_c,
        )
    };
    if let Some(e) = take_message(msg) {
        panic!("fused RNN step: {e}");
    }
    let h = unsafe { Tensor::from_ptr(out_h) };
    let c = (!out_c.is_null()).then(|| unsafe { Tensor::from_ptr(out_c) });
    Some((h, c))
}

/// Runs `cell` over one direction, or two at once. Returns the hidden states `[T, B, H]` of
/// each direction given. Every input is differentiable.
pub fn run(cell: CellType, first: &Direction, second: Option<&Direction>) -> Vec<Tensor> {
    try_run(cell, first, second).unwrap_or_else(|e| panic!("fused RNN: {e}"))
}

/// [`run`], with libtorch's error as a message.
pub fn try_run(
    cell: CellType,
    first: &Direction,
    second: Option<&Direction>,
) -> Result<Vec<Tensor>, String> {
    // Contiguous copies where needed; kept alive until the call returns.
    let prep = |d: &Direction| -> Vec<Tensor> {
        let mut v = vec![d.x.contiguous(), d.h0.contiguous()];
        v.push(match d.c0 {
            Some(c) => c.contiguous(),
            None => Tensor::new(),
        });
        v.extend(d.params.iter().map(|p| p.contiguous()));
        v
    };
    let ptrs = |v: &[Tensor]| -> Vec<*const C_tensor> {
        v.iter()
            .enumerate()
            .map(|(i, t)| {
                if i == 2 && !t.defined() {
                    ptr::null()
                } else {
                    t.as_ptr()
                }
            })
            .collect()
    };
    let a = prep(first);
    let b = second.map(prep);
    let pa = ptrs(&a);
    let pb = b.as_deref().map(ptrs);
    let mut out: [*mut C_tensor; 2] = [ptr::null_mut(); 2];
    let msg = unsafe {
        rnmt_fused_rnn(
            cell_code(cell),
            pa.as_ptr(),
            pb.as_ref().map_or(ptr::null(), |p| p.as_ptr()),
            out.as_mut_ptr(),
        )
    };
    if let Some(text) = take_message(msg) {
        return Err(text);
    }
    let n = if second.is_some() { 2 } else { 1 };
    Ok(out[..n]
        .iter()
        .map(|&p| unsafe { Tensor::from_ptr(p) })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    fn leaf(shape: &[i64], scale: f64) -> Tensor {
        (Tensor::randn(shape, (Kind::Float, Device::Cpu)) * scale).set_requires_grad(true)
    }

    /// Inputs of one direction: `[x, h0, c0, w_ih, w_hh, b_ih, b_hh]`.
    fn inputs(cell: CellType, t: i64, b: i64, i: i64, h: i64) -> Vec<Tensor> {
        let g = match cell {
            CellType::Lstm => 4,
            CellType::Gru => 3,
        };
        vec![
            leaf(&[t, b, i], 1.0),
            leaf(&[b, h], 0.5),
            leaf(&[b, h], 0.5),
            leaf(&[g * h, i], 0.4),
            leaf(&[g * h, h], 0.4),
            leaf(&[g * h], 0.3),
            leaf(&[g * h], 0.3),
        ]
    }

    fn direction(cell: CellType, v: &[Tensor]) -> Direction<'_> {
        Direction {
            x: &v[0],
            h0: &v[1],
            c0: (cell == CellType::Lstm).then_some(&v[2]),
            params: [&v[3], &v[4], &v[5], &v[6]],
        }
    }

    /// libtorch's `lstm`/`gru` over the same inputs: `(outputs [T, B, H], final h, final c)`.
    fn reference(cell: CellType, v: &[Tensor]) -> (Tensor, Tensor, Option<Tensor>) {
        let params = [&v[3], &v[4], &v[5], &v[6]];
        let h0 = v[1].unsqueeze(0);
        match cell {
            CellType::Lstm => {
                let c0 = v[2].unsqueeze(0);
                let (out, h, c) = v[0].lstm(&[&h0, &c0], &params, true, 1, 0.0, true, false, false);
                (out, h.squeeze_dim(0), Some(c.squeeze_dim(0)))
            }
            CellType::Gru => {
                let (out, h) = v[0].gru(&h0, &params, true, 1, 0.0, true, false, false);
                (out, h.squeeze_dim(0), None)
            }
        }
    }

    /// Gradients of `sum(out * weight)` for every input (zeros where the input is unused).
    fn grads(v: &[Tensor], out: &Tensor, weight: &Tensor) -> Vec<Tensor> {
        for t in v {
            t.shallow_clone().zero_grad();
        }
        (out * weight).sum(Kind::Float).backward();
        v.iter().map(grad_or_zeros).collect()
    }

    fn grad_or_zeros(t: &Tensor) -> Tensor {
        let g = t.grad();
        if g.defined() {
            g.copy()
        } else {
            t.zeros_like()
        }
    }

    /// The fused layer equals libtorch's RNN for both cells: outputs, final states (the last
    /// output, and for an LSTM the final cell state through a loss on it), and the gradients
    /// of the input, the initial states and all four weights; on one and on two threads, and
    /// for two directions at once.
    #[test]
    fn fused_layer_matches_libtorch() {
        let threads = tch::get_num_threads();
        for n_threads in [1, 2] {
            tch::set_num_threads(n_threads);
            for cell in [CellType::Lstm, CellType::Gru] {
                tch::manual_seed(5);
                let (t, b, i, h) = (9, 6, 7, 10);
                let v = inputs(cell, t, b, i, h);
                let w = Tensor::randn([t, b, h], (Kind::Float, Device::Cpu));
                let (ref_out, ref_h, _) = reference(cell, &v);
                let g_ref = grads(&v, &ref_out, &w);
                let out = run(cell, &direction(cell, &v), None).remove(0);
                assert_eq!(out.size(), vec![t, b, h]);
                assert!(max_diff(&out, &ref_out) < 1e-5, "{cell:?} outputs differ");
                assert!(max_diff(&out.get(t - 1), &ref_h) < 1e-5, "{cell:?} final h");
                let g = grads(&v, &out, &w);
                for (k, (a, r)) in g.iter().zip(&g_ref).enumerate() {
                    let scale = r.abs().max().double_value(&[]).max(1e-3);
                    let d = max_diff(a, r);
                    assert!(
                        d < 2e-5 * scale,
                        "{cell:?} gradient {k} differs by {d} ({scale})"
                    );
                }
                // Two directions at once: each equals its own single call.
                let v2 = inputs(cell, t, b, i, h);
                let both = run(cell, &direction(cell, &v), Some(&direction(cell, &v2)));
                let single2 = run(cell, &direction(cell, &v2), None).remove(0);
                assert!(max_diff(&both[0], &out) < 1e-6);
                assert!(max_diff(&both[1], &single2) < 1e-6);
                let w2 = Tensor::randn([t, b, h], (Kind::Float, Device::Cpu));
                for x in v.iter().chain(&v2) {
                    x.shallow_clone().zero_grad();
                }
                ((&both[0] * &w).sum(Kind::Float) + (&both[1] * &w2).sum(Kind::Float)).backward();
                let g_both: Vec<Tensor> = v.iter().map(grad_or_zeros).collect();
                let g2_both: Vec<Tensor> = v2.iter().map(grad_or_zeros).collect();
                let g2 = grads(&v2, &single2, &w2);
                for (a, r) in g_both.iter().zip(&g) {
                    assert!(max_diff(a, r) < 1e-5, "{cell:?} paired gradients differ");
                }
                for (a, r) in g2_both.iter().zip(&g2) {
                    assert!(max_diff(a, r) < 1e-5, "{cell:?} paired gradients differ");
                }
            }
        }
        tch::set_num_threads(threads);
    }

    /// A decoding step equals libtorch's `gru_cell` / `lstm_cell`, and is not taken where
    /// autograd records.
    #[test]
    fn step_matches_libtorch_cells() {
        for cell in [CellType::Lstm, CellType::Gru] {
            tch::manual_seed(13);
            let v = inputs(cell, 1, 7, 5, 9);
            let x = v[0].get(0);
            let (h, c) = (&v[1], &v[2]);
            assert!(
                step(cell, &x, h, Some(c), &v[4], &v[6]).is_none(),
                "taken with autograd on"
            );
            tch::no_grad(|| {
                let gi = x.linear(&v[3], Some(&v[5]));
                let (h1, c1) = step(cell, &gi, h, Some(c), &v[4], &v[6]).expect("taken");
                match cell {
                    CellType::Gru => {
                        let r = x.gru_cell(h, &v[3], &v[4], Some(&v[5]), Some(&v[6]));
                        assert!(max_diff(&h1, &r) < 1e-6);
                        assert!(c1.is_none());
                    }
                    CellType::Lstm => {
                        let (rh, rc) = x.lstm_cell(&[h, c], &v[3], &v[4], Some(&v[5]), Some(&v[6]));
                        assert!(max_diff(&h1, &rh) < 1e-6);
                        assert!(max_diff(&c1.unwrap(), &rc) < 1e-6);
                    }
                }
            });
        }
    }

    fn rss_bytes() -> u64 {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// Forward and backward leave nothing behind: the saved activations go with the graph
    /// (the node must not keep its own output, which would tie them in a cycle). 40 rounds of
    /// 13 MB of saved tensors each stay within 200 MB of growth.
    #[test]
    fn saved_tensors_are_freed_with_the_graph() {
        if !std::path::Path::new("/proc/self/statm").exists() {
            eprintln!("skipped: no /proc/self/statm to read the memory from");
            return;
        }
        tch::manual_seed(1);
        let v = inputs(CellType::Lstm, 50, 64, 32, 256);
        let round = || {
            let out = run(CellType::Lstm, &direction(CellType::Lstm, &v), None).remove(0);
            out.sum(Kind::Float).backward();
        };
        round();
        let before = rss_bytes();
        for _ in 0..40 {
            round();
        }
        let grown = rss_bytes().saturating_sub(before);
        assert!(grown < 200 << 20, "memory grew by {} MB", grown >> 20);
    }

    /// Saturated gates (pre-activations in the tens, where exp over- or underflows) match
    /// libtorch and stay finite.
    #[test]
    fn saturated_gates_match_libtorch() {
        for cell in [CellType::Lstm, CellType::Gru] {
            tch::manual_seed(9);
            let v = inputs(cell, 4, 3, 5, 6);
            let big: Vec<Tensor> = v
                .iter()
                .map(|x| (x.detach() * 40.0).set_requires_grad(true))
                .collect();
            let (ref_out, _, _) = reference(cell, &big);
            let out = run(cell, &direction(cell, &big), None).remove(0);
            assert!(
                max_diff(&out, &ref_out) < 1e-5,
                "{cell:?} saturated outputs differ"
            );
            assert!(bool::try_from(out.isfinite().all()).unwrap());
        }
    }
}
