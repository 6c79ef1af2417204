//! Checkpoint averaging (as in Marian's and fairseq's `average_checkpoints`): the element-wise
//! mean of the weights of several checkpoints of one model, written as a new model directory
//! that `rnmt-translate` loads like any other.
//!
//! Every input must belong to the same model: equal `model` and `data` sections of
//! `config.json`, equal tokenizers, and the same parameter names and shapes; the first
//! difference is a one-line [`Error::ModelDir`] naming the file.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use tch::{Device, Kind, Tensor};

use crate::checkpoint::{CONFIG_FILE, MODEL_FILE};
use crate::config::Config;
use crate::data::Prepared;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizers;

/// A checkpoint to average: a weights file and the model directory it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub weights: PathBuf,
    pub model_dir: PathBuf,
}

impl Input {
    /// A model directory (its `model.safetensors`), or a `.safetensors` file in a model
    /// directory or in one of its subdirectories (`checkpoints/`, `last/`).
    pub fn resolve(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Ok(Input {
                weights: path.join(MODEL_FILE),
                model_dir: path.to_path_buf(),
            });
        }
        if !path.is_file() {
            return Err(Error::ModelDir(format!(
                "{}: no such file or directory",
                path.display()
            )));
        }
        let parent = path.parent().unwrap_or(Path::new("."));
        let model_dir = [Some(parent), parent.parent()]
            .into_iter()
            .flatten()
            .find(|d| d.join(CONFIG_FILE).is_file())
            .ok_or_else(|| {
                Error::ModelDir(format!(
                    "{}: no {CONFIG_FILE} next to it or in its parent directory, so it is not part of a model directory",
                    path.display()
                ))
            })?;
        Ok(Input {
            weights: path.to_path_buf(),
            model_dir: model_dir.to_path_buf(),
        })
    }
}

/// Named tensors of one safetensors file, by name.
fn read(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    if !path.is_file() {
        return Err(Error::ModelDir(format!("{} is missing", path.display())));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    crate::digest::verify(&bytes, path)?;
    drop(bytes);
    Ok(Tensor::read_safetensors(path)
        .map_err(|e| Error::ModelDir(format!("{}: cannot read weights: {e}", path.display())))?
        .into_iter()
        .collect())
}

/// The serialized tokenizers, for comparison.
fn tokenizer_json(t: &Tokenizers) -> (Option<String>, Option<String>, bool) {
    (
        t.src().inner().to_string(false).ok(),
        t.tgt().inner().to_string(false).ok(),
        t.is_joint(),
    )
}

/// The element-wise mean of `weights`, each `(name, tensor)` in the first file's order of
/// names: accumulated in double precision, returned in each parameter's own kind. Every
/// file must hold the same names with the same shapes (checked, naming `paths[i]`).
pub fn mean_weights(paths: &[PathBuf]) -> Result<Vec<(String, Tensor)>> {
    let Some((first_path, rest)) = paths.split_first() else {
        return Err(Error::Config("nothing to average".into()));
    };
    let first = read(first_path)?;
    let mut sums: BTreeMap<String, (Tensor, Kind)> = first
        .iter()
        .map(|(n, t)| (n.clone(), (t.to_kind(Kind::Double), t.kind())))
        .collect();
    for path in rest {
        let other = read(path)?;
        let differs = |m: String| {
            Err(Error::ModelDir(format!(
                "{}: {m} (in {}); averaged checkpoints must come from one model",
                path.display(),
                first_path.display()
            )))
        };
        if let Some(extra) = other.keys().find(|k| !first.contains_key(*k)) {
            return differs(format!("parameter {extra} is not"));
        }
        for (name, (sum, _)) in sums.iter_mut() {
            let Some(t) = other.get(name) else {
                return differs(format!("parameter {name} is missing, it is"));
            };
            if t.size() != sum.size() {
                return differs(format!(
                    "parameter {name} has shape {:?}, {:?}",
                    t.size(),
                    sum.size()
                ));
            }
            *sum += t.to_kind(Kind::Double);
        }
    }
    let n = paths.len() as f64;
    Ok(sums
        .into_iter()
        .map(|(name, (sum, kind))| (name, (sum / n).to_kind(kind)))
        .collect())
}

/// What [`average_if_better`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct AverageCheck {
    /// The updates of the averaged checkpoints, oldest first.
    pub steps: Vec<u64>,
    /// Validation BLEU and loss of the average and of the best validated weights.
    pub averaged_bleu: f64,
    pub best_bleu: f64,
    pub averaged_loss: f64,
    pub best_loss: f64,
    /// Whether `model.safetensors` is now the average.
    pub replaced: bool,
}

