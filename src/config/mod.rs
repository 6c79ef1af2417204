//! Configuration: serde structs with defaults for the model, the data pipeline, training and
//! decoding.
//!
//! `rnmt-train --config FILE` reads TOML or JSON whose top-level keys are `model`, `data`,
//! `train` (any key may be left out; defaults fill the rest, unknown keys are errors), and
//! `--set section.key=value` overrides single keys. The resolved [`Config`] is written to the
//! model directory as `config.json`, from which `rnmt-translate` rebuilds everything.
//!
//! One file per concern: [`model`], [`data`], [`train`], [`decode`], and [`policy`] (the
//! `--set`/resume rules); everything is re-exported here.
pub mod data;
pub mod decode;
pub mod model;
pub mod policy;
pub mod train;

pub use data::*;
pub use decode::*;
pub use model::*;
pub use policy::*;
pub use train::*;

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Everything `rnmt-train` resolves, saved as `config.json` in the model directory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub model: ModelConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
}

impl Config {
    /// Reads a TOML (`.toml`) or JSON (anything else) config file: a regular file of at most
    /// [`MAX_CONFIG_BYTES`], a leading byte order mark dropped; an error quotes at most a few
    /// hundred bytes of the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_config_text(path)?;
        let parsed = if path.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text).map_err(|e| e.message().to_string())
        } else {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        };
        parsed.map_err(|m| Error::Config(format!("{}: {}", path.display(), cut_message(&m))))
    }

    /// Applies `key.path=value` overrides (see [`Stated::set_override`]).
    pub fn with_overrides(self, overrides: &[String]) -> Result<Self> {
        Stated::from_command(None, overrides)?.apply_to(&self)
    }

    /// Reads `config.json` from a model directory.
    pub fn load_dir(dir: &Path) -> Result<Self> {
        let path = dir.join(crate::checkpoint::CONFIG_FILE);
        if !path.exists() {
            return Err(Error::ModelDir(format!(
                "{} has no {} (not an rnmt model directory?)",
                dir.display(),
                crate::checkpoint::CONFIG_FILE
            )));
        }
        let text = read_config_text(&path)?;
        // A config.json without its "model" section would build a model with no vocabulary.
        if let Ok(serde_json::Value::Object(top)) = serde_json::from_str(&text) {
            if !top.contains_key("model") {
                return Err(Error::ModelDir(format!(
                    "{} has no \"model\" section (it is not a config.json written by rnmt-train)",
                    path.display()
                )));
            }
        }
        Self::from_file(&path)
    }

    /// Writes `config.json` atomically.
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::json(crate::checkpoint::CONFIG_FILE, e))?;
        crate::checkpoint::write_atomic(&dir.join(crate::checkpoint::CONFIG_FILE), text.as_bytes())
    }
}

/// Largest config file read (`config.json`, `--config`): a resolved config is a few KB.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The text of a config file: a regular file (a link to one is followed) of at most
/// [`MAX_CONFIG_BYTES`], valid UTF-8, without a leading byte order mark.
fn read_config_text(path: &Path) -> Result<String> {
    let bytes = crate::modelfile::read_bounded(path, MAX_CONFIG_BYTES, "a config file")?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::Config(format!("{}: not valid UTF-8", path.display())))?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

