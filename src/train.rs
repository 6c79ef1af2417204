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
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device};

use crate::batch::{epoch_batches, Batch, Example};
use crate::checkpoint::{
    self, METRICS_FILE, MODEL_FILE, OPTIMIZER_FILE, TRAINER_FILE, WEIGHTS_FILE,
};
use crate::config::{parse_duration, Config};
use crate::data::Prepared;
use crate::error::{Error, Result};
use crate::model::Seq2Seq;
use crate::optim::{Adam, AdamConfig};
use crate::schedule::{Schedule, ScheduleState};
use crate::validation::{validate, Validation};

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
}

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

/// The outcome of [`Trainer::run`].
#[derive(Debug)]
pub struct Outcome {
    pub reason: StopReason,
    pub state: TrainerState,
    pub last_validation: Option<Validation>,
}

/// A training run over prepared data, writing to a model directory.
pub struct Trainer<'a> {
    pub config: Config,
    pub model_dir: PathBuf,
    pub device: Device,
    pub vs: VarStore,
    pub model: Seq2Seq,
    pub opt: Adam,
    pub state: TrainerState,
    pub data: &'a Prepared,
    /// Set from a signal handler to stop after the current update.
    pub stop: &'a AtomicBool,
    /// Warm-up, plateau decay and early stopping, from `config.train`.
    schedule: Schedule,
    /// Write progress lines to stderr.
    pub verbose: bool,
}

