//! Shared helpers for the command-line tests: a tiny corpus cut from the bundled one, a tiny
//! model config, and running the built binaries.
#![allow(dead_code)]
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The checkout: `RNMT_TEST_ROOT`, else where cargo built the tests. The `RNMT_TEST_*`
/// variables let test executables built on one machine run on another (a GPU machine
/// without cargo, see `scripts/gpu-check.sh`).
pub fn root() -> PathBuf {
    match std::env::var_os("RNMT_TEST_ROOT") {
        Some(r) => PathBuf::from(r),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")),
    }
}

/// Scratch space that outlives one test: `RNMT_TEST_TMPDIR`, else cargo's.
pub fn tmp_root() -> PathBuf {
    match std::env::var_os("RNMT_TEST_TMPDIR") {
        Some(r) => PathBuf::from(r),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    }
}

/// The device the tests run on, as `--device` takes it: `RNMT_TEST_DEVICE` (`cuda`,
/// `cuda:N`), `cpu` when unset. CI has no GPU; on a GPU machine the same tests run on CUDA.
pub fn device_arg() -> String {
    std::env::var("RNMT_TEST_DEVICE").unwrap_or_else(|_| "cpu".to_string())
}

/// [`device_arg`] as a libtorch device; panics (failing the test) when it is not available.
pub fn device() -> tch::Device {
    let name = device_arg();
    rnmt::device::parse_device(&name).unwrap_or_else(|e| panic!("RNMT_TEST_DEVICE={name}: {e}"))
}

/// Whether the tests run on CUDA.
pub fn on_cuda() -> bool {
    device().is_cuda()
}

/// The first `n` lines of a bundled corpus file.
pub fn head(file: &str, n: usize) -> String {
    let text = std::fs::read_to_string(root().join("corpora").join(file)).unwrap();
    text.lines().take(n).map(|l| format!("{l}\n")).collect()
}

/// Writes `train.tsv` (300 pairs) and `valid.tsv` (40 pairs) into `dir`.
pub fn tiny_corpus(dir: &Path) -> (PathBuf, PathBuf) {
    let train = dir.join("train.tsv");
    let valid = dir.join("valid.tsv");
    std::fs::write(&train, head("lohelp.en-fr.train.tsv", 300)).unwrap();
    std::fs::write(&valid, head("lohelp.en-fr.dev.tsv", 40)).unwrap();
    (train, valid)
}

/// A config small enough to train in seconds.
pub const TINY_CONFIG: &str = r#"
[model]
emb_size = 16
emb_dropout = 0.1
[model.encoder]
hidden = 16
layers = 2
dropout = 0.1
[model.decoder]
hidden = 32
layers = 2
dropout = 0.1
[data.tokenizer]
vocab_size = 400
[train]
batch_tokens = 400
warmup_steps = 0    # the tests train for tens of updates
valid_every = 1000
log_every = 1
"#;

/// Settings under which validation BLEU cannot improve (a learning rate too small to change
/// anything), so early stopping ends the run two validations after the first.
pub const BLEU_STAYS_PUT: [&str; 10] = [
    "--max-steps",
    "1000",
    "--set",
    "train.lr=1e-12",
    "--set",
    "train.valid_every=2",
    "--set",
    "train.patience=2",
    "--set",
    "train.min_lr=0",
];

pub fn tiny_config(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.toml");
    std::fs::write(&p, TINY_CONFIG).unwrap();
    p
}

/// A command for one of the built binaries (from `RNMT_TEST_BIN_DIR` when set).
pub fn bin(name: &str) -> Command {
    let built = match name {
        "rnmt-train" => env!("CARGO_BIN_EXE_rnmt-train"),
        "rnmt-translate" => env!("CARGO_BIN_EXE_rnmt-translate"),
        "rnmt-serve" => env!("CARGO_BIN_EXE_rnmt-serve"),
        "rnmt-prepare" => env!("CARGO_BIN_EXE_rnmt-prepare"),
        "rnmt-score" => env!("CARGO_BIN_EXE_rnmt-score"),
        _ => panic!("unknown binary {name}"),
    };
    let path = match std::env::var_os("RNMT_TEST_BIN_DIR") {
        Some(d) => PathBuf::from(d).join(name),
        None => PathBuf::from(built),
    };
    let mut c = Command::new(path);
    c.env_remove("LD_LIBRARY_PATH");
    c
}

/// `rnmt-train --train T --valid V --model-dir M [--config C] --device D --threads 1` (`D`:
/// [`device_arg`]).
pub fn train_command(
    train: &Path,
    valid: &Path,
    model_dir: &Path,
    config: Option<&Path>,
) -> Command {
    let mut c = bin("rnmt-train");
    c.arg("--train")
        .arg(train)
        .arg("--valid")
        .arg(valid)
        .arg("--model-dir")
        .arg(model_dir);
    if let Some(config) = config {
        c.arg("--config").arg(config);
    }
    c.args(["--device", &device_arg(), "--threads", "1"]);
    c
}

/// `rnmt-train` on the tiny corpus in `dir` with the tiny config, 1 thread.
pub fn train(dir: &Path, model_dir: &Path, extra: &[&str]) -> Output {
    let (train, valid) = tiny_corpus(dir);
    let config = tiny_config(dir);
    train_command(&train, &valid, model_dir, Some(&config))
        .args(extra)
        .output()
        .unwrap()
}

/// [`train`] that must succeed.
pub fn train_ok(dir: &Path, model_dir: &Path, extra: &[&str]) -> Output {
    let o = train(dir, model_dir, extra);
    assert!(o.status.success(), "{}", stderr(&o));
    o
}

/// A tiny model directory, trained once per test binary (a few seconds) and shared by its
/// tests; copy it ([`copy_dir`]) before changing it.
pub fn tiny_model() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let name = exe.file_stem().unwrap().to_string_lossy().into_owned();
        let base = tmp_root().join(format!("tiny-{name}"));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let model = base.join("model");
        let o = train(
            &base,
            &model,
            &["--max-steps", "60", "--set", "train.lr=0.005"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        model
    })
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Waits for `child` at most `limit`; kills it and fails the test if it is still running.
pub fn wait_with_deadline(mut child: Child, limit: Duration, what: &str) -> Output {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let o = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after {limit:?} (killed); stderr: {}",
                stderr(&o)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts `rnmt-translate --model M --device D --threads 1 ARGS` ([`device_arg`]) with piped
/// stdin, stdout and stderr.
pub fn spawn_translate(model: &Path, args: &[&str]) -> Child {
    bin("rnmt-translate")
        .arg("--model")
        .arg(model)
        .args(["--device", &device_arg(), "--threads", "1"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `rnmt-translate --model M --device D --threads 1 ARGS` on `input`, killed (and the
/// test failed) after `limit`.
pub fn translate_with(model: &Path, args: &[&str], input: &[u8], limit: Duration) -> Output {
    let mut child = spawn_translate(model, args);
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = wait_with_deadline(child, limit, "rnmt-translate");
    writer.join().unwrap();
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Reads a safetensors file into name -> tensor, sorted by name.
pub fn tensors(path: &Path) -> Vec<(String, tch::Tensor)> {
    let mut v = tch::Tensor::read_safetensors(path).unwrap();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// True when both files hold the same names with bit-identical values.
pub fn same_tensors(a: &Path, b: &Path) -> bool {
    let (a, b) = (tensors(a), tensors(b));
    a.len() == b.len()
        && a.iter()
            .zip(&b)
            .all(|((na, ta), (nb, tb))| na == nb && ta.equal(tb))
}
