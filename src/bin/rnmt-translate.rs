//! rnmt-translate: translate lines from stdin (or --input) with a trained model directory.
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use rnmt::config::DecodeConfig;
use rnmt::device::{describe, parse_device, set_threads};
use rnmt::translate::{stream, StreamOptions, Translator};

/// Translate one sentence per line: exactly one output line per input line, in order.
///
/// Lines are translated as soon as they arrive (interactive use) and batched when they
/// arrive fast (pipes and files).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Model directory written by rnmt-train.
    #[arg(long, short)]
    model: PathBuf,
    /// Read from this file instead of stdin.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Write to this file instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Beam size (1 = greedy search).
    #[arg(long, default_value_t = 5)]
    beam: usize,
    /// Length penalty exponent (GNMT): scores are divided by ((5 + len) / 6)^alpha.
    #[arg(long, default_value_t = 1.0)]
    alpha: f64,
    /// Output length bound: max-len-ratio * source tokens + max-len-offset...
    #[arg(long, default_value_t = 2.0)]
    max_len_ratio: f64,
    #[arg(long, default_value_t = 10)]
    max_len_offset: usize,
    /// ...and at most this many tokens.
    #[arg(long, default_value_t = 256)]
    max_len: usize,
    /// Do not end a translation before this many tokens.
    #[arg(long, default_value_t = 0)]
    min_len: usize,
    /// Print the K best as `index<TAB>score<TAB>translation` lines.
    #[arg(long, value_name = "K")]
    n_best: Option<usize>,
    /// Print `score<TAB>translation` (score: log-probability of the translation).
    #[arg(long)]
    scores: bool,
    /// Most sentences translated together.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Source lines longer than this many subword tokens are truncated (with a warning).
    #[arg(long, default_value_t = 250)]
    max_input_tokens: usize,
    /// Replace invalid UTF-8 with U+FFFD (warning on stderr) instead of stopping.
    #[arg(long)]
    lossy_utf8: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// libtorch threads (default: one per physical core).
    #[arg(long)]
    threads: Option<usize>,
    /// Print timing (load time, time to first translation, sentences/s) on stderr.
    #[arg(long, short)]
    verbose: bool,
}

fn run(a: Args) -> Result<()> {
    let start = Instant::now();
    set_threads(a.threads);
    let device = parse_device(&a.device)?;
    let decode = DecodeConfig {
        beam: a.beam,
        alpha: a.alpha,
        max_len_ratio: a.max_len_ratio,
        max_len_offset: a.max_len_offset,
        max_len: a.max_len,
        min_len: a.min_len,
        n_best: a.n_best.unwrap_or(1),
    };
    let mut translator = Translator::load(&a.model, device, decode)?;
    translator.max_input_tokens = a.max_input_tokens.max(1);
    if a.verbose {
        eprintln!(
            "rnmt-translate: model loaded in {:.2}s on {}",
            start.elapsed().as_secs_f64(),
            describe(device)
        );
    }
    let opts = StreamOptions {
        batch_size: a.batch_size,
        lossy_utf8: a.lossy_utf8,
        n_best: a.n_best.is_some(),
        scores: a.scores,
    };
    let mut out: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let t0 = Instant::now();
    let stats = match &a.input {
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            stream(
                &translator,
                BufReader::new(f),
                &p.display().to_string(),
                &mut out,
                &opts,
            )?
        }
        None => stream(
            &translator,
            BufReader::new(std::io::stdin()),
            "<stdin>",
            &mut out,
            &opts,
        )?,
    };
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

/// True when the error comes from writing to a closed pipe (`rnmt-translate | head`).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<rnmt::error::Error>().is_some_and(|r| {
                matches!(r, rnmt::error::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
            })
    })
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        if is_broken_pipe(&e) {
            std::process::exit(0);
        }
        eprintln!("rnmt-translate: error: {e:#}");
        std::process::exit(1);
    }
}
