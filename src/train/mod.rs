//! The training loop: teacher forcing, Adam, clipping, validation, checkpoints, budgets,
//! resume.
//!
//! One update: re-seed libtorch's generator from `(seed, update)` (so dropout and scheduled
//! sampling are a function of the run's seed and the update number, also across a resume),
//! build the next batch of the epoch's seeded order, compute the token-level loss, backpropagate
//! through time, clip the global gradient norm, take an Adam step.
//!
//! Every `valid_every` updates and at the end of every epoch: validation loss, perplexity and
//! greedy BLEU; the best weights by BLEU go to `model.safetensors`; the learning rate decays
//! after `lr_patience` validations without improvement, training stops after `patience`.
//! The latest state (`last/`) is saved at every validation and whenever training stops.
//!
//! **Accumulation and data parallelism.** An update may see several batches: `train.accumulate`
//! of them on each of the `W` processes of a data-parallel run ([`Trainer::with_group`]). The
//! update takes the next `W x accumulate` batches of the epoch's one seeded order; process `r`
//! computes those at positions `r, r + W, r + 2W, ...` and backpropagates each batch's summed
//! loss divided by the target tokens of all of them; the gradients are then summed over the
//! processes (c10d all-reduce), so every process holds the gradient of the per-token loss over
//! the update's batches before clipping and the Adam step, and all stay equal. The libtorch
//! seed of the batch at position `p` is a function of `(seed, update, p)` only
//! ([`seed_for_batch`]), so dropout does not depend on which process computes a batch: one
//! process with `accumulate = N` takes exactly the updates of `N` processes with 1 (up to
//! the order of float additions). The last update of an epoch takes the batches left. Rank 0
//! validates and writes the model directory; the other ranks follow its decisions
//! (`ranks.rs`).
//!
//! The parts: `setup` (a fresh or resumed start, the ranks' handshake), `state` (the saved
//! progress), `stop` (the stop rules and the end-of-run choice), `ranks` (what the ranks
//! agree on), `update` (one update), `validate` and `best_weights` (validations and the
//! `model.safetensors` protocol), `report` (progress lines and `metrics.csv`).
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use tch::{nn::VarStore, Device};

use crate::checkpoint::{self, MODEL_FILE};
use crate::data::sampler::BatchSource;
use crate::data::Prepared;
use crate::error::{Error, Result};
use crate::model::Seq2Seq;
use crate::optim::Adam;
use crate::precision::Precision;
use crate::schedule::Schedule;
use crate::validation::Validation;

mod best_weights;
mod ranks;
mod report;
mod setup;
mod state;
mod stop;
mod update;
mod validate;

pub use report::{human_duration, MetricsCsv, MetricsRow};
pub use setup::{check_batches_per_update, saved_state};
pub use state::TrainerState;
pub use stop::{Budgets, EndOfRun, StopReason};
pub use update::{seed_for_batch, seed_for_step};

use ranks::Ranks;
use report::Report;
use state::BudgetClock;
use stop::end_of_run;

/// The outcome of [`Trainer::run`].
#[derive(Debug)]
pub struct Outcome {
    pub reason: StopReason,
    pub state: TrainerState,
    pub last_validation: Option<Validation>,
    /// Whether this run made at least one update.
    pub updated: bool,
}

/// A training run over prepared data, writing to a model directory.
pub struct Trainer<'a> {
    config: crate::config::Config,
    model_dir: PathBuf,
    device: Device,
    vs: VarStore,
    model: Seq2Seq,
    opt: Adam,
    state: TrainerState,
    data: &'a Prepared,
    /// Set from a signal handler: the run stops after the current update or validation batch.
    stop: &'a AtomicBool,
    /// Warm-up, plateau decay and early stopping, from `config.train`.
    schedule: Schedule,
    /// Write progress lines to stderr.
    verbose: bool,
    /// This process alone, or its data-parallel group (see the module docs).
    ranks: Ranks<'a>,
    /// Whether every parameter has a gradient tensor (a data-parallel all-reduce needs the
    /// same list on every rank).
    grads_ready: bool,
    /// Autocast for the forward passes (training and validation).
    precision: Precision,
    /// The wall clock of this command's training loop, for a time budget's decay.
    clock: Option<BudgetClock>,
}

