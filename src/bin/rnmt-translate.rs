//! rnmt-translate: translate lines from stdin (or --input) with a trained model directory.
use std::io::{BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rnmt::alignment::Alignment;
use rnmt::atomic::AtomicFile;
use rnmt::config::DecodeConfig;
use rnmt::device::{describe, DeviceArgs};
use rnmt::translate::output::{self, Output};
use rnmt::translate::{stream_with, StreamOptions, Translation, Translator};

/// Translate one sentence per line: exactly one output line per input line, in order.
///
/// Lines are translated as soon as they arrive (interactive use) and batched when they
/// arrive fast (pipes and files).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Model directory written by rnmt-train. Give it more than once for an ensemble: each
    /// token is scored by the mean of the models' log-probabilities (the models must share
    /// their tokenizer).
    #[arg(long, short, required = true)]
    model: Vec<PathBuf>,
    /// Read from this file instead of stdin (`-`: stdin).
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Write to this file instead of stdout (`-`: stdout). Written as it goes to
    /// FILE.partial, renamed over FILE at the end: FILE appears complete or keeps its old
    /// content, and an interrupted job leaves its lines so far in FILE.partial.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Print a progress line on stderr (lines done, lines/s, time left for an input file)
    /// at most once a second [default: when stderr is a terminal and the input a file].
    #[arg(long)]
    progress: bool,
    #[command(flatten)]
    decode: DecodeConfig,
    /// Print the K best (with --sample: K samples) as `index<TAB>score<TAB>translation`
    /// lines.
    #[arg(long, value_name = "K")]
    n_best: Option<usize>,
    /// Print `score<TAB>translation` (score: log-probability of the translation).
    #[arg(long)]
    scores: bool,
    /// Append a word alignment from the attention to every output line after a tab:
    /// `translation<TAB>0-0 1-2 ..` (Pharaoh `source-target` pairs over whitespace-separated
    /// words, from 0; one link per output word, to the source word it attends to most).
    #[arg(long)]
    align: bool,
    /// Target phrases that must appear in the translations: line N holds those of input
    /// line N, separated by tabs (an empty line: none). Uses constrained beam search
    /// (dynamic beam allocation); not with --sample.
    #[arg(long, value_name = "FILE")]
    constraints: Option<PathBuf>,
    /// Write the attention weights of every best translation to this file, one JSON object
    /// per input line: {"line", "source", "target", "attention": [target x source]}.
    #[arg(long, value_name = "FILE")]
    attention: Option<PathBuf>,
    /// Write one attention heatmap per input line (not for empty lines) into this
    /// directory, as LINE.svg (line numbers from 1, six digits: 000001.svg).
    #[arg(long, value_name = "DIR")]
    attention_svg: Option<PathBuf>,
    /// Most sentences translated together.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Lines ordered by length together before they are cut into batches (default: eight
    /// batches per worker; 1 keeps the input order). Output is always in input order.
    #[arg(long, value_name = "LINES")]
    window: Option<usize>,
    /// Batches translated at the same time, each by its own copy of the model (default: on a
    /// CPU one per libtorch thread (--threads), each worker then using one thread; on CUDA 1).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Replace invalid UTF-8 with U+FFFD (warning on stderr) instead of stopping.
    #[arg(long)]
    lossy_utf8: bool,
    #[command(flatten)]
    dev: DeviceArgs,
    /// Print timing (load time, time to first translation, sentences/s) on stderr.
    #[arg(long, short)]
    verbose: bool,
}

/// Whether two paths name the same existing file (also through links).
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Where `--attention` and `--attention-svg` write.
struct AttentionSinks {
    json: Option<(PathBuf, AtomicFile)>,
    svg_dir: Option<PathBuf>,
}

impl AttentionSinks {
    /// The attention of the best hypothesis of input line `line` (1-based); an empty line
    /// has none: `{"line": N, "source": [], "target": [], "attention": []}` and no picture.
    fn write(&mut self, line: usize, tr: &Translation) -> rnmt::error::Result<()> {
        let empty = Alignment {
            source: vec![],
            target: vec![],
            attention: vec![],
        };
        let best = tr.attention.first();
        if let Some((path, f)) = &mut self.json {
            let text = best.unwrap_or(&empty).to_json_line(line)?;
            writeln!(f, "{text}").map_err(|e| rnmt::error::Error::io(path, e))?;
        }
        if let (Some(dir), Some(a)) = (&self.svg_dir, best) {
            let path = dir.join(format!("{line:06}.svg"));
            rnmt::atomic::write_atomic(&path, rnmt::plot::heatmap::heatmap_svg(a)?.as_bytes())?;
        }
        Ok(())
    }
}

