//! The output layer and the label-smoothed cross-entropy as one fused, chunked computation
//! with a hand-written backward (`train.fused_loss`, on by default).
//!
//! The plain path (`logits -> log_softmax -> gather / mean`, then autograd) materializes the
//! `[tokens, vocab]` logits, log-probabilities and their gradients as separate tensors, each
//! a pass over memory far larger than the caches (2000 tokens x 4000 words x 4 bytes = 32 MB),
//! and autograd adds a zeroed scatter for the gather and an expanded gradient for the mean.
//! Here the rows are processed in chunks of about 1M logits (4 MB, cache-resident), and for
//! each chunk the forward and the backward happen together, in place:
//!
//! ```text
//! z = x W^T + b                        logits of the chunk
//! lse = log sum_j exp z_j              (max-shifted)
//! nll = lse - z_gold                   -log p(gold)
//! smooth = lse - mean_j z_j            mean_j -log p_j
//! loss = (1 - eps) nll + eps smooth    PyTorch's label smoothing
//! dL/dz = softmax(z) - (1 - eps) onehot(gold) - eps / V
//! dW += dz^T x,  db += sum_rows dz,  dx = dz W
//! ```
//!
//! The gradients enter autograd through a surrogate: `loss = value + s - s.detach()` with
//! `s = <x, dx> + <W, dW> + <b, db>`, whose value is the loss and whose gradient with respect
//! to `x`, `W` and `b` is exactly `dx`, `dW` and `db`; so callers backpropagate it like any
//! loss (scaling it scales the gradients, accumulation and tied weights work unchanged). In
//! evaluation (no gradient needed) the backward part is skipped. The result equals the plain
//! path's up to float rounding (a test checks loss and gradients).
use tch::{Kind, Tensor};

/// Logits per chunk (4 MB in float32).
const CHUNK_LOGITS: i64 = 1 << 20;

/// Sums over the rows, as [`crate::model::Loss`] holds them.
#[derive(Debug)]
pub struct OutputLoss {
    /// `(1 - eps) * nll + eps * smooth`, summed: a scalar to backpropagate.
    pub loss: Tensor,
    /// `-log p(gold)`, summed (no gradient).
    pub nll: Tensor,
}

/// `x [n, d]` with zero rows appended up to the next multiple of `multiple`: so that oneDNN,
/// which compiles a kernel for every new matrix shape, meets only a few shapes.
pub fn pad_rows(x: &Tensor, multiple: i64) -> Tensor {
    let n = x.size()[0];
    let padded = (n + multiple - 1) / multiple * multiple;
    if padded == n {
        return x.shallow_clone();
    }
    let zeros = x.new_zeros([padded - n, x.size()[1]], (x.kind(), x.device()));
    Tensor::cat(&[x, &zeros], 0)
}

