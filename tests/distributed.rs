//! Data-parallel training on libtorch's c10d engine with Gloo, on the CPU over loopback: two
//! `rnmt-train` processes (ranks set in the environment as torchrun sets them, and once under
//! torchrun itself) train the tiny model of `tests/common`.
//!
//! The reference for "two ranks" is one process with `train.accumulate = 2`: an update then
//! sees the same two batches (the union of the ranks' batches) with the same dropout seeds, so
//! the weights must agree to float tolerance. The tiny config keeps dropout on.
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `rnmt-train` on the tiny corpus as rank `rank` of `world` processes meeting at `port`.
fn rank_command(dir: &Path, model_dir: &Path, rank: usize, world: usize, port: u16) -> Command {
    let (train, valid) = tiny_corpus(dir);
    let config = tiny_config(dir);
    let mut c = train_command(&train, &valid, model_dir, Some(&config));
    c.env("WORLD_SIZE", world.to_string())
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("GLOO_SOCKET_IFNAME", "lo")
        .env_remove("TORCHELASTIC_USE_AGENT_STORE");
    c
}

/// Runs `world` ranks with `extra` arguments to the end (each at most `limit`); rank 0 writes
/// `model_dir`. Returns every rank's output.
fn run_ranks(dir: &Path, model_dir: &Path, world: usize, extra: &[&str]) -> Vec<Output> {
    let port = free_port();
    let children: Vec<Child> = (0..world)
        .map(|r| {
            rank_command(dir, model_dir, r, world, port)
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    children
        .into_iter()
        .enumerate()
        .map(|(r, c)| wait_with_deadline(c, Duration::from_secs(120), &format!("rank {r}")))
        .collect()
}

fn all_ok(outputs: &[Output]) {
    for (r, o) in outputs.iter().enumerate() {
        assert!(o.status.success(), "rank {r}: {}", stderr(o));
    }
}

/// Largest absolute difference between two safetensors files with the same tensors.
fn max_diff(a: &Path, b: &Path) -> f64 {
    let (a, b) = (tensors(a), tensors(b));
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

fn last(model: &Path, file: &str) -> PathBuf {
    model.join("last").join(file)
}

fn trainer_state(model: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(last(model, "trainer.json")).unwrap()).unwrap()
}

#[test]
fn two_gloo_ranks_train_as_one_process_accumulating_their_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (two, one, plain) = (
        dir.path().join("two"),
        dir.path().join("one"),
        dir.path().join("plain"),
    );
    // Two epochs of the tiny corpus: 25 batches an epoch, so each epoch ends with an update
    // of one batch (rank 1 has none), and both epoch-end validations run on rank 0 only.
    let budget = ["--max-epochs", "2"];
    let outputs = run_ranks(dir.path(), &two, 2, &budget);
    all_ok(&outputs);
    assert!(
        stderr(&outputs[0]).contains("data-parallel over 2 processes (gloo)"),
        "{}",
        stderr(&outputs[0])
    );
    assert!(
        stderr(&outputs[1]).is_empty(),
        "rank 1 logs nothing: {}",
        stderr(&outputs[1])
    );
    train_ok(
        dir.path(),
        &one,
        &[&budget[..], &["--set", "train.accumulate=2"]].concat(),
    );
    train_ok(dir.path(), &plain, &budget);

    let (s2, s1) = (trainer_state(&two), trainer_state(&one));
    assert_eq!(s2["step"], s1["step"]);
    assert_eq!(s2["tokens"], s1["tokens"]);
    assert_eq!(
        (s2["world_size"].as_u64(), s2["accumulate"].as_u64()),
        (Some(2), Some(1))
    );
    for file in ["weights.safetensors", "optimizer.safetensors"] {
        let d = max_diff(&last(&two, file), &last(&one, file));
        assert!(
            d < 1e-5,
            "{file}: two ranks vs one process accumulating two batches: {d}"
        );
    }
    // Rank 1's batches count: without them (one batch per update) the model is another.
    let d = max_diff(
        &last(&two, "weights.safetensors"),
        &last(&plain, "weights.safetensors"),
    );
    assert!(
        d > 1e-3,
        "two ranks trained like one process with one batch per update: {d}"
    );
    // Only rank 0 writes: metrics and the best model are in its directory, the same rows.
    let metrics = |m: &Path| std::fs::read_to_string(m.join("metrics.csv")).unwrap();
    assert_eq!(metrics(&two).lines().count(), metrics(&one).lines().count());
    assert!(two.join("model.safetensors").exists());
}

#[test]
fn a_resume_keeps_the_batches_per_update_whatever_the_world_size() {
    let dir = tempfile::tempdir().unwrap();
    let (split, whole) = (dir.path().join("split"), dir.path().join("whole"));
    let accumulate = ["--set", "train.accumulate=2"];
    all_ok(&run_ranks(dir.path(), &split, 2, &["--max-steps", "4"]));
    // Two ranks resume two ranks' run (rank 1 gets the state from rank 0)...
    all_ok(&run_ranks(dir.path(), &split, 2, &["--max-steps", "8"]));
    assert_eq!(trainer_state(&split)["step"], 8);
    // ...one process cannot, with one batch per update...
    let o = train(dir.path(), &split, &["--max-steps", "12"]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("2 process(es) x train.accumulate 1 = 2 batches per update")
            && err.contains("on 1 process(es) with --set train.accumulate=2"),
        "{err}"
    );
    // ...but with two accumulated batches it is the same run: 4 + 4 + 4 updates equal 12.
    train_ok(
        dir.path(),
        &split,
        &[&["--max-steps", "12"][..], &accumulate].concat(),
    );
    train_ok(
        dir.path(),
        &whole,
        &[&["--max-steps", "12"][..], &accumulate].concat(),
    );
    assert_eq!(trainer_state(&split)["step"], 12);
    for file in ["weights.safetensors", "optimizer.safetensors"] {
        let d = max_diff(&last(&split, file), &last(&whole, file));
        assert!(
            d < 1e-5,
            "{file}: 2 ranks x (4 + 4) + 1 process x 4 vs 12 updates: {d}"
        );
    }
}

#[test]
fn the_time_budget_of_any_rank_stops_both() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let outputs = run_ranks(
        dir.path(),
        &model,
        2,
        &["--max-steps", "1000000", "--max-time", "3s"],
    );
    all_ok(&outputs);
    assert!(
        stderr(&outputs[0]).contains("stopped: reached --max-time"),
        "{}",
        stderr(&outputs[0])
    );
    assert!(trainer_state(&model)["step"].as_u64().unwrap() > 0);
}

