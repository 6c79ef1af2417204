//! rnmt-train: train a translation model on parallel data, or resume training it.
//!
//! Under `torchrun --no-python` (`WORLD_SIZE` set) it is one process of a data-parallel run
//! ([`rnmt::distributed`]): rank 0 does everything a single process does (locks and writes the
//! model directory, trains the tokenizers), then sends the other ranks the config and the
//! tokenizers and the path of its prepared data, so that they never write the model
//! directory (it need not be shared between machines); each maps rank 0's prepared data when
//! it can read them, and prepares its own copy otherwise.
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use rnmt::checkpoint;
use rnmt::config::{resume_config, Change, Config, Stated};
use rnmt::corpus::CorpusSource;
use rnmt::data::args::TrainDataArgs;
use rnmt::data::{load, DataSpec};
use rnmt::device::{describe, parse_device, set_threads, DeviceArgs};
use rnmt::distributed::{Backend, Launch, ProcessGroup};
use rnmt::train::{human_duration, Trainer};

/// Train an attentional encoder-decoder (bidirectional LSTM encoder, GRU decoder).
///
/// Re-running the same command on an existing --model-dir resumes exactly where training
/// stopped (weights, optimizer moments, data position, schedule). Ctrl-C saves and exits.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    data: TrainDataArgs,
    /// The prepared training data (default MODEL_DIR/prepared): made there on the first run
    /// (or by rnmt-prepare) and reused while the files and the data config stay the same.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Validation pairs, same formats as --train.
    #[arg(long, required_unless_present = "valid_src")]
    valid: Option<PathBuf>,
    #[arg(long, requires = "valid_tgt", conflicts_with = "valid")]
    valid_src: Option<PathBuf>,
    #[arg(long, requires = "valid_src")]
    valid_tgt: Option<PathBuf>,
    /// Where the model, tokenizers, checkpoints and metrics go.
    #[arg(long)]
    model_dir: PathBuf,
    /// Config file (TOML or JSON) with sections model / data / train.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override one config key, e.g. --set model.decoder.attention=luong (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Stop after this many updates in total.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Stop after this many epochs in total.
    #[arg(long)]
    max_epochs: Option<u64>,
    /// Stop this run after this much time, e.g. 90s, 10m, 2h.
    #[arg(long)]
    max_time: Option<String>,
    /// Seed for data order, initialization and dropout.
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    dev: DeviceArgs,
    /// Data-parallel runs (under torchrun): auto (NCCL for CUDA when built with it, else
    /// Gloo), gloo or nccl.
    #[arg(long, default_value = "auto")]
    dist_backend: String,
    /// Data-parallel runs: how long a rank waits for the others in one collective (rank 0's
    /// validations included) before it stops with an error, e.g. 90s, 30m.
    #[arg(long, default_value = "30m")]
    dist_timeout: String,
    /// Only errors on stderr.
    #[arg(long, short)]
    quiet: bool,
}

fn valid_corpus(a: &Args) -> Result<CorpusSource> {
    Ok(a.data
        .source(a.valid.as_ref(), a.valid_src.as_ref(), a.valid_tgt.as_ref())?)
}

fn data_spec(a: &Args, reuse_tokenizers: bool) -> Result<DataSpec> {
    Ok(DataSpec {
        train: a.data.train_sources()?,
        valid: valid_corpus(a)?,
        skip_bad_lines: a.data.skip_bad_lines,
        reuse_tokenizers,
        data_dir: a.data_dir.clone(),
        fallback_dir: None,
    })
}

