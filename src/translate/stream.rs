//! The streaming loop of `rnmt-translate`: lines in, exactly one output line per input line
//! out, in order (with `n_best > 1`, exactly `n_best` lines).
//!
//! A reader thread reads input lines into a bounded queue. The loop blocks for one line, then
//! takes whatever else is already queued, up to a window of [`StreamOptions::window`] lines;
//! lines typed one at a time are each translated and flushed at once, lines piped in fast are
//! batched. Within a window the lines are ordered by length and cut into batches of
//! [`StreamOptions::batch_size`], so a batch holds sentences of similar length and few steps
//! run for one long sentence (Marian's "maxi-batch"); the translations are written back in
//! input order. Each sentence's search does not depend on its batch-mates, so the output is
//! that of input-order batches.
//!
//! The batches go to one or more workers, each a thread with its own copy of the model
//! ([`Translator`] holds tensors, which are not shared between threads). On a CPU several
//! workers with one libtorch thread each keep both cores busy on whole batches, where one
//! worker with two threads splits every small operation of a decoder step in two and waits
//! at each split. Finished batches are written as soon as every line before them is, and at
//! most two batches per worker are in flight, which bounds memory on endless input.
use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{ConstraintFile, LineRequest, Translation, Translator};
use crate::corpus::lines::{read_line_bounded, strip_bom};
use crate::error::{Error, Result};

/// Options of the streaming loop.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Most lines translated together.
    pub batch_size: usize,
    /// Most lines ordered by length together (at least `batch_size`; 1 keeps input order).
    pub window: usize,
    /// libtorch threads of each worker (`None`: leave the process's setting).
    pub worker_threads: Option<usize>,
    /// Replace invalid UTF-8 with U+FFFD (with a warning) instead of stopping.
    pub lossy_utf8: bool,
    /// Print `index<TAB>score<TAB>translation` for the `decode.n_best` best.
    pub n_best: bool,
    /// Print `score<TAB>translation` for 1-best output.
    pub scores: bool,
    /// Append `<TAB>alignment` (Pharaoh word alignment) to every translation line.
    pub align: bool,
    /// Target phrases per input line (`--constraints`), read as the lines are translated.
    pub constraints: Option<std::sync::Arc<ConstraintFile>>,
}

impl StreamOptions {
    /// `batch_size` lines per batch, a window of eight batches per worker, the other options
    /// off.
    pub fn new(batch_size: usize, workers: usize) -> Self {
        StreamOptions {
            batch_size,
            window: (batch_size
                .max(1)
                .saturating_mul(8)
                .saturating_mul(workers.max(1)))
            .min(crate::sizing::MAX_WINDOW),
            worker_threads: None,
            lossy_utf8: false,
            n_best: false,
            scores: false,
            align: false,
            constraints: None,
        }
    }
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
    Some(more_queued(rx, first, max, weight))
}

/// `first` and the items already queued behind it while their total weight is under `max`.
fn more_queued<T>(
    rx: &mpsc::Receiver<T>,
    first: T,
    max: usize,
    weight: impl Fn(&T) -> usize,
) -> Vec<T> {
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
    items
}

/// Reads lines from `input` (named `input_name` in messages), writes translations to `out`,
/// flushing after every batch. Warnings go to stderr. Stops at the first invalid UTF-8 line
/// unless `lossy_utf8`; the lines before it are translated and written first.
pub fn stream<R: BufRead + Send + 'static, W: Write + ?Sized>(
    workers: Vec<Translator>,
    input: R,
    input_name: &str,
    out: &mut W,
    opts: &StreamOptions,
) -> Result<StreamStats> {
    stream_with(workers, input, input_name, out, opts, &mut |_, _| Ok(()))
}

/// A batch sent to a worker: `(line number, text)` of each line.
type Job = Vec<(usize, String)>;
/// A worker's answer: the batch's lines and their translations.
type Done = (Job, Result<Vec<Translation>>);

