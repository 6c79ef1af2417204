//! A model's own decoding defaults (`decode.json` in the model directory), calibrated on the
//! validation set when training ends.
//!
//! Why: beam search with the GNMT length penalty at a fixed `alpha = 1` gave outputs 19% too
//! short with rnmt's label-smoothed models (brevity penalty 0.79, no better than greedy
//! search), while `alpha = 2` on the same model gave the right length. How much a model prefers
//! short outputs depends on the model (label smoothing, how far it trained), so no one value
//! fits every model; toolkits leave `alpha` to the user. rnmt-train instead tries a grid of
//! `alpha` values with beam search on (part of) the validation set after the last update,
//! and keeps the one with the highest BLEU as the model's default, together with the
//! [`BeamStop`] rule it used. `rnmt-translate` and `rnmt-serve` decode with it unless the
//! command states `--alpha` / `--beam-stop`; a model directory without `decode.json` (written
//! before this existed, or with `train.calibrate = false`) decodes with the built-in
//! defaults, exactly as before.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{BeamStop, DecodeConfig};
use crate::error::{Error, Result};

/// The file in the model directory.
pub const DECODE_FILE: &str = "decode.json";
/// Most bytes of a `decode.json` (under a kilobyte in practice); a bounded read of a regular
/// file, as the other model files (see [`crate::modelfile`]).
pub const MAX_DECODE_BYTES: u64 = 1 << 20;

/// Decoding settings a model directory states for itself.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecodeDefaults {
    /// The length penalty exponent.
    pub alpha: f64,
    /// The beam's stopping rule.
    pub stop: BeamStop,
    /// How they were chosen (for the record; decoding does not read it).
    #[serde(default)]
    pub calibration: Option<Calibration>,
    /// The digest ([`crate::digest`]) of the `model.safetensors` they were calibrated on:
    /// with other weights there (a crash between averaging and calibrating, a copied
    /// model), the defaults are stale and not used. `None` in files from before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_sha256: Option<String>,
}

/// The record of a calibration.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Validation sentences decoded, and the beam size.
    pub sentences: usize,
    pub beam: usize,
    /// The update training had reached (the weights calibrated are `model.safetensors`).
    pub step: u64,
    /// Every `alpha` tried: `[alpha, BLEU, brevity penalty]`.
    pub grid: Vec<[f64; 3]>,
}

impl DecodeDefaults {
    /// Reads `dir/decode.json`; `None` when the directory has none.
    pub fn load(dir: &Path) -> Result<Option<DecodeDefaults>> {
        let path = dir.join(DECODE_FILE);
        if std::fs::symlink_metadata(&path).is_err() {
            return Ok(None);
        }
        let bytes = crate::modelfile::read_bounded(&path, MAX_DECODE_BYTES, DECODE_FILE)
            .map_err(|e| Error::ModelDir(e.to_string()))?;
        let d: DecodeDefaults = serde_json::from_slice(&bytes)
            .map_err(|e| Error::ModelDir(format!("{}: {e}", path.display())))?;
        if !d.alpha.is_finite() || d.alpha < 0.0 {
            return Err(Error::ModelDir(format!(
                "{}: alpha must be a finite number >= 0, got {}",
                path.display(),
                d.alpha
            )));
        }
        Ok(Some(d))
    }

    /// Reads `dir/decode.json` if it was calibrated on the `model.safetensors` there now
    /// ([`DecodeDefaults::weights_sha256`]); stale defaults are `None`, with a line on
    /// stderr saying why.
    pub fn load_current(dir: &Path) -> Result<Option<DecodeDefaults>> {
        let Some(d) = Self::load(dir)? else {
            return Ok(None);
        };
        if d.is_current(dir) {
            return Ok(Some(d));
        }
        let model = dir.join(crate::checkpoint::MODEL_FILE);
        eprintln!(
            "warning: {} was calibrated on weights with sha256 {}, but {} has sha256 {}: its alpha {} is not used; the built-in defaults apply (rnmt-train calibrates again when the same command runs again)",
            dir.join(DECODE_FILE).display(),
            d.weights_sha256.as_deref().unwrap_or("?"),
            model.display(),
            crate::digest::recorded(&model).as_deref().unwrap_or("?"),
            d.alpha
        );
        Ok(None)
    }

    /// Whether these defaults belong to the weights in `dir`: false only when both sides
    /// name a digest and the two differ. A `decode.json` that names none (written before
    /// digests), or weights that record none (written by another tool, or by hand), cannot
    /// be told apart and count as current, so such directories decode exactly as before.
    pub fn is_current(&self, dir: &Path) -> bool {
        match (
            &self.weights_sha256,
            crate::digest::recorded(&dir.join(crate::checkpoint::MODEL_FILE)),
        ) {
            (Some(calibrated), Some(now)) => *calibrated == now,
            _ => true,
        }
    }

    /// Whether `dir` holds a `decode.json` calibrated on its current weights (else
    /// rnmt-train calibrates again).
    pub fn calibrated(dir: &Path) -> bool {
        matches!(Self::load(dir), Ok(Some(d)) if d.is_current(dir))
    }

    /// Writes `dir/decode.json` atomically, naming the digest of `dir/model.safetensors`
    /// (the weights calibrated).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut d = self.clone();
        d.weights_sha256 = crate::digest::recorded(&dir.join(crate::checkpoint::MODEL_FILE));
        let json =
            serde_json::to_vec_pretty(&d).map_err(|e| Error::json("the decoding defaults", e))?;
        crate::atomic::write_atomic(&dir.join(DECODE_FILE), &json)
    }

    /// Fills what `decode` leaves unstated (`None`) with these defaults.
    pub fn apply(&self, decode: &mut DecodeConfig) {
        decode.alpha = decode.alpha.or(Some(self.alpha));
        decode.stop = decode.stop.or(Some(self.stop));
    }
}

