//! `rnmt-bleu`: BLEU and chrF scores identical to sacrebleu 2.6.0's.
//!
//! ```text
//! rnmt-bleu REF [REF...] < HYP
//! rnmt-bleu REF [REF...] -i HYP [-m bleu,chrf] [-tok intl] [-lc] [-b] [-f json]
//! rnmt-bleu REF -i BASELINE --paired-bs SYSTEM2 [--paired-bs-n 1000] [--seed 12345]
//! ```
//!
//! Output matches `sacrebleu -f text -w 2` (and `-f json`), except that the
//! default width here is 2 decimals (sacrebleu's CLI default is 1; pass
//! `-w 1` to get its exact default output) and the default format is text
//! (sacrebleu's is JSON). The signature's `version:2.6.0` names the sacrebleu
//! version whose scores are reproduced.
//!
//! sacrebleu's multi-letter short options (`-lc`, `-tok`, `-sl`, `-sv`,
//! `-cc`, `-cw`, `-pbsn`) are accepted: clap only supports one-letter short
//! options, so [`rewrite_sacrebleu_shorts`] rewrites those exact arguments
//! (and `-tok=X` style) to their long forms before clap parses the command
//! line. Arguments after `--` are left alone.
//!
//! As in sacrebleu, `-lc`/`--tokenize`/`--smooth-*` configure BLEU only;
//! chrF has its own `--chrf-*` options. `--sentence-level` allows a single
//! metric and ignores `--format json`, as sacrebleu does.

use std::error::Error;
use std::ffi::OsString;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;
use rnmt_metrics::bootstrap::{paired_bootstrap, DEFAULT_SAMPLES, DEFAULT_SEED};
use rnmt_metrics::report::{paired_json, paired_text, single_results, PairedColumn};
use rnmt_metrics::{
    io, AnyMetric, Bleu, BleuConfig, Chrf, ChrfConfig, Metric, MetricsError, SmoothMethod,
    Tokenizer,
};

/// Command-line options (names and defaults follow sacrebleu's CLI).
#[derive(Debug, Parser)]
#[command(
    name = "rnmt-bleu",
    version,
    about = "Score translations with BLEU / chrF exactly as sacrebleu 2.6.0 does",
    after_help = "sacrebleu-style short options -lc, -tok, -sl, -sv, -cc, -cw and -pbsn are accepted too."
)]
struct Args {
    /// Reference file(s), one segment per line (several files = multiple references)
    #[arg(required = true, value_name = "REF")]
    refs: Vec<PathBuf>,
    /// Hypothesis file (default: standard input)
    #[arg(short = 'i', long = "input", value_name = "HYP")]
    input: Option<PathBuf>,
    /// Metrics to compute, comma-separated
    #[arg(short = 'm', long, value_delimiter = ',', default_value = "bleu",
          value_parser = ["bleu", "chrf"])]
    metrics: Vec<String>,
    /// BLEU tokenizer (-tok)
    #[arg(long, default_value = "13a", value_parser = ["13a", "intl", "char", "none"])]
    tokenize: String,
    /// Lowercase before computing BLEU (-lc)
    #[arg(long)]
    lowercase: bool,
    /// BLEU smoothing method
    #[arg(short = 's', long, default_value = "exp", value_parser = ["exp", "floor", "add-k", "none"])]
    smooth_method: String,
    /// Smoothing value for floor (default 0.1) and add-k (default 1) (-sv)
    #[arg(long, value_name = "VALUE", allow_negative_numbers = true)]
    smooth_value: Option<f64>,
    /// Print one score per hypothesis line (BLEU uses effective order) (-sl)
    #[arg(long)]
    sentence_level: bool,
    /// Print only the score
    #[arg(short = 'b', long)]
    score_only: bool,
    /// Output format
    #[arg(short = 'f', long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
    /// Decimal places of the score (sacrebleu's CLI default is 1), at most 20
    #[arg(short = 'w', long, default_value_t = 2,
          value_parser = clap::value_parser!(u8).range(0..=20))]
    width: u8,
    /// chrF character n-gram order (-cc)
    #[arg(long, default_value_t = 6, value_name = "N")]
    chrf_char_order: usize,
    /// chrF word n-gram order; 2 gives chrF++ (-cw)
    #[arg(long, default_value_t = 0, value_name = "N")]
    chrf_word_order: usize,
    /// chrF recall weight beta
    #[arg(long, default_value_t = 2, value_name = "N")]
    chrf_beta: u32,
    /// Include whitespace in chrF character n-grams
    #[arg(long)]
    chrf_whitespace: bool,
    /// Lowercase before computing chrF
    #[arg(long)]
    chrf_lowercase: bool,
    /// chrF epsilon smoothing instead of effective order
    #[arg(long)]
    chrf_eps_smoothing: bool,
    /// Paired bootstrap test of SYSTEM2 against the hypothesis (the baseline)
    #[arg(long, value_name = "SYSTEM2")]
    paired_bs: Option<PathBuf>,
    /// Number of bootstrap resamples (-pbsn)
    #[arg(long, default_value_t = DEFAULT_SAMPLES, value_name = "N")]
    paired_bs_n: usize,
    /// Seed of the resampling RNG
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
}

