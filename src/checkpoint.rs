//! The model directory: self-describing, so `rnmt-translate` rebuilds everything from it.
//!
//! ```text
//! MODEL_DIR/
//!   config.json            resolved Config (model, data, train)
//!   tokenizer.json         joint tokenizer (or tokenizer.src.json + tokenizer.tgt.json)
//!   model.safetensors      best weights by validation BLEU (what rnmt-translate loads)
//!   metrics.csv            one row per validation
//!   curves.svg             validation BLEU, perplexity and learning rate, from metrics.csv
//!   checkpoints/           with train.keep_checkpoints = K: the weights of the last K
//!     step-00000500.safetensors ...   validations, for rnmt-average
//!   last/                  the latest state, for resuming:
//!     weights.safetensors  optimizer.safetensors  trainer.json
//! ```
//!
//! Every file is written to a temporary name, flushed to the disk (`fsync`), renamed into
//! place, and the directory is flushed too, so that a power loss leaves either the old or the
//! new file under the final name, never an empty one. `last/` is replaced as a
//! whole: it is written as `last.new/`, the old one moves to `last.old/`, the new one to
//! `last/`, then `last.old/` is removed; a crash at any point leaves a complete `last/` or
//! `last.old/`, and [`last_dir`] finds it.
//!
//! Parameter names in the weights are a file format: keep them stable.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tch::{nn::VarStore, Device, Tensor};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::Seq2Seq;
use crate::tokenizer::Tokenizers;

pub const CONFIG_FILE: &str = "config.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const METRICS_FILE: &str = "metrics.csv";
pub const LAST_DIR: &str = "last";
pub const WEIGHTS_FILE: &str = "weights.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const TRAINER_FILE: &str = "trainer.json";
pub const CURVES_FILE: &str = "curves.svg";
/// The weights of the last `train.keep_checkpoints` validations.
pub const CHECKPOINTS_DIR: &str = "checkpoints";
/// The best scheduled weights, kept aside while `model.safetensors` holds a better final
/// validation's (see [`crate::train::Trainer::run`]).
pub const SCHEDULED_BEST_FILE: &str = ".model.scheduled.safetensors";
/// Held locked (`flock`) by the one `rnmt-train` that writes the directory.
pub const LOCK_FILE: &str = ".lock";

pub use crate::atomic::{rename_synced, sync_dir, sync_file, write_atomic};

