//! The `model.safetensors` protocol, both halves: what a validation saves, and the repair of
//! a crash in the middle of it.
//!
//! `model.safetensors` holds the best of the *scheduled* validations (every `valid_every`
//! updates and at every epoch end), with one exception: the extra validation when a run stops
//! may beat it, and then its weights become `model.safetensors` while the scheduled best is
//! kept aside (`.model.scheduled.safetensors`) and the state records the exception
//! (`final_best`). The next validation of a resumed run settles it as one uninterrupted run
//! would have: a scheduled improvement replaces both, otherwise the scheduled best comes
//! back. So a run cut into pieces by budgets ends with the same `model.safetensors` as one
//! run that stops where the last piece does.
use std::path::Path;

use tch::nn::VarStore;

use super::TrainerState;
use crate::checkpoint::{self, MODEL_FILE, SCHEDULED_BEST_FILE};
use crate::error::{Error, Result};

fn rename(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(to, e))
}

/// After a validation of BLEU `bleu` (`scheduled`, or the extra one at the end of a run):
/// saves the weights of `vs` as `model.safetensors` or restores the scheduled best, and
/// records it in `state` (the best BLEU and its step for a scheduled validation). Returns
/// whether `bleu` beat the best scheduled validation.
pub(super) fn settle(
    vs: &VarStore,
    model_dir: &Path,
    state: &mut TrainerState,
    bleu: f64,
    scheduled: bool,
) -> Result<bool> {
    let improved = state.best_bleu.is_none_or(|b| bleu > b);
    let model = model_dir.join(MODEL_FILE);
    let aside = model_dir.join(SCHEDULED_BEST_FILE);
    if scheduled {
        if improved {
            state.best_bleu = Some(bleu);
            state.best_step = state.step;
            checkpoint::save_weights(vs, &model)?;
            if aside.exists() {
                std::fs::remove_file(&aside).map_err(|e| Error::io(&aside, e))?;
            }
        } else if state.final_best.is_some() && aside.exists() {
            rename(&aside, &model)?;
        }
        state.final_best = None;
    } else if improved {
        if state.final_best.is_none() && state.best_bleu.is_some() && model.exists() {
            rename(&model, &aside)?;
        }
        checkpoint::save_weights(vs, &model)?;
        state.final_best = Some((state.step, bleu));
    } else if state.final_best.take().is_some() && aside.exists() {
        rename(&aside, &model)?;
    }
    Ok(improved)
}

/// On resume from `state`: a crash between moving the scheduled best aside and recording the
/// exception left it aside; put it back.
pub(super) fn repair(model_dir: &Path, state: &TrainerState) -> Result<()> {
    let aside = model_dir.join(SCHEDULED_BEST_FILE);
    if state.final_best.is_none() && aside.exists() {
        rename(&aside, &model_dir.join(MODEL_FILE))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A one-tensor store whose weight is `w`.
    fn store(w: f64) -> VarStore {
        let vs = VarStore::new(tch::Device::Cpu);
        let _ = vs.root().var("w", &[1], tch::nn::Init::Const(w));
        vs
    }

    fn weight(path: &Path) -> f64 {
        let t = tch::Tensor::read_safetensors(path).unwrap();
        t[0].1.double_value(&[0])
    }

    #[test]
    fn a_final_best_is_kept_apart_and_the_scheduled_best_comes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (model, aside) = (
            dir.path().join(MODEL_FILE),
            dir.path().join(SCHEDULED_BEST_FILE),
        );
        let mut s = TrainerState::new(1e-3);
        s.step = 10;
        assert!(settle(&store(1.0), dir.path(), &mut s, 20.0, true).unwrap());
        assert_eq!(
            (s.best_bleu, s.best_step, weight(&model)),
            (Some(20.0), 10, 1.0)
        );
        // The end of a run beats it: its weights are the model, the scheduled best aside.
        s.step = 12;
        assert!(settle(&store(2.0), dir.path(), &mut s, 21.0, false).unwrap());
        assert_eq!(s.final_best, Some((12, 21.0)));
        assert_eq!((weight(&model), weight(&aside)), (2.0, 1.0));
        assert_eq!(s.best_bleu, Some(20.0), "the schedule's best is untouched");
        // The next scheduled validation does not improve: the scheduled best comes back.
        s.step = 20;
        assert!(!settle(&store(3.0), dir.path(), &mut s, 19.0, true).unwrap());
        assert_eq!((s.final_best, weight(&model)), (None, 1.0));
        assert!(!aside.exists());
    }

    #[test]
    fn a_crash_with_the_best_aside_is_repaired_on_resume() {
        let dir = tempfile::tempdir().unwrap();
        let (model, aside) = (
            dir.path().join(MODEL_FILE),
            dir.path().join(SCHEDULED_BEST_FILE),
        );
        checkpoint::save_weights(&store(4.0), &aside).unwrap();
        let s = TrainerState::new(1e-3);
        repair(dir.path(), &s).unwrap();
        assert_eq!(weight(&model), 4.0);
        assert!(!aside.exists());
    }
}