/// Rewrite sacrebleu's multi-letter short options (`-lc`, `-tok X`,
/// `-tok=X`, ...) to the long options clap understands; everything after
/// `--` is passed through untouched.
fn rewrite_sacrebleu_shorts(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    const SHORTS: [(&str, &str); 7] = [
        ("-lc", "--lowercase"),
        ("-tok", "--tokenize"),
        ("-sl", "--sentence-level"),
        ("-sv", "--smooth-value"),
        ("-cc", "--chrf-char-order"),
        ("-cw", "--chrf-word-order"),
        ("-pbsn", "--paired-bs-n"),
    ];
    let mut done = false;
    args.into_iter()
        .map(|arg| {
            if done {
                return arg;
            }
            let Some(s) = arg.to_str() else { return arg };
            if s == "--" {
                done = true;
                return arg;
            }
            for (short, long) in SHORTS {
                if s == short {
                    return long.into();
                }
                if let Some(value) = s.strip_prefix(short).and_then(|r| r.strip_prefix('=')) {
                    return format!("{long}={value}").into();
                }
            }
            arg
        })
        .collect()
}

/// Read hypotheses from `path` or stdin; `None` path is named `<stdin>`.
fn read_hyps(path: Option<&Path>) -> Result<(String, Vec<String>), MetricsError> {
    match path {
        Some(p) => Ok((p.display().to_string(), io::read_lines(p)?)),
        None => Ok((
            "<stdin>".into(),
            io::read_lines_from(&mut std::io::stdin().lock())?,
        )),
    }
}

/// Build the requested metrics, deduplicated and in sacrebleu's order.
fn build_metrics(args: &Args) -> Result<Vec<AnyMetric>> {
    let mut metrics = Vec::new();
    for name in &args.metrics {
        let metric = match name.as_str() {
            "bleu" => AnyMetric::Bleu(Bleu::new(BleuConfig {
                tokenize: args.tokenize.parse::<Tokenizer>()?,
                lowercase: args.lowercase,
                smooth_method: args.smooth_method.parse::<SmoothMethod>()?,
                smooth_value: args.smooth_value,
                effective_order: args.sentence_level,
                ..BleuConfig::default()
            })?),
            "chrf" => AnyMetric::Chrf(Chrf::new(ChrfConfig {
                char_order: args.chrf_char_order,
                word_order: args.chrf_word_order,
                beta: args.chrf_beta,
                lowercase: args.chrf_lowercase,
                whitespace: args.chrf_whitespace,
                eps_smoothing: args.chrf_eps_smoothing,
            })?),
            other => return Err(MetricsError::UnknownMetric(other.into()).into()),
        };
        if !metrics
            .iter()
            .any(|m: &AnyMetric| m.sort_key() == metric.sort_key())
        {
            metrics.push(metric);
        }
    }
    Ok(metrics)
}

