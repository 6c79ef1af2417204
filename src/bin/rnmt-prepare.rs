//! rnmt-prepare: prepare training corpora once (tokenizers and shards of token ids, see
//! [`rnmt::data::prepare`]) for `rnmt-train --data-dir DIR`, which then starts at once.
//! `rnmt-train` runs the same step by itself when the prepared directory does not match.
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use rnmt::config::{Config, Stated};
use rnmt::data::args::TrainDataArgs;
use rnmt::data::folder;
use rnmt::data::prepare::{self, Plan, Request};

/// Prepare training corpora: train the tokenizers on a seeded sample, encode, filter and
/// deduplicate on all cores, and write memory-mapped shards of token ids with a manifest.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    data: TrainDataArgs,
    /// The prepared directory to write (pass it to rnmt-train as --data-dir).
    #[arg(long)]
    out: PathBuf,
    /// Config file (TOML or JSON); only its data section matters here.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one config key, e.g. --set data.tokenizer.vocab_size=8000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Prepare again even if OUT already holds this prepare.
    #[arg(long)]
    force: bool,
    /// Only errors on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn run(a: Args) -> Result<()> {
    let started = Instant::now();
    let config =
        Stated::from_command(a.config.as_deref(), &a.overrides)?.apply_to(&Config::default())?;
    let train = a.data.train_sources()?;
    prepare::check_sizes(&config.data)?;
    let req = Request {
        train: &train,
        skip_bad_lines: a.data.skip_bad_lines,
        cfg: &config.data,
    };
    let say = |m: &str| {
        if !a.quiet {
            eprintln!("{m}");
        }
    };
    let inputs = req.inputs()?;
    if !a.force {
        if let Some(_shared) = folder::lock_shared(&a.out)? {
            if let Some(m) = prepare::read_manifest(&a.out) {
                let sources = prepare::source_names(&req);
                if m.key == req.key(&inputs, &Plan::Train) {
                    match rnmt::data::open_cached(&a.out, &m, &sources, None) {
                        Ok(_) => {
                            say(&format!(
                                "{} already holds this prepare ({} pairs); nothing to do (--force prepares again)",
                                a.out.display(),
                                m.corpora.iter().map(|c| c.kept).sum::<u64>()
                            ));
                            return Ok(());
                        }
                        Err(e) => say(&format!("{e}; preparing it again")),
                    }
                }
            }
        }
    }
    let lock = folder::lock_exclusive(&a.out)?;
    let (m, _) = prepare::prepare_dir(&req, Plan::Train, &lock)?;
    for line in &m.report {
        say(line);
    }
    let pairs: u64 = m.corpora.iter().map(|c| c.read).sum();
    let secs = started.elapsed().as_secs_f64();
    say(&format!(
        "prepared {} of {pairs} pairs into {} ({} shard(s), ids as u{}) in {secs:.1}s: {:.0} pairs/s",
        m.corpora.iter().map(|c| c.kept).sum::<u64>(),
        a.out.display(),
        m.corpora.iter().map(|c| c.shards.len()).sum::<usize>(),
        8 * m.id_width,
        pairs as f64 / secs.max(1e-9)
    ));
    say(&rnmt::memory::peak_report());
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    rnmt::cli::run("rnmt-prepare", || run(args))
}
