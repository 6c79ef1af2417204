//! When a run stops, and what it does then: the stop rules as pure functions over the
//! progress, with plain values in and out (in the manner of fairseq's `should_stop_early` and
//! Hugging Face's `TrainerControl`, without callbacks). The training loop asks them at fixed
//! points: before an epoch, before an update (its own budgets, then what the ranks agreed
//! on), after a scheduled validation, and once when the loop has stopped.
use std::time::Duration;

use crate::config::{parse_duration, TrainConfig};
use crate::error::Result;
use crate::schedule::Observation;

/// Why a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    MaxSteps,
    MaxEpochs,
    MaxTime,
    EarlyStopping,
    Interrupted,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::MaxSteps => "reached --max-steps",
            StopReason::MaxEpochs => "reached --max-epochs",
            StopReason::MaxTime => "reached --max-time",
            StopReason::EarlyStopping => "early stopping (validation BLEU stopped improving)",
            StopReason::Interrupted => "interrupted",
        })
    }
}

/// This command's budgets: updates and epochs in total, time for this command.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Budgets {
    pub max_steps: Option<u64>,
    pub max_epochs: Option<u64>,
    pub max_time: Option<Duration>,
}

impl Budgets {
    /// The budgets of `t` (`max_time` parsed: an error names a bad duration).
    pub fn from_config(t: &TrainConfig) -> Result<Self> {
        Ok(Budgets {
            max_steps: t.max_steps,
            max_epochs: t.max_epochs,
            max_time: t.max_time.as_deref().map(parse_duration).transpose()?,
        })
    }

    /// Before epoch `epoch` (0-based) starts.
    pub fn before_epoch(&self, epoch: u64) -> Option<StopReason> {
        self.max_epochs
            .is_some_and(|m| epoch >= m)
            .then_some(StopReason::MaxEpochs)
    }

    /// Before an update, after `step` updates: the rule every rank decides alike by itself.
    pub fn before_update(&self, step: u64) -> Option<StopReason> {
        self.max_steps
            .is_some_and(|m| step >= m)
            .then_some(StopReason::MaxSteps)
    }

    /// Whether this command's time is up after `elapsed` in its loop (one rank's view: the
    /// ranks agree on it before it counts, [`on_agreement`]).
    pub fn time_up(&self, elapsed: Duration) -> bool {
        self.max_time.is_some_and(|m| elapsed >= m)
    }
}

/// Before an update, from what the ranks agreed on (any rank's time budget or signal): the
/// time budget first.
pub fn on_agreement(time_up: bool, interrupted: bool) -> Option<StopReason> {
    if time_up {
        Some(StopReason::MaxTime)
    } else if interrupted {
        Some(StopReason::Interrupted)
    } else {
        None
    }
}

/// Before the first update of this command: a run that stopped early stays stopped.
pub fn before_run(stopped_early: bool) -> Option<StopReason> {
    stopped_early.then_some(StopReason::EarlyStopping)
}

/// After a scheduled validation, from what it changed in the schedule.
pub fn after_validation(observation: &Observation) -> Option<StopReason> {
    observation.stop.then_some(StopReason::EarlyStopping)
}

/// Whether the update that made `step` updates is followed by a scheduled validation.
pub fn validate_after_update(step: u64, valid_every: usize) -> bool {
    step.is_multiple_of(valid_every as u64)
}

/// Whether an epoch that ended after `step` updates is followed by a scheduled validation:
/// unless the last update was just validated.
pub fn validate_at_epoch_end(step: u64, validated_at: Option<u64>) -> bool {
    validated_at != Some(step)
}

/// What a run does once its loop has stopped. Only rank 0 writes; every rank validates
/// alike (rank 0's validation reaches the others).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndOfRun {
    /// Interrupted: no final validation (Ctrl-C means now); save `last/`, and the weights as
    /// `model.safetensors` when there is none yet (`model_too`), so there is a model to
    /// translate with anyway.
    SaveNow { model_too: bool },
    /// A final validation that does not touch the schedule (see
    /// [`crate::train::Trainer::run`]), which saves `last/`.
    FinalValidation,
    /// Save `last/`: the last update was validated, but the state has moved since (the time
    /// budget's clock).
    SaveLast,
    /// Nothing happened in this command.
    Nothing,
}