/// Takes the exclusive lock of a model directory, held until the returned file is dropped
/// (the process ends). A second trainer on the same directory gets a one-line error.
pub fn lock_model_dir(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::ModelDir(format!(
            "{} is in use by another rnmt-train (it holds {}); wait for it or use another --model-dir",
            dir.display(),
            path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(Error::io(&path, e)),
    }
}

/// Saves all variables of `vs` as safetensors with their digest ([`crate::digest`]),
/// atomically; a failed write removes its temporary file.
pub fn save_weights(vs: &VarStore, path: &Path) -> Result<()> {
    let tmp = crate::atomic::tmp_name(path);
    let done = (|| {
        vs.save(&tmp)?;
        crate::digest::seal_file(&tmp)?;
        sync_file(&tmp)?;
        rename_synced(&tmp, path)
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}

/// Bytes of the safetensors header at most (the limit of the safetensors format).
pub const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// Most bytes of a `trainer.json` (a few kilobytes in practice).
pub const MAX_TRAINER_BYTES: u64 = 16 << 20;

/// The text of a `trainer.json`: a bounded read of a regular file (a FIFO or a device is
/// refused before it is opened, see [`crate::modelfile`]).
pub fn read_trainer_file(path: &Path) -> Result<String> {
    crate::modelfile::read_text_bounded(path, MAX_TRAINER_BYTES, "trainer.json")
        .map_err(|e| Error::ModelDir(e.to_string()))
}

/// The largest weights file accepted for `params` parameters: their float32 bytes, the
/// 8-byte length and the largest header.
pub fn max_weights_bytes(params: u64) -> u64 {
    params
        .saturating_mul(4)
        .saturating_add(8 + MAX_SAFETENSORS_HEADER)
}

/// Loads weights into `vs`, checking that the file is a regular file of a size that fits the
/// model, that its digest matches when one is recorded ([`crate::digest`]), and that it
/// holds exactly the model's parameters with the model's shapes and element type; the error
/// names the first mismatch.
pub fn load_weights(vs: &mut VarStore, path: &Path) -> Result<()> {
    if !path.exists() {
        return Err(Error::ModelDir(format!("{} is missing", path.display())));
    }
    let vars = vs.variables();
    let params: u64 = vars.values().map(|t| t.numel() as u64).sum();
    let bytes = crate::modelfile::read_bounded(
        path,
        max_weights_bytes(params),
        "a weights file of this model",
    )
    .map_err(|e| Error::ModelDir(e.to_string()))?;
    crate::digest::verify(&bytes, path)?;
    drop(bytes);
    let stored: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(|e| Error::ModelDir(format!("{}: cannot read weights: {e}", path.display())))?
        .into_iter()
        .collect();
    let mismatch = |m: String| {
        Err(Error::ModelDir(format!(
            "{}: {m}; the weights do not belong to this config.json",
            path.display()
        )))
    };
    let mut names: Vec<&String> = vars.keys().collect();
    names.sort();
    for name in names {
        let Some(t) = stored.get(name) else {
            return mismatch(format!("parameter {name} is missing"));
        };
        if t.size() != vars[name].size() {
            return mismatch(format!(
                "parameter {name} has shape {:?}, config.json gives {:?}",
                t.size(),
                vars[name].size()
            ));
        }
        if t.kind() != vars[name].kind() {
            return Err(Error::ModelDir(format!(
                "{}: parameter {name} is stored as {:?}, the model's parameters are {:?}; convert the file (rnmt writes {:?})",
                path.display(),
                t.kind(),
                vars[name].kind(),
                vars[name].kind()
            )));
        }
    }
    if let Some(extra) = stored.keys().find(|k| !vars.contains_key(*k)) {
        return mismatch(format!("unexpected parameter {extra}"));
    }
    tch::no_grad(|| {
        for (name, mut var) in vars {
            var.copy_(&stored[&name]);
        }
    });
    Ok(())
}

/// `checkpoints/step-NNNNNNNN.safetensors` of update `step`.
pub fn checkpoint_path(model_dir: &Path, step: u64) -> PathBuf {
    model_dir
        .join(CHECKPOINTS_DIR)
        .join(format!("step-{step:08}.safetensors"))
}

/// The kept checkpoints of `model_dir`, `(step, path)` by step, oldest first.
pub fn list_checkpoints(model_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let dir = model_dir.join(CHECKPOINTS_DIR);
    if !dir.is_dir() {
        return Ok(vec![]);
    }
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
        let path = entry.map_err(|e| Error::io(&dir, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let step = name
            .strip_prefix("step-")
            .and_then(|n| n.strip_suffix(".safetensors"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(step) = step {
            found.push((step, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Saves the weights of the validation at update `step` into `checkpoints/` (atomically)
/// and removes all but the `keep` latest; checkpoints of later updates (progress a crash
/// lost before `last/` was saved) are removed too. Nothing happens for `keep == 0`.
pub fn save_checkpoint(vs: &VarStore, model_dir: &Path, step: u64, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let dir = model_dir.join(CHECKPOINTS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    save_weights(vs, &checkpoint_path(model_dir, step))?;
    let kept: Vec<(u64, PathBuf)> = list_checkpoints(model_dir)?
        .into_iter()
        .filter(|(s, p)| {
            if *s > step {
                let _ = std::fs::remove_file(p);
                false
            } else {
                true
            }
        })
        .collect();
    for (_, path) in kept.iter().take(kept.len().saturating_sub(keep)) {
        std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
    }
    Ok(())
}

/// The directory holding the latest complete training state, if any.
pub fn last_dir(model_dir: &Path) -> Option<PathBuf> {
    [LAST_DIR, "last.old"]
        .iter()
        .map(|d| model_dir.join(d))
        .find(|d| d.join(TRAINER_FILE).exists())
}

/// Replaces `model_dir/last/` with the directory `fill` writes, as described above.
pub fn replace_last(model_dir: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let new = model_dir.join("last.new");
    let old = model_dir.join("last.old");
    let last = model_dir.join(LAST_DIR);
    let rm = |d: &Path| -> Result<()> {
        if d.exists() {
            std::fs::remove_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        Ok(())
    };
    rm(&new)?;
    std::fs::create_dir_all(&new).map_err(|e| Error::io(&new, e))?;
    if let Err(e) = fill(&new) {
        // Nothing of a failed write stays behind (a full disk, a failed save).
        let _ = std::fs::remove_dir_all(&new);
        return Err(e);
    }
    if last.exists() {
        // A complete last.old from an earlier crash is superseded by the new state.
        rm(&old)?;
        std::fs::rename(&last, &old).map_err(|e| Error::io(&last, e))?;
    }
    rename_synced(&new, &last)?;
    rm(&old)
}

/// A model loaded for inference from a model directory.
#[derive(Debug)]
pub struct LoadedModel {
    pub config: Config,
    pub tokenizers: Tokenizers,
    pub model: Seq2Seq,
    pub vs: VarStore,
}

/// Loads config, tokenizers and best weights from `dir`, checking they belong together.
pub fn load_model_dir(dir: &Path, device: Device) -> Result<LoadedModel> {
    if !dir.is_dir() {
        return Err(Error::ModelDir(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let config = Config::load_dir(dir)?;
    let tokenizers = Tokenizers::load_dir(dir)?;
    check_vocab(&config, &tokenizers, dir)?;
    config.model.validate()?;
    if device == Device::Cpu {
        if let Some(available) = crate::memory::available_bytes() {
            config.model.check_fits(available, 4)?;
        }
    }
    let mut vs = VarStore::new(device);
    let model = crate::model::build(&vs.root(), &config.model)?;
    load_weights(&mut vs, &dir.join(MODEL_FILE))?;
    vs.freeze();
    Ok(LoadedModel {
        config,
        tokenizers,
        model,
        vs,
    })
}

/// The config's vocabulary sizes must be the tokenizers'.
pub fn check_vocab(config: &Config, tok: &Tokenizers, dir: &Path) -> Result<()> {
    let (s, t) = (tok.src().vocab_size(), tok.tgt().vocab_size());
    if config.model.src_vocab != s || config.model.tgt_vocab != t {
        return Err(Error::ModelDir(format!(
            "{}: config.json says vocabularies {}/{} but the tokenizer files have {s}/{t}; they come from different models",
            dir.display(),
            config.model.src_vocab,
            config.model.tgt_vocab
        )));
    }
    Ok(())
}