/// `train.average_last`: validates the mean of the last `k` kept checkpoints of
/// `model_dir` (at least two) and the best validated weights (`model.safetensors`) alike
/// (`crate::validation::validate`, the training's own validation, in `low` precision for
/// decoding), and makes the average the model's `model.safetensors` (atomically) when its
/// BLEU is higher, or equal with a lower validation loss. `None` with fewer than two kept
/// checkpoints.
pub fn average_if_better(
    model_dir: &Path,
    k: usize,
    data: &Prepared,
    config: &Config,
    device: Device,
    low: Option<Kind>,
    stop: &AtomicBool,
) -> Result<Option<AverageCheck>> {
    let kept = crate::checkpoint::list_checkpoints(model_dir)?;
    let take = k.min(kept.len());
    if take < 2 {
        return Ok(None);
    }
    let last = &kept[kept.len() - take..];
    let paths: Vec<PathBuf> = last.iter().map(|(_, p)| p.clone()).collect();
    let mean = mean_weights(&paths)?;
    let mut loaded = crate::checkpoint::load_model_dir(model_dir, device)?;
    loaded.model.set_low_precision(low);
    let step = last[last.len() - 1].0;
    let best = crate::validation::validate(&loaded.model, data, config, device, step, stop)?;
    let vars = loaded.vs.variables();
    tch::no_grad(|| -> Result<()> {
        for (name, t) in &mean {
            let Some(v) = vars.get(name) else {
                return Err(Error::ModelDir(format!(
                    "{}: parameter {name} of the checkpoints is not in the model",
                    model_dir.display()
                )));
            };
            v.shallow_clone().copy_(&t.to_device(device));
        }
        Ok(())
    })?;
    let averaged = crate::validation::validate(&loaded.model, data, config, device, step, stop)?;
    // Higher BLEU, or the same BLEU (a weak model's 0) and a lower validation loss.
    let replaced =
        averaged.bleu > best.bleu || averaged.bleu == best.bleu && averaged.loss < best.loss;
    if replaced {
        crate::checkpoint::save_weights(&loaded.vs, &model_dir.join(MODEL_FILE))?;
    }
    Ok(Some(AverageCheck {
        steps: last.iter().map(|(s, _)| *s).collect(),
        averaged_bleu: averaged.bleu,
        best_bleu: best.bleu,
        averaged_loss: averaged.loss,
        best_loss: best.loss,
        replaced,
    }))
}

/// Averages `inputs` into the new model directory `out`: `config.json` and the tokenizers of
/// the first input, and `model.safetensors` the mean of all inputs' weights (each file
/// written atomically). `out` must not exist yet or be empty.
pub fn average_into(inputs: &[Input], out: &Path) -> Result<()> {
    let Some(first) = inputs.first() else {
        return Err(Error::Config(
            "nothing to average: give at least one checkpoint".into(),
        ));
    };
    if out.exists() {
        let empty = out.is_dir()
            && std::fs::read_dir(out)
                .map_err(|e| Error::io(out, e))?
                .next()
                .is_none();
        if !empty {
            return Err(Error::ModelDir(format!(
                "{} already exists and is not empty; choose a new output directory",
                out.display()
            )));
        }
    }
    let config = Config::load_dir(&first.model_dir)?;
    let tokenizers = Tokenizers::load_dir(&first.model_dir)?;
    crate::checkpoint::check_vocab(&config, &tokenizers, &first.model_dir)?;
    let tok = tokenizer_json(&tokenizers);
    for input in &inputs[1..] {
        if input.model_dir == first.model_dir {
            continue;
        }
        let c = Config::load_dir(&input.model_dir)?;
        let differs = |what: &str| {
            Err(Error::ModelDir(format!(
                "{}: its {what} differs from {}'s; averaged checkpoints must come from one model",
                input.model_dir.display(),
                first.model_dir.display()
            )))
        };
        if c.model != config.model {
            return differs("model config (config.json, section model)");
        }
        if c.data != config.data {
            return differs("data config (config.json, section data)");
        }
        if tokenizer_json(&Tokenizers::load_dir(&input.model_dir)?) != tok {
            return differs("tokenizer");
        }
    }
    let paths: Vec<PathBuf> = inputs.iter().map(|i| i.weights.clone()).collect();
    let mean = mean_weights(&paths)?;
    // The result must also fit the config: same names and shapes as a freshly built model.
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    crate::model::build(&vs.root(), &config.model)?;
    let vars = vs.variables();
    for (name, t) in &mean {
        match vars.get(name) {
            Some(v) if v.size() == t.size() => {}
            _ => {
                return Err(Error::ModelDir(format!(
                    "{}: parameter {name} {:?} does not belong to the model of {}",
                    first.weights.display(),
                    t.size(),
                    first.model_dir.join(CONFIG_FILE).display()
                )))
            }
        }
    }
    if let Some(missing) = vars.keys().find(|k| !mean.iter().any(|(n, _)| n == *k)) {
        return Err(Error::ModelDir(format!(
            "{}: parameter {missing} is missing",
            first.weights.display()
        )));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    tokenizers.save_dir(out)?;
    config.save_dir(out)?;
    let path = out.join(MODEL_FILE);
    let tmp = crate::atomic::tmp_name(&path);
    let done = (|| {
        Tensor::write_safetensors(&mean, &tmp)?;
        crate::digest::seal_file(&tmp)?;
        crate::atomic::sync_file(&tmp)?;
        crate::atomic::rename_synced(&tmp, &path)
    })();
    if done.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    done
}