/// The end-of-run choice: `updated`, whether this command made an update; `validated_last`,
/// whether the last update was validated; `model_exists`, whether rank 0's
/// `model.safetensors` exists.
pub fn end_of_run(
    reason: &StopReason,
    updated: bool,
    validated_last: bool,
    model_exists: bool,
) -> EndOfRun {
    if *reason == StopReason::Interrupted {
        EndOfRun::SaveNow {
            model_too: !model_exists,
        }
    } else if (updated && !validated_last) || !model_exists {
        EndOfRun::FinalValidation
    } else if updated {
        EndOfRun::SaveLast
    } else {
        EndOfRun::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_stop_at_their_limit_and_not_before() {
        let b = Budgets {
            max_steps: Some(10),
            max_epochs: Some(2),
            max_time: Some(Duration::from_secs(60)),
        };
        assert_eq!(b.before_update(9), None);
        assert_eq!(b.before_update(10), Some(StopReason::MaxSteps));
        assert_eq!(b.before_epoch(1), None);
        assert_eq!(b.before_epoch(2), Some(StopReason::MaxEpochs));
        assert!(!b.time_up(Duration::from_secs(59)));
        assert!(b.time_up(Duration::from_secs(60)));
        let none = Budgets::default();
        assert_eq!(none.before_update(u64::MAX), None);
        assert_eq!(none.before_epoch(u64::MAX), None);
        assert!(!none.time_up(Duration::MAX));
    }

    #[test]
    fn budgets_come_from_the_config_and_a_bad_duration_is_an_error() {
        let mut t = TrainConfig {
            max_steps: Some(3),
            max_time: Some("90s".into()),
            ..TrainConfig::default()
        };
        let b = Budgets::from_config(&t).unwrap();
        assert_eq!(b.max_steps, Some(3));
        assert_eq!(b.max_time, Some(Duration::from_secs(90)));
        t.max_time = Some("soon".into());
        assert!(Budgets::from_config(&t).is_err());
    }

    #[test]
    fn the_time_budget_wins_over_a_signal_and_nothing_means_go_on() {
        assert_eq!(on_agreement(true, true), Some(StopReason::MaxTime));
        assert_eq!(on_agreement(false, true), Some(StopReason::Interrupted));
        assert_eq!(on_agreement(false, false), None);
    }

    #[test]
    fn early_stopping_follows_the_schedule_and_stays() {
        let seen = |stop| Observation {
            improved: false,
            decayed_to: None,
            stop,
        };
        assert_eq!(after_validation(&seen(false)), None);
        assert_eq!(
            after_validation(&seen(true)),
            Some(StopReason::EarlyStopping)
        );
        assert_eq!(before_run(true), Some(StopReason::EarlyStopping));
        assert_eq!(before_run(false), None);
    }

    #[test]
    fn validations_every_n_updates_and_at_epoch_ends_once() {
        assert!(!validate_after_update(3, 4));
        assert!(validate_after_update(8, 4));
        assert!(validate_at_epoch_end(9, Some(8)));
        assert!(validate_at_epoch_end(9, None));
        assert!(!validate_at_epoch_end(8, Some(8)));
    }

    #[test]
    fn the_end_of_run_choice() {
        use EndOfRun::*;
        let i = StopReason::Interrupted;
        assert_eq!(
            end_of_run(&i, true, false, true),
            SaveNow { model_too: false }
        );
        assert_eq!(
            end_of_run(&i, false, false, false),
            SaveNow { model_too: true }
        );
        let s = StopReason::MaxSteps;
        assert_eq!(end_of_run(&s, true, false, true), FinalValidation);
        // No model to translate with yet: validate (and so save one) even without updates.
        assert_eq!(end_of_run(&s, false, false, false), FinalValidation);
        assert_eq!(end_of_run(&s, true, true, true), SaveLast);
        assert_eq!(end_of_run(&s, false, true, true), Nothing);
        assert_eq!(
            end_of_run(&StopReason::EarlyStopping, false, false, true),
            Nothing
        );
    }
}
