//! What a command states (`--config`, `--set`, flags) and the resume policy: which keys a
//! resumed run may change, and budgets that belong to each command.
use super::*;
use crate::error::{Error, Result};

/// The keys a command states: the leaves of a `--config` file, `--set` overrides and flags,
/// as a JSON object tree (`{"train": {"lr": 0.001}}`). Unknown keys are errors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stated(serde_json::Value);

impl Stated {
    /// Nothing stated.
    pub fn new() -> Self {
        Stated(serde_json::Value::Object(Default::default()))
    }

    /// The keys of a TOML (`.toml`) or JSON config file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Config::from_file(path)?; // unknown keys and bad values, with the file's name
        let text = read_config_text(path)?;
        let value: serde_json::Value = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {}", path.display(), e.message())))?
        } else {
            serde_json::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
        };
        Ok(Stated(value))
    }

    /// What a command states: its `--config` file, if any, with its `--set key=value`
    /// overrides on top (each key at most once).
    pub fn from_command(config: Option<&Path>, overrides: &[String]) -> Result<Self> {
        check_unique_overrides(overrides)?;
        let mut stated = match config {
            Some(p) => Stated::from_file(p)?,
            None => Stated::new(),
        };
        for o in overrides {
            stated.set_override(o)?;
        }
        Ok(stated)
    }

    /// States `key.path=value`; `value` is parsed as JSON when it can be (numbers, booleans,
    /// `null`) and taken as a string otherwise.
    pub fn set_override(&mut self, o: &str) -> Result<()> {
        let (key, raw) = o
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("override '{o}' is not key=value")))?;
        let value = serde_json::from_str(raw)
            .unwrap_or_else(|_| serde_json::Value::String(raw.to_string()));
        self.set(key, value)
    }

    /// States `key` (a dotted path that must exist in [`Config`]) with `value`.
    pub fn set(&mut self, key: &str, value: serde_json::Value) -> Result<()> {
        let known = serde_json::to_value(Config::default())
            .map_err(|e| Error::json("the default config", e))?;
        let mut probe = &known;
        for part in key.split('.') {
            probe = probe
                .get(part)
                .ok_or_else(|| Error::Config(format!("unknown config key '{key}'")))?;
        }
        let mut slot = &mut self.0;
        for part in key.split('.') {
            if !slot.is_object() {
                *slot = serde_json::Value::Object(Default::default());
            }
            slot = slot
                .as_object_mut()
                .expect("an object")
                .entry(part.to_string())
                .or_insert(serde_json::Value::Null);
        }
        *slot = value;
        Ok(())
    }

    /// `base` with the stated keys laid over it.
    pub fn apply_to(&self, base: &Config) -> Result<Config> {
        let mut value = serde_json::to_value(base).map_err(|e| Error::json("the config", e))?;
        merge(&mut value, &self.0);
        serde_json::from_value(value).map_err(|e| Error::Config(format!("override: {e}")))
    }
}

/// `--set` overrides must name each key once: a repeated key is an error naming it (which of
/// two values was meant cannot be known).
pub fn check_unique_overrides(overrides: &[String]) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for o in overrides {
        let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k).trim();
        if let Some(first) = seen.insert(key.to_string(), o.clone()) {
            return Err(Error::Config(format!(
                "--set {key} is given twice ('{first}' and '{o}'); give each key once"
            )));
        }
    }
    Ok(())
}

/// Lays `over` onto `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The leaves of a JSON tree as `(dotted.key, value)`.
fn leaves(v: &serde_json::Value, prefix: &str, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(v, &key, out);
            }
        }
        other => out.push((prefix.to_string(), other.clone())),
    }
}

/// One setting a resumed run changes, applied from the resumed update on.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub key: String,
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} -> {}", self.key, self.from, self.to)
    }
}

/// Settings that may change when a run resumes: they act from the next update on and do not
/// change what was computed so far. Everything else in `model`, `data` and `train` fixes the
/// model's shape, its tokenizers or the order of the data (`train.seed`,
/// `train.batch_tokens`), and a resumed run cannot honour a new value.
pub const CHANGEABLE_ON_RESUME: &[&str] = &[
    // Only together with the number of processes, so that every update still sees the same
    // batches (checked by the trainer against the saved state).
    "train.accumulate",
    "train.lr",
    "train.warmup_steps",
    "train.adam_beta1",
    "train.adam_beta2",
    "train.adam_eps",
    "train.weight_decay",
    "train.clip_norm",
    "train.label_smoothing",
    "train.unigram_output_bias",
    "train.teacher_forcing",
    "train.valid_every",
    "train.lr_decay",
    "train.lr_patience",
    "train.min_lr",
    "train.patience",
    "train.valid_bleu_sentences",
    "train.log_every",
    "train.keep_checkpoints",
    "train.average_last",
    "train.fused_loss",
    "train.fused_adam",
    "train.fused_rnn",
    "train.decay",
    "train.decay_steps",
    "train.decay_fraction",
    "train.calibrate",
    "train.calibrate_sentences",
];

/// Budgets belong to each command: a resumed run takes this command's (or the defaults).
pub const BUDGETS: &[&str] = &["train.max_steps", "train.max_epochs", "train.max_time"];

/// The resume policy: the config of a run that resumes from `saved` when this command states
/// `stated`. Budgets come from the command (`budgets`, already resolved with defaults); a
/// changed key of [`CHANGEABLE_ON_RESUME`] is applied and returned as a [`Change`] (to log and
/// record); any other changed key is an error naming it. Vocabulary sizes stay as saved (they
/// come from the tokenizers).
pub fn resume_config(
    saved: &Config,
    stated: &Stated,
    budgets: &TrainConfig,
) -> Result<(Config, Vec<Change>)> {
    let mut wanted = stated.apply_to(saved)?;
    wanted.model.src_vocab = saved.model.src_vocab;
    wanted.model.tgt_vocab = saved.model.tgt_vocab;
    wanted.train.max_steps = budgets.max_steps;
    wanted.train.max_epochs = budgets.max_epochs;
    wanted.train.max_time = budgets.max_time.clone();
    let (mut before, mut after) = (Vec::new(), Vec::new());
    leaves(
        &serde_json::to_value(saved).map_err(|e| Error::json("the saved config", e))?,
        "",
        &mut before,
    );
    leaves(
        &serde_json::to_value(&wanted).map_err(|e| Error::json("the config", e))?,
        "",
        &mut after,
    );
    let mut changes = Vec::new();
    for ((key, from), (_, to)) in before.into_iter().zip(after) {
        if from == to || BUDGETS.contains(&key.as_str()) {
            continue;
        }
        if !CHANGEABLE_ON_RESUME.contains(&key.as_str()) {
            return Err(Error::Config(format!(
                "{key} cannot change when resuming (saved {from}, now {to}): it fixes the model, its tokenizers or the data order; resume with {from} or train in a new --model-dir"
            )));
        }
        changes.push(Change { key, from, to });
    }
    Ok((wanted, changes))
}

/// Parses `90`, `90s`, `10m`, `1.5h` into seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration> {
    let s = s.trim();
    let (num, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let mult = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(Error::Config(format!(
                "bad duration '{s}': use e.g. 90s, 10m, 2h"
            )))
        }
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| Error::Config(format!("bad duration '{s}': use e.g. 90s, 10m, 2h")))?;
    if !n.is_finite() || n < 0.0 {
        return Err(Error::Config(format!("bad duration '{s}'")));
    }
    std::time::Duration::try_from_secs_f64(n * mult)
        .map_err(|_| Error::Config(format!("bad duration '{s}': at most {} seconds", u64::MAX)))
}
