//! A run's start: a fresh model or the state of `last/` (with its crash repair and the
//! checks that a resume is the same run), and the handshake that gives every rank of a
//! data-parallel run rank 0's weights, moments and progress.
use std::path::Path;
use std::sync::atomic::AtomicBool;

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device};

use super::ranks::Ranks;
use super::{best_weights, Trainer, TrainerState};
use crate::checkpoint::{self, OPTIMIZER_FILE, TRAINER_FILE, WEIGHTS_FILE};
use crate::config::Config;
use crate::data::Prepared;
use crate::distributed::ProcessGroup;
use crate::error::{Error, Result};
use crate::optim::{Adam, AdamConfig};
use crate::precision::Precision;
use crate::schedule::Schedule;

/// What rank 0 sends the other ranks when a data-parallel run starts.
#[derive(Serialize, Deserialize)]
struct Handshake {
    state: TrainerState,
    /// The training examples, to check that every rank trains on the same data.
    train_pairs: usize,
    train_hash: u64,
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
        let ranks = Ranks::new(group);
        let loaded = Self::load(config, model_dir, device, data, stop, ranks);
        if !ranks.is_group() {
            return loaded;
        }
        let (rank, world) = (ranks.rank(), ranks.world_size());
        // Rank 0's state or its error reaches every rank, so that no rank waits for a peer
        // that has stopped.
        let sent = match &loaded {
            Ok(t) => Ok(Handshake {
                state: t.state.clone(),
                train_pairs: data.train.len(),
                train_hash: data.train.content_hash(),
            }),
            Err(e) => Err(super::ranks::error_chain(e)),
        };
        let received = ranks.rank0_sends(sent);
        let mut trainer = loaded?;
        let handshake = received?;
        let mine = (data.train.len(), data.train.content_hash());
        let differs = (handshake.train_pairs, handshake.train_hash) != mine;
        if ranks.any(differs)? {
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
        ranks.broadcast_from_rank0(&tensors)?;
        trainer.ranks = ranks;
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
        ranks: Ranks<'a>,
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
        model.set_fused_rnn(config.train.fused_rnn);
        let t = &config.train;
        let mut opt = Adam::new(&vs, AdamConfig::from(t));
        opt.fused = t.fused_adam;
        let mut state = TrainerState::new(t.lr);
        let hash = format!("{:016x}", data.train.content_hash());
        let world = ranks.world_size() as u64;
        let accumulate = t.accumulate as u64;
        if let Some(last) = checkpoint::last_dir(model_dir).filter(|_| ranks.is_writer()) {
            state = read_state(&last.join(TRAINER_FILE))?;
            best_weights::repair(model_dir, &state)?;
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
            ranks: Ranks::One,
            grads_ready: false,
            precision: Precision::Fp32,
            clock: None,
        })
    }
}

fn read_state(path: &Path) -> Result<TrainerState> {
    let text = checkpoint::read_trainer_file(path)?;
    serde_json::from_str(&text).map_err(|e| Error::ModelDir(format!("{}: {e}", path.display())))
}

/// The progress saved in `model_dir/last`, if any.
pub fn saved_state(model_dir: &Path) -> Result<Option<TrainerState>> {
    checkpoint::last_dir(model_dir)
        .map(|last| read_state(&last.join(TRAINER_FILE)))
        .transpose()
}

/// A run saved as `state` may resume on `world` processes accumulating `accumulate` batches
/// each only if an update still sees as many batches (then it is the same run, see the
/// module docs of [`crate::train`]); otherwise a config error that says what would fit.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_per_update_must_stay_on_resume() {
        let state = |world_size, accumulate| TrainerState {
            step: 4,
            batch_in_epoch: 8,
            world_size,
            accumulate,
            ..TrainerState::new(1e-3)
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
