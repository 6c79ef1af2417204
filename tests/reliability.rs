//! The failures found by testing rnmt as a user would (issue 12): each test here failed
//! before its fix. Hang tests run the binaries with a deadline and fail instead of hanging.
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn model() -> &'static Path {
    tiny_model()
}

/// Asserts that `o` failed with status 1 and one line on stderr containing `needle`.
fn assert_one_line_error(o: &std::process::Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
}

/// A copy of the model whose output bias is `value` everywhere.
fn broken_model(name: &str, value: f64) -> PathBuf {
    let dir = common::tmp_root().join(format!("broken-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(model(), &dir);
    let path = dir.join("model.safetensors");
    let tensors: Vec<(String, tch::Tensor)> = tensors(&path)
        .into_iter()
        .map(|(n, t)| {
            let t = if n == "decoder.output.bias" {
                t.full_like(value)
            } else {
                t
            };
            (n, t)
        })
        .collect();
    tch::Tensor::write_safetensors(&tensors, &path).unwrap();
    dir
}

/// Item 1: decoding stops at its length limit whatever the scores; NaN/inf is an error.
#[test]
fn decoding_never_hangs_on_nan_or_infinite_scores() {
    for (name, value) in [("nan", f64::NAN), ("inf", f64::INFINITY)] {
        let m = broken_model(name, value);
        for beam in ["1", "3"] {
            let o = translate_with(
                &m,
                &["--beam", beam, "--max-len", "5"],
                b"hi\n",
                Duration::from_secs(60),
            );
            assert_eq!(
                o.status.code(),
                Some(1),
                "{name} beam {beam}: {}",
                stderr(&o)
            );
            let err = stderr(&o);
            assert!(err.contains("not finite"), "{err}");
            assert_eq!(err.trim().lines().count(), 1, "{err}");
        }
    }
}

/// Item 1, training: a learning rate that blows the model up ends in "training diverged"
/// (not a validation that decodes for ever), and the best checkpoint is untouched.
#[test]
fn an_exploding_learning_rate_is_a_divergence_error() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    train_ok(tmp.path(), &m, &["--max-steps", "5"]);
    let best = std::fs::read(m.join("model.safetensors")).unwrap();
    let (train_f, valid_f) = tiny_corpus(tmp.path());
    let child = train_command(&train_f, &valid_f, &m, None)
        .args(["--max-steps", "40"])
        .args(["--set", "train.lr=1e30", "--set", "train.valid_every=2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let o = wait_with_deadline(child, Duration::from_secs(120), "rnmt-train lr=1e30");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("training diverged"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(m.join("model.safetensors")).unwrap(),
        best,
        "the best checkpoint changed"
    );
}

/// Item 1, signals: SIGTERM during a long validation stops the run at once (the
/// validation does not run to its end), saves `last/` and exits 0.
#[test]
fn sigterm_during_validation_stops_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (train_f, _) = tiny_corpus(tmp.path());
    // A validation set large enough to take many seconds with an untrained model.
    let dev = head("lohelp.en-fr.dev.tsv", 1058);
    let valid = tmp.path().join("big-valid.tsv");
    std::fs::write(&valid, dev.repeat(8)).unwrap();
    let m = tmp.path().join("m");
    let mut child = train_command(&train_f, &valid, &m, Some(&tiny_config(tmp.path())))
        .args(["--max-steps", "50"])
        .args(["--set", "train.valid_every=1"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let mut lines = BufReader::new(err).lines();
    let mut seen = Vec::new();
    // "step 1 | ..." is logged just before the first validation starts.
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.starts_with("step 1 |");
        seen.push(line);
        if started {
            break;
        }
    }
    assert!(
        seen.last().is_some_and(|l| l.starts_with("step 1 |")),
        "{seen:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let status = child.wait().unwrap();
    let took = signalled.elapsed();
    let all = format!("{}\n{}", seen.join("\n"), rest.join("\n"));
    assert!(status.success(), "{all}");
    assert!(all.contains("interrupted"), "{all}");
    assert!(
        !all.contains("validation at step"),
        "the validation ran to its end after SIGTERM ({took:?}):\n{all}"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.join("last/trainer.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], 1, "{state}");
    assert!(m.join("model.safetensors").exists());
}

/// Item 2: a huge input line is read with bounded memory, cut with a warning, and the lines
/// after it are translated as usual.
#[test]
fn a_huge_input_line_costs_bounded_memory() {
    let mut input = vec![b'a'; 8 << 20];
    input.extend_from_slice(b"\nThe Navigator window.\n");
    let o = translate_with(
        model(),
        &["--beam", "1", "--verbose"],
        &input,
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    assert_eq!(out.lines().count(), 2, "{out:?}");
    let err = stderr(&o);
    assert!(
        err.contains("<stdin>:1: 8388608 bytes, only the first 65536 read"),
        "{err}"
    );
    let gb: f64 = err
        .split("peak memory ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no peak memory in {err}"));
    assert!(gb < 1.0, "peak memory {gb} GB for an 8 MB line");
}

/// Item 2, the corpus reader: an over-long corpus line is an error naming file and line, or
/// is skipped and counted.
#[test]
fn an_over_long_corpus_line_is_a_bad_line() {
    let tmp = tempfile::tempdir().unwrap();
    let (train_f, valid_f) = tiny_corpus(tmp.path());
    let mut text = std::fs::read_to_string(&train_f).unwrap();
    let long = format!("{}\tx\n", "y".repeat(200_000));
    let at = text.match_indices('\n').nth(4).unwrap().0 + 1; // after line 5
    text.insert_str(at, &long);
    std::fs::write(&train_f, text).unwrap();
    let run = |extra: &[&str]| {
        train_command(
            &train_f,
            &valid_f,
            &tmp.path().join("m"),
            Some(&tiny_config(tmp.path())),
        )
        .args(["--max-steps", "1"])
        .args(extra)
        .output()
        .unwrap()
    };
    let o = run(&[]);
    assert_one_line_error(&o, "train.tsv:6: line longer than 65536 bytes");
    let o = run(&["--skip-bad-lines"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 line too long"), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("train: 300 pairs read"),
        "{}",
        stderr(&o)
    );
}

/// Item 3: tokenizer training on a corpus with a giant word finishes (words are capped for
/// training) and says what it cut.
#[test]
fn a_giant_word_does_not_stall_tokenizer_training() {
    use rnmt::corpus::Pair;
    use rnmt::tokenizer::{TokenizerConfig, Tokenizers};
    let mut pairs: Vec<Pair> = (0..50)
        .map(|i| Pair {
            src: format!("word{i} other words here"),
            tgt: format!("mot{i} autres mots ici"),
            line: i + 1,
        })
        .collect();
    pairs.push(Pair {
        src: "z".repeat(300_000),
        tgt: "short".into(),
        line: 51,
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cfg = TokenizerConfig {
            vocab_size: 300,
            ..TokenizerConfig::default()
        };
        let _ = tx.send(Tokenizers::train_counting_cuts(&pairs, &cfg).map(|(_, cut)| cut));
    });
    let cut = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("tokenizer training still running after 60 s")
        .unwrap();
    assert_eq!(cut, 1);
}

/// Item 4: a truncated tokenizer.json and an outsized model config are one-line errors,
/// not panics (exit 101).
#[test]
fn broken_files_and_outsized_models_are_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    copy_dir(model(), &m);
    let tok = m.join("tokenizer.json");
    let text = std::fs::read_to_string(&tok).unwrap();
    let cut = text.find("\"decoder\"").unwrap() + 30;
    std::fs::write(&tok, &text[..cut]).unwrap();
    let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(60));
    assert_one_line_error(&o, "tokenizer.json");
    // Resuming with it too.
    let o = train(tmp.path(), &m, &["--max-steps", "25"]);
    assert_one_line_error(&o, "tokenizer.json");

    // An outsized model: on the command line, and in a model directory's config.json.
    let o = train(
        tmp.path(),
        &tmp.path().join("big"),
        &["--set", "model.encoder.hidden=1000000"],
    );
    assert_one_line_error(&o, "model.encoder.hidden");
    let o = train(
        tmp.path(),
        &tmp.path().join("big2"),
        &[
            "--set",
            "model.encoder.hidden=16384",
            "--set",
            "model.encoder.layers=64",
        ],
    );
    assert_one_line_error(&o, "parameters");
    let m2 = tmp.path().join("m2");
    copy_dir(model(), &m2);
    let cfg = std::fs::read_to_string(m2.join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["model"]["decoder"]["hidden"] = 1_000_000.into();
    std::fs::write(m2.join("config.json"), v.to_string()).unwrap();
    let o = translate_with(&m2, &[], b"hi\n", Duration::from_secs(60));
    assert_one_line_error(&o, "model.decoder.hidden");
}

/// Item 5: a second trainer on a model directory in use gets a one-line error.
#[test]
fn a_model_dir_in_use_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    let (train_f, valid_f) = tiny_corpus(tmp.path());
    let config = tiny_config(tmp.path());
    let start = |steps: &str| {
        train_command(&train_f, &valid_f, &m, Some(&config))
            .args(["--max-steps", steps])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut first = start("100000");
    // Wait until the first one holds the lock.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !m.join(".lock").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let second = wait_with_deadline(start("3"), Duration::from_secs(60), "second trainer");
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(second.status.code(), Some(1), "{}", stderr(&second));
    assert!(
        stderr(&second).contains("in use by another rnmt-train"),
        "{}",
        stderr(&second)
    );
    assert_eq!(
        stderr(&second).trim().lines().count(),
        1,
        "{}",
        stderr(&second)
    );
}

/// Item 6: filters that remove every pair are an error, and no model is written.
#[test]
fn an_empty_training_set_after_filtering_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    let o = train(tmp.path(), &m, &["--set", "data.filter.max_len=1"]);
    assert_one_line_error(&o, "the filters removed all 300 pairs");
    assert!(!m.join("model.safetensors").exists());
}

/// Item 7: the output file is never the input file, and `-o` is written atomically.
#[test]
fn output_never_destroys_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("f.txt");
    std::fs::write(&f, "Click the Save button.\n").unwrap();
    let link = tmp.path().join("link.txt");
    std::os::unix::fs::symlink(&f, &link).unwrap();
    for out in [&f, &link] {
        let o = translate_with(
            model(),
            &["-i", f.to_str().unwrap(), "-o", out.to_str().unwrap()],
            b"",
            Duration::from_secs(60),
        );
        assert_one_line_error(&o, "is the input file");
        assert_eq!(
            std::fs::read_to_string(&f).unwrap(),
            "Click the Save button.\n"
        );
    }
    // A failure part-way leaves an existing output file as it was.
    let out = tmp.path().join("out.txt");
    std::fs::write(&out, "old\n").unwrap();
    let o = translate_with(
        model(),
        &["-o", out.to_str().unwrap()],
        b"Click the Save button.\n\xff\xfe\n",
        Duration::from_secs(60),
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "old\n");
    let o = translate_with(
        model(),
        &["-o", out.to_str().unwrap()],
        b"Click the Save button.\n",
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&out).unwrap().lines().count(), 1);
}

/// Item 8: a setting changed on resume is applied and recorded, or refused with its key.
#[test]
fn changed_settings_on_resume_are_applied_or_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    train_ok(tmp.path(), &m, &["--max-steps", "3"]);
    for (args, key) in [
        (
            vec!["--set", "train.batch_tokens=800"],
            "train.batch_tokens",
        ),
        (vec!["--seed", "7"], "train.seed"),
        (
            vec!["--set", "data.tokenizer.vocab_size=300"],
            "data.tokenizer.vocab_size",
        ),
    ] {
        let mut a = vec!["--max-steps", "4"];
        a.extend(args);
        let o = train(tmp.path(), &m, &a);
        assert_one_line_error(&o, &format!("{key} cannot change when resuming"));
    }
    let o = train(
        tmp.path(),
        &m,
        &["--max-steps", "4", "--set", "train.lr=0.0007"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resume: train.lr 0.003 -> 0.0007"),
        "{}",
        stderr(&o)
    );
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["train"]["lr"], 0.0007);

    // Interrupted before the first checkpoint: a new vocabulary size starts over, and the
    // tokenizer, config.json and model agree.
    std::fs::remove_dir_all(m.join("last")).unwrap();
    let o = train(
        tmp.path(),
        &m,
        &["--max-steps", "2", "--set", "data.tokenizer.vocab_size=300"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["data"]["tokenizer"]["vocab_size"], 300);
    let vocab = cfg["model"]["src_vocab"].as_u64().unwrap();
    assert!(
        vocab <= 300,
        "the tokenizer has {vocab} tokens, the config says 300"
    );
}

fn metrics_rows(m: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(m.join("metrics.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].to_string(), f[2].to_string())
        })
        .collect()
}

/// Item 9: `metrics.csv` holds one row per validation of the run's history, also after a
/// crash between its write and `last/`, and after re-running a finished command.
#[test]
fn metrics_rows_are_never_duplicated() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    train_ok(tmp.path(), &m, &["--max-steps", "4"]);
    let saved = tmp.path().join("last-at-4");
    copy_dir(&m.join("last"), &saved);
    train_ok(tmp.path(), &m, &["--max-steps", "8"]);
    // A crash after the row of step 8 was written but before last/ was: last/ is step 4's.
    std::fs::remove_dir_all(m.join("last")).unwrap();
    copy_dir(&saved, &m.join("last"));
    train_ok(tmp.path(), &m, &["--max-steps", "8"]);
    let o = train(tmp.path(), &m, &["--max-steps", "8"]); // finished: nothing to do
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = metrics_rows(&m);
    let mut unique = rows.clone();
    unique.dedup();
    assert_eq!(rows, unique, "duplicate rows: {rows:?}");
    assert_eq!(rows.iter().filter(|r| r.0 == "8").count(), 1, "{rows:?}");
}

/// Item 10: a run cut into pieces ends with the same best model as one run, even where a
/// piece's final validation beat the scheduled ones.
#[test]
fn a_split_run_ends_with_the_same_best_model() {
    let tmp = tempfile::tempdir().unwrap();
    let one = tmp.path().join("one");
    let split = tmp.path().join("split");
    let o = train(tmp.path(), &one, &["--max-steps", "24"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for steps in ["7", "24"] {
        let o = train(tmp.path(), &split, &["--max-steps", steps]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert!(same_tensors(
        &one.join("last/weights.safetensors"),
        &split.join("last/weights.safetensors")
    ));
    assert!(
        same_tensors(
            &one.join("model.safetensors"),
            &split.join("model.safetensors")
        ),
        "model.safetensors depends on where the run was split"
    );
}

/// Item 11: n-best lists for empty lines, byte order marks, causes printed once, and a
/// fresh run that does not claim to resume.
#[test]
fn small_things() {
    let o = translate_with(
        model(),
        &["--beam", "3", "--n-best", "3"],
        b"Click the Save button.\n\n",
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout.clone()).unwrap();
    let empty = out.lines().filter(|l| l.starts_with("1\t")).count();
    assert_eq!(empty, 3, "{out:?}");

    let plain = translate_with(
        model(),
        &["--beam", "1"],
        b"The Navigator window.\n",
        Duration::from_secs(60),
    );
    let bom = translate_with(
        model(),
        &["--beam", "1"],
        b"\xEF\xBB\xBFThe Navigator window.\n",
        Duration::from_secs(60),
    );
    assert_eq!(plain.stdout, bom.stdout, "a BOM changed the translation");

    let tmp = tempfile::tempdir().unwrap();
    let o = bin("rnmt-train")
        .args([
            "--train",
            "x.tsv",
            "--valid",
            "y.tsv",
            "--config",
            "/nonexistent.toml",
        ])
        .arg("--model-dir")
        .arg(tmp.path().join("m"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o).matches("No such file or directory").count(),
        1,
        "{}",
        stderr(&o)
    );
    let o = train(tmp.path(), &tmp.path().join("fresh"), &["--max-steps", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("starting at step 0"), "{}", stderr(&o));
    assert!(!stderr(&o).contains("resuming"), "{}", stderr(&o));
}