fn run(mut a: Args) -> Result<()> {
    let start = Instant::now();
    // `-` is stdin / stdout, as in every Unix tool.
    a.input = a.input.filter(|p| !output::is_std(p));
    a.output = a.output.filter(|p| !output::is_std(p));
    for (name, path) in [("--output", &a.output), ("--attention", &a.attention)] {
        if let (Some(c), Some(o)) = (&a.constraints, path) {
            if same_file(c, o) {
                bail!(
                    "{name} {} is the --constraints file; choose another output file",
                    o.display()
                );
            }
        }
        if let (Some(i), Some(o)) = (&a.input, path) {
            if same_file(i, o) {
                bail!(
                    "{name} {} is the input file {}: writing it would destroy the input; choose another output file",
                    o.display(),
                    i.display()
                );
            }
        }
    }
    if let (Some(o), Some(att)) = (&a.output, &a.attention) {
        if o == att || same_file(o, att) {
            bail!(
                "--attention {} is also the --output file; choose another file",
                att.display()
            );
        }
    }
    let device = a.dev.apply(rnmt::precision::Precision::Auto)?;
    let decode = DecodeConfig {
        n_best: a.n_best.unwrap_or(1),
        attention: a.attention.is_some() || a.attention_svg.is_some() || a.align,
        ..a.decode.clone()
    };
    let threads = tch::get_num_threads().max(1) as usize;
    use rnmt::sizing::{check, MAX_BATCH_SIZE, MAX_WINDOW, MAX_WORKERS};
    check(
        "--batch-size",
        a.batch_size,
        MAX_BATCH_SIZE,
        "sentences translated together",
    )?;
    if let Some(w) = a.window {
        check(
            "--window",
            w,
            MAX_WINDOW,
            "lines ordered by length together",
        )?;
    }
    let workers = match a.workers {
        Some(n) => check(
            "--workers",
            n,
            MAX_WORKERS,
            "each holds its own copy of the model",
        )?,
        None if device == tch::Device::Cpu => threads,
        None => 1,
    };
    // One copy of the model per worker, loaded side by side.
    let translators: Vec<Translator> = std::thread::scope(|scope| {
        let loads: Vec<_> = (0..workers)
            .map(|_| {
                let (models, decode) = (&a.model, decode.clone());
                scope.spawn(move || Translator::load_ensemble(models, device, decode))
            })
            .collect();
        loads
            .into_iter()
            .map(|h| h.join().expect("a model load panicked"))
            .collect::<rnmt::error::Result<Vec<_>>>()
    })?;
    let mut translators = translators;
    for t in &mut translators {
        t.set_precision(a.dev.precision);
    }
    let translator = &translators[0];
    if translator.decode.attention && !translator.has_attention() {
        return Err(rnmt::error::Error::NoAttention)
            .with_context(|| format!("--attention: {}", a.model[0].display()));
    }
    if a.verbose {
        eprintln!(
            "rnmt-translate: {} loaded in {:.2}s on {} ({}); {workers} worker(s)",
            if a.model.len() > 1 {
                format!("ensemble of {} models", a.model.len())
            } else {
                "model".to_string()
            },
            start.elapsed().as_secs_f64(),
            describe(device),
            translator.precision
        );
    }
    if let Some(dir) = &a.attention_svg {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("--attention-svg: creating {}", dir.display()))?;
    }
    let mut sinks = AttentionSinks {
        json: match &a.attention {
            Some(p) => Some((p.clone(), AtomicFile::create(p).context("--attention")?)),
            None => None,
        },
        svg_dir: a.attention_svg.clone(),
    };
    let mut each = |line: usize, tr: &Translation| sinks.write(line, tr);
    let mut opts = StreamOptions::new(a.batch_size, workers);
    if let Some(w) = a.window {
        opts.window = w;
    }
    opts.worker_threads = (device == tch::Device::Cpu).then(|| (threads / workers).max(1));
    opts.lossy_utf8 = a.lossy_utf8;
    opts.n_best = a.n_best.is_some();
    opts.scores = a.scores;
    opts.align = a.align;
    if let Some(p) = &a.constraints {
        if a.decode.sample {
            bail!("--constraints and --sample do not go together: constraints need beam search");
        }
        let file = rnmt::translate::ConstraintFile::open(p, a.decode.max_line_bytes)
            .context("--constraints")?;
        opts.constraints = Some(std::sync::Arc::new(file));
    }
    let progress = (a.progress || (a.input.is_some() && std::io::stderr().is_terminal()))
        .then(|| a.input.as_deref().and_then(output::count_lines));
    let mut out = Output::open(a.output.as_deref(), progress)?;
    if let (Some(part), Some(file)) = (out.partial_path(), &a.output) {
        output::stop_on_signal(part, file, out.line_count())?;
    }
    let t0 = Instant::now();
    let stats = match &a.input {
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            stream_with(
                translators,
                BufReader::new(f),
                &p.display().to_string(),
                &mut out,
                &opts,
                &mut each,
            )?
        }
        None => stream_with(
            translators,
            BufReader::new(std::io::stdin()),
            "<stdin>",
            &mut out,
            &opts,
            &mut each,
        )?,
    };
    if let Some(c) = &opts.constraints {
        if c.has_more() {
            eprintln!(
                "warning: --constraints {} has more lines than the input ({})",
                c.path().display(),
                stats.lines
            );
        }
    }
    out.commit()?;
    if let Some((_, f)) = sinks.json {
        f.commit()?;
    }
    if a.verbose {
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "rnmt-translate: {} lines in {secs:.2}s ({:.1} lines/s, {:.0} target tokens/s); first translation {:.2}s after start-up; {}",
            stats.lines,
            stats.lines as f64 / secs,
            stats.tgt_tokens as f64 / secs,
            (t0 - start + stats.first_output.unwrap_or_default()).as_secs_f64(),
            rnmt::memory::peak_report()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    rnmt::cli::run("rnmt-translate", || run(args))
}