/// The config of this run and, when it resumes, the settings it changes.
///
/// A fresh run: defaults < --config < --set < flags. A run that resumes (`last/` exists): the
/// saved config with what this command states laid over it, by the resume policy
/// ([`rnmt::config::resume_config`]): a changed key that is safe to change is applied and
/// logged, any other is an error naming it. Budgets are always this command's.
fn resolve_config(a: &Args, model_dir: &Path) -> Result<(Config, Option<Vec<Change>>)> {
    let mut stated = Stated::from_command(a.config.as_deref(), &a.overrides)?;
    if let Some(s) = a.seed {
        stated.set("train.seed", s.into())?;
    }
    let mut requested = stated.apply_to(&Config::default())?;
    let t = &mut requested.train;
    if a.max_steps.is_some() {
        t.max_steps = a.max_steps;
    }
    if a.max_epochs.is_some() {
        t.max_epochs = a.max_epochs;
    }
    if a.max_time.is_some() {
        t.max_time = a.max_time.clone();
    }
    if checkpoint::last_dir(model_dir).is_none() {
        return Ok((requested, None));
    }
    let saved = Config::load_dir(model_dir)?;
    let (config, changes) = resume_config(&saved, &stated, &requested.train)?;
    Ok((config, Some(changes)))
}

/// What rank 0 sends the other ranks of a data-parallel run once it has prepared the data.
#[derive(serde::Serialize, serde::Deserialize)]
struct Bootstrap {
    config: Config,
    /// The tokenizer files (name, JSON text).
    tokenizers: Vec<(String, String)>,
    /// Rank 0's prepared directory: mapped by the ranks that can read it (the same machine
    /// or a shared file system), prepared again by the others.
    data_dir: PathBuf,
}

fn run(mut a: Args) -> Result<()> {
    let started = Instant::now();
    set_threads(a.dev.threads);
    let launch = Launch::from_env()?;
    let mut device = parse_device(&a.dev.device)?;
    if let (Some(l), "auto", tch::Device::Cuda(_)) = (&launch, a.dev.device.as_str(), device) {
        // One GPU per process on a machine.
        device = parse_device(&format!("cuda:{}", l.local_rank))?;
    }
    a.dev.precision = a
        .dev
        .precision_arg
        .unwrap_or(rnmt::precision::Precision::Auto)
        .resolved(device);
    a.dev.precision.check(device)?;
    let group = match &launch {
        Some(l) => {
            let backend = Backend::parse(&a.dist_backend, device)?;
            let timeout =
                rnmt::config::parse_duration(&a.dist_timeout).context("--dist-timeout")?;
            Some(ProcessGroup::new(l, backend, device, timeout)?)
        }
        None => None,
    };
    match &group {
        Some(g) if g.rank() > 0 => worker(&a, g, device),
        _ => leader(&a, group.as_ref(), device, started),
    }
}

