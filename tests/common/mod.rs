//! Shared helpers for the command-line tests: a tiny corpus cut from the bundled one, a tiny
//! model config, and running the built binaries.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
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

pub fn tiny_config(dir: &Path) -> PathBuf {
    let p = dir.join("tiny.toml");
    std::fs::write(&p, TINY_CONFIG).unwrap();
    p
}

pub fn bin(name: &str) -> Command {
    let path = match name {
        "rnmt-train" => env!("CARGO_BIN_EXE_rnmt-train"),
        "rnmt-translate" => env!("CARGO_BIN_EXE_rnmt-translate"),
        _ => panic!("unknown binary {name}"),
    };
    let mut c = Command::new(path);
    c.env_remove("LD_LIBRARY_PATH");
    c
}

/// `rnmt-train` on the tiny corpus in `dir` with the tiny config, CPU, 1 thread.
pub fn train(dir: &Path, model_dir: &Path, extra: &[&str]) -> Output {
    let (train, valid) = tiny_corpus(dir);
    let config = tiny_config(dir);
    let mut c = bin("rnmt-train");
    c.arg("--train")
        .arg(&train)
        .arg("--valid")
        .arg(&valid)
        .arg("--model-dir")
        .arg(model_dir);
    c.arg("--config")
        .arg(&config)
        .args(["--device", "cpu", "--threads", "1"]);
    c.args(extra);
    c.output().unwrap()
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
