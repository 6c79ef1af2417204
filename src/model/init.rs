//! Weight initialization.
//!
//! * **Xavier/Glorot uniform** (Glorot & Bengio 2010) for feed-forward weights (embeddings,
//!   input-to-hidden RNN weights, attention and output projections): `U(-a, a)` with
//!   `a = sqrt(6 / (fan_in + fan_out))` keeps the activation variance roughly constant
//!   through a layer in both directions.
//! * **Orthogonal** (Saxe et al. 2014) for recurrent hidden-to-hidden weights, one orthogonal
//!   `[hidden, hidden]` block per gate: repeated multiplication by an orthogonal matrix neither
//!   shrinks nor grows the state, which fights vanishing and exploding gradients in
//!   backpropagation through time.
//! * **Forget-gate bias 1** for LSTMs (Gers et al. 2000; Jozefowicz et al. 2015): the cell
//!   starts by remembering, so gradients flow over long spans from the first update.
//! * Other biases start at zero.
use tch::{Device, Kind, Tensor};

/// A `[rows, cols]` Xavier-uniform matrix.
pub fn xavier_uniform(rows: i64, cols: i64, device: Device) -> Tensor {
    let a = (6.0 / (rows + cols) as f64).sqrt();
    Tensor::empty([rows, cols], (Kind::Float, device)).uniform_(-a, a)
}

/// A `[rows, cols]` matrix with orthonormal rows or columns (whichever are fewer), drawn as
/// the Q factor of a Gaussian matrix with the signs fixed by R's diagonal (uniform over the
/// orthogonal group).
pub fn orthogonal(rows: i64, cols: i64, device: Device) -> Tensor {
    let (r, c) = if rows < cols {
        (cols, rows)
    } else {
        (rows, cols)
    };
    let a = Tensor::randn([r, c], (Kind::Float, Device::Cpu));
    let (q, rr) = Tensor::linalg_qr(&a, "reduced");
    let q = q * rr.diagonal(0, 0, 1).sign().unsqueeze(0);
    let q = if rows < cols { q.tr() } else { q };
    q.contiguous().to_device(device)
}

/// A recurrent weight `[gates * hidden, hidden]` made of one orthogonal block per gate.
pub fn recurrent(gates: i64, hidden: i64, device: Device) -> Tensor {
    let blocks: Vec<Tensor> = (0..gates)
        .map(|_| orthogonal(hidden, hidden, device))
        .collect();
    Tensor::cat(&blocks, 0)
}

/// Biases `[gates * hidden]`: zero, except the LSTM forget gate (second block in PyTorch's
/// `i, f, g, o` order), set to `forget_bias`.
pub fn gate_bias(gates: i64, hidden: i64, forget_bias: Option<f64>, device: Device) -> Tensor {
    let b = Tensor::zeros([gates * hidden], (Kind::Float, device));
    if let Some(v) = forget_bias {
        let _ = b.narrow(0, hidden, hidden).fill_(v);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orthogonal_is_orthogonal() {
        tch::manual_seed(1);
        for (r, c) in [(8, 8), (12, 5), (5, 12)] {
            let q = orthogonal(r, c, Device::Cpu);
            let g = if r >= c {
                q.tr().matmul(&q)
            } else {
                q.matmul(&q.tr())
            };
            let n = r.min(c);
            let eye = Tensor::eye(n, (Kind::Float, Device::Cpu));
            let err = (g - eye).abs().max().double_value(&[]);
            assert!(err < 1e-5, "{r}x{c}: {err}");
        }
    }

    #[test]
    fn forget_bias_is_second_block() {
        let b = gate_bias(4, 3, Some(1.0), Device::Cpu);
        let v: Vec<f32> = Vec::try_from(&b).unwrap();
        assert_eq!(v, [0., 0., 0., 1., 1., 1., 0., 0., 0., 0., 0., 0.]);
        let xa = xavier_uniform(30, 50, Device::Cpu);
        let a = (6.0f64 / 80.0).sqrt();
        assert!(xa.abs().max().double_value(&[]) <= a);
    }
}
