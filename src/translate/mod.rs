//! Translation of text lines with a trained model directory ([`Translator`]), and the
//! line-faithful streaming loop behind `rnmt-translate` ([`stream`]).
//!
//! Memory stays bounded whatever the input: at most `max_line_bytes` of a line are kept (the
//! rest is read and dropped, with a warning), and sources are cut to `max_input_tokens`.
mod constraints;
pub mod output;
mod stream;

pub use constraints::ConstraintFile;
pub use stream::{next_batch, stream, stream_with, StreamOptions, StreamStats};

use std::path::{Path, PathBuf};

use tch::Device;

use crate::alignment::Alignment;
use crate::checkpoint::{load_model_dir, LoadedModel};
use crate::config::DecodeConfig;
use crate::corpus::normalize;
use crate::ensemble::Ensemble;
use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::search::{self, Hypothesis, Request};

/// A loaded model (or ensemble of models) ready to translate.
#[derive(Debug)]
pub struct Translator {
    /// The model whose config (normalization) and tokenizers all members use.
    pub loaded: LoadedModel,
    /// Further ensemble members (empty for a single model): each step is scored by the mean
    /// of all models' log-probabilities ([`Ensemble`]).
    pub members: Vec<LoadedModel>,
    /// Search settings, and the input bounds `max_input_tokens` / `max_line_bytes`;
    /// `decode.attention` fills [`Translation::attention`].
    pub decode: DecodeConfig,
    pub device: Device,
    /// Autocast for decoding (`--precision`); set it with [`Translator::set_precision`],
    /// which also sets the models' own bfloat16 parts on the CPU.
    pub precision: Precision,
}

/// One line to translate and what it asks for besides its text.
#[derive(Debug, Clone, Copy)]
pub struct LineRequest<'a> {
    /// The 1-based input line number: it seeds the line's samples (`--sample`).
    pub line: usize,
    pub text: &'a str,
    /// Target phrases that must appear in the translation (`--constraints`).
    pub constraints: &'a [String],
}

/// A translated line.
#[derive(Debug, Clone)]
pub struct Translation {
    /// `(text, log-probability)` best first; empty for an empty input line.
    pub hypotheses: Vec<(String, f64)>,
    /// Set when the source was cut to `max_input_tokens` (the original length).
    pub truncated_from: Option<usize>,
    /// Subword tokens of the best hypothesis (without `</s>`).
    pub tokens: usize,
    /// With `decode.attention`: one alignment per hypothesis, in the order of `hypotheses`;
    /// empty otherwise (and for an empty line).
    pub attention: Vec<Alignment>,
    /// With `decode.attention`: the word alignment of each hypothesis in Pharaoh format
    /// ([`crate::word_alignment`]); empty otherwise.
    pub word_alignments: Vec<String>,
}

impl Translator {
    /// Loads `model_dir` (config, tokenizers, best weights) onto `device`.
    pub fn load(model_dir: &Path, device: Device, decode: DecodeConfig) -> Result<Self> {
        Self::load_ensemble(&[model_dir.to_path_buf()], device, decode)
    }

    /// Loads the model directories of an ensemble (one directory: a single model). All must
    /// read and write the same subwords: equal tokenizers (source and target) and text
    /// normalization; otherwise a [`Error::ModelDir`] naming the directory that differs.
    ///
    /// What `decode` leaves unstated (`alpha`, `stop`) comes from the first model's
    /// `decode.json` ([`crate::calibrate`]), else from the built-in defaults.
    pub fn load_ensemble(dirs: &[PathBuf], device: Device, decode: DecodeConfig) -> Result<Self> {
        let mut decode = decode;
        let Some((first, rest)) = dirs.split_first() else {
            return Err(Error::Config("no model directory given".into()));
        };
        // The weights load first: decode.json is judged stale against weights that are
        // there and sound, and a broken model gets its own one-line error, alone.
        let loaded = load_model_dir(first, device)?;
        if let Some(d) = crate::calibrate::DecodeDefaults::load_current(first)? {
            d.apply(&mut decode);
        }
        decode.validate()?;
        let mut members = Vec::with_capacity(rest.len());
        for dir in rest {
            let m = load_model_dir(dir, device)?;
            check_same_vocabulary(&loaded, first, &m, dir)?;
            members.push(m);
        }
        Ok(Translator {
            loaded,
            members,
            decode,
            device,
            precision: Precision::Fp32,
        })
    }

    /// Whether the model (or a member of the ensemble) attends over the source, so that
    /// `decode.attention` can be asked for.
    pub fn has_attention(&self) -> bool {
        std::iter::once(&self.loaded)
            .chain(&self.members)
            .any(|m| m.model.has_attention())
    }

    /// Decodes with `precision` (resolved for the device; check it with
    /// [`Precision::check`] first): CUDA autocast for `bf16` there; on the CPU, `bf16` runs
    /// every model's encoder and output layer in bfloat16
    /// ([`crate::model::Seq2Seq::set_low_precision`]).
    pub fn set_precision(&mut self, precision: Precision) {
        let precision = precision.resolved(self.device);
        self.precision = precision;
        let low = precision.low_precision(self.device);
        self.loaded.model.set_low_precision(low);
        for m in &mut self.members {
            m.model.set_low_precision(low);
        }
    }

