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
//! validates and writes the model directory; the other ranks follow its decisions.
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device};

use crate::batch::{Batch, Example};
use crate::checkpoint::{
    self, CURVES_FILE, METRICS_FILE, MODEL_FILE, OPTIMIZER_FILE, SCHEDULED_BEST_FILE, TRAINER_FILE,
    WEIGHTS_FILE,
};
use crate::config::{parse_duration, Config};
use crate::data::sampler::{BatchSource, Position};
use crate::data::Prepared;
use crate::distributed::ProcessGroup;
use crate::error::{Error, Result};
use crate::model::Seq2Seq;
use crate::optim::{Adam, AdamConfig};
use crate::precision::Precision;
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
    /// Set while `model.safetensors` holds the weights of the validation at the end of a run
    /// (which beat `best_bleu`, the best scheduled validation): `(step, BLEU)`. See
    /// [`Trainer::run`] for why it is kept apart.
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

impl TrainerState {
    /// The data position.
    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            window: self.window,
            batch_in_window: self.batch_in_window.unwrap_or(self.batch_in_epoch),
            batch_in_epoch: self.batch_in_epoch,
        }
    }

    fn set_position(&mut self, p: Position) {
        self.epoch = p.epoch;
        self.window = p.window;
        self.batch_in_window = Some(p.batch_in_window);
        self.batch_in_epoch = p.batch_in_epoch;
    }
}

fn one() -> u64 {
    1
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
    /// Whether this run made at least one update.
    pub updated: bool,
}

/// A training run over prepared data, writing to a model directory.
pub struct Trainer<'a> {
    config: Config,
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
    /// The data-parallel process group, if any (see the module docs).
    group: Option<&'a ProcessGroup>,
    /// Whether every parameter has a gradient tensor (a data-parallel all-reduce needs the
    /// same list on every rank).
    grads_ready: bool,
    /// Autocast for the forward passes (training and validation).
    precision: Precision,
    /// The wall clock of this command's training loop, for a time budget's decay.
    clock: Option<BudgetClock>,
}

/// Where a run stands in its time budget (see [`crate::schedule`]).
#[derive(Debug, Clone, Copy)]
struct BudgetClock {
    started: Instant,
    /// Loop seconds of the earlier pieces of the run.
    before: f64,
    /// This command's `--max-time`, in seconds.
    budget: Option<f64>,
}

impl BudgetClock {
    /// Loop seconds of all pieces so far.
    fn seconds(&self) -> f64 {
        self.before + self.started.elapsed().as_secs_f64()
    }