/// Starts two ranks training without a budget and waits until rank 0 has logged update 3.
/// Returns the children and a channel of rank 0's remaining stderr lines.
fn start_long_run(
    dir: &Path,
    model: &Path,
    extra: &[&str],
) -> (Child, Child, mpsc::Receiver<String>) {
    let port = free_port();
    let spawn = |rank| {
        rank_command(dir, model, rank, 2, port)
            .args(["--max-steps", "1000000"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut rank0 = spawn(0);
    let rank1 = spawn(1);
    let (tx, rx) = mpsc::channel();
    let err = rank0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(|l| l.ok()) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("rank 0 logged no update 3 within 60 s");
        if line.starts_with("step 3 ") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no update 3");
    }
    (rank0, rank1, rx)
}

/// Waits at most `limit` for `child` to exit; returns its status and the time it took.
fn exit_within(
    child: &mut Child,
    limit: Duration,
    what: &str,
) -> (std::process::ExitStatus, Duration) {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Rank 0's last stderr line that starts with `rnmt-train: error:`, read until the channel
/// closes.
fn error_line(rx: mpsc::Receiver<String>) -> String {
    let lines: Vec<String> = rx.iter().collect();
    let errors: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("rnmt-train: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "one error line expected: {lines:#?}");
    errors[0].clone()
}

#[test]
fn a_killed_rank_stops_the_other_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let (mut rank0, mut rank1, rx) = start_long_run(dir.path(), &model, &[]);
    rank1.kill().unwrap();
    let _ = rank1.wait();
    let (status, took) = exit_within(&mut rank0, Duration::from_secs(30), "rank 0");
    assert!(!status.success(), "rank 0 went on without rank 1");
    let line = error_line(rx);
    // Rank 0 is in an all-reduce, or in the broadcast after a validation.
    assert!(
        line.contains("distributed training: ") && line.contains(" (rank 0): "),
        "{line}"
    );
    // Well within the default --dist-timeout (30 minutes): the closed connection, not the
    // timeout, ended the wait.
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[test]
fn a_hung_rank_is_a_timeout_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let (mut rank0, mut rank1, rx) = start_long_run(dir.path(), &model, &["--dist-timeout", "5s"]);
    // Stopped, not dead: its connections stay open, only the timeout can end the wait.
    let pid = rank1.id().to_string();
    assert!(Command::new("kill")
        .args(["-STOP", &pid])
        .status()
        .unwrap()
        .success());
    let result = exit_within(&mut rank0, Duration::from_secs(60), "rank 0");
    let _ = rank1.kill();
    let _ = rank1.wait();
    let (status, took) = result;
    assert!(!status.success());
    let line = error_line(rx);
    assert!(
        line.contains("distributed training:") && line.contains("within 5s, --dist-timeout"),
        "{line}"
    );
    assert!(
        took >= Duration::from_secs(4),
        "stopped before the timeout: {took:?}"
    );
}

#[test]
fn an_error_on_rank_0_reaches_the_other_ranks() {
    let dir = tempfile::tempdir().unwrap();
    // Rank 0 cannot create its model directory (a file is in the way); rank 1 never uses it.
    let blocked = dir.path().join("file");
    std::fs::write(&blocked, "x").unwrap();
    let outputs = run_ranks(dir.path(), &blocked.join("model"), 2, &["--max-steps", "2"]);
    for (r, o) in outputs.iter().enumerate() {
        assert!(!o.status.success(), "rank {r} succeeded");
        assert_eq!(stderr(o).lines().count(), 1, "rank {r}: {}", stderr(o));
    }
    let rank1 = stderr(&outputs[1]);
    assert!(
        rank1.contains("rank 0 stopped: creating") && rank1.contains("file/model"),
        "{rank1}"
    );
}

/// torchrun, the launcher of a real run, from the Python environment of the libtorch wheel
/// (`scripts/setup.sh` installs it); `RNMT_TORCHRUN` names another.
fn torchrun() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RNMT_TORCHRUN") {
        return Some(PathBuf::from(p));
    }
    // RNMT_LIBTORCH_LIB is <venv>/lib/pythonX.Y/site-packages/torch/lib.
    let lib = Path::new(env!("RNMT_LIBTORCH_LIB"));
    let venv = lib.ancestors().nth(5)?;
    Some(venv.join("bin/torchrun")).filter(|p| p.exists())
}

#[test]
fn torchrun_launches_the_ranks() {
    let Some(torchrun) = torchrun() else {
        // A libtorch outside a Python environment: there is no torchrun to test with.
        eprintln!("skipped: no torchrun next to {}", env!("RNMT_LIBTORCH_LIB"));
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (two, one) = (dir.path().join("two"), dir.path().join("one"));
    let (train, valid) = tiny_corpus(dir.path());
    let config = tiny_config(dir.path());
    let port = free_port().to_string();
    let child = Command::new(&torchrun)
        .args(["--no-python", "--nnodes", "1", "--nproc-per-node", "2"])
        .args(["--master-addr", "127.0.0.1", "--master-port", &port])
        .arg(env!("CARGO_BIN_EXE_rnmt-train"))
        .arg("--train")
        .arg(&train)
        .arg("--valid")
        .arg(&valid)
        .arg("--config")
        .arg(&config)
        .arg("--model-dir")
        .arg(&two)
        .args(["--device", "cpu", "--threads", "1", "--max-steps", "5"])
        .env("GLOO_SOCKET_IFNAME", "lo")
        .env("OMP_NUM_THREADS", "1")
        .env_remove("LD_LIBRARY_PATH")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_with_deadline(child, Duration::from_secs(180), "torchrun");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(trainer_state(&two)["world_size"], 2);
    train_ok(
        dir.path(),
        &one,
        &["--max-steps", "5", "--set", "train.accumulate=2"],
    );
    let d = max_diff(
        &last(&two, "weights.safetensors"),
        &last(&one, "weights.safetensors"),
    );
    assert!(
        d < 1e-5,
        "torchrun's two ranks vs one process accumulating: {d}"
    );
}

#[test]
fn early_stopping_and_the_schedule_follow_rank_0() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    // As in train_cli's early-stopping test: BLEU cannot improve, so after the first
    // validation two more stop the run (and halve the learning rate on the way). Rank 1 must
    // stop at the same update, or the ranks would wait for each other.
    let args = BLEU_STAYS_PUT;
    let outputs = run_ranks(dir.path(), &model, 2, &args);
    all_ok(&outputs);
    assert!(
        stderr(&outputs[0]).contains("early stopping"),
        "{}",
        stderr(&outputs[0])
    );
    let state = trainer_state(&model);
    assert_eq!(state["step"], 6);
    assert_eq!(state["stopped_early"], true);
    assert_eq!(state["lr"].as_f64().unwrap(), 5e-13);
}

#[test]
fn divergence_stops_every_rank_at_the_same_update() {
    let dir = tempfile::tempdir().unwrap();
    // Where the first NaN appears (in an update's loss or gradient norm, both after the
    // all-reduce, or in rank 0's validation) is up to float rounding, and differs between
    // CPUs. What the protocol guarantees: every rank decides from the same numbers, so every
    // rank stops with the same "training diverged" line, naming the same update.
    for lr in ["1e38", "1e30"] {
        let model = dir.path().join(format!("model-{lr}"));
        let lr = format!("train.lr={lr}");
        let outputs = run_ranks(dir.path(), &model, 2, &["--max-steps", "40", "--set", &lr]);
        let lines: Vec<String> = outputs
            .iter()
            .map(|o| {
                assert!(!o.status.success());
                let err = stderr(o);
                err.lines()
                    .find(|l| l.starts_with("rnmt-train: error:"))
                    .unwrap_or_else(|| panic!("no error line: {err}"))
                    .to_string()
            })
            .collect();
        assert!(
            lines[0].starts_with("rnmt-train: error: training diverged: the "),
            "{}",
            lines[0]
        );
        assert!(lines[0].contains(" at update "), "{}", lines[0]);
        assert_eq!(lines[1], lines[0], "the ranks stopped differently");
    }
}

#[test]
fn ctrl_c_on_one_rank_stops_both_after_the_same_update() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    let (mut rank0, mut rank1, rx) = start_long_run(dir.path(), &model, &[]);
    // Only rank 1 is interrupted; the decision reaches rank 0 before the next update.
    let pid = rank1.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let (s1, _) = exit_within(&mut rank1, Duration::from_secs(30), "rank 1");
    let (s0, _) = exit_within(&mut rank0, Duration::from_secs(30), "rank 0");
    let lines: Vec<String> = rx.iter().collect();
    assert!(s0.success() && s1.success(), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("stopped: interrupted")),
        "{lines:#?}"
    );
    // Rank 0 saved where both stopped.
    assert!(trainer_state(&model)["step"].as_u64().unwrap() >= 3);
}
