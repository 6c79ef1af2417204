//! rnmt-translate: translate lines from stdin (or --input) with a trained model directory.
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rnmt::atomic::AtomicFile;
use rnmt::config::DecodeConfig;
use rnmt::device::{describe, parse_device, set_threads};
use rnmt::precision::Precision;
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
    /// Write to this file instead of stdout (atomically: it appears complete or not at all).
    #[arg(long, short)]
    output: Option<PathBuf>,
    #[command(flatten)]
    decode: DecodeConfig,
    /// Print the K best as `index<TAB>score<TAB>translation` lines.
    #[arg(long, value_name = "K")]
    n_best: Option<usize>,
    /// Print `score<TAB>translation` (score: log-probability of the translation).
    #[arg(long)]
    scores: bool,
    /// Most sentences translated together.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// Replace invalid UTF-8 with U+FFFD (warning on stderr) instead of stopping.
    #[arg(long)]
    lossy_utf8: bool,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: String,
    /// libtorch threads (default: one per physical core).
    #[arg(long)]
    threads: Option<usize>,
    /// fp32, or bf16 (autocast; CUDA only).
    #[arg(long, value_enum, default_value_t = Precision::Fp32)]
    precision: Precision,
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

fn run(a: Args) -> Result<()> {
    let start = Instant::now();
    if let (Some(i), Some(o)) = (&a.input, &a.output) {
        if same_file(i, o) {
            bail!(
                "--output {} is the input file {}: writing it would destroy the input; choose another output file",
                o.display(),
                i.display()
            );
        }
    }
    set_threads(a.threads);
    let device = parse_device(&a.device)?;
    a.precision.check(device)?;
    let decode = DecodeConfig {
        n_best: a.n_best.unwrap_or(1),
        ..a.decode.clone()
    };
    let mut translator = Translator::load(&a.model, device, decode)?;
    translator.precision = a.precision;
    if a.verbose {
        eprintln!(
            "rnmt-translate: model loaded in {:.2}s on {} ({})",
            start.elapsed().as_secs_f64(),
            describe(device),
            a.precision
        );
    }
    let opts = StreamOptions {
        batch_size: a.batch_size,
        lossy_utf8: a.lossy_utf8,
        n_best: a.n_best.is_some(),
        scores: a.scores,
    };
    let mut file = match &a.output {
        Some(p) => Some(AtomicFile::create(p)?),
        None => None,
    };
    let mut stdout = std::io::stdout().lock();
    let out: &mut dyn Write = match &mut file {
        Some(f) => f,
        None => &mut stdout,
    };
    let t0 = Instant::now();
    let stats = match &a.input {
        Some(p) => {
            let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            stream(
                &translator,
                BufReader::new(f),
                &p.display().to_string(),
                out,
                &opts,
            )?
        }
        None => stream(
            &translator,
            BufReader::new(std::io::stdin()),
            "<stdin>",
            out,
            &opts,
        )?,
    };
    if let Some(f) = file {
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