/// A parser's message cut to its first 160 and last 80 bytes (a huge string value is echoed
/// by serde whole; the end holds the line and column).
pub fn cut_message(m: &str) -> String {
    const HEAD: usize = 160;
    const TAIL: usize = 80;
    if m.len() <= HEAD + TAIL + 40 {
        return m.replace('\n', " ");
    }
    let mut h = HEAD;
    while !m.is_char_boundary(h) {
        h -= 1;
    }
    let mut t = m.len() - TAIL;
    while !m.is_char_boundary(t) {
        t += 1;
    }
    format!("{} [... {} bytes cut ...] {}", &m[..h], t - h, &m[t..]).replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_json_and_toml() {
        let mut c = Config::default();
        c.model.src_vocab = 100;
        c.model.decoder.attention = AttentionType::Luong;
        c.train.max_time = Some("10m".into());
        let j = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Config>(&j).unwrap(), c);
        let t = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<Config>(&t).unwrap(), c);
    }

    #[test]
    fn partial_file_and_overrides() {
        let c: Config = toml::from_str("[model.encoder]\nlayers = 3\n").unwrap();
        assert_eq!(c.model.encoder.layers, 3);
        assert_eq!(c.model.encoder.hidden, EncoderConfig::default().hidden);
        let c = c
            .with_overrides(&[
                "model.decoder.attention=none".into(),
                "train.lr=0.01".into(),
                "train.max_steps=7".into(),
            ])
            .unwrap();
        assert_eq!(c.model.decoder.attention, AttentionType::None);
        assert_eq!(c.train.lr, 0.01);
        assert_eq!(c.train.max_steps, Some(7));
        let err = Config::default()
            .with_overrides(&["train.nope=1".into()])
            .unwrap_err();
        assert!(err.to_string().contains("train.nope"), "{err}");
        assert!(toml::from_str::<Config>("[train]\nbogus = 1\n").is_err());
        // Nested sections too (a misspelt filter key used to train without a word).
        assert!(toml::from_str::<Config>("[data.filter]\nmax_lenn = 50\n").is_err());
        assert!(toml::from_str::<Config>("[data.tokenizer]\nvocab = 50\n").is_err());
    }

    #[test]
    fn durations_and_bounds() {
        assert_eq!(parse_duration("10m").unwrap().as_secs(), 600);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("1.5h").unwrap().as_secs(), 5400);
        assert!(parse_duration("ten").is_err());
        let d = DecodeConfig::default();
        assert_eq!(d.max_output_len(10), 30);
        assert_eq!(d.max_output_len(1000), 256);
    }

    /// Every preset in `presets/` parses (unknown keys are errors) and passes validation.
    #[test]
    fn presets_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("presets");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let mut c = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
                c.model.src_vocab = c.data.tokenizer.vocab_size;
                c.model.tgt_vocab = c.data.tokenizer.vocab_size;
                c.model.validate().unwrap();
                c.train.validate().unwrap();
                n += 1;
            }
        }
        assert!(
            n >= 2,
            "expected the joeynmt and gpu presets in {}",
            dir.display()
        );
        let joey = Config::from_file(&dir.join("joeynmt.toml")).unwrap();
        assert_eq!(joey.model.decoder.attention, AttentionType::Bahdanau);
        assert!(joey.model.decoder.input_feeding);
        assert_eq!(
            (
                joey.model.encoder.hidden,
                joey.model.decoder.hidden,
                joey.model.decoder.layers
            ),
            (256, 512, 2)
        );
    }

    fn stated(sets: &[&str]) -> Stated {
        let mut s = Stated::new();
        for o in sets {
            s.set_override(o).unwrap();
        }
        s
    }

    /// The resume policy: safe keys are applied and reported, others refused by name,
    /// budgets always come from the command, unstated keys stay as saved.
    #[test]
    fn resume_policy() {
        let mut saved = Config::default();
        saved.model.src_vocab = 400;
        saved.model.tgt_vocab = 400;
        saved.model.encoder.hidden = 64; // e.g. from a preset: not restated, not a change
        saved.train.max_steps = Some(10);
        let budgets = TrainConfig {
            max_steps: Some(20),
            ..TrainConfig::default()
        };
        let (c, changes) = resume_config(&saved, &Stated::new(), &budgets).unwrap();
        assert!(changes.is_empty(), "{changes:?}");
        assert_eq!(c.model, saved.model);
        assert_eq!(c.train.max_steps, Some(20), "budgets are the command's");

        let (c, changes) = resume_config(
            &saved,
            &stated(&["train.lr=0.001", "train.patience=3"]),
            &budgets,
        )
        .unwrap();
        assert_eq!(c.train.lr, 0.001);
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["train.lr", "train.patience"]);
        assert_eq!(changes[0].to_string(), "train.lr 0.003 -> 0.001");

        for (set, key) in [
            ("train.batch_tokens=4000", "train.batch_tokens"),
            ("train.seed=1", "train.seed"),
            ("model.encoder.hidden=32", "model.encoder.hidden"),
            ("data.tokenizer.vocab_size=500", "data.tokenizer.vocab_size"),
            ("data.filter.max_len=10", "data.filter.max_len"),
        ] {
            let err = resume_config(&saved, &stated(&[set]), &budgets).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("{key} cannot change when resuming")),
                "{err}"
            );
        }
        // Restating the saved value is no change.
        let (_, changes) =
            resume_config(&saved, &stated(&["model.encoder.hidden=64"]), &budgets).unwrap();
        assert!(changes.is_empty());
        // Vocabulary sizes come from the tokenizers, never from the command.
        let (c, _) = resume_config(&saved, &stated(&["model.src_vocab=9"]), &budgets).unwrap();
        assert_eq!(c.model.src_vocab, 400);
    }

    #[test]
    fn stated_keys_must_exist() {
        let mut s = Stated::new();
        let err = s.set_override("train.nope=1").unwrap_err();
        assert!(
            err.to_string().contains("unknown config key 'train.nope'"),
            "{err}"
        );
        assert!(s.set_override("no-equals-sign").is_err());
        s.set_override("model.decoder.attention=none").unwrap();
        let c = s.apply_to(&Config::default()).unwrap();
        assert_eq!(c.model.decoder.attention, AttentionType::None);
        assert_eq!(c.model.decoder.hidden, DecoderConfig::default().hidden);
    }

    #[test]
    fn outsized_models_are_rejected_by_key() {
        let mut m = ModelConfig {
            src_vocab: 100,
            tgt_vocab: 100,
            ..ModelConfig::default()
        };
        m.encoder.hidden = 1_000_000;
        let err = m.validate().unwrap_err().to_string();
        assert!(err.contains("model.encoder.hidden is 1000000"), "{err}");
        m.encoder.hidden = 128;
        m.validate().unwrap();
        assert!(m.check_fits(1 << 40, 16).is_ok());
        let err = m.check_fits(1000, 16).unwrap_err().to_string();
        assert!(err.contains("parameters"), "{err}");
    }
}
