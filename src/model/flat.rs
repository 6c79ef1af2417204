//! One contiguous weight buffer for the fused cuDNN RNN kernels (PyTorch's
//! `nn.RNNBase.flatten_parameters`).
//!
//! cuDNN's RNN reads all weights of a stacked (bidirectional) RNN from one flat buffer in its
//! own layout. When the weights are separate tensors, libtorch copies them into a new buffer
//! at every call and warns "RNN module weights are not part of single contiguous chunk of
//! memory" (about 3,500 times in a 6-minute training run on an H100). libtorch's
//! `_cudnn_rnn_flatten_weight` allocates the buffer once, copies the weights in, and turns
//! each weight tensor into a view of it in place (`set_`), so the parameters keep their
//! identity: the var store, the checkpoint names, the optimizer's references and in-place
//! updates (`copy_` on load, Adam's `sub_`) all see the same tensors, now backed by the
//! buffer. Nothing happens on the CPU, whose kernels take the tensors as they are.
use tch::{Kind, Tensor};

use crate::config::CellType;

/// The shape of a fused RNN call, as cuDNN needs it to lay out its weight buffer.
#[derive(Debug, Clone, Copy)]
pub struct RnnShape {
    pub cell: CellType,
    /// Input width of the first layer.
    pub input: i64,
    pub hidden: i64,
    pub layers: i64,
    pub bidirectional: bool,
}

impl RnnShape {
    /// cuDNN's RNN mode as libtorch numbers it (`RNN_RELU` 0, `RNN_TANH` 1, `LSTM` 2, `GRU` 3).
    fn mode(&self) -> i64 {
        match self.cell {
            CellType::Lstm => 2,
            CellType::Gru => 3,
        }
    }
}

/// Moves `params` into one flat cuDNN weight buffer when they live on a CUDA device and cuDNN
/// is available; returns the buffer (`None` elsewhere, where nothing changes).
///
/// `params` is libtorch's flat list for a fused `lstm`/`gru` call with biases: per layer and
/// direction `[w_ih [gates * hidden, in], w_hh [gates * hidden, hidden], b_ih [gates * hidden],
/// b_hh [gates * hidden]]`, forward direction first. A failure (a cuDNN without this layout,
/// say) is reported once on stderr and leaves the weights as they were: training still works,
/// with libtorch's per-call copy.
pub fn flatten_for_cudnn(params: &[&Tensor], shape: RnnShape) -> Option<Tensor> {
    let first = params.first()?;
    if !first.device().is_cuda() || !tch::Cuda::cudnn_is_available() {
        return None;
    }
    if first.kind() != Kind::Float {
        return None;
    }
    let result = tch::no_grad(|| {
        Tensor::f_internal_cudnn_rnn_flatten_weight(
            params,
            4, // weights per layer and direction: w_ih, w_hh, b_ih, b_hh
            shape.input,
            shape.mode(),
            shape.hidden,
            0, // no projections
            shape.layers,
            true, // batch first
            shape.bidirectional,
        )
    });
    match result {
        Ok(buffer) => Some(buffer),
        Err(e) => {
            let first_line = e.to_string();
            let first_line = first_line.lines().next().unwrap_or("");
            eprintln!(
                "rnmt: warning: cannot flatten the RNN weights for cuDNN ({first_line}); \
                 libtorch will copy them at every call"
            );
            None
        }
    }
}

/// Whether every tensor of `params` lies inside `buffer`'s memory (what
/// [`flatten_for_cudnn`] promises; for tests and checks).
pub fn all_inside(params: &[&Tensor], buffer: &Tensor) -> bool {
    let start = buffer.data_ptr() as usize;
    let end = start + buffer.numel() * buffer.kind().elt_size_in_bytes();
    params.iter().all(|p| {
        let at = p.data_ptr() as usize;
        at >= start && at + p.numel() * p.kind().elt_size_in_bytes() <= end
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn nothing_changes_on_the_cpu() {
        let w = Tensor::ones([12, 5], (Kind::Float, Device::Cpu));
        let shape = RnnShape {
            cell: CellType::Gru,
            input: 5,
            hidden: 4,
            layers: 1,
            bidirectional: false,
        };
        let before = w.data_ptr();
        assert!(flatten_for_cudnn(&[&w, &w, &w, &w], shape).is_none());
        assert_eq!(w.data_ptr(), before);
    }

    #[test]
    fn inside_means_inside() {
        let buffer = Tensor::zeros([10], (Kind::Float, Device::Cpu));
        let part = buffer.narrow(0, 6, 4);
        let other = Tensor::zeros([4], (Kind::Float, Device::Cpu));
        assert!(all_inside(&[&part], &buffer));
        assert!(!all_inside(&[&part, &other], &buffer));
        assert!(!all_inside(&[&buffer.narrow(0, 0, 10)], &part));
    }
}
