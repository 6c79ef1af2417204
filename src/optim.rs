//! Adam (Kingma & Ba 2015) with state rnmt owns, and gradient clipping by global norm.
//!
//! tch's `nn::Optimizer` wraps libtorch's C++ optimizers, whose moments cannot be saved; exact
//! resume needs them, so the update is written here: for every parameter `θ` with gradient `g`
//! at update `t`,
//!
//! ```text
//! m ← β1 m + (1 − β1) g          v ← β2 v + (1 − β2) g²
//! θ ← θ − lr · (m / (1 − β1^t)) / (sqrt(v / (1 − β2^t)) + ε) − lr · λ θ
//! ```
//!
//! with decoupled weight decay `λ` (AdamW, Loshchilov & Hutter 2019). The moments are saved as
//! `m.<name>` / `v.<name>` in a safetensors file.
//!
//! **Exploding gradients.** Backpropagation through time multiplies by the recurrent Jacobian
//! once per step, so gradients can grow exponentially with sentence length (Pascanu et al.
//! 2013). [`Adam::clip_grad_norm`] rescales all gradients together when their global L2 norm
//! exceeds a threshold, keeping the direction of the update.
use std::collections::HashMap;
use std::path::Path;

use std::ffi::{c_char, CStr};

use tch::{nn::VarStore, Kind, Tensor};
use torch_sys::C_tensor;

use crate::error::{Error, Result};

extern "C" {
    fn rnmt_fused_adamw(
        params: *const *const C_tensor,
        grads: *const *const C_tensor,
        m: *const *const C_tensor,
        v: *const *const C_tensor,
        steps: *const *const C_tensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
    ) -> *mut c_char;
    fn rnmt_adam_free_message(message: *mut c_char);
}

/// Adam hyper-parameters.
#[derive(Debug, Clone, Copy)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl From<&crate::config::TrainConfig> for AdamConfig {
    fn from(t: &crate::config::TrainConfig) -> Self {
        AdamConfig {
            lr: t.lr,
            beta1: t.adam_beta1,
            beta2: t.adam_beta2,
            eps: t.adam_eps,
            weight_decay: t.weight_decay,
        }
    }
}

impl Default for AdamConfig {
    /// The training defaults ([`crate::config::TrainConfig`] holds them).
    fn default() -> Self {
        (&crate::config::TrainConfig::default()).into()
    }
}

/// Adam over the trainable variables of a var store, in a stable (name-sorted) order.
#[derive(Debug)]
pub struct Adam {
    names: Vec<String>,
    params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates done so far (`t`).
    pub steps: u64,
    pub config: AdamConfig,
    /// Take the step with libtorch's fused multi-tensor AdamW kernel (`csrc/adam.cpp`, the
    /// default) instead of elementwise operations per parameter; the same update up to float
    /// rounding (a test compares the two).
    pub fused: bool,
}

