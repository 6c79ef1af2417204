//! A fully connected layer with Xavier-initialized weights.
use tch::{nn, Tensor};

use super::init;

/// `y = x W^T + b`; parameters `<path>.weight [out, in]` and `<path>.bias [out]`.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(p: &nn::Path, input: i64, output: i64, bias: bool) -> Self {
        let weight = p.var_copy("weight", &init::xavier_uniform(output, input, p.device()));
        let bias = bias.then(|| p.zeros("bias", &[output]));
        Linear { weight, bias }
    }

    /// `[.., in]` to `[.., out]`.
    pub fn forward(&self, xs: &Tensor) -> Tensor {
        xs.linear(&self.weight, self.bias.as_ref())
    }
}
