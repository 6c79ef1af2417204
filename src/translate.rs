//! Translation of text lines with a trained model directory, and the line-faithful streaming
//! loop behind `rnmt-translate`.
//!
//! Streaming: a reader thread reads input lines into a bounded queue; the translating loop
//! blocks for one line, then takes whatever else is already queued (up to the batch size) and
//! translates those together. Lines typed one at a time are each translated and flushed at
//! once; lines piped in fast are batched. The queue bounds memory on endless input. Exactly
//! one output line per input line, in order (with `n_best > 1`, exactly `n_best` lines).
//!
//! Memory stays bounded whatever the input: at most `max_line_bytes` of a line are kept (the
//! rest is read and dropped, with a warning), and sources are cut to `max_input_tokens`.
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tch::Device;

use crate::alignment::Alignment;
use crate::checkpoint::{load_model_dir, LoadedModel};
use crate::config::DecodeConfig;
use crate::corpus::lines::{read_line_bounded, strip_bom};
use crate::corpus::normalize;
use crate::ensemble::Ensemble;
use crate::error::{Error, Result};
use crate::precision::Precision;
use crate::search::{self, Hypothesis};

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
        if let Some(d) = crate::calibrate::DecodeDefaults::load(first)? {
            d.apply(&mut decode);
        }
        decode.validate()?;
        let loaded = load_model_dir(first, device)?;
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
    fn search(&self, sources: &[Vec<u32>]) -> Result<Vec<Vec<Hypothesis>>> {
        if self.members.is_empty() {
            return search::decode(&self.loaded.model, sources, &self.decode, self.device);
        }
        let models = std::iter::once(&self.loaded)
            .chain(&self.members)
            .map(|m| &m.model)
            .collect();
        search::decode(&Ensemble::new(models), sources, &self.decode, self.device)
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

    /// Translates a batch of lines (normalized as in training; empty lines stay empty).
    pub fn translate_batch(&self, lines: &[&str]) -> Result<Vec<Translation>> {
        let mut out: Vec<Translation> = lines
            .iter()
            .map(|_| Translation {
                hypotheses: vec![],
                truncated_from: None,
                tokens: 0,
                attention: vec![],
            })
            .collect();
        let mut sources = Vec::new();
        let mut rows = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let (ids, cut) = self.source_ids(line)?;
            if ids.is_empty() {
                continue;
            }
            out[i].truncated_from = cut;
            sources.push(ids);
            rows.push(i);
        }
        let hyps = self
            .precision
            .run(self.device, || self.search(&sources))??;
        let tok = &self.loaded.tokenizers;
        for ((i, hs), src) in rows.into_iter().zip(hyps).zip(&sources) {
            out[i].tokens = hs.first().map_or(0, |h| h.tokens.len());
            for h in hs {
                out[i]
                    .hypotheses
                    .push((tok.tgt().decode(&h.tokens)?, h.score));
                if let Some(matrix) = h.attention {
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

/// Options of the streaming loop.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Most lines translated together.
    pub batch_size: usize,
    /// Replace invalid UTF-8 with U+FFFD (with a warning) instead of stopping.
    pub lossy_utf8: bool,
    /// Print `index<TAB>score<TAB>translation` for the `decode.n_best` best.
    pub n_best: bool,
    /// Print `score<TAB>translation` for 1-best output.
    pub scores: bool,
}

/// Counts from a streaming run.
#[derive(Debug, Default, Clone)]
pub struct StreamStats {
    pub lines: usize,
    /// Subword tokens of the 1-best outputs.
    pub tgt_tokens: usize,
    pub first_output: Option<Duration>,
    pub warnings: usize,
}

enum Item {
    /// Line number, the bytes kept, the line's full length in bytes.
    Line(usize, Vec<u8>, usize),
    Failed(usize, std::io::Error),
}

/// Dynamic batching: waits for one item, then takes the items already queued while their
/// total `weight` is under `max` (the last one taken may pass it). `None` once the channel is
/// closed and empty. The batching of [`stream`] (one line each) and of `rnmt-serve`'s worker
/// (a request's sentences each).
pub fn next_batch<T>(
    rx: &mpsc::Receiver<T>,
    max: usize,
    weight: impl Fn(&T) -> usize,
) -> Option<Vec<T>> {
    let first = rx.recv().ok()?;
    let mut total = weight(&first);
    let mut items = vec![first];
    while total < max {
        match rx.try_recv() {
            Ok(item) => {
                total += weight(&item);
                items.push(item);
            }
            Err(_) => break,
        }
    }
    Some(items)
}

/// Reads lines from `input` (named `input_name` in messages), writes translations to `out`,
/// flushing after every batch. Warnings go to stderr. Stops at the first invalid UTF-8 line
/// unless `lossy_utf8`; the lines before it are translated and written first.
pub fn stream<R: BufRead + Send + 'static, W: Write + ?Sized>(
    t: &Translator,
    input: R,
    input_name: &str,
    out: &mut W,
    opts: &StreamOptions,
) -> Result<StreamStats> {
    stream_with(t, input, input_name, out, opts, &mut |_, _| Ok(()))
}

/// [`stream`] that also hands every translation, with its 1-based input line number, to
/// `each` (after it is written to `out`): where `rnmt-translate` writes attention files.
pub fn stream_with<R: BufRead + Send + 'static, W: Write + ?Sized>(
    t: &Translator,
    mut input: R,
    input_name: &str,
    out: &mut W,
    opts: &StreamOptions,
    each: &mut dyn FnMut(usize, &Translation) -> Result<()>,
) -> Result<StreamStats> {
    let start = Instant::now();
    let batch_size = opts.batch_size.max(1);
    let (tx, rx) = mpsc::sync_channel::<Item>(4 * batch_size);
    let max_line_bytes = t.decode.max_line_bytes;
    std::thread::spawn(move || {
        let mut no = 0;
        loop {
            let mut buf = Vec::new();
            no += 1;
            match read_line_bounded(&mut input, &mut buf, max_line_bytes) {
                Ok(None) => break,
                Ok(Some(len)) => {
                    if no == 1 {
                        strip_bom(&mut buf);
                    }
                    if tx.send(Item::Line(no, buf, len)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Item::Failed(no, e));
                    break;
                }
            }
        }
    });
    let mut stats = StreamStats::default();
    let out_err = |e: std::io::Error| Error::io(Path::new("<output>"), e);
    let mut pending_error = None;
    while let Some(items) = next_batch(&rx, batch_size, |_| 1) {
        let mut lines: Vec<(usize, String)> = Vec::with_capacity(items.len());
        for item in items {
            match item {
                Item::Line(no, bytes, len) => {
                    if len > max_line_bytes {
                        eprintln!(
                            "warning: {input_name}:{no}: {len} bytes, only the first {max_line_bytes} read (--max-line-bytes)"
                        );
                        stats.warnings += 1;
                    }
                    match String::from_utf8(bytes) {
                        Ok(s) => lines.push((no, s)),
                        Err(e) if opts.lossy_utf8 => {
                            eprintln!(
                                "warning: {input_name}:{no}: invalid UTF-8 replaced with U+FFFD"
                            );
                            stats.warnings += 1;
                            lines.push((no, String::from_utf8_lossy(e.as_bytes()).into_owned()));
                        }
                        Err(e) => {
                            pending_error = Some(Error::Input(format!(
                            "{input_name}:{no}: invalid UTF-8 ({}); use --lossy-utf8 to replace it",
                            e.utf8_error()
                        )));
                            break;
                        }
                    }
                }
                Item::Failed(no, e) => {
                    pending_error =
                        Some(Error::Input(format!("{input_name}:{no}: read error: {e}")));
                    break;
                }
            }
        }
        let texts: Vec<&str> = lines.iter().map(|(_, s)| s.as_str()).collect();
        let translations = t.translate_batch(&texts)?;
        for ((no, _), tr) in lines.iter().zip(&translations) {
            if let Some(n) = tr.truncated_from {
                eprintln!(
                    "warning: {input_name}:{no}: {n} subword tokens, truncated to the first {}",
                    t.decode.max_input_tokens
                );
                stats.warnings += 1;
            }
            write_translation(out, stats.lines, tr, opts, t.decode.n_best).map_err(out_err)?;
            each(*no, tr)?;
            stats.lines += 1;
            stats.tgt_tokens += tr.tokens;
        }
        out.flush().map_err(out_err)?;
        if stats.first_output.is_none() && stats.lines > 0 {
            stats.first_output = Some(start.elapsed());
        }
        if let Some(e) = pending_error {
            return Err(e);
        }
    }
    Ok(stats)
}

fn write_translation<W: Write + ?Sized>(
    out: &mut W,
    index: usize,
    tr: &Translation,
    opts: &StreamOptions,
    n_best: usize,
) -> std::io::Result<()> {
    if opts.n_best {
        if tr.hypotheses.is_empty() {
            // An empty line has K (empty) translations like any other.
            for _ in 0..n_best {
                writeln!(out, "{index}\t{:.4}\t", 0.0)?;
            }
            return Ok(());
        }
        for (text, score) in tr.hypotheses.iter().take(n_best) {
            writeln!(out, "{index}\t{score:.4}\t{text}")?;
        }
        return Ok(());
    }
    match tr.hypotheses.first() {
        Some((text, score)) if opts.scores => writeln!(out, "{score:.4}\t{text}"),
        Some((text, _)) => writeln!(out, "{text}"),
        None if opts.scores => writeln!(out, "{:.4}\t", 0.0),
        None => writeln!(out),
    }
}
