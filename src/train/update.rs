//! One update: the batches of this rank, forward and backward under the update's seeds, the
//! gradients summed over the ranks, the divergence checks, clipping and the Adam step.
use std::time::Instant;

use super::Trainer;
use crate::batch::{Batch, Example};
use crate::error::{Error, Result};

impl Trainer<'_> {
    /// Updates over several batches (of one update, in order): those of this rank (see the
    /// module docs of [`crate::train`]) are computed here, the gradients summed over the
    /// ranks. `progress` is the time budget's fraction the ranks agreed on. Returns
    /// (per-token loss over all the batches, their target tokens, seconds).
    pub(super) fn update_batches(
        &mut self,
        batches: &[Vec<Example>],
        progress: Option<f64>,
    ) -> Result<(f64, usize, f64)> {
        let start = Instant::now();
        let (rank, world) = (self.ranks.rank(), self.ranks.world_size());
        if self.ranks.is_group() && !self.grads_ready {
            self.opt.define_grads();
            self.grads_ready = true;
        }
        if let Some(c) = &self.clock {
            self.state.schedule.budget_seconds = c.seconds();
        }
        let t = &self.config.train;
        self.opt.config.lr = self
            .schedule
            .lr_at(&self.state.schedule, self.state.step, progress);
        let tokens: usize = batches.iter().flatten().map(|e| e.tgt.len() + 1).sum();
        let total = tokens.max(1) as f64;
        self.opt.zero_grad();
        let mut loss_sum = 0.0;
        for (p, batch) in batches.iter().enumerate().skip(rank).step_by(world) {
            tch::manual_seed(seed_for_batch(t.seed, self.state.step, p));
            let examples: Vec<&Example> = batch.iter().collect();
            let batch = Batch::new(&examples, self.device);
            let out = self.precision.run(self.device, || {
                self.model
                    .loss(&batch, true, t.teacher_forcing, t.label_smoothing)
            })?;
            loss_sum += out.loss.double_value(&[]);
            (out.loss / total).backward();
        }
        if self.ranks.is_group() {
            // On the gradients' device: NCCL moves only CUDA tensors.
            let sum = tch::Tensor::from_slice(&[loss_sum]).to_device(self.device);
            let mut tensors = self.opt.grads();
            tensors.push(sum.shallow_clone());
            self.ranks.sum(&tensors)?;
            loss_sum = sum.double_value(&[0]);
        }
        // The loss and the norm are the same on every rank: every rank stops here alike.
        let value = loss_sum / total;
        if !value.is_finite() {
            return Err(Error::NonFinite {
                step: self.state.step + 1,
                what: "loss".into(),
                value,
            });
        }
        let norm = self.opt.clip_grad_norm(t.clip_norm);
        if !norm.is_finite() {
            return Err(Error::NonFinite {
                step: self.state.step + 1,
                what: "gradient norm".into(),
                value: norm,
            });
        }
        self.opt.step();
        Ok((value, tokens, start.elapsed().as_secs_f64()))
    }

    /// [`Error::NonFinite`] when a parameter is NaN or infinite (a finite but exploding loss
    /// can get there without tripping the loss check).
    pub(super) fn check_parameters(&self) -> Result<()> {
        let broken = tch::no_grad(|| {
            self.vs
                .trainable_variables()
                .iter()
                .any(|t| t.isfinite().logical_not().any().int64_value(&[]) != 0)
        });
        if broken {
            return Err(Error::NonFinite {
                step: self.state.step,
                what: "model (a parameter)".into(),
                value: f64::NAN,
            });
        }
        Ok(())
    }
}

/// The libtorch seed of update `step`: dropout and scheduled sampling depend on nothing else.
pub fn seed_for_step(seed: u64, step: u64) -> i64 {
    let mut r = crate::rng::Rng::new(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (r.next_u64() >> 1) as i64
}

/// The libtorch seed of the batch at position `position` of update `step` (several batches
/// per update: accumulation or data parallelism). It does not depend on the process that
/// computes the batch, and the first batch has [`seed_for_step`]'s seed.
pub fn seed_for_batch(seed: u64, step: u64, position: usize) -> i64 {
    let mix = (position as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    seed_for_step(seed ^ mix, step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_batch_of_an_update_keeps_the_seed_of_the_update() {
        for step in [0, 1, 77] {
            assert_eq!(seed_for_batch(42, step, 0), seed_for_step(42, step));
            assert_ne!(seed_for_batch(42, step, 1), seed_for_step(42, step));
            assert_ne!(seed_for_batch(42, step, 1), seed_for_batch(42, step, 2));
        }
    }
}