/// [`stream`] that also hands every translation, with its 1-based input line number, to
/// `each` (after it is written to `out`): where `rnmt-translate` writes attention files.
/// `workers` are the translators of the worker threads (at least one; all of the same
/// model).
pub fn stream_with<R: BufRead + Send + 'static, W: Write + ?Sized>(
    workers: Vec<Translator>,
    mut input: R,
    input_name: &str,
    out: &mut W,
    opts: &StreamOptions,
    each: &mut dyn FnMut(usize, &Translation) -> Result<()>,
) -> Result<StreamStats> {
    let Some(first) = workers.first() else {
        return Err(Error::Config("no translator to stream with".into()));
    };
    let (max_line_bytes, max_input_tokens, n_best) = (
        first.decode.max_line_bytes,
        first.decode.max_input_tokens,
        first.decode.n_best,
    );
    let start = Instant::now();
    // Bounded (see [`crate::sizing`]): the channel's slots are allocated up front.
    let batch_size = opts.batch_size.clamp(1, crate::sizing::MAX_BATCH_SIZE);
    let window = opts.window.max(batch_size).min(crate::sizing::MAX_WINDOW);
    let in_flight_max = 2 * workers.len();
    let (tx, rx) = mpsc::sync_channel::<Item>(2 * window);
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
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = std::sync::Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    std::thread::scope(|scope| {
        for t in workers {
            let (job_rx, done_tx) = (&job_rx, done_tx.clone());
            let threads = opts.worker_threads;
            let constraints = opts.constraints.clone();
            scope.spawn(move || {
                if let Some(n) = threads {
                    // libtorch's intra-op threads are set per calling thread (OpenMP).
                    tch::set_num_threads(n.max(1) as i32);
                }
                loop {
                    let job = job_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok(lines)) = job else { break };
                    // A panic (a libtorch exception) must come back as an answer: the loop
                    // waits for one per batch sent.
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        translate_job(&t, &lines, constraints.as_deref())
                    }))
                    .unwrap_or_else(|payload| {
                        Err(Error::Input(format!(
                            "translating lines {}-{} failed: {}",
                            lines.first().map_or(0, |l| l.0),
                            lines.last().map_or(0, |l| l.0),
                            crate::panic::message(payload.as_ref())
                        )))
                    });
                    if done_tx.send((lines, result)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(done_tx);
        let mut writer = InOrder {
            out,
            each,
            input_name,
            opts,
            n_best,
            max_input_tokens,
            start,
            stats: StreamStats::default(),
            ready: BTreeMap::new(),
            next: 0,
        };
        let mut queued = VecDeque::new(); // batches cut from the window, not yet sent
        let mut in_flight = 0usize;
        let mut pending_error = None;
        let mut input_open = true;
        let outcome = loop {
            // Send what the workers can take.
            while in_flight < in_flight_max {
                let Some(lines) = queued.pop_front() else {
                    break;
                };
                if job_tx.send(lines).is_err() {
                    break;
                }
                in_flight += 1;
            }
            // Read more input when nothing else is waiting: blocking only when idle.
            if queued.is_empty() && input_open && pending_error.is_none() {
                let items = if in_flight == 0 {
                    next_batch(&rx, window, |_| 1)
                } else {
                    match rx.try_recv() {
                        Ok(first) => Some(more_queued(&rx, first, window, |_| 1)),
                        Err(mpsc::TryRecvError::Empty) => Some(Vec::new()),
                        Err(mpsc::TryRecvError::Disconnected) => None,
                    }
                };
                match items {
                    None => input_open = false,
                    Some(items) if !items.is_empty() => {
                        let (lines, err) = decode_items(
                            items,
                            input_name,
                            max_line_bytes,
                            opts,
                            &mut writer.stats,
                        );
                        pending_error = err;
                        queued.extend(length_ordered_batches(lines, batch_size));
                        continue;
                    }
                    Some(_) => {}
                }
            }
            if in_flight == 0 {
                if queued.is_empty() && (!input_open || pending_error.is_some()) {
                    break Ok(());
                }
                continue;
            }
            let Ok((lines, result)) = done_rx.recv() else {
                break Err(Error::Input("the translation workers stopped".into()));
            };
            in_flight -= 1;
            match result {
                Ok(translations) => {
                    for ((no, _), tr) in lines.into_iter().zip(translations) {
                        writer.ready.insert(no, tr);
                    }
                    if let Err(e) = writer.write_ready() {
                        break Err(e);
                    }
                }
                Err(e) => break Err(e),
            }
        };
        drop(job_tx);
        outcome?;
        if let Some(e) = pending_error {
            return Err(e);
        }
        Ok(writer.stats)
    })
}

/// Translates one batch: each line with its number and its constraints.
fn translate_job(
    t: &Translator,
    lines: &[(usize, String)],
    constraints: Option<&ConstraintFile>,
) -> Result<Vec<Translation>> {
    let phrases: Vec<Vec<String>> = match constraints {
        Some(c) => lines
            .iter()
            .map(|(no, _)| c.phrases(*no))
            .collect::<Result<_>>()?,
        None => vec![Vec::new(); lines.len()],
    };
    let requests: Vec<LineRequest> = lines
        .iter()
        .zip(&phrases)
        .map(|((no, text), p)| LineRequest {
            line: *no,
            text,
            constraints: p,
        })
        .collect();
    t.translate_requests(&requests)
        .map_err(|e| match constraints {
            Some(c) if matches!(e, Error::Input(_)) => {
                Error::Input(format!("--constraints {}: {e}", c.path().display()))
            }
            _ => e,
        })
}

/// Turns queued input items into `(line number, text)`, stopping at the first line that
/// cannot be read (returned as the error, after the lines before it).
fn decode_items(
    items: Vec<Item>,
    input_name: &str,
    max_line_bytes: usize,
    opts: &StreamOptions,
    stats: &mut StreamStats,
) -> (Vec<(usize, String)>, Option<Error>) {
    let mut lines = Vec::with_capacity(items.len());
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
                        eprintln!("warning: {input_name}:{no}: invalid UTF-8 replaced with U+FFFD");
                        stats.warnings += 1;
                        lines.push((no, String::from_utf8_lossy(e.as_bytes()).into_owned()));
                    }
                    Err(e) => {
                        let err = Error::Input(format!(
                            "{input_name}:{no}: invalid UTF-8 ({}); use --lossy-utf8 to replace it",
                            e.utf8_error()
                        ));
                        return (lines, Some(err));
                    }
                }
            }
            Item::Failed(no, e) => {
                let err = Error::Input(format!("{input_name}:{no}: read error: {e}"));
                return (lines, Some(err));
            }
        }
    }
    (lines, None)
}