    /// The fraction of the whole time budget used, `(s + e) / (s + T)`.
    fn progress(&self) -> Option<f64> {
        self.budget
            .map(|t| self.seconds() / (self.before + t).max(f64::MIN_POSITIVE))
    }
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
        Self::with_group(config, model_dir, device, data, stop, None)
    }

    /// [`Trainer::new`] as one process of a data-parallel run over `group`. Rank 0 owns
    /// `model_dir` (it loads `last/` and checks that the resume keeps the batches per update);
    /// the other ranks build a fresh model and receive rank 0's weights, Adam moments and
    /// progress, and check that their training data are rank 0's. A collective: every rank
    /// calls it.
    pub fn with_group(
        config: Config,
        model_dir: &Path,
        device: Device,
        data: &'a Prepared,
        stop: &'a AtomicBool,
        group: Option<&'a ProcessGroup>,
    ) -> Result<Self> {
        let loaded = Self::load(config, model_dir, device, data, stop, group);
        let Some(g) = group else { return loaded };
        let (rank, world) = (g.rank(), g.world_size());
        // Rank 0's state or its error reaches every rank, so that no rank waits for a peer
        // that has stopped.
        let sent = match &loaded {
            Ok(t) if rank == 0 => Ok(Handshake {
                state: t.state.clone(),
                train_pairs: data.train.len(),
                train_hash: data.train.content_hash(),
            }),
            Ok(_) => Err(String::new()),
            Err(e) => Err(error_chain(e)),
        };
        let received = g.from_rank0(sent.and_then(|h| {
            serde_json::to_vec(&h).map_err(|e| format!("encoding the trainer state: {e}"))
        }));
        let mut trainer = loaded?;
        let handshake: Handshake = serde_json::from_slice(&received?)
            .map_err(|e| Error::Distributed(format!("rank 0's trainer state: {e}")))?;
        let mine = (data.train.len(), data.train.content_hash());
        let differs = (handshake.train_pairs, handshake.train_hash) != mine;
        if g.any(&[differs])?[0] {
            return Err(Error::Distributed(if rank == 0 {
                "another rank's training data differ from rank 0's (every rank must read the same files with the same settings)".to_string()
            } else {
                format!(
                    "rank {rank}'s training data ({} pairs) differ from rank 0's ({} pairs): every rank must read the same files with the same settings",
                    mine.0, handshake.train_pairs
                )
            }));
        }
        trainer.state = handshake.state;
        trainer.opt.steps = trainer.state.step;
        trainer.opt.config.lr =
            trainer
                .schedule
                .lr_at(&trainer.state.schedule, trainer.state.step, None);
        let mut vars: Vec<(String, tch::Tensor)> = trainer.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let mut tensors: Vec<tch::Tensor> = vars.into_iter().map(|(_, t)| t).collect();
        tensors.extend(trainer.opt.state_tensors());
        g.broadcast(&tensors, 0)?;
        trainer.group = group;
        trainer.verbose = rank == 0;
        debug_assert_eq!(trainer.state.world_size, world as u64);
        Ok(trainer)
    }

    fn load(
        config: Config,
        model_dir: &Path,
        device: Device,
        data: &'a Prepared,
        stop: &'a AtomicBool,
        group: Option<&ProcessGroup>,
    ) -> Result<Self> {
        config.model.validate()?;
        config.train.validate()?;
        if device == Device::Cpu {
            if let Some(available) = crate::memory::available_bytes() {
                config.model.check_fits(available, 16)?;
            }
        }
        tch::manual_seed(config.train.seed as i64);
        let mut vs = VarStore::new(device);
        let mut model = crate::model::build(&vs.root(), &config.model)?;
        model.set_fused_loss(config.train.fused_loss);
        let t = &config.train;
        let mut opt = Adam::new(&vs, AdamConfig::from(t));
        opt.fused = t.fused_adam;
        let mut state = TrainerState {
            step: 0,
            epoch: 0,
            batch_in_epoch: 0,
            best_bleu: None,
            best_step: 0,
            schedule: ScheduleState::new(t.lr),
            tokens: 0,
            train_seconds: 0.0,
            final_best: None,
            world_size: 1,
            accumulate: 1,
            window: 0,
            batch_in_window: None,
            data_hash: None,
        };
        let hash = format!("{:016x}", data.train.content_hash());
        let world = group.map_or(1, ProcessGroup::world_size) as u64;
        let accumulate = t.accumulate as u64;
        let resumable = group.is_none_or(|g| g.rank() == 0);
        if let Some(last) = checkpoint::last_dir(model_dir).filter(|_| resumable) {
            let trainer_file = last.join(TRAINER_FILE);
            let text = checkpoint::read_trainer_file(&trainer_file)?;
            state = serde_json::from_str(&text)
                .map_err(|e| Error::ModelDir(format!("{}: {e}", trainer_file.display())))?;
            // A crash between moving the scheduled best aside and recording it: put it back.
            let aside = model_dir.join(SCHEDULED_BEST_FILE);
            if state.final_best.is_none() && aside.exists() {
                let model = model_dir.join(MODEL_FILE);
                std::fs::rename(&aside, &model).map_err(|e| Error::io(&model, e))?;
            }
            check_batches_per_update(&state, world, accumulate)?;
            if state.data_hash.as_ref().is_some_and(|h| *h != hash) {
                return Err(Error::Input(format!(
                    "the training data differ from those this run trained on (prepared data {hash}, the run's {}): a resumed run must train on the same data; give the same files and settings, or train in a new --model-dir",
                    state.data_hash.as_deref().unwrap_or("")
                )));
            }
            checkpoint::load_weights(&mut vs, &last.join(WEIGHTS_FILE))?;
            opt.load(&last.join(OPTIMIZER_FILE))?;
            opt.steps = state.step;
        } else if t.unigram_output_bias {
            // A fresh model only: a resumed one has its trained bias from last/.
            let prior = crate::data::log_prior(&data.tgt_counts, config.model.tgt_vocab);
            model.set_output_prior(&tch::Tensor::from_slice(&prior).to_device(device));
        }
        state.world_size = world;
        state.accumulate = accumulate;
        state.data_hash = Some(hash);
        let schedule = Schedule::new(&config.train);
        opt.config.lr = schedule.lr_at(&state.schedule, state.step, None);
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
            group: None,
            grads_ready: false,
            precision: Precision::Fp32,
            clock: None,
        })
    }

    /// Progress lines on stderr (default on).
    pub fn set_verbose(&mut self, verbose: bool) {
        self.verbose = verbose;
    }

    /// The progress so far (at step 0 for a fresh model).
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
                "train.patience" => {
                    self.state.schedule.stopped_early =
                        t.patience > 0 && self.state.schedule.bad_validations >= t.patience
                }
                _ => {}
            }
        }
    }

    fn log(&self, msg: &str) {
        if self.verbose {
            eprintln!("{msg}");
        }
    }

    /// Trains until a budget, early stopping, or the stop flag ends the run.
    ///
    /// `model.safetensors` is the best of the *scheduled* validations (every `valid_every`
    /// updates and at every epoch end), plus one exception: the extra validation when a run
    /// stops may beat it, and then its weights become `model.safetensors` while the scheduled
    /// best is kept aside (`.model.scheduled.safetensors`). The next validation of a resumed
    /// run settles it as one uninterrupted run would have: a scheduled improvement replaces
    /// both, otherwise the scheduled best comes back. So a run cut into pieces by budgets
    /// ends with the same `model.safetensors` as one run that stops where the last piece does.
    pub fn run(&mut self) -> Result<Outcome> {
        let t = self.config.train.clone();
        let max_time = t.max_time.as_deref().map(parse_duration).transpose()?;
        let started = Instant::now();
        self.clock = Some(BudgetClock {
            started,
            before: self.state.schedule.budget_seconds,
            budget: max_time.map(|m| m.as_secs_f64()),
        });
        if self.state.schedule.stopped_early {
            return Ok(Outcome {
                reason: StopReason::EarlyStopping,
                state: self.state.clone(),
                last_validation: None,
                updated: false,
            });
        }
        let first_step = self.state.step;
        let per_update = self.group.map_or(1, ProcessGroup::world_size) * t.accumulate;
        let data = self.data;
        let total = t.max_steps.or_else(|| {
            let e = t.max_epochs?;
            let per_epoch = BatchSource::count_epoch_batches(&data.train, t.batch_tokens, t.seed);
            Some(e * per_epoch.div_ceil(per_update) as u64)
        });
        let mut source =
            BatchSource::new(&data.train, t.batch_tokens, t.seed, self.state.position());
        let bar = self.progress_bar(total);
        let mut last_validation = None;
        let mut validated_at = None;
        let mut window = Window::new();
        let result: Result<StopReason> = (|| {
            Ok('outer: loop {
                if t.max_epochs.is_some_and(|m| self.state.epoch >= m) {
                    break StopReason::MaxEpochs;
                }
                while !source.epoch_done() {
                    if t.max_steps.is_some_and(|m| self.state.step >= m) {
                        break 'outer StopReason::MaxSteps;
                    }
                    let mut time_up = max_time.is_some_and(|m| started.elapsed() >= m);
                    let mut interrupted = self.stop.load(Ordering::SeqCst);
                    if let Some(g) = self.group {
                        // One decision for all ranks: clocks and signals differ between them.
                        let any = g.any(&[time_up, interrupted])?;
                        (time_up, interrupted) = (any[0], any[1]);
                    }
                    if time_up {
                        break 'outer StopReason::MaxTime;
                    }
                    if interrupted {
                        break 'outer StopReason::Interrupted;
                    }
                    let batches = source.next_batches(per_update);
                    let (loss, tokens, secs) = self.update_batches(&batches)?;
                    window.add(loss, tokens);
                    self.state.tokens += tokens as u64;
                    self.state.train_seconds += secs;
                    self.state.set_position(source.position());
                    self.state.step += 1;
                    if let Some(bar) = &bar {
                        bar.set_position(self.state.step);
                        bar.set_message(format!(
                            "loss {loss:.3} | {:.0} tok/s",
                            window.tokens_per_s()
                        ));
                    } else if self.state.step.is_multiple_of(t.log_every as u64) {
                        self.log(&format!(
                            "step {} | epoch {} | loss {:.4} | {:.0} tgt tok/s | lr {:.2e} | {:.0}s",
                            self.state.step,
                            self.state.epoch + 1,
                            window.loss(),
                            window.tokens_per_s(),
                            self.opt.config.lr,
                            started.elapsed().as_secs_f64()
                        ));
                        window = Window::new();
                    }
                    if self.state.step.is_multiple_of(t.valid_every as u64) {
                        last_validation = Some(self.validate_everywhere(true, bar.as_ref())?);
                        validated_at = Some(self.state.step);
                        window = Window::new();
                        if self.state.schedule.stopped_early {
                            break 'outer StopReason::EarlyStopping;
                        }
                    }
                }
                source.next_epoch();
                self.state.set_position(source.position());
                if validated_at != Some(self.state.step) {
                    last_validation = Some(self.validate_everywhere(true, bar.as_ref())?);
                    validated_at = Some(self.state.step);
                    if self.state.schedule.stopped_early {
                        break StopReason::EarlyStopping;
                    }
                }
            })
        })();
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        if let Some(c) = &self.clock {
            self.state.schedule.budget_seconds = c.seconds();
        }
        let reason = match result {
            Ok(reason) => reason,
            // A signal during a validation: stop now, without finishing it.
            Err(Error::Interrupted) => StopReason::Interrupted,
            Err(e) => return Err(e),
        };
        let writer = self.is_writer();
        let mut model_exists = self.model_dir.join(MODEL_FILE).exists();
        if let Some(g) = self.group {
            // Rank 0's model directory decides for everyone.
            let sent = vec![model_exists as u8];
            model_exists = g.from_rank0(Ok(sent))?.first() == Some(&1);
        }
        let updated = self.state.step > first_step;
        if reason == StopReason::Interrupted {
            // No final validation: Ctrl-C means now. A model to translate with exists anyway.
            if writer {
                if !model_exists {
                    checkpoint::save_weights(&self.vs, &self.model_dir.join(MODEL_FILE))?;
                }
                self.save_last()?;
            }
        } else if (updated && validated_at != Some(self.state.step)) || !model_exists {
            // A final look that does not touch the schedule (see above).
            match self.validate_everywhere(false, None) {
                Ok(v) => last_validation = Some(v),
                Err(Error::Interrupted) if writer => self.save_last()?,
                Err(Error::Interrupted) => {}
                Err(e) => return Err(e),
            }
        } else if updated && writer {
            self.save_last()?;
        }
        Ok(Outcome {
            reason,
            state: self.state.clone(),
            last_validation,
            updated,
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

    /// Updates over several batches (of one update, in order): those of this
    /// rank (see the module docs) are computed here, the gradients summed over the ranks.
    /// Returns (per-token loss over all the batches, their target tokens, seconds).
    fn update_batches(&mut self, batches: &[Vec<Example>]) -> Result<(f64, usize, f64)> {
        let start = Instant::now();
        let (rank, world) = self.group.map_or((0, 1), |g| (g.rank(), g.world_size()));
        if self.group.is_some() && !self.grads_ready {
            self.opt.define_grads();
            self.grads_ready = true;
        }
        let progress = self.time_progress()?;
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
        if let Some(g) = self.group {
            // On the gradients' device: NCCL moves only CUDA tensors.
            let sum = tch::Tensor::from_slice(&[loss_sum]).to_device(self.device);
            let mut tensors = self.opt.grads();
            tensors.push(sum.shallow_clone());
            g.all_reduce_sum(&tensors)?;
            loss_sum = sum.double_value(&[0]);
        }
        let value = loss_sum / total;
        if !value.is_finite() {
            return Err(Error::NonFinite {
                step: self.state.step + 1,
                what: "loss",
                value,
            });
        }
        let norm = self.opt.clip_grad_norm(t.clip_norm);
        if !norm.is_finite() {
            return Err(Error::NonFinite {
                step: self.state.step + 1,
                what: "gradient norm",
                value: norm,
            });
        }
        self.opt.step();
        Ok((value, tokens, start.elapsed().as_secs_f64()))
    }

    /// The fraction of the time budget used before this update, when the learning rate
    /// follows it; rank 0's clock decides for every rank.
    fn time_progress(&self) -> Result<Option<f64>> {
        if !self.schedule.follows_time() {
            return Ok(None);
        }
        let mine = self.clock.and_then(|c| c.progress());
        let Some(g) = self.group else {
            return Ok(mine);
        };
        let sent = mine.unwrap_or(-1.0).to_le_bytes().to_vec();
        let got = g.from_rank0(Ok(sent))?;
        let p = got
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(f64::from_le_bytes)
            .unwrap_or(-1.0);
        Ok((p >= 0.0).then_some(p))
    }

    /// Whether this process writes the model directory (rank 0, or a single process).
    fn is_writer(&self) -> bool {
        self.group.is_none_or(|g| g.rank() == 0)
    }

    /// [`Trainer::validate_and_save`] on rank 0, whose outcome (progress, schedule, or its
    /// error) then reaches every other rank; without a group, just that.
    fn validate_everywhere(
        &mut self,
        schedule: bool,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<Validation> {
        let Some(g) = self.group else {
            return self.validate_and_save(schedule, bar);
        };
        /// `validation` as the bits of loss, perplexity and BLEU: JSON has no infinity, and a
        /// perplexity can be infinite.
        #[derive(Serialize, Deserialize)]
        struct Outcome {
            state: TrainerState,
            validation: Option<[u64; 3]>,
        }
        if g.rank() == 0 {
            let r = self.validate_and_save(schedule, bar);
            let sent = match &r {
                Ok(v) => Ok(Some([v.loss, v.ppl, v.bleu].map(f64::to_bits))),
                Err(Error::Interrupted) => Ok(None),
                Err(e) => Err(error_chain(e)),
            }
            .and_then(|validation| {
                let o = Outcome {
                    state: self.state.clone(),
                    validation,
                };
                serde_json::to_vec(&o).map_err(|e| format!("encoding the validation: {e}"))
            });
            let shared = g.from_rank0(sent);
            let v = r?; // rank 0's own error comes first
            shared?;
            return Ok(v);
        }
        let bytes = g.from_rank0(Err(String::new()))?;
        let o: Outcome = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Distributed(format!("rank 0's validation: {e}")))?;
        self.state = o.state;
        let [loss, ppl, bleu] = o.validation.ok_or(Error::Interrupted)?.map(f64::from_bits);
        Ok(Validation { loss, ppl, bleu })
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

    /// [`Error::NonFinite`] when a parameter is NaN or infinite (a finite but exploding loss
    /// can get there without tripping the loss check).
    fn check_parameters(&self) -> Result<()> {
        let broken = tch::no_grad(|| {
            self.vs
                .trainable_variables()
                .iter()
                .any(|t| t.isfinite().logical_not().any().int64_value(&[]) != 0)
        });
        if broken {
            return Err(Error::NonFinite {
                step: self.state.step,
                what: "model (a parameter)",
                value: f64::NAN,
            });
        }
        Ok(())
    }

    /// Validates; a scheduled validation (`schedule`) updates best/patience/lr and saves
    /// `model.safetensors` when BLEU improved; the final one of a run may save it too, as
    /// [`Trainer::run`] explains. Then appends to `metrics.csv` and saves `last/`.
    fn validate_and_save(
        &mut self,
        schedule: bool,
        bar: Option<&indicatif::ProgressBar>,
    ) -> Result<Validation> {
        self.check_parameters()?;
        let v = self.validate()?;
        let improved = self.state.best_bleu.is_none_or(|b| v.bleu > b);
        let model = self.model_dir.join(MODEL_FILE);
        let aside = self.model_dir.join(SCHEDULED_BEST_FILE);
        let rename =
            |from: &Path, to: &Path| std::fs::rename(from, to).map_err(|e| Error::io(to, e));
        if schedule {
            if improved {
                self.state.best_bleu = Some(v.bleu);
                self.state.best_step = self.state.step;
                checkpoint::save_weights(&self.vs, &model)?;
                if aside.exists() {
                    std::fs::remove_file(&aside).map_err(|e| Error::io(&aside, e))?;
                }
            } else if self.state.final_best.is_some() && aside.exists() {
                rename(&aside, &model)?;
            }
            self.state.final_best = None;
            self.schedule.observe(&mut self.state.schedule, v.bleu);
        } else if improved {
            if self.state.final_best.is_none() && self.state.best_bleu.is_some() && model.exists() {
                rename(&model, &aside)?;
            }
            checkpoint::save_weights(&self.vs, &model)?;
            self.state.final_best = Some((self.state.step, v.bleu));
        } else if self.state.final_best.take().is_some() && aside.exists() {
            rename(&aside, &model)?;
        }
        checkpoint::save_checkpoint(
            &self.vs,
            &self.model_dir,
            self.state.step,
            self.config.train.keep_checkpoints,
        )?;
        self.append_metrics(&v, if schedule { "valid" } else { "final" })?;
        self.write_curves();
        self.save_last()?;
        let line = format!(
            "validation at step {} (epoch {}): loss {:.4} | ppl {:.2} | BLEU {:.2}{} | lr {:.2e}",
            self.state.step,
            self.state.epoch + 1,
            v.loss,
            v.ppl,
            v.bleu,
            if improved { " (best, saved)" } else { "" },
            // The rate of the last update (warm-up and budgeted decay included), as the step
            // lines show it; the plateau peak is in `last/state.json`.
            self.opt.config.lr
        );
        match bar {
            Some(bar) => bar.println(line),
            None => self.log(&line),
        }
        Ok(v)
    }

    /// Redraws `curves.svg` from `metrics.csv`. A picture that cannot be drawn is a warning,
    /// never the end of a training run.
    fn write_curves(&self) {
        let metrics = self.model_dir.join(METRICS_FILE);
        let curves = self.model_dir.join(CURVES_FILE);
        if let Err(e) = crate::plot::curves::write_curves(&metrics, &curves) {
            let e = anyhow::Error::new(e);
            eprintln!("warning: {}: {}", curves.display(), crate::cli::chain(&e));
        }
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

    /// Adds this validation's row to `metrics.csv`, rewritten atomically: rows of later steps
    /// (from progress a crash lost before `last/` was saved) and an earlier row of the same
    /// step and kind (a re-run) are dropped, so every row is one validation of this run's
    /// history.
    fn append_metrics(&self, v: &Validation, kind: &str) -> Result<()> {
        let path = self.model_dir.join(METRICS_FILE);
        let csv_err = |source: csv::Error| Error::Csv {
            path: path.clone(),
            source,
        };
        let header = [
            "step",
            "epoch",
            "kind",
            "valid_loss",
            "valid_ppl",
            "valid_bleu",
            "lr",
            "tgt_tokens_per_s",
            "train_seconds",
        ];
        let s = &self.state;
        let mut rows: Vec<Vec<String>> = Vec::new();
        if path.exists() {
            let mut r = csv::ReaderBuilder::new()
                .has_headers(true)
                .from_path(&path)
                .map_err(csv_err)?;
            for rec in r.records() {
                let rec = rec.map_err(csv_err)?;
                let step: u64 = rec.get(0).and_then(|x| x.parse().ok()).unwrap_or(u64::MAX);
                if step < s.step || (step == s.step && rec.get(2) != Some(kind)) {
                    rows.push(rec.iter().map(str::to_string).collect());
                }
            }
        }
        rows.push(vec![
            s.step.to_string(),
            (s.epoch + 1).to_string(),
            kind.to_string(),
            format!("{:.5}", v.loss),
            format!("{:.3}", v.ppl),
            format!("{:.2}", v.bleu),
            format!("{:e}", s.schedule.lr),
            format!("{:.1}", s.tokens as f64 / s.train_seconds.max(1e-9)),
            format!("{:.1}", s.train_seconds),
        ]);
        let mut w = csv::WriterBuilder::new().from_writer(Vec::new());
        w.write_record(header).map_err(csv_err)?;
        for row in &rows {
            w.write_record(row).map_err(csv_err)?;
        }
        let bytes = w
            .into_inner()
            .map_err(|e| Error::io(&path, e.into_error()))?;
        checkpoint::write_atomic(&path, &bytes)
    }
}

/// Loss and throughput since the last progress line.
struct Window {
    loss_sum: f64,
    tokens: usize,
    since: Instant,
}

impl Window {
    fn new() -> Self {
        Window {
            loss_sum: 0.0,
            tokens: 0,
            since: Instant::now(),
        }
    }

    fn add(&mut self, loss: f64, tokens: usize) {
        self.loss_sum += loss * tokens as f64;
        self.tokens += tokens;
    }

    /// Mean per-token loss.
    fn loss(&self) -> f64 {
        self.loss_sum / self.tokens.max(1) as f64
    }

    fn tokens_per_s(&self) -> f64 {
        self.tokens as f64 / self.since.elapsed().as_secs_f64()
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

/// The progress saved in `model_dir/last`, if any.
pub fn saved_state(model_dir: &Path) -> Result<Option<TrainerState>> {
    let Some(last) = checkpoint::last_dir(model_dir) else {
        return Ok(None);
    };
    let path = last.join(TRAINER_FILE);
    let text = checkpoint::read_trainer_file(&path)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::ModelDir(format!("{}: {e}", path.display())))
}

/// A run saved as `state` may resume on `world` processes accumulating `accumulate` batches
/// each only if an update still sees as many batches (then it is the same run, see the
/// module docs); otherwise a config error that says what would fit.
pub fn check_batches_per_update(state: &TrainerState, world: u64, accumulate: u64) -> Result<()> {
    let (saved, now) = (state.world_size * state.accumulate, world * accumulate);
    if saved == now {
        return Ok(());
    }
    let hint = if saved % world == 0 {
        format!(
            "resume it on {world} process(es) with --set train.accumulate={}",
            saved / world
        )
    } else {
        format!("resume it on a number of processes that divides {saved}")
    };
    Err(Error::Config(format!(
        "this run was trained with {} process(es) x train.accumulate {} = {saved} batches per update, and {world} x {accumulate} = {now} would change what an update sees: {hint}, or train in a new --model-dir",
        state.world_size, state.accumulate
    )))
}

/// What rank 0 sends the other ranks when a data-parallel run starts.
#[derive(Serialize, Deserialize)]
struct Handshake {
    state: TrainerState,
    /// The training examples, to check that every rank trains on the same data.
    train_pairs: usize,
    train_hash: u64,
}

/// `e` and its causes on one line, as rank 0 reports them to the other ranks.
fn error_chain(e: &Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        let first = text.lines().next().unwrap_or("").to_string();
        if parts.last() != Some(&first) {
            parts.push(first);
        }
        cause = c.source();
    }
    parts.join(": ")
}

/// `Duration` to `1h02m03s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}h{:02}m{:02}s", s / 3600, s / 60 % 60, s % 60)
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

    #[test]
    fn batches_per_update_must_stay_on_resume() {
        let state = |world_size, accumulate| TrainerState {
            step: 4,
            epoch: 0,
            batch_in_epoch: 8,
            best_bleu: None,
            best_step: 0,
            schedule: ScheduleState::new(1e-3),
            tokens: 0,
            train_seconds: 0.0,
            final_best: None,
            world_size,
            accumulate,
            window: 0,
            batch_in_window: None,
            data_hash: None,
        };
        assert!(check_batches_per_update(&state(2, 2), 4, 1).is_ok());
        assert!(check_batches_per_update(&state(2, 2), 1, 4).is_ok());
        let e = check_batches_per_update(&state(2, 2), 2, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("on 2 process(es) with --set train.accumulate=2"),
            "{e}"
        );
        let e = check_batches_per_update(&state(2, 2), 3, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("a number of processes that divides 4"), "{e}");
        // A state saved before data parallelism existed reads as one process.
        let old = r#"{"step":1,"epoch":0,"batch_in_epoch":1,"best_bleu":null,"best_step":0,
            "lr":0.001,"schedule_best_bleu":null,"bad_validations":0,"lr_bad_validations":0,
            "stopped_early":false,"tokens":5,"train_seconds":1.0}"#;
        let s: TrainerState = serde_json::from_str(old).unwrap();
        assert_eq!((s.world_size, s.accumulate), (1, 1));
    }
}
