//! Forced decoding (`rnmt-score`): the log-probability of given translations under a model.
//!
//! A pair is normalized and tokenized as training does it ([`crate::data`]: the model's
//! normalization, its source and target tokenizers, no special tokens, then `</s>` after
//! both sides and `<s>` before the decoder input), and scored by the model under teacher
//! forcing without dropout: the sum over the target tokens, `</s>` included, of
//! `log p(y_t | y_<t, x)`. That is minus the negative log-likelihood training computes for
//! the pair ([`crate::model::Seq2Seq::loss`], its label smoothing left out); a test checks
//! the two agree. Pairs are scored in batches; a pair's score does not depend on its batch
//! (up to float rounding).
use std::io::BufRead;
use std::path::{Path, PathBuf};

use tch::Device;

use crate::batch::{Batch, Example};
use crate::checkpoint::LoadedModel;
use crate::corpus::lines::{read_line_bounded, strip_bom};
use crate::corpus::normalize;
use crate::error::{Error, Result};

/// The score of one pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairScore {
    /// `log p(target | source)`, natural logarithm.
    pub total: f64,
    /// Target tokens scored (subwords and `</s>`).
    pub tokens: usize,
}

impl PairScore {
    /// The log-probability per target token.
    pub fn per_token(&self) -> f64 {
        self.total / self.tokens.max(1) as f64
    }
}

/// A pair as the model reads it: its subword ids, checked against `max_tokens` (the error
/// names neither file nor line; the caller adds them).
pub fn encode_pair(
    model: &LoadedModel,
    src: &str,
    tgt: &str,
    max_tokens: usize,
) -> Result<Example> {
    let n = model.config.data.normalization;
    let src = model.tokenizers.src().encode(&normalize(src, n))?;
    let tgt = model.tokenizers.tgt().encode(&normalize(tgt, n))?;
    for (side, ids) in [("source", &src), ("target", &tgt)] {
        if ids.len() > max_tokens {
            return Err(Error::Input(format!(
                "the {side} is {} subword tokens, more than --max-tokens {max_tokens}",
                ids.len()
            )));
        }
    }
    Ok(Example { src, tgt })
}

/// Scores a batch of encoded pairs (in one forward pass, without gradients).
pub fn score_batch(
    model: &LoadedModel,
    pairs: &[Example],
    device: Device,
) -> Result<Vec<PairScore>> {
    if pairs.is_empty() {
        return Ok(vec![]);
    }
    let refs: Vec<&Example> = pairs.iter().collect();
    let batch = Batch::new(&refs, device);
    let scores = tch::no_grad(|| model.model.score(&batch));
    let scores: Vec<f32> =
        Vec::<f32>::try_from(scores.reshape([-1])).map_err(|source| Error::ToHost {
            what: "pair scores".into(),
            source,
        })?;
    Ok(scores
        .into_iter()
        .zip(pairs)
        .map(|(s, p)| PairScore {
            total: s as f64,
            tokens: p.tgt.len() + 1,
        })
        .collect())
}

/// Where pairs come from: one tab-separated file, or a source and a target file read in
/// step.
pub enum PairSource {
    Tsv(PathBuf, Box<dyn BufRead + Send>),
    Files {
        src: (PathBuf, Box<dyn BufRead + Send>),
        tgt: (PathBuf, Box<dyn BufRead + Send>),
    },
}

/// Reads pairs one at a time: `(line number, source, target)`; every malformed line is an
/// error naming its file and line.
pub struct PairReader {
    source: PairSource,
    max_line_bytes: usize,
    line: usize,
}

impl PairReader {
    pub fn new(source: PairSource, max_line_bytes: usize) -> Self {
        PairReader {
            source,
            max_line_bytes,
            line: 0,
        }
    }

    /// The next pair, `None` at the end.
    pub fn next_pair(&mut self) -> Result<Option<(usize, String, String)>> {
        self.line += 1;
        let (no, max) = (self.line, self.max_line_bytes);
        match &mut self.source {
            PairSource::Tsv(path, r) => {
                let Some(text) = read_text(r.as_mut(), path, no, max)? else {
                    return Ok(None);
                };
                let mut cols = text.split('\t');
                let (Some(s), Some(t), None) = (cols.next(), cols.next(), cols.next()) else {
                    let n = text.split('\t').count();
                    return Err(Error::Input(format!(
                        "{}:{no}: {n} column{}; a pair is source<TAB>target",
                        path.display(),
                        if n == 1 { "" } else { "s" }
                    )));
                };
                Ok(Some((no, s.to_string(), t.to_string())))
            }
            PairSource::Files { src, tgt } => {
                let s = read_text(src.1.as_mut(), &src.0, no, max)?;
                let t = read_text(tgt.1.as_mut(), &tgt.0, no, max)?;
                match (s, t) {
                    (Some(s), Some(t)) => Ok(Some((no, s, t))),
                    (None, None) => Ok(None),
                    (Some(_), None) => Err(Error::Input(format!(
                        "{} has {} lines, fewer than {}",
                        tgt.0.display(),
                        no - 1,
                        src.0.display()
                    ))),
                    (None, Some(_)) => Err(Error::Input(format!(
                        "{} has {} lines, fewer than {}",
                        src.0.display(),
                        no - 1,
                        tgt.0.display()
                    ))),
                }
            }
        }
    }
}

/// One line of `r` as text (without `\n` / `\r\n`), `None` at the end.
fn read_text(r: &mut dyn BufRead, path: &Path, no: usize, max: usize) -> Result<Option<String>> {
    let mut buf = Vec::new();
    let got = read_line_bounded(r, &mut buf, max)
        .map_err(|e| Error::Input(format!("{}:{no}: read error: {e}", path.display())))?;
    let Some(len) = got else { return Ok(None) };
    if len > max {
        return Err(Error::Input(format!(
            "{}:{no}: {len} bytes, more than --max-line-bytes {max}",
            path.display()
        )));
    }
    if no == 1 {
        strip_bom(&mut buf);
    }
    let mut text = String::from_utf8(buf).map_err(|e| {
        Error::Input(format!(
            "{}:{no}: invalid UTF-8 ({})",
            path.display(),
            e.utf8_error()
        ))
    })?;
    if text.ends_with('\r') {
        text.pop();
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader(text: &str) -> PairReader {
        let r = std::io::Cursor::new(text.as_bytes().to_vec());
        PairReader::new(PairSource::Tsv("p.tsv".into(), Box::new(r)), 100)
    }

    #[test]
    fn tsv_pairs_are_read_and_one_column_is_refused() {
        let mut r = reader("a\tb\nc\n");
        assert_eq!(r.next_pair().unwrap(), Some((1, "a".into(), "b".into())));
        let e = r.next_pair().unwrap_err().to_string();
        assert!(
            e.contains("p.tsv:2: 1 column; a pair is source<TAB>target"),
            "{e}"
        );
    }

    #[test]
    fn two_files_must_have_as_many_lines() {
        let src = std::io::Cursor::new(b"a\nb\n".to_vec());
        let tgt = std::io::Cursor::new(b"x\n".to_vec());
        let mut r = PairReader::new(
            PairSource::Files {
                src: ("s.txt".into(), Box::new(src)),
                tgt: ("t.txt".into(), Box::new(tgt)),
            },
            100,
        );
        assert_eq!(r.next_pair().unwrap(), Some((1, "a".into(), "x".into())));
        let e = r.next_pair().unwrap_err().to_string();
        assert!(e.contains("t.txt has 1 lines, fewer than s.txt"), "{e}");
    }
}
