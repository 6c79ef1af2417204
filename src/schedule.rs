//! The learning-rate schedule and early stopping, as a small pure type the training loop calls.
//!
//! * **Warm-up**: the learning rate rises linearly from `lr / warmup_steps` to `lr` over the
//!   first `warmup_steps` updates, so Adam's first, noisy moment estimates cannot throw a fresh
//!   model far off (and a larger peak learning rate becomes safe).
//! * **Plateau decay**: when validation BLEU has not improved for `lr_patience` validations, the
//!   learning rate is multiplied by `lr_decay` (never below `min_lr`).
//! * **Early stopping**: after `patience` validations without improvement, training stops.
//!
//! The state ([`ScheduleState`]) is part of the trainer state saved in `last/trainer.json`, so a
//! resumed run follows the same schedule as one uninterrupted run.
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;

/// The schedule's settings (from [`TrainConfig`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub warmup_steps: u64,
    pub lr_decay: f64,
    pub lr_patience: usize,
    pub min_lr: f64,
    /// 0 disables early stopping.
    pub patience: usize,
}

/// What the schedule remembers between validations.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ScheduleState {
    /// The peak learning rate after plateau decays (warm-up scales it further).
    pub lr: f64,
    /// Best BLEU among the scheduled validations.
    pub schedule_best_bleu: Option<f64>,
    /// Validations since the best one (early stopping) and since the last lr change.
    pub bad_validations: usize,
    pub lr_bad_validations: usize,
    /// Set when early stopping ended training for good.
    pub stopped_early: bool,
}

impl ScheduleState {
    /// The state before the first update, at peak learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        ScheduleState {
            lr,
            schedule_best_bleu: None,
            bad_validations: 0,
            lr_bad_validations: 0,
            stopped_early: false,
        }
    }
}

/// What one validation changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub improved: bool,
    /// The new peak learning rate, when it was decayed.
    pub decayed_to: Option<f64>,
    pub stop: bool,
}

impl Schedule {
    pub fn new(t: &TrainConfig) -> Self {
        Schedule {
            warmup_steps: t.warmup_steps,
            lr_decay: t.lr_decay,
            lr_patience: t.lr_patience,
            min_lr: t.min_lr,
            patience: t.patience,
        }
    }

    /// The learning rate of update `step` (0-based): the state's peak rate, scaled by
    /// `(step + 1) / warmup_steps` during warm-up.
    pub fn lr_at(&self, state: &ScheduleState, step: u64) -> f64 {
        if step < self.warmup_steps {
            state.lr * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            state.lr
        }
    }

    /// Records a validation score: resets the counters on improvement; otherwise counts, decays
    /// the learning rate after `lr_patience` bad validations and stops after `patience`.
    pub fn observe(&self, state: &mut ScheduleState, bleu: f64) -> Observation {
        let mut out = Observation {
            improved: false,
            decayed_to: None,
            stop: false,
        };
        if state.schedule_best_bleu.is_none_or(|b| bleu > b) {
            state.schedule_best_bleu = Some(bleu);
            state.bad_validations = 0;
            state.lr_bad_validations = 0;
            out.improved = true;
            return out;
        }
        state.bad_validations += 1;
        state.lr_bad_validations += 1;
        if state.lr_bad_validations >= self.lr_patience.max(1) && state.lr > self.min_lr {
            state.lr = (state.lr * self.lr_decay).max(self.min_lr);
            state.lr_bad_validations = 0;
            out.decayed_to = Some(state.lr);
        }
        if self.patience > 0 && state.bad_validations >= self.patience {
            state.stopped_early = true;
            out.stop = true;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(warmup: u64, patience: usize) -> Schedule {
        Schedule {
            warmup_steps: warmup,
            lr_decay: 0.5,
            lr_patience: 2,
            min_lr: 1e-4,
            patience,
        }
    }

    #[test]
    fn warmup_is_linear_then_flat() {
        let s = schedule(4, 0);
        let st = ScheduleState::new(1e-3);
        let lrs: Vec<f64> = (0..6).map(|i| s.lr_at(&st, i)).collect();
        let want = [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3];
        for (a, b) in lrs.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{lrs:?}");
        }
        assert_eq!(schedule(0, 0).lr_at(&st, 0), 1e-3);
    }

    #[test]
    fn plateau_decays_and_floors() {
        let s = schedule(0, 0);
        let mut st = ScheduleState::new(1e-3);
        assert!(s.observe(&mut st, 10.0).improved);
        assert_eq!(s.observe(&mut st, 9.0).decayed_to, None);
        assert_eq!(s.observe(&mut st, 9.0).decayed_to, Some(5e-4));
        assert!(s.observe(&mut st, 11.0).improved);
        assert_eq!(st.lr_bad_validations, 0);
        for _ in 0..10 {
            s.observe(&mut st, 0.0);
        }
        assert_eq!(st.lr, 1e-4, "never below min_lr");
        assert!(!st.stopped_early, "patience 0 never stops");
        // Equal is not better.
        let before = st.bad_validations;
        s.observe(&mut st, 11.0);
        assert_eq!(st.bad_validations, before + 1);
    }

    #[test]
    fn early_stopping_after_patience() {
        let s = schedule(0, 3);
        let mut st = ScheduleState::new(1e-3);
        s.observe(&mut st, 5.0);
        assert!(!s.observe(&mut st, 4.0).stop);
        assert!(!s.observe(&mut st, 4.0).stop);
        assert!(s.observe(&mut st, 4.0).stop);
        assert!(st.stopped_early);
    }
}