/// Compute everything and return the text to print.
fn run(args: &Args) -> Result<String> {
    let metrics = build_metrics(args)?;
    if args.sentence_level && metrics.len() > 1 {
        bail!("only one metric can be used in sentence-level mode");
    }
    if args.sentence_level && args.paired_bs.is_some() {
        bail!("statistical tests are unavailable in sentence-level mode");
    }
    let refs = args
        .refs
        .iter()
        .map(|p| Ok((p.clone(), io::read_lines(p)?)))
        .collect::<Result<Vec<_>, MetricsError>>()?;
    let (hyp_name, hyps) = read_hyps(args.input.as_deref())?;
    io::check_line_counts(&hyp_name, &hyps, &refs)?;
    let ref_streams: Vec<Vec<String>> = refs.iter().map(|(_, lines)| lines.clone()).collect();

    if args.sentence_level {
        let mut out = String::new();
        for (i, hyp) in hyps.iter().enumerate() {
            let seg_refs: Vec<&str> = ref_streams.iter().map(|s| s[i].as_str()).collect();
            for m in &metrics {
                let report = m.sentence_report(hyp, &seg_refs)?;
                out.push_str(&report.format(usize::from(args.width), args.score_only, false));
                out.push('\n');
            }
        }
        return Ok(out);
    }

    let mut metrics = metrics;
    metrics.sort_by_key(AnyMetric::sort_key);
    if let Some(sys_path) = &args.paired_bs {
        let sys_name = sys_path.display().to_string();
        let sys = io::read_lines(sys_path)?;
        io::check_line_counts(&sys_name, &sys, &refs)?;
        let mut columns = Vec::new();
        for m in &metrics {
            let metric: &dyn Metric = m.as_metric();
            let base_stats = metric.segment_statistics(&hyps, &ref_streams)?;
            let sys_stats = metric.segment_statistics(&sys, &ref_streams)?;
            let res =
                paired_bootstrap(metric, &base_stats, &sys_stats, args.paired_bs_n, args.seed)?;
            columns.push(PairedColumn {
                name: metric.name(),
                signature: metric
                    .signature(ref_streams.len())
                    .with_bootstrap(args.paired_bs_n, args.seed),
                results: vec![res.baseline, res.system],
            });
        }
        let systems = [format!("Baseline: {hyp_name}"), sys_name];
        return Ok(if args.format == "json" {
            paired_json(&systems, &columns)
        } else {
            paired_text(
                &systems,
                &columns,
                args.paired_bs_n,
                usize::from(args.width),
            )
        });
    }

    let json = args.format == "json";
    let results = metrics
        .iter()
        .map(|m| {
            Ok(m.corpus_report(&hyps, &ref_streams)?.format(
                usize::from(args.width),
                args.score_only,
                json,
            ))
        })
        .collect::<Result<Vec<_>, MetricsError>>()?;
    Ok(single_results(&results, json))
}

fn main() -> ExitCode {
    let args = Args::parse_from(rewrite_sacrebleu_shorts(std::env::args_os()));
    match run(&args).and_then(|output| print(&output)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rnmt-bleu: error: {}", error_chain(err.as_ref()));
            ExitCode::FAILURE
        }
    }
}

/// Write `output` to stdout. A reader that went away (`rnmt-bleu ... | head -n 1`) is not an
/// error: the output was not wanted any more.
fn print(output: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("cannot write to stdout"))
        }
        _ => Ok(()),
    }
}

/// `error: cause: cause ...`: the error and every error of its [`Error::source`] chain, each
/// once (no `Display` here formats its own source).
fn error_chain(err: &(dyn Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        msg.push_str(": ");
        msg.push_str(&cause.to_string());
        source = cause.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_multi_letter_shorts() {
        let args = [
            "rnmt-bleu",
            "-lc",
            "-tok",
            "intl",
            "-sv=0.2",
            "r.txt",
            "--",
            "-lc",
        ]
        .map(OsString::from);
        let out = rewrite_sacrebleu_shorts(args);
        let out: Vec<&str> = out.iter().filter_map(|a| a.to_str()).collect();
        assert_eq!(
            out,
            [
                "rnmt-bleu",
                "--lowercase",
                "--tokenize",
                "intl",
                "--smooth-value=0.2",
                "r.txt",
                "--",
                "-lc"
            ]
        );
    }

    #[test]
    fn error_chain_prints_every_cause_once() {
        let io = std::io::Error::new(ErrorKind::NotFound, "gone");
        let err = anyhow::Error::new(MetricsError::Io {
            path: "ref.txt".into(),
            source: io,
        })
        .context("scoring");
        assert_eq!(
            error_chain(err.as_ref()),
            "scoring: cannot read ref.txt: gone"
        );
        let bytes = vec![b'o', b'k', 0xff];
        let utf8 = std::str::from_utf8(&bytes).unwrap_err();
        let err = MetricsError::InvalidUtf8 {
            path: "hyp.txt".into(),
            line: 3,
            source: utf8,
        };
        let msg = error_chain(&err);
        assert_eq!(msg, format!("hyp.txt: line 3 is not valid UTF-8: {utf8}"));
        assert_eq!(msg.matches(&utf8.to_string()).count(), 1, "{msg}");
    }
}