/// The latest validation of this command and the update it was at.
#[derive(Default)]
struct Latest {
    validation: Option<Validation>,
    at: Option<u64>,
}

impl<'a> Trainer<'a> {
    /// Progress lines on stderr (default on).
    pub fn set_verbose(&mut self, verbose: bool) {
        self.verbose = verbose;
    }

    /// Runs the forward passes of training and validation with `precision`; an error when
    /// the device cannot ([`Precision::check`]).
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        let precision = precision.resolved(self.device);
        precision.check(self.device)?;
        self.precision = precision;
        self.model
            .set_low_precision(precision.low_precision(self.device));
        Ok(())
    }

    /// The progress so far (at step 0 for a fresh model).
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// Number of trainable parameters.
    pub fn parameter_count(&self) -> i64 {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as i64)
            .sum()
    }

    /// Applies settings a resumed run changed ([`crate::config::resume_config`]) to the
    /// saved progress: a new `train.lr` becomes the peak learning rate from now on (replacing
    /// earlier plateau decays), and a new `train.patience` re-decides early stopping.
    pub fn apply_changes(&mut self, changes: &[crate::config::Change]) {
        let t = &self.config.train;
        for c in changes {
            match c.key.as_str() {
                "train.lr" => self.state.schedule.lr = t.lr,
                "train.fused_loss" => self.model.set_fused_loss(t.fused_loss),
                "train.fused_adam" => self.opt.fused = t.fused_adam,
                "train.fused_rnn" => self.model.set_fused_rnn(t.fused_rnn),
                "train.patience" => {
                    self.state.schedule.stopped_early =
                        t.patience > 0 && self.state.schedule.bad_validations >= t.patience
                }
                _ => {}
            }
        }
    }

    /// Trains until a budget, early stopping, or the stop flag ends the run.
    ///
    /// `model.safetensors` is the best of the *scheduled* validations, plus one exception:
    /// the extra validation when a run stops may beat it ([`best_weights`] keeps the two
    /// apart), so a run cut into pieces by budgets ends with the same `model.safetensors` as
    /// one run that stops where the last piece does.
    pub fn run(&mut self) -> Result<Outcome> {
        let budgets = Budgets::from_config(&self.config.train)?;
        let clock = BudgetClock::start(self.state.schedule.budget_seconds, budgets.max_time);
        self.clock = Some(clock);
        if let Some(reason) = stop::before_run(self.state.schedule.stopped_early) {
            return Ok(self.outcome(reason, None, false));
        }
        let first_step = self.state.step;
        let total = self.planned_updates(&budgets);
        let log_every = self.config.train.log_every;
        let mut report = Report::new(self.verbose, total, self.state.step, log_every);
        let mut latest = Latest::default();
        let result = self.train(&budgets, &clock, &mut report, &mut latest);
        report.finish();
        self.state.schedule.budget_seconds = clock.seconds();
        let reason = match result {
            Ok(reason) => reason,
            // A signal during a validation: stop now, without finishing it.
            Err(Error::Interrupted) => StopReason::Interrupted,
            Err(e) => return Err(e),
        };
        let updated = self.state.step > first_step;
        self.finish(&reason, updated, &mut latest, &mut report)?;
        Ok(self.outcome(reason, latest.validation, updated))
    }

    /// Updates and scheduled validations until a stop rule says why not.
    fn train(
        &mut self,
        budgets: &Budgets,
        clock: &BudgetClock,
        report: &mut Report,
        latest: &mut Latest,
    ) -> Result<StopReason> {
        let t = self.config.train.clone();
        let per_update = self.ranks.world_size() * t.accumulate;
        let data = self.data;
        let mut source =
            BatchSource::new(&data.train, t.batch_tokens, t.seed, self.state.position());
        loop {
            if let Some(reason) = budgets.before_epoch(self.state.epoch) {
                return Ok(reason);
            }
            while !source.epoch_done() {
                if let Some(reason) = budgets.before_update(self.state.step) {
                    return Ok(reason);
                }
                let progress = clock.progress().filter(|_| self.schedule.follows_time());
                let (time_up, interrupted) = (
                    budgets.time_up(clock.elapsed()),
                    self.stop.load(Ordering::SeqCst),
                );
                let agreed = self.ranks.agree(time_up, interrupted, progress)?;
                if let Some(reason) = stop::on_agreement(agreed.time_up, agreed.interrupted) {
                    return Ok(reason);
                }
                let batches = source.next_batches(per_update)?;
                let (loss, tokens, secs) = self.update_batches(&batches, agreed.progress)?;
                self.state.tokens += tokens as u64;
                self.state.train_seconds += secs;
                self.state.set_position(source.position());
                self.state.step += 1;
                let lr = self.opt.config.lr;
                report.update(&self.state, loss, tokens, lr, clock.elapsed());
                if stop::validate_after_update(self.state.step, t.valid_every) {
                    if let Some(reason) = self.scheduled_validation(report, latest)? {
                        return Ok(reason);
                    }
                }
            }
            source.next_epoch();
            self.state.set_position(source.position());
            if stop::validate_at_epoch_end(self.state.step, latest.at) {
                if let Some(reason) = self.scheduled_validation(report, latest)? {
                    return Ok(reason);
                }
            }
        }
    }

    /// A scheduled validation; early stopping when the schedule says so.
    fn scheduled_validation(
        &mut self,
        report: &mut Report,
        latest: &mut Latest,
    ) -> Result<Option<StopReason>> {
        let (v, observation) = self.validate_everywhere(true, report)?;
        *latest = Latest {
            validation: Some(v),
            at: Some(self.state.step),
        };
        Ok(observation.as_ref().and_then(stop::after_validation))
    }

    /// What a run does once its loop has stopped ([`end_of_run`]); only rank 0 writes.
    fn finish(
        &mut self,
        reason: &StopReason,
        updated: bool,
        latest: &mut Latest,
        report: &mut Report,
    ) -> Result<()> {
        let writer = self.ranks.is_writer();
        // Rank 0's model directory decides for everyone.
        let model_exists = self
            .ranks
            .rank0_decides(|| Ok(self.model_dir.join(MODEL_FILE).exists()))?;
        let validated_last = latest.at == Some(self.state.step);
        match end_of_run(reason, updated, validated_last, model_exists) {
            EndOfRun::SaveNow { model_too } if writer => {
                if model_too {
                    checkpoint::save_weights(&self.vs, &self.model_dir.join(MODEL_FILE))?;
                }
                self.save_last()?;
            }
            EndOfRun::FinalValidation => match self.validate_everywhere(false, report) {
                Ok((v, _)) => latest.validation = Some(v),
                Err(Error::Interrupted) if writer => self.save_last()?,
                Err(Error::Interrupted) => {}
                Err(e) => return Err(e),
            },
            EndOfRun::SaveLast if writer => self.save_last()?,
            _ => {}
        }
        Ok(())
    }

    /// The updates after which this command stops by its budgets, if it knows.
    fn planned_updates(&self, budgets: &Budgets) -> Option<u64> {
        let t = &self.config.train;
        let per_update = self.ranks.world_size() * t.accumulate;
        budgets.max_steps.or_else(|| {
            let e = budgets.max_epochs?;
            let per_epoch =
                BatchSource::count_epoch_batches(&self.data.train, t.batch_tokens, t.seed);
            Some(e * per_epoch.div_ceil(per_update) as u64)
        })
    }

    fn outcome(&self, reason: StopReason, last: Option<Validation>, updated: bool) -> Outcome {
        Outcome {
            reason,
            state: self.state.clone(),
            last_validation: last,
            updated,
        }
    }
}