/// Calibrates `alpha` for `model` on validation `examples` and their `refs` (normalized
/// reference text), for beam search with `beam` and [`BeamStop::Finished`]; BLEU as in
/// validation (13a). [`Error::Interrupted`] when `interrupt` is set meanwhile.
///
/// One decode serves the whole grid: with the `Finished` rule the search itself does not
/// depend on `alpha` (only the choice among the ended hypotheses does, and the exact early
/// stop, which never changes the best), so the search runs once with `n_best = beam` and
/// every `alpha` of [`ALPHA_GRID`] re-ranks the same hypotheses, exactly as decoding with that
/// `alpha` would rank them.
#[allow(clippy::too_many_arguments)]
pub fn calibrate(
    model: &crate::model::Seq2Seq,
    examples: &[crate::batch::Example],
    refs: &[String],
    tgt: &crate::tokenizer::SubwordTokenizer,
    beam: usize,
    step: u64,
    device: tch::Device,
    interrupt: &std::sync::atomic::AtomicBool,
) -> Result<DecodeDefaults> {
    use crate::metrics::bleu::{Bleu, BleuConfig};
    let decode = DecodeConfig {
        beam,
        n_best: beam,
        stop: Some(BeamStop::Finished),
        ..DecodeConfig::default()
    };
    let hyps = crate::validation::decode_examples(model, examples, &decode, device, interrupt)?;
    // Each sentence's ended hypotheses as (log-probability, tokens with </s>, text).
    let mut candidates = Vec::with_capacity(hyps.len());
    for h in hyps {
        let mut c = Vec::with_capacity(h.len());
        for x in h {
            c.push((x.score, x.tokens.len() + 1, tgt.decode(&x.tokens)?));
        }
        candidates.push(c);
    }
    let scorer = Bleu::new(BleuConfig::default())?;
    let refs = [refs.to_vec()];
    let mut grid = Vec::with_capacity(ALPHA_GRID.len());
    for &alpha in ALPHA_GRID {
        let best: Vec<String> = candidates
            .iter()
            .map(|c| {
                c.iter()
                    .max_by(|a, b| {
                        let (na, nb) = (
                            a.0 / crate::search::length_penalty(a.1, alpha),
                            b.0 / crate::search::length_penalty(b.1, alpha),
                        );
                        // The first among equals, as search's stable sort keeps it.
                        na.total_cmp(&nb).then(std::cmp::Ordering::Greater)
                    })
                    .map(|x| x.2.clone())
                    .unwrap_or_default()
            })
            .collect();
        let score = scorer.corpus_score(&best, &refs)?;
        grid.push([alpha, score.score, score.bp]);
    }
    let [alpha, ..] = best_of(&grid).unwrap_or([DecodeConfig::DEFAULT_ALPHA, 0.0, 0.0]);
    Ok(DecodeDefaults {
        alpha,
        stop: BeamStop::Finished,
        weights_sha256: None,
        calibration: Some(Calibration {
            sentences: examples.len(),
            beam,
            step,
            grid,
        }),
    })
}

/// The `alpha` values calibration tries: 0 to 3 in steps of 0.1.
pub const ALPHA_GRID: &[f64] = &[
    0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8,
    1.9, 2.0, 2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0,
];

/// Picks the best `(alpha, BLEU, BP)` of a grid: the highest BLEU, the smaller `alpha` on a tie.
pub fn best_of(grid: &[[f64; 3]]) -> Option<[f64; 3]> {
    grid.iter().copied().fold(None, |best, g| match best {
        Some(b) if b[1] >= g[1] => Some(b),
        _ => Some(g),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_apply() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(DecodeDefaults::load(dir.path()).unwrap(), None);
        let d = DecodeDefaults {
            alpha: 1.8,
            stop: BeamStop::Patient,
            weights_sha256: None,
            calibration: Some(Calibration {
                sentences: 10,
                beam: 5,
                step: 7,
                grid: vec![[1.0, 20.0, 0.9], [1.8, 21.0, 0.97]],
            }),
        };
        d.save(dir.path()).unwrap();
        assert_eq!(DecodeDefaults::load(dir.path()).unwrap(), Some(d.clone()));
        let mut cfg = DecodeConfig::default();
        d.apply(&mut cfg);
        assert_eq!((cfg.alpha(), cfg.stop()), (1.8, BeamStop::Patient));
        // What the command states wins.
        let mut cfg = DecodeConfig {
            alpha: Some(0.5),
            ..DecodeConfig::default()
        };
        d.apply(&mut cfg);
        assert_eq!((cfg.alpha(), cfg.stop()), (0.5, BeamStop::Patient));
        // Without a file: today's defaults.
        assert_eq!(
            (
                DecodeConfig::default().alpha(),
                DecodeConfig::default().stop()
            ),
            (1.0, BeamStop::Finished)
        );
    }

    #[test]
    fn a_bad_file_is_one_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DECODE_FILE),
            r#"{"alpha": -1, "stop": "patient"}"#,
        )
        .unwrap();
        let e = DecodeDefaults::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("decode.json") && e.contains("alpha"), "{e}");
        std::fs::write(dir.path().join(DECODE_FILE), "{").unwrap();
        assert!(DecodeDefaults::load(dir.path()).is_err());
    }

    #[test]
    fn best_of_prefers_bleu_then_the_smaller_alpha() {
        let g = [
            [0.6, 20.0, 0.8],
            [1.0, 22.0, 0.9],
            [1.4, 22.0, 0.95],
            [1.8, 21.0, 1.0],
        ];
        assert_eq!(best_of(&g), Some([1.0, 22.0, 0.9]));
        assert_eq!(best_of(&[]), None);
    }
}
