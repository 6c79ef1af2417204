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

// ---- Issue 21: reliability, round two. Each test failed before its fix. ----

/// `mknod` a node inside `dir` (never in the machine's /dev); false where not permitted.
fn mknod(path: &Path, major: u32, minor: u32) -> bool {
    Command::new("mknod")
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

fn file_type(p: &Path) -> std::fs::FileType {
    std::fs::symlink_metadata(p).unwrap().file_type()
}

/// Item 1: `-o` writes through a symbolic link (to its target) and into a FIFO or a device
/// node, and never replaces one with a regular file. The nodes are made in a temporary
/// directory: copies of /dev/null (1,3) and /dev/full (1,7).
#[test]
fn output_writes_through_links_fifos_and_devices() {
    use std::os::unix::fs::FileTypeExt;
    let tmp = tempfile::tempdir().unwrap();
    let input = b"Click the Save button.\n";
    let target = tmp.path().join("target.txt");
    std::fs::write(&target, "old\n").unwrap();
    let link = tmp.path().join("link.txt");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = translate_with(
        model(),
        &["-o", link.to_str().unwrap()],
        input,
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(file_type(&link).is_symlink(), "the link was replaced");
    assert_eq!(std::fs::read_to_string(&target).unwrap().lines().count(), 1);
    assert_ne!(std::fs::read_to_string(&target).unwrap(), "old\n");

    let fifo = tmp.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(&fifo).unwrap())
    };
    let o = translate_with(
        model(),
        &["-o", fifo.to_str().unwrap()],
        input,
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8(reader.join().unwrap())
            .unwrap()
            .lines()
            .count(),
        1
    );
    assert!(file_type(&fifo).is_fifo(), "the FIFO was replaced");

    let null = tmp.path().join("null");
    let full = tmp.path().join("full");
    if !(mknod(&null, 1, 3) && mknod(&full, 1, 7)) {
        eprintln!("device part skipped: mknod is not permitted here (needs root)");
        return;
    }
    let o = translate_with(
        model(),
        &["-o", null.to_str().unwrap()],
        input,
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        file_type(&null).is_char_device(),
        "the device node was replaced"
    );
    let o = translate_with(
        model(),
        &["-o", full.to_str().unwrap()],
        input,
        Duration::from_secs(60),
    );
    assert_one_line_error(&o, "No space left on device");
    assert!(
        file_type(&full).is_char_device(),
        "the device node was replaced"
    );
    // Nothing else was created next to them.
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 5, "{names:?}");
}

/// Item 2: durations past what a Duration holds are errors, not panics (exit 101).
#[test]
fn huge_durations_are_errors_not_panics() {
    let tmp = tempfile::tempdir().unwrap();
    for t in ["999999999999999999h", "18446744073709551615s"] {
        let o = train(tmp.path(), &tmp.path().join("m"), &["--max-time", t]);
        assert_one_line_error(&o, "bad duration");
    }
}

/// Item 3: config.json and model.safetensors as zero devices (a copy of /dev/zero, 1,5, made
/// in the temporary directory; skipped where mknod is not permitted), or FIFOs, are one-line
/// errors within a deadline (they used to grow to 19 GB, or hang).
#[test]
fn model_files_that_are_devices_or_fifos_are_refused() {
    for name in ["config.json", "model.safetensors", "tokenizer.json"] {
        for kind in ["zero", "fifo"] {
            let tmp = tempfile::tempdir().unwrap();
            let m = tmp.path().join("m");
            copy_dir(model(), &m);
            let p = m.join(name);
            std::fs::remove_file(&p).unwrap();
            if kind == "zero" {
                if !mknod(&p, 1, 5) {
                    eprintln!("zero-device part skipped: mknod is not permitted here (needs root)");
                    continue;
                }
            } else {
                assert!(Command::new("mkfifo").arg(&p).status().unwrap().success());
            }
            let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(30));
            assert_one_line_error(&o, "not a regular file");
            assert!(stderr(&o).contains(name), "{}", stderr(&o));
        }
    }
}

