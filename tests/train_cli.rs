//! rnmt-train end to end on a tiny corpus: the model directory, exact resume, seeds, budgets,
//! early stopping, Ctrl-C, divergence, metrics.csv, config checks.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn weights(dir: &Path) -> std::path::PathBuf {
    dir.join("last").join("weights.safetensors")
}

fn trainer_state(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("last").join("trainer.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn writes_a_self_describing_model_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    let out = train(
        tmp.path(),
        &model,
        &["--max-steps", "4", "--set", "train.valid_every=2"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for f in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "metrics.csv",
        "last/weights.safetensors",
        "last/optimizer.safetensors",
        "last/trainer.json",
    ] {
        assert!(model.join(f).exists(), "{f} missing");
    }
    // The resolved config has the vocabulary sizes and the overrides.
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["train"]["valid_every"], 2);
    assert_eq!(config["model"]["encoder"]["hidden"], 16);
    assert!(config["model"]["src_vocab"].as_u64().unwrap() > 260);
    // metrics.csv: a header and one row per validation (steps 2 and 4).
    let metrics = std::fs::read_to_string(model.join("metrics.csv")).unwrap();
    let rows: Vec<&str> = metrics.lines().collect();
    assert!(
        rows[0].starts_with("step,epoch,kind,valid_loss,valid_ppl,valid_bleu"),
        "{metrics}"
    );
    let steps: Vec<&str> = rows[1..]
        .iter()
        .map(|r| r.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["2", "4"], "{metrics}");
    let ppl: f64 = rows[1].split(',').nth(4).unwrap().parse().unwrap();
    assert!(ppl > 1.0 && ppl.is_finite());
    let err = stderr(&out);
    assert!(err.contains("reached --max-steps"), "{err}");
    assert!(err.contains("validation at step 2"), "{err}");
    // On CUDA: the RNN weights are one cuDNN buffer, so libtorch never warns about copying.
    assert!(!err.contains("contiguous chunk"), "{err}");
    assert_eq!(trainer_state(&model)["step"], 4);
    // No temporary files are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&model)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().contains("tmp")
                || e.file_name().to_string_lossy().ends_with(".new")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// 2N updates in one run and N + N across a resume give the same weights and optimizer state.
#[test]
fn resume_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    // Validation inside the run exercises the schedule state too, and a budgeted decay over
    // the 12 updates (warm-up 2, cooling down from update 9) the learning-rate schedule.
    let set = [
        "--set",
        "train.valid_every=5",
        "--set",
        "train.warmup_steps=2",
        "--set",
        "train.decay_steps=12",
    ];
    let a = train(
        tmp.path(),
        &one,
        &[&["--max-steps", "12"][..], &set].concat(),
    );
    assert!(a.status.success(), "{}", stderr(&a));
    let b1 = train(
        tmp.path(),
        &two,
        &[&["--max-steps", "6"][..], &set].concat(),
    );
    assert!(b1.status.success(), "{}", stderr(&b1));
    assert_eq!(trainer_state(&two)["step"], 6);
    let b2 = train(
        tmp.path(),
        &two,
        &[&["--max-steps", "12"][..], &set].concat(),
    );
    assert!(b2.status.success(), "{}", stderr(&b2));
    assert!(
        stderr(&b2).contains("resuming at step 6"),
        "{}",
        stderr(&b2)
    );
    assert!(
        same_tensors(&weights(&one), &weights(&two)),
        "weights differ after resume"
    );
    assert!(same_tensors(
        &one.join("last/optimizer.safetensors"),
        &two.join("last/optimizer.safetensors")
    ));
    let (sa, sb) = (trainer_state(&one), trainer_state(&two));
    for k in [
        "step",
        "epoch",
        "batch_in_epoch",
        "lr",
        "schedule_best_bleu",
        "bad_validations",
    ] {
        assert_eq!(sa[k], sb[k], "{k}");
    }
    // Without the resume the second half would start again from scratch: check that the first
    // half alone differs (the test could not fail otherwise).
    let c = train(
        tmp.path(),
        &tmp.path().join("three"),
        &[&["--max-steps", "6"][..], &set].concat(),
    );
    assert!(c.status.success());
    assert!(!same_tensors(
        &weights(&one),
        &weights(&tmp.path().join("three"))
    ));
}

