//! The validations of a run: rank 0 validates and saves (the best weights, a checkpoint,
//! `metrics.csv`, the curves, `last/`); every rank then continues from its outcome.
use serde::{Deserialize, Serialize};

use super::report::{self, MetricsCsv, MetricsRow, Report};
use super::{best_weights, Trainer, TrainerState};
use crate::checkpoint::{self, OPTIMIZER_FILE, TRAINER_FILE, WEIGHTS_FILE};
use crate::error::{Error, Result};
use crate::schedule::Observation;
use crate::validation::{validate, Validation};

/// Rank 0's validation as every rank receives it: the progress it saved, the scores as bits
/// (JSON has no infinity, and a perplexity can be infinite), what it changed in the schedule.
#[derive(Serialize, Deserialize)]
struct Shared {
    state: TrainerState,
    scores: [u64; 3],
    observation: Option<Observation>,
}

impl Trainer<'_> {
    /// [`Trainer::validate_and_save`] on rank 0, whose outcome (progress, schedule, or its
    /// error) then reaches every other rank; in a single process, just that. Returns the
    /// validation and, for a `scheduled` one, what it changed in the schedule.
    pub(super) fn validate_everywhere(
        &mut self,
        scheduled: bool,
        report: &mut Report,
    ) -> Result<(Validation, Option<Observation>)> {
        let ranks = self.ranks;
        let shared = ranks.rank0_decides(|| {
            let (v, observation) = self.validate_and_save(scheduled, report)?;
            Ok(Shared {
                state: self.state.clone(),
                scores: [v.loss, v.ppl, v.bleu].map(f64::to_bits),
                observation,
            })
        })?;
        let [loss, ppl, bleu] = shared.scores.map(f64::from_bits);
        if !ranks.is_writer() {
            self.state = shared.state;
        }
        Ok((Validation { loss, ppl, bleu }, shared.observation))
    }

    /// Validation loss, perplexity and greedy BLEU on the validation set.
    pub fn validate(&self) -> Result<Validation> {
        self.precision.run(self.device, || {
            validate(
                &self.model,
                self.data,
                &self.config,
                self.device,
                self.state.step,
                self.stop,
            )
        })?
    }

    /// Validates; a scheduled validation updates best/patience/lr and saves
    /// `model.safetensors` when BLEU improved; the final one of a run may save it too
    /// ([`super::best_weights`]). Then appends to `metrics.csv` and saves `last/`.
    fn validate_and_save(
        &mut self,
        scheduled: bool,
        report: &mut Report,
    ) -> Result<(Validation, Option<Observation>)> {
        self.check_parameters()?;
        let v = self.validate()?;
        let improved = best_weights::settle(
            &self.vs,
            &self.model_dir,
            &mut self.state,
            v.bleu,
            scheduled,
        )?;
        let observation =
            scheduled.then(|| self.schedule.observe(&mut self.state.schedule, v.bleu));
        checkpoint::save_checkpoint(
            &self.vs,
            &self.model_dir,
            self.state.step,
            self.config.train.keep_checkpoints,
        )?;
        let kind = if scheduled { "valid" } else { "final" };
        // The rate of the last update (warm-up and budgeted decay included), in the log line
        // and in metrics.csv alike; the plateau peak is in `last/trainer.json`.
        let lr = self.opt.config.lr;
        MetricsCsv::of_model_dir(&self.model_dir).append(&MetricsRow::new(
            &self.state,
            &v,
            kind,
            lr,
        ))?;
        report::write_curves(&self.model_dir);
        self.save_last()?;
        report.validation(&self.state, &v, improved, lr);
        Ok((v, observation))
    }

    /// Writes weights, optimizer moments and trainer state to `last/`.
    pub fn save_last(&self) -> Result<()> {
        checkpoint::replace_last(&self.model_dir, |dir| {
            checkpoint::save_weights(&self.vs, &dir.join(WEIGHTS_FILE))?;
            self.opt.save(&dir.join(OPTIMIZER_FILE))?;
            let json = serde_json::to_string_pretty(&self.state)
                .map_err(|e| Error::json(TRAINER_FILE, e))?;
            checkpoint::write_atomic(&dir.join(TRAINER_FILE), json.as_bytes())
        })
    }
}