impl<'a> Trainer<'a> {
    /// A new model (seeded initialization), or the state in `model_dir/last` when present.
    pub fn new(
        config: Config,
        model_dir: &Path,
        device: Device,
        data: &'a Prepared,
        stop: &'a AtomicBool,
    ) -> Result<Self> {
        config.model.validate()?;
        config.train.validate()?;
        tch::manual_seed(config.train.seed as i64);
        let mut vs = VarStore::new(device);
        let model = Seq2Seq::new(&vs.root(), &config.model);
        let t = &config.train;
        let mut opt = Adam::new(
            &vs,
            AdamConfig {
                lr: t.lr,
                beta1: t.adam_beta1,
                beta2: t.adam_beta2,
                eps: t.adam_eps,
                weight_decay: t.weight_decay,
            },
        );
        let mut state = TrainerState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            best_bleu: None,
            best_step: 0,
            schedule: ScheduleState::new(t.lr),
            tokens: 0,
            train_seconds: 0.0,
        };
        if let Some(last) = checkpoint::last_dir(model_dir) {
            let trainer_file = last.join(TRAINER_FILE);
            let text =
                std::fs::read_to_string(&trainer_file).map_err(|e| Error::io(&trainer_file, e))?;
            state = serde_json::from_str(&text)
                .map_err(|e| Error::ModelDir(format!("{}: {e}", trainer_file.display())))?;
            checkpoint::load_weights(&mut vs, &last.join(WEIGHTS_FILE))?;
            opt.load(&last.join(OPTIMIZER_FILE))?;
            opt.steps = state.step;
        } else if t.unigram_output_bias {
            // A fresh model only: a resumed one has its trained bias from last/.
            let prior = crate::data::target_log_prior(&data.train, config.model.tgt_vocab);
            model.set_output_prior(&tch::Tensor::from_slice(&prior).to_device(device));
        }
        let schedule = Schedule::new(&config.train);
        opt.config.lr = schedule.lr_at(&state.schedule, state.step);
        Ok(Trainer {
            config,
            model_dir: model_dir.to_path_buf(),
            device,
            vs,
            model,
            opt,
            state,
            data,
            stop,
            schedule,
            verbose: true,
        })
    }

    fn log(&self, msg: &str) {
        if self.verbose {
            eprintln!("{msg}");
        }
    }

    /// Trains until a budget, early stopping, or the stop flag ends the run.
    pub fn run(&mut self) -> Result<Outcome> {
        let t = self.config.train.clone();
        let max_time = t.max_time.as_deref().map(parse_duration).transpose()?;
        let started = Instant::now();
        let examples = &self.data.train;
        if self.state.schedule.stopped_early {
            return Ok(Outcome {
                reason: StopReason::EarlyStopping,
                state: self.state.clone(),
                last_validation: None,
            });
        }
        let per_epoch = epoch_batches(examples, t.batch_tokens, t.seed, 0).len() as u64;
        let total = t.max_steps.or(t.max_epochs.map(|e| e * per_epoch));
        let bar = self.progress_bar(total);
        let mut last_validation = None;
        let mut validated_at = None;
        let mut window = (0.0f64, 0usize, Instant::now(), 0usize); // loss sum, tokens, since, updates
        let reason = 'outer: loop {
            if t.max_epochs.is_some_and(|m| self.state.epoch >= m) {
                break StopReason::MaxEpochs;
            }
            let batches = epoch_batches(examples, t.batch_tokens, t.seed, self.state.epoch);
            while self.state.batch_in_epoch < batches.len() {
                if t.max_steps.is_some_and(|m| self.state.step >= m) {
                    break 'outer StopReason::MaxSteps;
                }
                if max_time.is_some_and(|m| started.elapsed() >= m) {
                    break 'outer StopReason::MaxTime;
                }
                if self.stop.load(Ordering::SeqCst) {
                    break 'outer StopReason::Interrupted;
                }
                let idx = &batches[self.state.batch_in_epoch];
                let (loss, tokens, secs) = self.update(idx)?;
                window.0 += loss * tokens as f64;
                window.1 += tokens;
                window.3 += 1;
                self.state.tokens += tokens as u64;
                self.state.train_seconds += secs;
                self.state.batch_in_epoch += 1;
                self.state.step += 1;
                if let Some(bar) = &bar {
                    bar.set_position(self.state.step);
                    bar.set_message(format!(
                        "loss {loss:.3} | {:.0} tok/s",
                        window.1 as f64 / window.2.elapsed().as_secs_f64()
                    ));
                } else if self.state.step.is_multiple_of(t.log_every as u64) {
                    self.log(&format!(
                        "step {} | epoch {} | loss {:.4} | {:.0} tgt tok/s | lr {:.2e} | {:.0}s",
                        self.state.step,
                        self.state.epoch + 1,
                        window.0 / window.1.max(1) as f64,
                        window.1 as f64 / window.2.elapsed().as_secs_f64(),
                        self.opt.config.lr,
                        started.elapsed().as_secs_f64()
                    ));
                    window = (0.0, 0, Instant::now(), 0);
                }
                if self.state.step.is_multiple_of(t.valid_every as u64) {
                    let v = self.validate_and_save(true, bar.as_ref())?;
                    last_validation = Some(v);
                    validated_at = Some(self.state.step);
                    window = (0.0, 0, Instant::now(), 0);
                    if self.state.schedule.stopped_early {
                        break 'outer StopReason::EarlyStopping;
                    }
                }
            }
            self.state.epoch += 1;
            self.state.batch_in_epoch = 0;
            if validated_at != Some(self.state.step) {
                let v = self.validate_and_save(true, bar.as_ref())?;
                last_validation = Some(v);
                validated_at = Some(self.state.step);
                if self.state.schedule.stopped_early {
                    break StopReason::EarlyStopping;
                }
            }
        };
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        // A final look that does not touch the schedule, so a run cut into pieces behaves
        // like one run; it also guarantees a model.safetensors exists.
        if validated_at != Some(self.state.step) || !self.model_dir.join(MODEL_FILE).exists() {
            last_validation = Some(self.validate_and_save(false, None)?);
        } else {
            self.save_last()?;
        }
        Ok(Outcome {
            reason,
            state: self.state.clone(),
            last_validation,
        })
    }

    fn progress_bar(&self, total: Option<u64>) -> Option<indicatif::ProgressBar> {
        if !self.verbose || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = match total {
            Some(n) => indicatif::ProgressBar::new(n),
            None => indicatif::ProgressBar::new_spinner(),
        };
        let style = indicatif::ProgressStyle::with_template(
            "{spinner} step {pos}/{len} [{bar:30}] {msg} | {elapsed_precise} ETA {eta}",
        )
        .map(|s| s.progress_chars("=> "));
        if let Ok(style) = style {
            bar.set_style(style);
        }
        bar.set_position(self.state.step);
        Some(bar)
    }

    /// One update on the examples `idx`. Returns (per-token loss, target tokens, seconds).
    fn update(&mut self, idx: &[usize]) -> Result<(f64, usize, f64)> {
        let start = Instant::now();
        let t = &self.config.train;
        tch::manual_seed(seed_for_step(t.seed, self.state.step));
        self.opt.config.lr = self.schedule.lr_at(&self.state.schedule, self.state.step);
        let examples: Vec<&Example> = idx.iter().map(|&i| &self.data.train[i]).collect();
        let batch = Batch::new(&examples, self.device);
        let out = self
            .model
            .loss(&batch, true, t.teacher_forcing, t.label_smoothing);
        let tokens = out.tokens.max(1);
        let loss = out.loss / tokens as f64;
        let value = loss.double_value(&[]);
        if !value.is_finite() {
            return Err(Error::NonFinite {
                step: self.state.step + 1,
                what: "loss",
                value,
            });
        }
        let norm = self.opt.backward_step(&loss, t.clip_norm);
        if !norm.is_finite() {
            return Err(Error::NonFinite {
                step: self.state.step + 1,
                what: "gradient norm",
                value: norm,
            });
        }
        Ok((value, tokens as usize, start.elapsed().as_secs_f64()))
    }

    /// Validation loss, perplexity and greedy BLEU on the validation set.
    pub fn validate(&self) -> Result<Validation> {
        validate(&self.model, self.data, &self.config, self.device)
    }

    /// Validates; with `schedule`, updates best/patience/lr; saves `last/` and, when BLEU
    /// improved, `model.safetensors`; appends to `metrics.csv`.
    fn validate_and_save(
        &mut self,
        schedule: bool,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<Validation> {
        let v = self.validate()?;
        let improved = self.state.best_bleu.is_none_or(|b| v.bleu > b);
        if improved {
            self.state.best_bleu = Some(v.bleu);
            self.state.best_step = self.state.step;
            checkpoint::save_weights(&self.vs, &self.model_dir.join(MODEL_FILE))?;
        }
        if schedule {
            self.schedule.observe(&mut self.state.schedule, v.bleu);
        }
        self.append_metrics(&v, if schedule { "valid" } else { "final" })?;
        self.save_last()?;
        let line = format!(
            "validation at step {} (epoch {}): loss {:.4} | ppl {:.2} | BLEU {:.2}{} | lr {:.2e}",
            self.state.step,
            self.state.epoch + 1,
            v.loss,
            v.ppl,
            v.bleu,
            if improved { " (best, saved)" } else { "" },
            self.state.schedule.lr
        );
        match bar {
            Some(bar) => bar.println(line),
            None => self.log(&line),
        }
        Ok(v)
    }

    /// Writes weights, optimizer moments and trainer state to `last/`.
    pub fn save_last(&self) -> Result<()> {
        checkpoint::replace_last(&self.model_dir, |dir| {
            checkpoint::save_weights(&self.vs, &dir.join(WEIGHTS_FILE))?;
            self.opt.save(&dir.join(OPTIMIZER_FILE))?;
            let json = serde_json::to_string_pretty(&self.state)
                .map_err(|e| Error::Config(e.to_string()))?;
            checkpoint::write_atomic(&dir.join(TRAINER_FILE), json.as_bytes())
        })
    }

    fn append_metrics(&self, v: &Validation, kind: &str) -> Result<()> {
        let path = self.model_dir.join(METRICS_FILE);
        let new = !path.exists();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let mut w = csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(file);
        let csv_err = |e: csv::Error| Error::Input(format!("{}: {e}", path.display()));
        if new {
            w.write_record([
                "step",
                "epoch",
                "kind",
                "valid_loss",
                "valid_ppl",
                "valid_bleu",
                "lr",
                "tgt_tokens_per_s",
                "train_seconds",
            ])
            .map_err(csv_err)?;
        }
        let s = &self.state;
        w.write_record([
            s.step.to_string(),
            (s.epoch + 1).to_string(),
            kind.to_string(),
            format!("{:.5}", v.loss),
            format!("{:.3}", v.ppl),
            format!("{:.2}", v.bleu),
            format!("{:e}", s.schedule.lr),
            format!("{:.1}", s.tokens as f64 / s.train_seconds.max(1e-9)),
            format!("{:.1}", s.train_seconds),
        ])
        .map_err(csv_err)?;
        w.flush().map_err(|e| Error::io(&path, e))
    }
}

/// The libtorch seed of update `step`: dropout and scheduled sampling depend on nothing else.
pub fn seed_for_step(seed: u64, step: u64) -> i64 {
    let mut r = crate::rng::Rng::new(seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (r.next_u64() >> 1) as i64
}

/// `Duration` to `1h02m03s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
}