#[test]
fn same_seed_same_model_other_seed_other_model() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |name: &str, seed: &str| {
        let d = tmp.path().join(name);
        let o = train(tmp.path(), &d, &["--max-steps", "3", "--seed", seed]);
        assert!(o.status.success(), "{}", stderr(&o));
        weights(&d)
    };
    let (a, b, c) = (run("a", "1"), run("b", "1"), run("c", "2"));
    assert!(same_tensors(&a, &b), "same seed, different weights");
    assert!(!same_tensors(&a, &c), "different seeds, same weights");
}

#[test]
fn budgets_end_training_with_a_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("epochs");
    let o = train(tmp.path(), &m, &["--max-epochs", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("reached --max-epochs"),
        "{}",
        stderr(&o)
    );
    let s = trainer_state(&m);
    assert_eq!(s["epoch"], 1);
    assert_eq!(s["batch_in_epoch"], 0);
    // An epoch end validates: one scheduled row in metrics.csv.
    let metrics = std::fs::read_to_string(m.join("metrics.csv")).unwrap();
    assert_eq!(
        metrics.lines().filter(|l| l.contains(",valid,")).count(),
        1,
        "{metrics}"
    );

    let m = tmp.path().join("time");
    let start = Instant::now();
    let o = train(
        tmp.path(),
        &m,
        &["--max-time", "2s", "--max-steps", "100000"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("reached --max-time"), "{}", stderr(&o));
    assert!(start.elapsed() < Duration::from_secs(60));
    assert!(trainer_state(&m)["step"].as_u64().unwrap() > 0);
    assert!(m.join("model.safetensors").exists());
}

#[test]
fn early_stopping_when_bleu_stops_improving() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    // A learning rate too small to change anything: BLEU stays put.
    let args = BLEU_STAYS_PUT;
    let o = train(tmp.path(), &m, &args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("early stopping"), "{}", stderr(&o));
    // First validation sets the best, two more without improvement stop it.
    let state = trainer_state(&m);
    assert_eq!(state["step"], 6);
    assert_eq!(state["stopped_early"], true);
    // Two validations without improvement also halved the learning rate (lr_patience 2).
    assert_eq!(state["lr"].as_f64().unwrap(), 5e-13);
    // Running again does nothing more: training has ended for good.
    let again = train(tmp.path(), &m, &args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert_eq!(trainer_state(&m)["step"], 6);
}

#[test]
fn divergence_stops_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    // An absurd learning rate blows the weights up after one update.
    let o = train(
        tmp.path(),
        &m,
        &["--max-steps", "50", "--set", "train.lr=1e38"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("training diverged"), "{err}");
    assert_eq!(
        err.lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
    assert!(
        !m.join("model.safetensors").exists(),
        "a diverged model must not become the best"
    );
}

#[test]
fn ctrl_c_saves_and_exits_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    let (train_f, valid_f) = tiny_corpus(tmp.path());
    let config = tiny_config(tmp.path());
    let mut child = bin("rnmt-train")
        .args(["--device", &device_arg(), "--threads", "1"])
        .args(["--max-steps", "1000000"])
        .arg("--train")
        .arg(&train_f)
        .arg("--valid")
        .arg(&valid_f)
        .arg("--config")
        .arg(&config)
        .arg("--model-dir")
        .arg(&m)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for training to be under way, then interrupt.
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        seen.push_str(&line);
        if line.starts_with("step 3 ") {
            break;
        }
        line.clear();
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{seen}{rest}");
    assert!(rest.contains("interrupted"), "{rest}");
    assert!(trainer_state(&m)["step"].as_u64().unwrap() >= 3);
    assert!(m.join("model.safetensors").exists());
}

#[test]
fn bad_config_and_mismatched_resume_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    let o = train(tmp.path(), &m, &["--set", "train.nope=3"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown config key 'train.nope'"),
        "{}",
        stderr(&o)
    );
    let o = train(
        tmp.path(),
        &m,
        &["--set", "model.decoder.attention=sideways"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));

    let o = train(tmp.path(), &m, &["--max-steps", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = train(
        tmp.path(),
        &m,
        &["--max-steps", "2", "--set", "model.encoder.hidden=8"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("model.encoder.hidden cannot change when resuming"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
}

/// Bad corpus lines stop training with file:line, or are skipped and counted on request;
/// aligned file pairs work as input.
#[test]
fn bad_lines_and_aligned_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (train_f, valid_f) = tiny_corpus(tmp.path());
    let mut text = std::fs::read_to_string(&train_f).unwrap();
    text.insert_str(0, "no separator here\n");
    text.push_str("one\ttoo\tmany\n");
    let bad = tmp.path().join("bad.tsv");
    std::fs::write(&bad, &text).unwrap();
    let config = tiny_config(tmp.path());
    let run = |extra: &[&str], train: &[&std::path::Path], model: &str| {
        let mut c = bin("rnmt-train");
        if train.len() == 1 {
            c.arg("--train").arg(train[0]).arg("--valid").arg(&valid_f);
        } else {
            c.arg("--train-src")
                .arg(train[0])
                .arg("--train-tgt")
                .arg(train[1]);
            c.arg("--valid-src")
                .arg(train[0])
                .arg("--valid-tgt")
                .arg(train[1]);
        }
        c.arg("--config")
            .arg(&config)
            .arg("--model-dir")
            .arg(tmp.path().join(model));
        c.args([
            "--device",
            &device_arg(),
            "--threads",
            "1",
            "--max-steps",
            "2",
        ])
        .args(extra);
        c.output().unwrap()
    };
    let o = run(&[], &[&bad], "strict");
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("bad.tsv:1:") && err.contains("expected 2"),
        "{err}"
    );
    let o = run(&["--skip-bad-lines"], &[&bad], "lenient");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("skipped 2 lines: 2 wrong field count"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("300 pairs read"), "{}", stderr(&o));

    let (src, tgt) = (tmp.path().join("a.en"), tmp.path().join("a.fr"));
    let content = std::fs::read_to_string(&train_f).unwrap();
    let (s, t): (Vec<&str>, Vec<&str>) =
        content.lines().map(|l| l.split_once('\t').unwrap()).unzip();
    std::fs::write(&src, s.join("\n") + "\n").unwrap();
    std::fs::write(&tgt, t.join("\n") + "\n").unwrap();
    let o = run(&[], &[&src, &tgt], "aligned");
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("300 pairs read from"), "{}", stderr(&o));
    std::fs::write(&tgt, t[..299].join("\n") + "\n").unwrap();
    let o = run(&[], &[&src, &tgt], "short");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("a.fr"), "{}", stderr(&o));
}

/// Separate source and target vocabularies: two tokenizer files, and translation uses them.
#[test]
fn separate_vocabularies_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    let o = train(
        tmp.path(),
        &m,
        &["--max-steps", "2", "--set", "data.tokenizer.joint=false"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("trained separate BPE"),
        "{}",
        stderr(&o)
    );
    assert!(m.join("tokenizer.src.json").exists() && m.join("tokenizer.tgt.json").exists());
    assert!(!m.join("tokenizer.json").exists());
    let mut child = bin("rnmt-translate")
        .arg("--model")
        .arg(&m)
        .args(["--device", &device_arg(), "--beam", "2", "--max-len", "5"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Click Save.\n\nOK\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 3);
}

/// A fresh model's output bias starts at the log unigram distribution of the training targets
/// (so it predicts word frequencies from the first update); `train.unigram_output_bias=false`
/// leaves it at zero.
#[test]
fn output_bias_starts_at_the_target_unigram_distribution() {
    let tmp = tempfile::tempdir().unwrap();
    let bias = |name: &str, extra: &[&str]| -> Vec<f32> {
        let model = tmp.path().join(name);
        let mut args = vec!["--max-steps", "0"];
        args.extend_from_slice(extra);
        let out = train(tmp.path(), &model, &args);
        assert!(out.status.success(), "{}", stderr(&out));
        let t = tensors(&model.join("model.safetensors"))
            .into_iter()
            .find(|(n, _)| n == "decoder.output.bias")
            .expect("decoder.output.bias")
            .1;
        Vec::try_from(&t).unwrap()
    };
    let prior = bias("prior", &[]);
    let total: f64 = prior.iter().map(|&l| (l as f64).exp()).sum();
    assert!((total - 1.0).abs() < 1e-4, "exp(bias) sums to {total}");
    // `</s>` ends all 300 sentences: far more likely than `<pad>`, `<unk>` and `<s>` (never
    // targets), which keep only the add-one count.
    assert!(prior[3] > prior[0] + 4.0, "{:?}", &prior[..4]);
    assert_eq!(prior[0], prior[1]);
    assert_eq!(prior[0], prior[2]);
    let zero = bias("zero", &["--set", "train.unigram_output_bias=false"]);
    assert!(zero.iter().all(|&b| b == 0.0));
}

/// `--precision bf16` trains on CUDA and on a CPU with bfloat16 instructions (float32 weights
/// in the checkpoint, which translates) and is a one-line error on other CPUs that leaves no
/// model directory behind.
#[test]
fn precision_bf16_trains_where_bfloat16_is_native_and_is_refused_elsewhere() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    let out = train(
        tmp.path(),
        &model,
        &["--max-steps", "3", "--precision", "bf16"],
    );
    let err = stderr(&out);
    if !on_cuda() && !rnmt::precision::cpu_has_bf16() {
        assert!(!out.status.success());
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("--precision bf16 needs a CUDA device or a CPU with bfloat16"),
            "{err}"
        );
        assert!(!model.exists());
        let o = bin("rnmt-translate")
            .arg("--model")
            .arg(tiny_model())
            .args(["--device", "cpu", "--precision", "bf16"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(stderr(&o).contains("needs a CUDA device"), "{}", stderr(&o));
        return;
    }
    assert!(out.status.success(), "{err}");
    assert!(err.contains("(bf16)"), "{err}");
    assert!(!err.contains("contiguous chunk"), "{err}");
    for (name, t) in tensors(&model.join("model.safetensors")) {
        assert_eq!(t.kind(), tch::Kind::Float, "{name}");
    }
    let o = translate_with(
        &model,
        &["--precision", "bf16"],
        b"Open the file.\n",
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
}

/// metrics.csv's `lr` is the rate the update before the validation used (warm-up and the
/// budgeted decay included), the one the validation's log line shows, not the peak rate.
#[test]
fn metrics_record_the_learning_rate_of_the_update() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("m");
    let out = train(
        tmp.path(),
        &model,
        &[
            "--max-steps",
            "6",
            "--set",
            "train.valid_every=2",
            "--set",
            "train.lr=0.001",
            "--set",
            "train.warmup_steps=4",
            "--set",
            "train.decay=linear",
            "--set",
            "train.decay_steps=8",
            "--set",
            "train.decay_fraction=1.0",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let metrics = std::fs::read_to_string(model.join("metrics.csv")).unwrap();
    let rows: Vec<Vec<&str>> = metrics.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(rows[0][6], "lr", "{metrics}");
    // Updates 2, 4 and 6 are 0-based updates 1, 3 and 5: warm-up 2/4 of the peak, the peak,
    // then a quarter of the way down to zero at update 8.
    let want = [(2, 0.5e-3), (4, 1e-3), (6, 0.75e-3)];
    let scheduled: Vec<&Vec<&str>> = rows[1..].iter().filter(|r| r[2] == "valid").collect();
    assert_eq!(scheduled.len(), want.len(), "{metrics}");
    let err = stderr(&out);
    for (row, (step, lr)) in scheduled.iter().zip(want) {
        assert_eq!(row[0], step.to_string(), "{metrics}");
        let got: f64 = row[6].parse().unwrap();
        assert!(
            (got - lr).abs() < 1e-12,
            "step {step}: lr {got}, want {lr}: {metrics}"
        );
        let line = format!("validation at step {step} ");
        let logged = err.lines().find(|l| l.starts_with(&line)).unwrap();
        assert!(logged.ends_with(&format!("lr {lr:.2e}")), "{logged}");
    }
}