impl Adam {
    pub fn new(vs: &VarStore, config: AdamConfig) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let m = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let v = vars.iter().map(|(_, t)| t.zeros_like()).collect();
        let (names, params) = vars.into_iter().unzip();
        Adam {
            names,
            params,
            m,
            v,
            steps: 0,
            config,
            fused: true,
        }
    }

    /// The gradients of the parameters, in their order (tensors sharing the gradients'
    /// storage; undefined for a parameter without one).
    pub fn grads(&self) -> Vec<Tensor> {
        self.params.iter().map(Tensor::grad).collect()
    }

    /// Gives every parameter a (zero) gradient, so that [`Adam::grads`] lists only defined
    /// tensors, the same on every process of a data-parallel run.
    pub fn define_grads(&mut self) {
        if self.params.is_empty() {
            return;
        }
        let zero: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| (p * 0.0).sum(Kind::Float))
            .collect();
        Tensor::stack(&zero, 0).sum(Kind::Float).backward();
        self.zero_grad();
    }

    /// The moments `m` then `v` of every parameter (tensors sharing their storage), to send
    /// to the other processes of a data-parallel run.
    pub fn state_tensors(&self) -> Vec<Tensor> {
        self.m
            .iter()
            .chain(&self.v)
            .map(Tensor::shallow_clone)
            .collect()
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Global L2 norm of all gradients; when it exceeds `max_norm > 0`, scales them down to
    /// `max_norm`. Returns the norm before clipping (NaN or infinite if a gradient is).
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
        let total = Tensor::stack(&norms, 0).norm().double_value(&[]);
        if max_norm > 0.0 && total.is_finite() && total > max_norm {
            let scale = max_norm / (total + 1e-6);
            for mut g in grads {
                let _ = g.g_mul_scalar_(scale);
            }
        }
        total
    }

    /// Backpropagates `loss` into fresh gradients, clips them to `max_norm` (0: no clipping)
    /// and takes a step. Returns the gradient norm before clipping; when it is NaN or
    /// infinite, no step is taken.
    pub fn backward_step(&mut self, loss: &Tensor, max_norm: f64) -> f64 {
        self.zero_grad();
        loss.backward();
        let norm = self.clip_grad_norm(max_norm);
        if norm.is_finite() {
            self.step();
        }
        norm
    }

    /// One update with the current gradients.
    pub fn step(&mut self) {
        if self.fused {
            match self.fused_step() {
                Ok(()) => return,
                Err(e) => {
                    // Not expected; the elementwise step below is the same update.
                    eprintln!("warning: fused Adam failed, using the elementwise step: {e}");
                    self.fused = false;
                }
            }
        }
        self.steps += 1;
        let c = self.config;
        let t = self.steps as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        tch::no_grad(|| {
            for ((p, m), v) in self.params.iter_mut().zip(&mut self.m).zip(&mut self.v) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                let _ = m.g_mul_scalar_(c.beta1).g_add_(&(&g * (1.0 - c.beta1)));
                let _ = v
                    .g_mul_scalar_(c.beta2)
                    .g_add_(&(&g * &g * (1.0 - c.beta2)));
                if c.weight_decay > 0.0 {
                    let _ = p.g_mul_scalar_(1.0 - c.lr * c.weight_decay);
                }
                let denom = (&*v / bc2).sqrt() + c.eps;
                let _ = p.g_sub_(&((&*m / denom) * (c.lr / bc1)));
            }
        });
    }

    /// [`Adam::step`] through libtorch's `_fused_adamw_` (see [`Adam::fused`]).
    fn fused_step(&mut self) -> std::result::Result<(), String> {
        let c = self.config;
        let mut ptrs: [Vec<*const C_tensor>; 5] = Default::default();
        let mut keep = Vec::new(); // the gradients and step counters the pointers point into
        for ((p, m), v) in self.params.iter().zip(&self.m).zip(&self.v) {
            let g = p.grad();
            if !g.defined() {
                continue;
            }
            // The kernel's bias corrections read the number of this update (1 for the first).
            let step = Tensor::full([], (self.steps + 1) as f64, (Kind::Float, p.device()));
            ptrs[0].push(p.as_ptr());
            ptrs[1].push(g.as_ptr());
            ptrs[2].push(m.as_ptr());
            ptrs[3].push(v.as_ptr());
            ptrs[4].push(step.as_ptr());
            keep.push((g, step));
        }
        let n = ptrs[0].len();
        // SAFETY: five arrays of `n` pointers to live tensors (`keep`, `self`); the shim
        // catches every C++ exception and returns a message it allocated, or NULL.
        let message = unsafe {
            rnmt_fused_adamw(
                ptrs[0].as_ptr(),
                ptrs[1].as_ptr(),
                ptrs[2].as_ptr(),
                ptrs[3].as_ptr(),
                ptrs[4].as_ptr(),
                n,
                c.lr,
                c.beta1,
                c.beta2,
                c.weight_decay,
                c.eps,
            )
        };
        drop(keep);
        if message.is_null() {
            self.steps += 1;
            return Ok(());
        }
        // SAFETY: a NUL-terminated string from the shim, released once by the shim.
        let text = unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned();
        unsafe { rnmt_adam_free_message(message) };
        Err(text)
    }

    /// Writes the moments to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut named: Vec<(String, &Tensor)> = Vec::new();
        for (i, n) in self.names.iter().enumerate() {
            named.push((format!("m.{n}"), &self.m[i]));
            named.push((format!("v.{n}"), &self.v[i]));
        }
        Tensor::write_safetensors(&named, path)?;
        Ok(())
    }

    /// Reads the moments back; every parameter must be present with its shape.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let stored: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
        let bad = |what: String| Err(Error::ModelDir(format!("{}: {what}", path.display())));
        for (i, n) in self.names.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let key = format!("{prefix}.{n}");
                let Some(t) = stored.get(&key) else {
                    return bad(format!("optimizer state lacks {key}"));
                };
                if t.size() != slot.size() {
                    return bad(format!(
                        "optimizer state {key} has shape {:?}, expected {:?}",
                        t.size(),
                        slot.size()
                    ));
                }
                tch::no_grad(|| slot.copy_(&t.to_kind(Kind::Float)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// Same trajectory as libtorch's own Adam on a small quadratic.
    #[test]
    fn matches_libtorch_adam() {
        use tch::nn::OptimizerConfig;
        let cfg = AdamConfig {
            lr: 0.1,
            ..AdamConfig::default()
        };
        let run = |ours: bool| -> Vec<f32> {
            let vs = VarStore::new(Device::Cpu);
            let x = vs
                .root()
                .var_copy("x", &Tensor::from_slice(&[1.0f32, -2.0, 3.0]));
            let target = Tensor::from_slice(&[0.5f32, 0.5, 0.5]);
            let mut a = Adam::new(&vs, cfg);
            let mut b = tch::nn::Adam::default().build(&vs, 0.1).unwrap();
            for _ in 0..20 {
                let loss = (&x - &target).pow_tensor_scalar(2).sum(Kind::Float);
                if ours {
                    a.zero_grad();
                    loss.backward();
                    a.step();
                } else {
                    b.zero_grad();
                    loss.backward();
                    b.step();
                }
            }
            Vec::try_from(&x).unwrap()
        };
        let (a, b) = (run(true), run(false));
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    /// The fused kernel takes the elementwise update's steps, with and without weight decay.
    #[test]
    fn fused_step_matches_the_elementwise_step() {
        for weight_decay in [0.0, 0.01] {
            let cfg = AdamConfig {
                lr: 0.05,
                weight_decay,
                ..AdamConfig::default()
            };
            let run = |fused: bool| -> (Vec<f32>, Vec<f32>, u64) {
                let vs = VarStore::new(Device::Cpu);
                let x = vs
                    .root()
                    .var_copy("x", &Tensor::from_slice(&[1.0f32, -2.0, 3.0, 0.5]));
                let y = vs.root().var_copy("y", &Tensor::from_slice(&[0.3f32, 0.7]));
                let mut a = Adam::new(&vs, cfg);
                a.fused = fused;
                for i in 0..25 {
                    a.zero_grad();
                    let loss = (&x - 0.5).pow_tensor_scalar(2).sum(Kind::Float)
                        + (&y * (i as f64 * 0.1)).sin().sum(Kind::Float);
                    loss.backward();
                    a.step();
                }
                assert_eq!(a.fused, fused, "the fused step fell back");
                let m: Vec<f32> = Vec::try_from(&a.m[0]).unwrap();
                (Vec::try_from(&x).unwrap(), m, a.steps)
            };
            let (xa, ma, sa) = run(true);
            let (xb, mb, sb) = run(false);
            assert_eq!(sa, sb);
            for (a, b) in xa.iter().zip(&xb).chain(ma.iter().zip(&mb)) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{xa:?} vs {xb:?}");
            }
            assert!((xa[0] - 1.0).abs() > 0.1, "the parameters moved");
        }
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let vs = VarStore::new(Device::Cpu);
        let x = vs.root().var_copy("x", &Tensor::from_slice(&[3.0f32, 4.0]));
        let mut a = Adam::new(
            &vs,
            AdamConfig {
                lr: 0.1,
                ..AdamConfig::default()
            },
        );
        (&x * &x / 2.0).sum(Kind::Float).backward(); // grad = x, norm 5
        let n = a.clip_grad_norm(1.0);
        assert!((n - 5.0).abs() < 1e-5);
        let g: Vec<f32> = Vec::try_from(x.grad()).unwrap();
        assert!(
            (g[0] - 0.6).abs() < 1e-4 && (g[1] - 0.8).abs() < 1e-4,
            "{g:?}"
        );
    }
}