/// Item 3: a weights file far larger than the model's parameters can fill is refused by its
/// size, before it is read.
#[test]
fn an_oversized_weights_file_is_refused_by_size() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    copy_dir(model(), &m);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.join("model.safetensors"))
        .unwrap();
    f.set_len(1 << 40).unwrap(); // sparse: 1 TB
    let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(30));
    assert_one_line_error(
        &o,
        "is 1099511627776 bytes; a weights file of this model is at most",
    );
}

/// Writes `tensors` with the header's `__metadata__` removed (a file from before digests).
fn write_plain(path: &Path, tensors: &[(String, tch::Tensor)]) {
    tch::Tensor::write_safetensors(tensors, path).unwrap();
}

/// Item 6: nonsense options and files are refused by name.
#[test]
fn nonsense_is_refused_not_accepted() {
    for (args, needle) in [
        (vec!["--alpha", "NaN"], "alpha"),
        (
            vec!["--min-len", "20", "--max-len", "5"],
            "min-len 20 is above max-len 5",
        ),
    ] {
        let o = translate_with(model(), &args, b"hi\n", Duration::from_secs(60));
        assert_one_line_error(&o, needle);
    }
    // Weights of another element type with the right shapes.
    let tmp = tempfile::tempdir().unwrap();
    for kind in [
        tch::Kind::Half,
        tch::Kind::Double,
        tch::Kind::Int64,
        tch::Kind::Bool,
    ] {
        let m = tmp.path().join(format!("{kind:?}"));
        copy_dir(model(), &m);
        let path = m.join("model.safetensors");
        let ts: Vec<(String, tch::Tensor)> = tensors(&path)
            .into_iter()
            .map(|(n, t)| {
                let t = if n.contains("embed") {
                    t.to_kind(kind)
                } else {
                    t
                };
                (n, t)
            })
            .collect();
        write_plain(&path, &ts);
        let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(60));
        assert_one_line_error(&o, "is stored as");
    }
    // tokenizer.json settings that change the input silently.
    for (pointer, value, needle) in [
        ("/model/dropout", serde_json::json!(0.9), "dropout"),
        (
            "/truncation",
            serde_json::json!({"max_length": 2, "strategy": "LongestFirst", "stride": 0, "direction": "Right"}),
            "truncation",
        ),
    ] {
        let m = tmp.path().join(format!("tok{}", needle));
        copy_dir(model(), &m);
        let p = m.join("tokenizer.json");
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        *v.pointer_mut(pointer).unwrap() = value;
        std::fs::write(&p, v.to_string()).unwrap();
        let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(60));
        assert_one_line_error(&o, needle);
    }
    // The same column twice, and a repeated --set key.
    let (train_f, valid_f) = tiny_corpus(tmp.path());
    let o = train_command(&train_f, &valid_f, &tmp.path().join("c"), None)
        .args(["--src-col", "0", "--tgt-col", "0"])
        .output()
        .unwrap();
    assert_one_line_error(&o, "name the same column");
    let o = train(
        tmp.path(),
        &tmp.path().join("d"),
        &["--set", "train.lr=0.1", "--set", "train.lr=0.2"],
    );
    assert_one_line_error(&o, "--set train.lr is given twice");
}

/// Item 4: a normalizer that multiplies the text (six `Replace "a" -> 10 a`) is refused when
/// the tokenizer loads, within a deadline, instead of growing to gigabytes.
#[test]
fn a_multiplying_normalizer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    copy_dir(model(), &m);
    let p = m.join("tokenizer.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    let step =
        serde_json::json!({"type": "Replace", "pattern": {"String": "a"}, "content": "aaaaaaaaaa"});
    v["normalizer"] = serde_json::json!({"type": "Sequence", "normalizers": vec![step; 6]});
    std::fs::write(&p, v.to_string()).unwrap();
    let o = translate_with(&m, &[], b"a banana\n", Duration::from_secs(30));
    assert_one_line_error(
        &o,
        "its normalizer can make a text up to 1000000 times longer",
    );
}