    /// Decodes subword sources with the model or the ensemble.
    fn search(&self, sources: &[Vec<u32>], requests: &[Request]) -> Result<Vec<Vec<Hypothesis>>> {
        let (cfg, device) = (&self.decode, self.device);
        if self.members.is_empty() {
            return search::decode_requests(&self.loaded.model, sources, requests, cfg, device);
        }
        let models = std::iter::once(&self.loaded)
            .chain(&self.members)
            .map(|m| &m.model)
            .collect();
        search::decode_requests(&Ensemble::new(models), sources, requests, cfg, device)
    }

    /// The target subword ids of constraint phrases, normalized as the training targets and
    /// in their word-initial form (after a space: the byte-level tokenizer writes a word
    /// inside a sentence with its space), so that a phrase matches a whole-word start in the
    /// output. Empty phrases are skipped; one longer than `max_len` (with `</s>`) is an error.
    pub fn phrase_ids(&self, constraints: &[String]) -> Result<search::Phrases> {
        let mut phrases = Vec::new();
        for c in constraints {
            let text = normalize(c, self.loaded.config.data.normalization);
            let text = text.trim();
            if text.is_empty() {
                continue;
            }
            phrases.push(self.loaded.tokenizers.tgt().encode(&format!(" {text}"))?);
        }
        search::constrained::check_fits(&self.decode, &phrases)?;
        Ok(phrases)
    }

    /// The subword ids the model reads for one input line (normalized as in training), cut to
    /// `max_input_tokens`: `(ids, original length when cut)`. Empty for a blank line.
    pub fn source_ids(&self, line: &str) -> Result<(Vec<u32>, Option<usize>)> {
        let text = normalize(line, self.loaded.config.data.normalization);
        if text.trim().is_empty() {
            return Ok((vec![], None));
        }
        let mut ids = self.loaded.tokenizers.src().encode(&text)?;
        let max = self.decode.max_input_tokens;
        if ids.len() > max {
            let n = ids.len();
            ids.truncate(max);
            return Ok((ids, Some(n)));
        }
        Ok((ids, None))
    }

    /// Translates a batch of lines (normalized as in training; empty lines stay empty),
    /// numbered from 1 and without constraints.
    pub fn translate_batch(&self, lines: &[&str]) -> Result<Vec<Translation>> {
        let requests: Vec<LineRequest> = lines
            .iter()
            .enumerate()
            .map(|(i, text)| LineRequest {
                line: i + 1,
                text,
                constraints: &[],
            })
            .collect();
        self.translate_requests(&requests)
    }

    /// Translates a batch of lines with their line numbers and constraints. A constraint
    /// that cannot be met (longer than `max_len`) is an error naming the line.
    pub fn translate_requests(&self, lines: &[LineRequest<'_>]) -> Result<Vec<Translation>> {
        let mut out: Vec<Translation> = lines
            .iter()
            .map(|_| Translation {
                hypotheses: vec![],
                truncated_from: None,
                tokens: 0,
                attention: vec![],
                word_alignments: vec![],
            })
            .collect();
        let mut sources = Vec::new();
        let mut requests = Vec::new();
        let mut rows = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let (ids, cut) = self.source_ids(line.text)?;
            let phrases = self
                .phrase_ids(line.constraints)
                .map_err(|e| Error::Input(format!("line {}: constraints: {e}", line.line)))?;
            if ids.is_empty() && phrases.is_empty() {
                continue;
            }
            out[i].truncated_from = cut;
            sources.push(ids);
            requests.push(Request {
                key: line.line as u64,
                phrases,
            });
            rows.push(i);
        }
        let hyps = self
            .precision
            .run(self.device, || self.search(&sources, &requests))??;
        let tok = &self.loaded.tokenizers;
        for ((i, hs), src) in rows.into_iter().zip(hyps).zip(&sources) {
            out[i].tokens = hs.first().map_or(0, |h| h.tokens.len());
            let constrained = !lines[i].constraints.is_empty();
            for h in hs {
                let text = tok.tgt().decode(&h.tokens)?;
                // A constraint's word-initial form may open the output with a space.
                let text = match constrained {
                    true => text.trim_start().to_string(),
                    false => text,
                };
                out[i].hypotheses.push((text, h.score));
                if let Some(matrix) = h.attention {
                    out[i].word_alignments.push(crate::word_alignment::pharaoh(
                        tok.src(),
                        src,
                        tok.tgt(),
                        &h.tokens,
                        &matrix,
                    )?);
                    out[i].attention.push(Alignment::new(
                        tok.src(),
                        src,
                        tok.tgt(),
                        &h.tokens,
                        matrix,
                    )?);
                }
            }
        }
        Ok(out)
    }
}

/// An ensemble member must read and write the same subwords as the first model.
fn check_same_vocabulary(
    first: &LoadedModel,
    first_dir: &Path,
    other: &LoadedModel,
    dir: &Path,
) -> Result<()> {
    let differs = |what: &str| {
        Err(Error::ModelDir(format!(
            "{}: its {what} differs from {}'s; an ensemble needs models trained with the same tokenizer",
            dir.display(),
            first_dir.display()
        )))
    };
    let json = |t: &crate::tokenizer::SubwordTokenizer| t.inner().to_string(false).ok();
    let (a, b) = (&first.tokenizers, &other.tokenizers);
    if json(a.tgt()).is_none() || json(a.tgt()) != json(b.tgt()) {
        return differs("target vocabulary (tokenizer)");
    }
    if json(a.src()) != json(b.src()) {
        return differs("source vocabulary (tokenizer)");
    }
    if first.config.data.normalization != other.config.data.normalization {
        return differs("text normalization (data.normalization)");
    }
    Ok(())
}
