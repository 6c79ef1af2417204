//! rnmt-average: average checkpoints of one model into a new model directory.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Parser;
use rnmt::average::{average_into, Input};
use rnmt::checkpoint::{list_checkpoints, CHECKPOINTS_DIR};

/// Average the weights of checkpoints of one model (element-wise mean) into a new model
/// directory that rnmt-translate loads like any other.
///
/// Inputs are model directories (their model.safetensors) or .safetensors files inside a
/// model directory (such as MODEL_DIR/checkpoints/step-00001000.safetensors). With --last K,
/// give one model directory trained with train.keep_checkpoints >= K: its last K kept
/// checkpoints are averaged.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Checkpoints or model directories to average (or, with --last, one model directory).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Average the last K checkpoints kept in MODEL_DIR/checkpoints/.
    #[arg(long, value_name = "K")]
    last: Option<usize>,
    /// The new model directory (must not exist yet, or be empty).
    #[arg(long, short)]
    output: PathBuf,
}

fn run(a: Args) -> Result<()> {
    let inputs: Vec<Input> = match a.last {
        Some(k) => {
            let [dir] = a.inputs.as_slice() else {
                bail!(
                    "--last K takes exactly one model directory, got {}",
                    a.inputs.len()
                );
            };
            if k == 0 {
                bail!("--last must be at least 1");
            }
            let kept = list_checkpoints(dir)?;
            if kept.len() < k {
                bail!(
                    "{}: {} checkpoint(s) kept in {CHECKPOINTS_DIR}/, --last asks for {k}; train with --set train.keep_checkpoints={k}",
                    dir.display(),
                    kept.len()
                );
            }
            kept[kept.len() - k..]
                .iter()
                .map(|(_, p)| Input::resolve(p))
                .collect::<rnmt::error::Result<_>>()?
        }
        None => a
            .inputs
            .iter()
            .map(|p| Input::resolve(p))
            .collect::<rnmt::error::Result<_>>()?,
    };
    average_into(&inputs, &a.output)?;
    eprintln!(
        "rnmt-average: {} checkpoints averaged into {}",
        inputs.len(),
        a.output.display()
    );
    for i in &inputs {
        eprintln!("  {}", i.weights.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    rnmt::cli::run("rnmt-average", || run(args))
}