/// Item 7: the weights carry a digest; flipped bits, a zeroed embedding or a truncated file
/// are one-line errors. A model written before digests loads and translates as before.
#[test]
fn corrupted_weights_are_detected() {
    let path = model().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    assert!(String::from_utf8_lossy(&bytes[..4096.min(bytes.len())]).contains("rnmt.sha256"));
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    copy_dir(model(), &m);
    let mut flipped = bytes.clone();
    let n = flipped.len();
    for i in 0..10 {
        flipped[n - 1 - i * 97] ^= 0x40; // exponent bits of floats near the end
    }
    std::fs::write(m.join("model.safetensors"), &flipped).unwrap();
    let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(60));
    assert_one_line_error(&o, "do not match the digest");
    std::fs::write(m.join("model.safetensors"), &bytes[..n - 1000]).unwrap();
    let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    // Zeroed target embedding, keeping the header.
    let ts: Vec<(String, tch::Tensor)> = tensors(&path)
        .into_iter()
        .map(|(n, t)| {
            let t = if n.contains("tgt") && n.contains("embed") {
                t.zeros_like()
            } else {
                t
            };
            (n, t)
        })
        .collect();
    tch::Tensor::write_safetensors(&ts, m.join("plain.safetensors")).unwrap();
    let plain = std::fs::read(m.join("plain.safetensors")).unwrap();
    let mut zeroed = bytes.clone();
    let (hb, hp) = (
        8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize,
        8 + u64::from_le_bytes(plain[..8].try_into().unwrap()) as usize,
    );
    zeroed.truncate(hb);
    zeroed.extend_from_slice(&plain[hp..]);
    std::fs::write(m.join("model.safetensors"), &zeroed).unwrap();
    let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(60));
    assert_one_line_error(&o, "do not match the digest");

    // Without a digest (an older model directory): loads and translates exactly as before.
    write_plain(&m.join("model.safetensors"), &tensors(&path));
    let input = b"Click the Save button.\nThe Navigator window.\n";
    let before = translate_with(model(), &[], input, Duration::from_secs(60));
    let after = translate_with(&m, &[], input, Duration::from_secs(60));
    assert!(after.status.success(), "{}", stderr(&after));
    assert_eq!(before.stdout, after.stdout);
}

/// Item 8: messages about config.json: a huge string is cut, a missing "model" section is
/// named, and a byte order mark is dropped.
#[test]
fn config_messages_are_short_and_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    copy_dir(model(), &m);
    let cfg = std::fs::read_to_string(model().join("config.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v["model"]["emb_size"] = "x".repeat(500_000).into();
    std::fs::write(m.join("config.json"), v.to_string()).unwrap();
    let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(60));
    assert_one_line_error(&o, "config.json");
    assert!(
        stderr(&o).len() < 1000,
        "{} bytes of message",
        stderr(&o).len()
    );
    // A 10 MB config.json is refused by its size.
    v["model"]["emb_size"] = "x".repeat(10_000_000).into();
    std::fs::write(m.join("config.json"), v.to_string()).unwrap();
    let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(60));
    assert_one_line_error(&o, "a config file is at most");
    assert!(stderr(&o).len() < 1000);

    let mut v: serde_json::Value = serde_json::from_str(&cfg).unwrap();
    v.as_object_mut().unwrap().remove("model");
    std::fs::write(m.join("config.json"), v.to_string()).unwrap();
    let o = translate_with(&m, &[], b"hi\n", Duration::from_secs(60));
    assert_one_line_error(&o, "has no \"model\" section");

    std::fs::write(m.join("config.json"), format!("\u{feff}{cfg}")).unwrap();
    let input = b"Click the Save button.\n";
    let bom = translate_with(&m, &[], input, Duration::from_secs(60));
    assert!(bom.status.success(), "{}", stderr(&bom));
    assert_eq!(
        bom.stdout,
        translate_with(model(), &[], input, Duration::from_secs(60)).stdout
    );
}

