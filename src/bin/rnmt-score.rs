//! rnmt-score: the log-probability of given translations under a trained model (forced
//! decoding), one output line per input pair.
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Parser;
use rnmt::atomic::AtomicFile;
use rnmt::checkpoint::load_model_dir;
use rnmt::device::DeviceArgs;
use rnmt::precision::Precision;
use rnmt::score::{encode_pair, score_batch, PairReader, PairSource};

/// Score sentence pairs: for each pair print `total<TAB>per_token<TAB>tokens`, where total is
/// log p(target | source) (natural log, teacher forcing, no dropout: minus the negative
/// log-likelihood training computes for the pair, without label smoothing), per_token is
/// total / tokens, and tokens counts the target's subwords and </s>.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Model directory written by rnmt-train.
    #[arg(long, short)]
    model: PathBuf,
    /// Pairs as `source<TAB>target` lines (or use --src and --tgt).
    #[arg(long, short, conflicts_with_all = ["src", "tgt"])]
    input: Option<PathBuf>,
    /// Source sentences, one per line (with --tgt).
    #[arg(long, requires = "tgt")]
    src: Option<PathBuf>,
    /// Target sentences, line-aligned with --src.
    #[arg(long, requires = "src")]
    tgt: Option<PathBuf>,
    /// Write to this file instead of stdout (atomically: it appears complete or not at all).
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Pairs scored together.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    /// A pair with more subword tokens on either side is an error (naming its line).
    #[arg(long, default_value_t = 250)]
    max_tokens: usize,
    /// Bytes of one input line at most; a longer line is an error (naming it).
    #[arg(long, default_value_t = 1 << 16)]
    max_line_bytes: usize,
    #[command(flatten)]
    dev: DeviceArgs,
}

fn open(path: &PathBuf) -> Result<Box<dyn std::io::BufRead + Send>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Box::new(BufReader::new(f)))
}

fn run(mut a: Args) -> Result<()> {
    if a.batch_size == 0 || a.max_tokens == 0 || a.max_line_bytes == 0 {
        bail!("--batch-size, --max-tokens and --max-line-bytes must be positive");
    }
    let device = a.dev.apply(Precision::Fp32)?;
    if a.dev.precision != Precision::Fp32 {
        bail!("rnmt-score computes in fp32, as training's loss does; leave out --precision");
    }
    let source = match (&a.input, &a.src, &a.tgt) {
        (Some(p), _, _) => PairSource::Tsv(p.clone(), open(p)?),
        (None, Some(s), Some(t)) => PairSource::Files {
            src: (s.clone(), open(s)?),
            tgt: (t.clone(), open(t)?),
        },
        _ => PairSource::Tsv(
            PathBuf::from("<stdin>"),
            Box::new(BufReader::new(std::io::stdin())),
        ),
    };
    for p in [&a.input, &a.src, &a.tgt].into_iter().flatten() {
        if let Some(o) = &a.output {
            if std::fs::canonicalize(p).ok() == std::fs::canonicalize(o).ok() {
                bail!("--output {} is an input file; choose another", o.display());
            }
        }
    }
    let name = match (&a.input, &a.src) {
        (Some(p), _) | (None, Some(p)) => p.display().to_string(),
        _ => "<stdin>".to_string(),
    };
    let model = load_model_dir(&a.model, device)?;
    let mut reader = PairReader::new(source, a.max_line_bytes);
    let mut file = match &a.output {
        Some(p) => Some(AtomicFile::create(p)?),
        None => None,
    };
    let mut stdout = std::io::stdout().lock();
    let out: &mut dyn Write = match &mut file {
        Some(f) => f,
        None => &mut stdout,
    };
    let mut batch = Vec::with_capacity(a.batch_size);
    let flush = |batch: &mut Vec<rnmt::batch::Example>, out: &mut dyn Write| -> Result<()> {
        for s in score_batch(&model, batch, device)? {
            writeln!(out, "{:.4}\t{:.4}\t{}", s.total, s.per_token(), s.tokens)?;
        }
        batch.clear();
        Ok(())
    };
    while let Some((no, src, tgt)) = reader.next_pair()? {
        let example = encode_pair(&model, &src, &tgt, a.max_tokens)
            .with_context(|| format!("{name}:{no}"))?;
        batch.push(example);
        if batch.len() == a.batch_size {
            flush(&mut batch, out)?;
        }
    }
    flush(&mut batch, out)?;
    out.flush()?;
    if let Some(f) = file {
        f.commit()?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    rnmt::cli::run("rnmt-score", || run(args))
}