/// Fused output layer and label-smoothed cross-entropy.
///
/// * `x`: `[n, hidden]` (dropout already applied), float32
/// * `weight`: `[vocab, hidden]`, `bias`: `[vocab]`
/// * `gold`: `[n]` int64, every id in `0..vocab`
/// * `eps`: label smoothing in `[0, 1)`
///
/// Gradients are computed when `x`, `weight` or `bias` requires one.
pub fn fused_output_loss(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    gold: &Tensor,
    eps: f64,
) -> OutputLoss {
    let (n, hidden) = (x.size()[0], x.size()[1]);
    let vocab = weight.size()[0];
    assert!(
        weight.size() == [vocab, hidden] && gold.size() == [n],
        "fused_output_loss: x {:?}, weight {:?} and gold {:?} disagree",
        x.size(),
        weight.size(),
        gold.size()
    );
    let need_grad =
        x.requires_grad() || weight.requires_grad() || bias.is_some_and(Tensor::requires_grad);
    let rows = (CHUNK_LOGITS / vocab.max(1)).clamp(16, n.max(16));
    let opts = (Kind::Float, x.device());
    // A bfloat16 or float16 `x` (the model ran under autocast) selects low-precision matrix
    // products; everything else stays float32.
    let low = matches!(x.kind(), Kind::BFloat16 | Kind::Half).then(|| x.kind());
    let (value, nll, grads) = tch::no_grad(|| {
        let xd = x.detach();
        let w = match low {
            Some(k) => weight.detach().to_kind(k),
            None => weight.detach().to_kind(Kind::Float),
        };
        let wt = w.tr();
        let b = bias.map(|b| b.detach().to_kind(Kind::Float));
        let mut nll_sum = Tensor::zeros([], opts);
        let mut smooth_sum = Tensor::zeros([], opts);
        let grads = need_grad.then(|| {
            (
                Tensor::empty([n, hidden], (x.kind(), x.device())),
                Tensor::zeros([vocab, hidden], opts),
                Tensor::zeros([vocab], opts),
            )
        });
        // In low precision (oneDNN), every matrix product has one of two shapes, whatever
        // the batch: a new shape costs oneDNN a kernel compilation, which would cost more
        // than the product. So the rows are padded to whole chunks (padding rows take no
        // part in the sums and get dL/dz = 0), dL/dz of every chunk is kept (in `x`'s type)
        // and dW comes from one product over all rows at the end (a few shapes: the padded
        // row counts), rounded once.
        let (xd, chunk_rows) = match low {
            Some(_) => (pad_rows(&xd, rows), rows),
            None => (xd, 0),
        };
        let dz_all = (low.is_some() && grads.is_some())
            .then(|| Tensor::empty([xd.size()[0], vocab], (x.kind(), x.device())));
        let mut start = 0;
        while start < n {
            let len = rows.min(n - start);
            let xc = xd.narrow(0, start, len.max(chunk_rows));
            let g = gold.narrow(0, start, len).unsqueeze(1);
            let z_all = match (&b, low) {
                (Some(b), Some(_)) => xc.mm(&wt).to_kind(Kind::Float) + b,
                (Some(b), None) => b.addmm(&xc, &wt).to_kind(Kind::Float),
                (None, _) => xc.mm(&wt).to_kind(Kind::Float),
            };
            let mut z = z_all.narrow(0, 0, len);
            let max = z.amax([1].as_slice(), true);
            let _ = z.g_sub_(&max);
            let z_sum = z.sum_dim_intlist([1].as_slice(), false, Kind::Float);
            let z_gold = z.gather(1, &g, false).squeeze_dim(1);
            let _ = z.exp_();
            let s = z.sum_dim_intlist([1].as_slice(), true, Kind::Float);
            let lse = s.log().squeeze_dim(1);
            nll_sum += (&lse - &z_gold).sum(Kind::Float);
            smooth_sum += (&lse - z_sum / vocab as f64).sum(Kind::Float);
            if let Some((dx, dw, db)) = &grads {
                // z becomes dL/dz in place: softmax - eps / V - (1 - eps) at the gold word.
                let _ = z.g_div_(&s).g_sub_scalar_(eps / vocab as f64);
                let _ = z.scatter_add_(1, &g, &Tensor::full([len, 1], eps - 1.0, opts));
                let mut db = db.shallow_clone();
                let _ = db.g_add_(&z.sum_dim_intlist([0].as_slice(), false, Kind::Float));
                let mut dx_c = dx.narrow(0, start, len);
                match &dz_all {
                    Some(all) => {
                        if len < chunk_rows {
                            let _ = z_all.narrow(0, len, chunk_rows - len).fill_(0.0);
                        }
                        let mut dz = all.narrow(0, start, chunk_rows);
                        dz.copy_(&z_all);
                        dx_c.copy_(&dz.mm(&w).narrow(0, 0, len));
                    }
                    None => {
                        let mut dw = dw.shallow_clone();
                        let _ = dw.addmm_(&z.tr(), &xc.to_kind(Kind::Float));
                        dx_c.copy_(&z.mm(&w));
                    }
                }
            }
            start += len;
        }
        if let (Some(all), Some((_, dw, _))) = (&dz_all, &grads) {
            let mut dw = dw.shallow_clone();
            dw.copy_(&all.tr().mm(&xd));
        }
        let value = &nll_sum * (1.0 - eps) + &smooth_sum * eps;
        (value, nll_sum, grads)
    });
    let loss = match grads {
        Some((dx, dw, db)) => {
            let mut s = (x * dx).sum(Kind::Float);
            if weight.requires_grad() {
                s += (weight * dw.to_kind(weight.kind())).sum(Kind::Float);
            }
            if let Some(b) = bias.filter(|b| b.requires_grad()) {
                s += (b * db.to_kind(b.kind())).sum(Kind::Float);
            }
            value + (&s - s.detach())
        }
        None => value,
    };
    OutputLoss { loss, nll }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The plain path: logits, log-softmax, gather and mean, through autograd.
    fn plain(x: &Tensor, w: &Tensor, b: Option<&Tensor>, gold: &Tensor, eps: f64) -> Tensor {
        let lp = x.linear(w, b).log_softmax(-1, Kind::Float);
        let nll = -lp.gather(1, &gold.unsqueeze(1), false).sum(Kind::Float);
        let smooth = -lp.mean_dim(-1, false, Kind::Float).sum(Kind::Float);
        nll * (1.0 - eps) + smooth * eps
    }

    fn leaf(t: Tensor) -> Tensor {
        t.set_requires_grad(true)
    }

    /// `x [n, h]`, `W [v, h]`, `b [v]` and gold ids `[n]`, drawn from the current seed.
    fn random_inputs(n: i64, h: i64, v: i64) -> (Tensor, Tensor, Tensor, Tensor) {
        let x = Tensor::randn([n, h], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([v, h], (Kind::Float, Device::Cpu)) * 0.3;
        let b = Tensor::randn([v], (Kind::Float, Device::Cpu));
        let gold = Tensor::randint(v, [n], (Kind::Int64, Device::Cpu));
        (x, w, b, gold)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// Loss, nll and the gradients of x, W and b equal the plain path's to float rounding,
    /// over several chunks (the last one partial), with and without smoothing and bias.
    #[test]
    fn matches_the_plain_path() {
        tch::manual_seed(3);
        let (n, h, v) = (700, 24, 5000); // 209 rows per chunk: 4 chunks
        for (eps, with_bias) in [(0.1, true), (0.0, true), (0.3, false)] {
            let (x0, w0, b0, gold) = random_inputs(n, h, v);
            let run = |fused: bool| {
                let (x, w, b) = (leaf(x0.copy()), leaf(w0.copy()), leaf(b0.copy()));
                let b_opt = with_bias.then_some(&b);
                let loss = if fused {
                    fused_output_loss(&x, &w, b_opt, &gold, eps).loss
                } else {
                    plain(&x, &w, b_opt, &gold, eps)
                };
                (&loss * 0.01).backward();
                let db = with_bias.then(|| b.grad());
                (loss.double_value(&[]), x.grad(), w.grad(), db)
            };
            let (l1, dx1, dw1, db1) = run(false);
            let (l2, dx2, dw2, db2) = run(true);
            assert!((l1 - l2).abs() <= 1e-5 * l1.abs(), "loss {l1} vs {l2}");
            for (a, b) in [(&dx1, &dx2), (&dw1, &dw2)] {
                let scale = a.abs().max().double_value(&[]);
                assert!(max_diff(a, b) <= 1e-4 * scale, "gradient differs");
            }
            if let (Some(a), Some(b)) = (db1, db2) {
                let scale = a.abs().max().double_value(&[]);
                assert!(max_diff(&a, &b) <= 1e-4 * scale, "bias gradient differs");
            }
            let nll = fused_output_loss(&x0, &w0, Some(&b0), &gold, eps).nll;
            let lp = x0.linear(&w0, Some(&b0)).log_softmax(-1, Kind::Float);
            let want = -lp.gather(1, &gold.unsqueeze(1), false).sum(Kind::Float);
            assert!(max_diff(&nll, &want) <= 1e-5 * want.abs().double_value(&[]));
        }
    }

    /// A bfloat16 `x` (the CPU's `--precision bf16`) runs the products in bfloat16 on padded
    /// chunks: loss within 1% and gradients within 3% (of their largest entry) of the float32
    /// path, over several chunks with a partial last one; nll is still float32.
    #[test]
    fn bfloat16_matches_the_float32_path_within_rounding() {
        tch::manual_seed(4);
        let (n, h, v) = (700, 24, 5000);
        let (x0, w0, b0, gold) = random_inputs(n, h, v);
        let run = |low: bool| {
            let (x, w, b) = (leaf(x0.copy()), leaf(w0.copy()), leaf(b0.copy()));
            let xin = if low {
                x.to_kind(Kind::BFloat16)
            } else {
                x.shallow_clone()
            };
            let out = fused_output_loss(&xin, &w, Some(&b), &gold, 0.1);
            assert_eq!(out.nll.kind(), Kind::Float);
            (&out.loss * 0.01).backward();
            (out.loss.double_value(&[]), x.grad(), w.grad(), b.grad())
        };
        let (l1, dx1, dw1, db1) = run(false);
        let (l2, dx2, dw2, db2) = run(true);
        assert!((l1 - l2).abs() <= 1e-2 * l1.abs(), "loss {l1} vs {l2}");
        assert_eq!(dx2.kind(), Kind::Float);
        for (a, b) in [(&dx1, &dx2), (&dw1, &dw2), (&db1, &db2)] {
            let scale = a.abs().max().double_value(&[]);
            assert!(max_diff(a, b) <= 3e-2 * scale, "gradient differs");
        }
    }

    /// Without a gradient to compute the loss is the same and nothing requires a gradient.
    #[test]
    fn evaluation_skips_the_backward() {
        let x = Tensor::randn([50, 8], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([30, 8], (Kind::Float, Device::Cpu));
        let gold = Tensor::randint(30, [50], (Kind::Int64, Device::Cpu));
        let out = fused_output_loss(&x, &w, None, &gold, 0.1);
        assert!(!out.loss.requires_grad());
        let want = plain(&x, &w, None, &gold, 0.1).double_value(&[]);
        assert!((out.loss.double_value(&[]) - want).abs() < 1e-4 * want.abs());
    }
}