/// Item 9: a failed write leaves no temporary file or `last.new/` behind.
#[test]
fn failed_writes_leave_nothing_behind() {
    use rnmt::checkpoint::{replace_last, save_weights};
    let tmp = tempfile::tempdir().unwrap();
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _ = vs.root().zeros("w", &[4]);
    // The final name is a non-empty directory: the rename fails after the data was written.
    let target = tmp.path().join("model.safetensors");
    std::fs::create_dir_all(target.join("x")).unwrap();
    assert!(save_weights(&vs, &target).is_err());
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["model.safetensors"], "left behind: {names:?}");
    let err = replace_last(tmp.path(), |dir| {
        std::fs::write(dir.join(".weights.safetensors.tmp.safetensors"), b"half").unwrap();
        Err(rnmt::error::Error::Input("disk full".into()))
    });
    assert!(err.is_err());
    assert!(
        !tmp.path().join("last.new").exists(),
        "last.new/ left behind"
    );
    assert!(!tmp.path().join("last").exists());
}

/// The model-directory fuzz target: forged config.json, tokenizer.json and model.safetensors
/// (random byte edits, cuts and splices of the real files, and forged safetensors headers)
/// must load or fail with one line naming the file, never panic, within a bounded time.
/// `RNMT_FUZZ_CASES=N` runs more by hand.
#[test]
fn fuzz_model_directory_loading() {
    use rnmt::rng::Rng;
    let cases: u64 = std::env::var("RNMT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let files = ["config.json", "tokenizer.json", "model.safetensors"];
    let originals: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(model().join(f)).unwrap())
        .collect();
    let mut rng = Rng::new(21);
    let m = tmp.path().join("m");
    copy_dir(model(), &m);
    for case in 0..cases {
        let which = rng.below(3) as usize;
        let mut bytes = originals[which].clone();
        match rng.below(5) {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(bytes.len() as u64) as usize;
                    bytes[i] = rng.next_u64() as u8;
                }
            }
            1 => bytes.truncate(rng.below(bytes.len() as u64) as usize),
            2 => {
                let at = rng.below(bytes.len() as u64) as usize;
                let junk: Vec<u8> = (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect();
                bytes.splice(at..at, junk);
            }
            3 if which == 2 => {
                // A forged header length: 0, past the end, huge.
                let n = [0u64, bytes.len() as u64, 1 << 40, u64::MAX][rng.below(4) as usize];
                bytes[..8].copy_from_slice(&n.to_le_bytes());
            }
            _ => {
                let j = [
                    "{", "[", "\"", "}", "]", ":", ",", "null", "1e999", "-1", "\u{feff}",
                ];
                let at = rng.below(bytes.len() as u64) as usize;
                let piece = j[rng.below(j.len() as u64) as usize].as_bytes().to_vec();
                bytes.splice(at..at, piece);
            }
        }
        for (f, orig) in files.iter().zip(&originals) {
            std::fs::write(m.join(f), orig).unwrap();
        }
        std::fs::write(m.join(files[which]), &bytes).unwrap();
        let loaded = rnmt::checkpoint::load_model_dir(&m, tch::Device::Cpu);
        if let Err(e) = loaded {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "case {case}: not one line: {msg}");
            assert!(
                msg.len() < 2000,
                "case {case}: {} bytes of message",
                msg.len()
            );
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "took {:?}",
        started.elapsed()
    );
}

/// Item 8: a CSV quote that is never closed names its line (it said `bad.csv:0`).
#[test]
fn an_unterminated_csv_quote_names_its_line() {
    use rnmt::corpus::{read_all, CorpusSource, Normalization, ReadOptions};
    let tmp = tempfile::tempdir().unwrap();
    let opts = ReadOptions {
        skip_bad_lines: false,
        max_line_bytes: 1 << 16,
        normalization: Normalization::Nfkc,
    };
    for (text, line) in [("\"open,x\nc,d\n", 1), ("a,b\n\"open,x\nc,d\n", 2)] {
        let p = tmp.path().join("bad.csv");
        std::fs::write(&p, text).unwrap();
        let err = read_all(&CorpusSource::from_path(&p), &opts)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("bad.csv:{line}: unterminated quote")),
            "{text:?}: {err}"
        );
    }
}