/// A rank other than 0: the config, tokenizers and prepared data come from rank 0 (the data
/// prepared again from the same files when rank 0's cannot be read); a temporary directory
/// stands in for the model directory.
fn worker(a: &Args, g: &ProcessGroup, device: tch::Device) -> Result<()> {
    let bytes = g.from_rank0(Err(String::new()))?;
    let boot: Bootstrap =
        serde_json::from_slice(&bytes).context("reading rank 0's config and tokenizers")?;
    let scratch = Scratch::new(g.rank())?;
    for (name, text) in &boot.tokenizers {
        let path = scratch.0.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    let mut spec = data_spec(a, true)?;
    spec.data_dir = Some(boot.data_dir.clone());
    spec.fallback_dir = Some(scratch.0.join(rnmt::data::PREPARED_DIR));
    let data = load(&spec, &boot.config.data, &scratch.0)?;
    static STOP: AtomicBool = AtomicBool::new(false);
    ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let mut trainer = Trainer::with_group(boot.config, &scratch.0, device, &data, &STOP, Some(g))?;
    trainer.set_verbose(false);
    trainer.set_precision(a.dev.precision)?;
    trainer.run()?;
    Ok(())
}

/// A private directory of a rank other than 0, removed when the run ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(rank: usize) -> Result<Scratch> {
        let dir =
            std::env::temp_dir().join(format!("rnmt-train-rank{rank}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A single process, or rank 0 of a data-parallel run.
fn leader(
    a: &Args,
    group: Option<&ProcessGroup>,
    device: tch::Device,
    started: Instant,
) -> Result<()> {
    // Until the data are ready, an error here must also reach the other ranks.
    let world = group.map_or(1, ProcessGroup::world_size) as u64;
    let ready = prepare_leader(a, device, world);
    if let Some(g) = group {
        let sent = match &ready {
            Ok((config, _, data, _)) => bootstrap(config, &a.model_dir, &data.data_dir),
            Err(e) => Err(rnmt::cli::chain(e)),
        };
        let shared = g.from_rank0(sent);
        if ready.is_ok() {
            shared?;
        }
    }
    let (config, changes, data, _lock) = ready?;
    let say = |m: &str| {
        if !a.quiet {
            eprintln!("{m}");
        }
    };
    let resuming = changes.is_some();
    static STOP: AtomicBool = AtomicBool::new(false);
    ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;
    let calibrate = (config.train.calibrate, config.train.calibrate_sentences);
    let average = (config.train.average_last, config.clone());
    let mut trainer = Trainer::with_group(config, &a.model_dir, device, &data, &STOP, group)?;
    trainer.apply_changes(changes.as_deref().unwrap_or_default());
    trainer.set_verbose(!a.quiet);
    trainer.set_precision(a.dev.precision)?;
    say(&format!(
        "model: {} parameters on {} ({}); {} training pairs; {}{}",
        trainer.parameter_count(),
        describe(device),
        a.dev.precision,
        data.train.len(),
        if resuming {
            format!("resuming at step {}", trainer.state().step)
        } else {
            "starting at step 0".to_string()
        },
        match group {
            Some(g) => format!(
                "; data-parallel over {} processes ({})",
                g.world_size(),
                g.backend()
            ),
            None => String::new(),
        }
    ));
    let outcome = trainer.run()?;
    let s = &outcome.state;
    say(&format!(
        "stopped: {} at step {} (epoch {}) after {}; {:.0} target tokens/s in updates",
        outcome.reason,
        s.step,
        s.epoch + 1,
        human_duration(started.elapsed()),
        s.tokens as f64 / s.train_seconds.max(1e-9)
    ));
    let model = a.model_dir.join(checkpoint::MODEL_FILE);
    match (s.final_best, s.best_bleu) {
        (Some((step, bleu)), _) => say(&format!(
            "best validation BLEU {bleu:.2} at step {step} (the validation at the end of this run): {}",
            model.display()
        )),
        (None, Some(b)) => say(&format!(
            "best validation BLEU {b:.2} at step {}: {}",
            s.best_step,
            model.display()
        )),
        (None, None) => {}
    }
    let ended_at = outcome.state.step;
    let calibrated = rnmt::calibrate::DecodeDefaults::calibrated(&a.model_dir);
    let fresh =
        outcome.reason != rnmt::train::StopReason::Interrupted && (outcome.updated || !calibrated);
    let low = a.dev.precision.low_precision(device);
    if average.0 > 1
        && outcome.reason != rnmt::train::StopReason::Interrupted
        && outcome.updated
        && group.is_none_or(|g| g.rank() == 0)
        && model.exists()
    {
        let t0 = Instant::now();
        if let Some(c) = rnmt::average::average_if_better(
            &a.model_dir,
            average.0,
            &data,
            &average.1,
            device,
            low,
            &STOP,
        )? {
            let steps: Vec<String> = c.steps.iter().map(|s| s.to_string()).collect();
            say(&format!(
                "averaging the checkpoints of updates {}: validation BLEU {:.2} (loss {:.4}) against {:.2} ({:.4}) for the best validated weights, {:.0}s: {}",
                steps.join(", "),
                c.averaged_bleu,
                c.averaged_loss,
                c.best_bleu,
                c.best_loss,
                t0.elapsed().as_secs_f64(),
                if c.replaced {
                    format!("{} is now the average", model.display())
                } else {
                    "kept the best validated weights".to_string()
                }
            ));
        }
    }
    if calibrate.0 && fresh && group.is_none_or(|g| g.rank() == 0) && model.exists() {
        let t0 = Instant::now();
        let loaded = checkpoint::load_model_dir(&a.model_dir, device)?;
        let n = calibrate.1.min(data.valid.len());
        let d = rnmt::calibrate::calibrate(
            &loaded.model,
            &data.valid[..n],
            &data.valid_refs[..n],
            data.tokenizers.tgt(),
            5,
            ended_at,
            device,
            &STOP,
        )?;
        d.save(&a.model_dir)?;
        let at = |alpha: f64| {
            d.calibration
                .iter()
                .flat_map(|c| &c.grid)
                .find(|g| (g[0] - alpha).abs() < 1e-9)
                .map_or(String::new(), |[_, b, bp]| {
                    format!("BLEU {b:.2}, BP {bp:.3}")
                })
        };
        say(&format!(
            "decoding defaults: alpha {} ({}; alpha 1: {}) by beam 5 on {n} validation sentences, {:.0}s: {}",
            d.alpha,
            at(d.alpha),
            at(1.0),
            t0.elapsed().as_secs_f64(),
            a.model_dir.join(rnmt::calibrate::DECODE_FILE).display()
        ));
    }
    say(&rnmt::memory::peak_report());
    say("train longer: run the same command again with a larger --max-steps / --max-epochs / --max-time");
    Ok(())
}

/// The config and tokenizer files of rank 0, for the other ranks.
fn bootstrap(
    config: &Config,
    model_dir: &Path,
    data_dir: &Path,
) -> std::result::Result<Vec<u8>, String> {
    let mut tokenizers = Vec::new();
    for name in rnmt::tokenizer::FILES {
        let path = model_dir.join(name);
        if path.is_file() {
            let text =
                std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            tokenizers.push((name.to_string(), text));
        }
    }
    let data_dir =
        std::path::absolute(data_dir).map_err(|e| format!("{}: {e}", data_dir.display()))?;
    let boot = Bootstrap {
        config: config.clone(),
        tokenizers,
        data_dir,
    };
    serde_json::to_vec(&boot).map_err(|e| format!("encoding the config: {e}"))
}

type Ready = (
    Config,
    Option<Vec<Change>>,
    rnmt::data::Prepared,
    std::fs::File,
);

/// Everything a single process does before it builds the trainer: lock the model directory,
/// resolve the config, read the data, train or reuse the tokenizers, save the config.
fn prepare_leader(a: &Args, device: tch::Device, world: u64) -> Result<Ready> {
    std::fs::create_dir_all(&a.model_dir)
        .with_context(|| format!("creating {}", a.model_dir.display()))?;
    let lock = checkpoint::lock_model_dir(&a.model_dir)?;
    let (mut config, changes) = resolve_config(a, &a.model_dir)?;
    config.model.validate_sizes()?;
    config.train.validate()?;
    if let Some(state) = rnmt::train::saved_state(&a.model_dir)? {
        // Before reading any data (the trainer checks it again when it loads the state).
        rnmt::train::check_batches_per_update(&state, world, config.train.accumulate as u64)?;
    }
    if device == tch::Device::Cpu {
        // Fail before reading any data: the vocabulary will be about data.tokenizer.vocab_size.
        let mut m = config.model.clone();
        if m.src_vocab == 0 {
            m.src_vocab = config.data.tokenizer.vocab_size;
            m.tgt_vocab = config.data.tokenizer.vocab_size;
        }
        if let Some(available) = rnmt::memory::available_bytes() {
            m.check_fits(available, 16)?;
        }
    }
    let resuming = changes.is_some();
    let say = |m: &str| {
        if !a.quiet {
            eprintln!("{m}");
        }
    };
    for c in changes.iter().flatten() {
        say(&format!(
            "resume: {c} (applies from this update on; recorded in config.json)"
        ));
    }
    if !resuming && a.model_dir.join(checkpoint::CONFIG_FILE).exists() {
        say(&format!(
            "{} has no checkpoint yet: starting over (tokenizers trained anew)",
            a.model_dir.display()
        ));
    }
    let spec = data_spec(a, resuming)?;
    let data = load(&spec, &config.data, &a.model_dir)?;
    for line in &data.report {
        say(line);
    }
    config.model.src_vocab = data.tokenizers.src().vocab_size();
    config.model.tgt_vocab = data.tokenizers.tgt().vocab_size();
    config.save_dir(&a.model_dir)?;
    Ok((config, changes, data, lock))
}

fn main() -> ExitCode {
    let args = Args::parse();
    rnmt::cli::run("rnmt-train", || run(args))
}
