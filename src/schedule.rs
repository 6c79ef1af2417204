//! The learning-rate schedule and early stopping, as a small pure type the training loop calls.
//!
//! * **Warm-up**: the learning rate rises linearly from `lr / warmup_steps` to `lr` over the
//!   first `warmup_steps` updates, so Adam's first, noisy moment estimates cannot throw a fresh
//!   model far off (and a larger peak learning rate becomes safe).
//! * **Budgeted decay** (`train.decay`, linear by default; "budgeted training", Li et al.
//!   2020): after warm-up the rate falls from its peak to zero by the end of the run's budget,
//!   so a run with a budget ends converged instead of at its peak rate. The budget is
//!   `train.decay_steps` updates when set (a pure function of the update: a run cut into
//!   resumed pieces is exactly one run), otherwise the time budget `--max-time`: the fraction
//!   of it used, `(s + e) / (s + T)` with `e` this command's wall clock, `T` its budget and `s`
//!   the wall clock of the earlier pieces of the run (saved in the state). So a resumed piece
//!   continues on the schedule of one run as long as all pieces together; the first piece,
//!   not knowing a second would follow, decayed faster. Without either, the rate stays at its
//!   peak (plateau decay only). The decay takes the last `train.decay_fraction` of the budget
//!   (the rate stays at its peak before): the "warm-up, stable, decay" shape, which matches a
//!   whole-budget decay for long runs (Hägele et al. 2024) and leaves short ones, far from
//!   converged, most of their budget at the peak rate.
//! * **Plateau decay**: when validation BLEU has not improved for `lr_patience` validations, the
//!   learning rate is multiplied by `lr_decay` (never below `min_lr`).
//! * **Early stopping**: after `patience` validations without improvement, training stops.
//!
//! The state ([`ScheduleState`]) is part of the trainer state saved in `last/trainer.json`, so a
//! resumed run follows the same schedule as one uninterrupted run.
use serde::{Deserialize, Serialize};

use crate::config::{DecayShape, TrainConfig};

/// The schedule's settings (from [`TrainConfig`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub warmup_steps: u64,
    pub lr_decay: f64,
    pub lr_patience: usize,
    pub min_lr: f64,
    /// 0 disables early stopping.
    pub patience: usize,
    /// The shape of the budgeted decay ([`DecayShape::None`]: no budgeted decay).
    pub decay: DecayShape,
    /// The decay's horizon in updates; `None`: the time budget, if any.
    pub decay_steps: Option<u64>,
    /// The last fraction of the budget over which the rate decays (1: all of it).
    pub decay_fraction: f64,
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
    /// Wall-clock seconds of the training loops of the earlier pieces of this run (for the
    /// budgeted decay over a time budget).
    #[serde(default)]
    pub budget_seconds: f64,
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
            budget_seconds: 0.0,
        }
    }
}

/// What one validation changed.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
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
            decay: t.decay,
            decay_steps: t.decay_steps,
            decay_fraction: t.decay_fraction,
        }
    }

    /// The learning rate of update `step` (0-based): the state's peak rate, scaled by
    /// `(step + 1) / warmup_steps` during warm-up, and by the budgeted decay's factor.
    ///
    /// `time_progress` is the fraction of the time budget used before this update (see the
    /// module docs), `None` without a time budget; it counts only without `decay_steps`.
    pub fn lr_at(&self, state: &ScheduleState, step: u64, time_progress: Option<f64>) -> f64 {
        let warm = if step < self.warmup_steps {
            (step + 1) as f64 / self.warmup_steps as f64
        } else {
            1.0
        };
        let progress = match self.decay_steps {
            Some(horizon) => {
                let span = horizon.saturating_sub(self.warmup_steps).max(1);
                Some(step.saturating_sub(self.warmup_steps) as f64 / span as f64)
            }
            None => time_progress,
        };
        let f = self.decay_fraction.clamp(f64::MIN_POSITIVE, 1.0);
        let factor = progress.map_or(1.0, |p| self.decay.factor((p - (1.0 - f)) / f));
        state.lr * warm * factor
    }

    /// Whether the rate depends on the time budget's progress (then data-parallel ranks must
    /// agree on it).
    pub fn follows_time(&self) -> bool {
        self.decay != DecayShape::None && self.decay_steps.is_none()
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
            decay: DecayShape::None,
            decay_steps: None,
            decay_fraction: 1.0,
        }
    }

    #[test]
    fn decay_over_the_last_fraction_only() {
        let s = Schedule {
            decay: DecayShape::Linear,
            decay_fraction: 0.25,
            ..schedule(0, 0)
        };
        let st = ScheduleState::new(1.0);
        let at = |p: f64| s.lr_at(&st, 10, Some(p));
        assert_eq!((at(0.0), at(0.5), at(0.75)), (1.0, 1.0, 1.0));
        assert!((at(0.875) - 0.5).abs() < 1e-12);
        assert_eq!(at(1.0), 0.0);
    }

    #[test]
    fn budgeted_decay_reaches_zero_at_the_horizon() {
        let s = Schedule {
            decay: DecayShape::Linear,
            decay_steps: Some(12),
            ..schedule(4, 0)
        };
        let st = ScheduleState::new(1.0);
        let lrs: Vec<f64> = (0..14).map(|i| s.lr_at(&st, i, None)).collect();
        // Warm-up 0.25 .. 1 (the first decayed update is the 5th), then 1 - (step - 4) / 8.
        let want = [
            0.25, 0.5, 0.75, 1.0, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0, 0.0,
        ];
        for (a, b) in lrs.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{lrs:?}");
        }
        // A time progress does not count when the horizon is in updates.
        assert_eq!(s.lr_at(&st, 8, Some(0.9)), 0.5);
        let c = Schedule {
            decay: DecayShape::Cosine,
            ..s.clone()
        };
        assert!((c.lr_at(&st, 8, None) - 0.5).abs() < 1e-12);
        assert!(c.lr_at(&st, 6, None) > s.lr_at(&st, 6, None));
    }

    #[test]
    fn time_budget_scales_with_its_progress() {
        let s = Schedule {
            decay: DecayShape::Linear,
            ..schedule(0, 0)
        };
        let st = ScheduleState::new(2.0);
        assert_eq!(s.lr_at(&st, 100, None), 2.0, "no budget: peak");
        assert_eq!(s.lr_at(&st, 100, Some(0.25)), 1.5);
        assert_eq!(s.lr_at(&st, 100, Some(1.5)), 0.0, "past the budget: zero");
        assert!(s.follows_time());
        let none = Schedule {
            decay: DecayShape::None,
            ..s
        };
        assert_eq!(none.lr_at(&st, 100, Some(0.5)), 2.0);
        assert!(!none.follows_time());
    }

    #[test]
    fn warmup_is_linear_then_flat() {
        let s = schedule(4, 0);
        let st = ScheduleState::new(1e-3);
        let lrs: Vec<f64> = (0..6).map(|i| s.lr_at(&st, i, None)).collect();
        let want = [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3];
        for (a, b) in lrs.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{lrs:?}");
        }
        assert_eq!(schedule(0, 0).lr_at(&st, 0, None), 1e-3);
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
