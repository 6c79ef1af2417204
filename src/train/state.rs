//! The progress of a run, saved as `last/trainer.json`, and where this command stands in its
//! time budget.
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::data::sampler::Position;
use crate::schedule::ScheduleState;

/// Progress of a training run, saved as `last/trainer.json`.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TrainerState {
    /// Updates done.
    pub step: u64,
    /// Current epoch (0-based) and the next batch in it.
    pub epoch: u64,
    pub batch_in_epoch: usize,
    /// Best validation BLEU so far, whose weights are `model.safetensors`.
    pub best_bleu: Option<f64>,
    pub best_step: u64,
    /// Learning rate, plateau and early-stopping state. Only the scheduled validations
    /// drive it (the extra validation at the end of a run does not, so a run cut into pieces by
    /// budgets and resumes follows the same schedule as one run).
    #[serde(flatten)]
    pub schedule: ScheduleState,
    /// Target tokens and seconds spent in updates, over all runs.
    pub tokens: u64,
    pub train_seconds: f64,
    /// Set while `model.safetensors` holds the weights of the validation at the end of a run
    /// (which beat `best_bleu`, the best scheduled validation): `(step, BLEU)`. See
    /// [`crate::train::Trainer::run`] for why it is kept apart.
    #[serde(default)]
    pub final_best: Option<(u64, f64)>,
    /// Data-parallel processes and batches accumulated by each per update
    /// (`train.accumulate`) when this state was saved. A resumed run must keep their product,
    /// the batches of one update.
    #[serde(default = "one")]
    pub world_size: u64,
    #[serde(default = "one")]
    pub accumulate: u64,
    /// The window of the epoch's order and the next batch in it ([`crate::data::sampler`]);
    /// a state saved before windows existed had one window, and `batch_in_epoch` is the
    /// batch in it.
    #[serde(default)]
    pub window: u64,
    #[serde(default)]
    pub batch_in_window: Option<usize>,
    /// The content hash of the prepared training data this run trains on: a resume on other
    /// data stops with an error.
    #[serde(default)]
    pub data_hash: Option<String>,
}

fn one() -> u64 {
    1
}

impl TrainerState {
    /// The state of a fresh run before its first update, at peak learning rate `lr`.
    pub fn new(lr: f64) -> Self {
        TrainerState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            best_bleu: None,
            best_step: 0,
            schedule: ScheduleState::new(lr),
            tokens: 0,
            train_seconds: 0.0,
            final_best: None,
            world_size: 1,
            accumulate: 1,
            window: 0,
            batch_in_window: None,
            data_hash: None,
        }
    }

    /// The data position.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            window: self.window,
            batch_in_window: self.batch_in_window.unwrap_or(self.batch_in_epoch),
            batch_in_epoch: self.batch_in_epoch,
        }
    }

    pub(super) fn set_position(&mut self, p: Position) {
        self.epoch = p.epoch;
        self.window = p.window;
        self.batch_in_window = Some(p.batch_in_window);
        self.batch_in_epoch = p.batch_in_epoch;
    }
}

/// Where a run stands in its time budget (see [`crate::schedule`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct BudgetClock {
    started: Instant,
    /// Loop seconds of the earlier pieces of the run.
    before: f64,
    /// This command's `--max-time`, in seconds.
    budget: Option<f64>,
}

impl BudgetClock {
    /// Starts this command's clock, after `before` loop seconds of earlier pieces.
    pub(super) fn start(before: f64, budget: Option<Duration>) -> Self {
        BudgetClock {
            started: Instant::now(),
            before,
            budget: budget.map(|b| b.as_secs_f64()),
        }
    }

    /// This command's time in its training loop.
    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Loop seconds of all pieces so far.
    pub(super) fn seconds(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }

    /// The fraction of the whole time budget used, `(s + e) / (s + T)`.
    pub(super) fn progress(&self) -> Option<f64> {
        self.budget
            .map(|t| self.seconds() / (self.before + t).max(f64::MIN_POSITIVE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_saved_before_windows_reads_its_position_from_the_epoch() {
        let mut s = TrainerState::new(1e-3);
        s.batch_in_epoch = 7;
        assert_eq!(s.position().batch_in_window, 7);
        s.set_position(Position {
            epoch: 2,
            window: 1,
            batch_in_window: 3,
            batch_in_epoch: 9,
        });
        assert_eq!((s.epoch, s.window, s.batch_in_window), (2, 1, Some(3)));
        assert_eq!(s.position().batch_in_epoch, 9);
    }

    #[test]
    fn the_budget_counts_the_earlier_pieces() {
        let c = BudgetClock::start(30.0, Some(Duration::from_secs(10)));
        let p = c.progress().unwrap();
        // (30 + e) / (30 + 10) with e a moment.
        assert!((0.75..0.76).contains(&p), "{p}");
        assert_eq!(BudgetClock::start(5.0, None).progress(), None);
    }
}