/// `lines` ordered by length (bytes; stable, so equal lengths keep input order) and cut into
/// batches of at most `batch_size`.
fn length_ordered_batches(
    mut lines: Vec<(usize, String)>,
    batch_size: usize,
) -> Vec<Vec<(usize, String)>> {
    lines.sort_by_key(|(_, s)| s.len());
    let mut batches = Vec::new();
    let mut rest = lines.into_iter().peekable();
    while rest.peek().is_some() {
        batches.push(rest.by_ref().take(batch_size.max(1)).collect());
    }
    batches
}

/// Writes translations in input order as they become ready.
struct InOrder<'a, W: Write + ?Sized> {
    out: &'a mut W,
    each: &'a mut dyn FnMut(usize, &Translation) -> Result<()>,
    input_name: &'a str,
    opts: &'a StreamOptions,
    n_best: usize,
    max_input_tokens: usize,
    start: Instant,
    stats: StreamStats,
    /// Translations by input line number, not yet written.
    ready: BTreeMap<usize, Translation>,
    /// The last line number written (line numbers start at 1).
    next: usize,
}

impl<W: Write + ?Sized> InOrder<'_, W> {
    /// Writes every ready translation that follows the last one written, then flushes.
    fn write_ready(&mut self) -> Result<()> {
        let out_err = |e: std::io::Error| Error::io(Path::new("<output>"), e);
        let mut wrote = false;
        while let Some(tr) = self.ready.remove(&(self.next + 1)) {
            self.next += 1;
            let no = self.next;
            if let Some(n) = tr.truncated_from {
                eprintln!(
                    "warning: {}:{no}: {n} subword tokens, truncated to the first {}",
                    self.input_name, self.max_input_tokens
                );
                self.stats.warnings += 1;
            }
            write_translation(self.out, self.stats.lines, &tr, self.opts, self.n_best)
                .map_err(out_err)?;
            (self.each)(no, &tr)?;
            self.stats.lines += 1;
            self.stats.tgt_tokens += tr.tokens;
            wrote = true;
        }
        if wrote {
            self.out.flush().map_err(out_err)?;
            if self.stats.first_output.is_none() {
                self.stats.first_output = Some(self.start.elapsed());
            }
        }
        Ok(())
    }
}

fn write_translation<W: Write + ?Sized>(
    out: &mut W,
    index: usize,
    tr: &Translation,
    opts: &StreamOptions,
    n_best: usize,
) -> std::io::Result<()> {
    // `<TAB>alignment` after the translation with `--align` (empty for an empty line).
    let align = |k: usize| -> String {
        match opts.align {
            true => format!("\t{}", tr.word_alignments.get(k).map_or("", String::as_str)),
            false => String::new(),
        }
    };
    if opts.n_best {
        if tr.hypotheses.is_empty() {
            // An empty line has K (empty) translations like any other.
            for _ in 0..n_best {
                writeln!(out, "{index}\t{:.4}\t{}", 0.0, align(usize::MAX))?;
            }
            return Ok(());
        }
        for (k, (text, score)) in tr.hypotheses.iter().take(n_best).enumerate() {
            writeln!(out, "{index}\t{score:.4}\t{text}{}", align(k))?;
        }
        return Ok(());
    }
    match tr.hypotheses.first() {
        Some((text, score)) if opts.scores => writeln!(out, "{score:.4}\t{text}{}", align(0)),
        Some((text, _)) => writeln!(out, "{text}{}", align(0)),
        None if opts.scores => writeln!(out, "{:.4}\t{}", 0.0, align(usize::MAX)),
        None => writeln!(out, "{}", align(usize::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_lines_of_similar_length_and_keep_every_line() {
        let lines: Vec<(usize, String)> = ["ccc", "a", "bb", "dddd", "e", "ff"]
            .iter()
            .enumerate()
            .map(|(i, s)| (i + 1, s.to_string()))
            .collect();
        let batches = length_ordered_batches(lines, 4);
        let numbers: Vec<Vec<usize>> = batches
            .iter()
            .map(|b| b.iter().map(|(no, _)| *no).collect())
            .collect();
        // "a"(2) and "e"(5) tie at length 1 and keep their order.
        assert_eq!(numbers, vec![vec![2, 5, 3, 6], vec![1, 4]]);
    }
}
