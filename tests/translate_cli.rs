//! rnmt-translate end to end with a tiny model trained once for this test binary.
mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::*;

fn model() -> &'static Path {
    tiny_model()
}

fn translate(args: &[&str], input: &[u8]) -> Output {
    translate_with(model(), args, input, Duration::from_secs(300))
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

const LINES: &str = "Click the Save button.\n\nChoose Format - Cells.\nThe Navigator window.\n";

#[test]
fn one_output_line_per_input_line_in_order() {
    let o = translate(&["--beam", "3"], LINES.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.split_terminator('\n').collect();
    assert_eq!(lines.len(), 4, "{out:?}");
    assert_eq!(
        lines[1], "",
        "an empty input line gives an empty output line"
    );
    assert!(
        lines.iter().filter(|l| !l.is_empty()).count() >= 2,
        "{out:?}"
    );
    // Detokenized text, never byte-level subword pieces.
    assert!(!out.contains('Ġ') && !out.contains("</s>"), "{out:?}");
    // Each line is translated on its own: reordering the input reorders the output.
    let reversed: String = LINES.lines().rev().map(|l| format!("{l}\n")).collect();
    let o2 = translate(&["--beam", "3"], reversed.as_bytes());
    let mut back: Vec<&str> = std::str::from_utf8(&o2.stdout)
        .unwrap()
        .split_terminator('\n')
        .collect();
    back.reverse();
    assert_eq!(back, lines);
    // No trailing newline on the last input line still gives its line.
    let o3 = translate(&["--beam", "3"], b"Click the Save button.");
    assert_eq!(stdout(&o3), format!("{}\n", lines[0]));
}

#[test]
fn batch_size_does_not_change_translations() {
    let input: String = head("lohelp.en-fr.test.tsv", 30)
        .lines()
        .map(|l| format!("{}\n", l.split('\t').next().unwrap()))
        .collect();
    let a = translate(&["--batch-size", "1"], input.as_bytes());
    let b = translate(&["--batch-size", "64"], input.as_bytes());
    let c = translate(&["--batch-size", "7", "--scores"], input.as_bytes());
    assert!(a.status.success() && b.status.success(), "{}", stderr(&a));
    assert_eq!(stdout(&a), stdout(&b));
    let without_scores: String = stdout(&c)
        .lines()
        .map(|l| format!("{}\n", l.split_once('\t').unwrap().1))
        .collect();
    assert_eq!(without_scores, stdout(&a));
}

/// Lines ordered by length within a window, and batches on several workers, change neither
/// the translations nor their order.
#[test]
fn length_windows_and_workers_do_not_change_translations() {
    let input: String = head("lohelp.en-fr.test.tsv", 60)
        .lines()
        .enumerate()
        .map(|(i, l)| match i % 9 {
            4 => "\n".to_string(), // empty lines among them
            _ => format!("{}\n", l.split('\t').next().unwrap()),
        })
        .collect();
    let plain = translate(
        &[
            "--beam",
            "3",
            "--workers",
            "1",
            "--window",
            "1",
            "--batch-size",
            "4",
        ],
        input.as_bytes(),
    );
    assert!(plain.status.success(), "{}", stderr(&plain));
    assert_eq!(stdout(&plain).lines().count(), 60);
    for args in [
        ["--workers", "1", "--window", "1000"],
        ["--workers", "3", "--window", "1"],
        ["--workers", "3", "--window", "17"],
    ] {
        let mut all = vec!["--beam", "3", "--batch-size", "4", "--scores"];
        all.extend(args);
        let o = translate(&all, input.as_bytes());
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        let text: String = stdout(&o)
            .lines()
            .map(|l| format!("{}\n", l.split_once('\t').unwrap().1))
            .collect();
        assert_eq!(text, stdout(&plain), "{args:?}");
    }
    let zero = translate(&["--workers", "0"], b"a\n");
    assert!(!zero.status.success());
    assert!(stderr(&zero).contains("--workers"), "{}", stderr(&zero));
}

#[test]
fn streams_line_by_line() {
    let mut child = spawn_translate(model(), &[]);
    let mut stdin = child.stdin.take().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut got = Vec::new();
    for line in ["Click the Save button.", "", "Choose Format - Cells."] {
        // The input stays open: the answer must come before end of input.
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        out.read_line(&mut answer).unwrap();
        assert!(answer.ends_with('\n'), "no full line for {line:?}");
        got.push(answer);
    }
    assert_eq!(got[1], "\n");
    drop(stdin);
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "");
    assert!(child.wait().unwrap().success());
}

#[test]
fn n_best_lists_and_scores() {
    let o = translate(
        &["--beam", "4", "--n-best", "3"],
        b"Click the Save button.\nThe Navigator window.\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 6, "{out}");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r.len(), 3, "{out}");
        assert_eq!(r[0], (i / 3).to_string());
        let score: f64 = r[1].parse().unwrap();
        assert!(score <= 0.0);
    }
    // The first of each n-best list is the 1-best translation.
    let best = stdout(&translate(
        &["--beam", "4"],
        b"Click the Save button.\nThe Navigator window.\n",
    ));
    let firsts: Vec<&str> = best.lines().collect();
    assert_eq!(rows[0][2], firsts[0]);
    assert_eq!(rows[3][2], firsts[1]);
    let bad = translate(&["--beam", "2", "--n-best", "3"], b"x\n");
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("n-best"), "{}", stderr(&bad));
}

#[test]
fn invalid_utf8_names_the_line() {
    let input = b"Click the Save button.\nbad \xff byte\nok\n";
    let o = translate(&[], input);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("<stdin>:2") && err.contains("invalid UTF-8"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert_eq!(
        stdout(&o).lines().count(),
        1,
        "the line before is translated"
    );
    let o = translate(&["--lossy-utf8"], input);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 3);
    assert!(stderr(&o).contains("<stdin>:2"), "{}", stderr(&o));
}

#[test]
fn over_long_lines_are_truncated_with_a_warning() {
    let long = "Click the Save button to save the document. ".repeat(10);
    let o = translate(
        &["--max-input-tokens", "8", "--beam", "1"],
        format!("short\n{long}\n").as_bytes(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 2);
    let err = stderr(&o);
    assert!(
        err.contains("<stdin>:2") && err.contains("truncated"),
        "{err}"
    );
    assert!(!err.contains("<stdin>:1"), "{err}");
}

#[test]
fn files_in_and_out() {
    let tmp = tempfile::tempdir().unwrap();
    let (input, output) = (tmp.path().join("in.txt"), tmp.path().join("out.txt"));
    std::fs::write(&input, LINES).unwrap();
    let o = bin("rnmt-translate")
        .arg("--model")
        .arg(model())
        .args(["--device", &common::device_arg(), "--beam", "3", "--input"])
        .arg(&input)
        .arg("--output")
        .arg(&output)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stdout.is_empty());
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        stdout(&translate(&["--beam", "3"], LINES.as_bytes()))
    );
}

#[test]
fn closed_pipe_exits_quietly() {
    // More output than a pipe buffer holds (64 KiB), so writing must hit the closed pipe.
    let input: String = "Click the Save button.\n".repeat(4000);
    let mut child = spawn_translate(model(), &["--beam", "1", "--batch-size", "4"]);
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    drop(out); // like `| head -1`
    let o = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

#[test]
fn missing_or_mismatched_model_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let o = bin("rnmt-translate")
        .arg("--model")
        .arg(tmp.path().join("nope"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("nope") && stderr(&o).trim().lines().count() == 1,
        "{}",
        stderr(&o)
    );

    // A directory without config.json.
    let o = bin("rnmt-translate")
        .arg("--model")
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("config.json"), "{}", stderr(&o));

    // Weights from another architecture.
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    for f in ["tokenizer.json", "model.safetensors"] {
        std::fs::copy(model().join(f), other.join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model().join("config.json")).unwrap())
            .unwrap();
    config["model"]["decoder"]["hidden"] = serde_json::json!(24);
    std::fs::write(other.join("config.json"), config.to_string()).unwrap();
    let load = |dir: &Path| {
        bin("rnmt-translate")
            .arg("--model")
            .arg(dir)
            .output()
            .unwrap()
    };
    let o = load(&other);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("do not belong") && err.trim().lines().count() == 1,
        "{err}"
    );

    // A tokenizer from another model.
    config["model"]["decoder"]["hidden"] = serde_json::json!(32);
    config["model"]["src_vocab"] = serde_json::json!(999);
    std::fs::write(other.join("config.json"), config.to_string()).unwrap();
    let o = load(&other);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("different models"), "{}", stderr(&o));
}

/// scripts/evaluate.sh translates, scores with BLEU and chrF, keeps the hypotheses next to
/// the model, and refuses to score when a step fails.
#[test]
fn evaluation_script() {
    let tmp = tempfile::tempdir().unwrap();
    let model_copy = tmp.path().join("model");
    std::fs::create_dir(&model_copy).unwrap();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        std::fs::copy(model().join(f), model_copy.join(f)).unwrap();
    }
    let test = tmp.path().join("test.tsv");
    std::fs::write(&test, head("lohelp.en-fr.test.tsv", 12)).unwrap();
    let script = root().join("scripts/evaluate.sh");
    let run = |args: &[&Path]| {
        std::process::Command::new("bash")
            .arg(&script)
            .args(args)
            .env("TRANSLATE_OPTS", "--beam 2 --threads 1")
            .output()
            .unwrap()
    };
    let o = run(&[&model_copy, &test]);
    let out = stdout(&o);
    assert!(o.status.success(), "{}{}", out, stderr(&o));
    assert!(
        out.contains("BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = "),
        "{out}"
    );
    assert!(out.contains("chrF2|"), "{out}");
    let hyp = model_copy.join("eval/test.hyp");
    assert_eq!(std::fs::read_to_string(&hyp).unwrap().lines().count(), 12);

    // A malformed test file: a clear message, and no score.
    let bad = tmp.path().join("bad.tsv");
    std::fs::write(&bad, "one\tun\ntwo without a tab\n").unwrap();
    let o = run(&[&model_copy, &bad]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad.tsv:2"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("BLEU"), "{}", stdout(&o));

    // Translation fails (not a model directory): no score.
    let o = run(&[tmp.path(), &test]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no score reported"), "{}", stderr(&o));
    assert!(!stdout(&o).contains("BLEU"));
}

/// `decode.json`, written by rnmt-train's calibration, sets the model's decoding defaults; a
/// model directory without it decodes exactly as before (alpha 1, the `finished` rule); the
/// command line wins over the file.
#[test]
fn decoding_defaults_come_from_the_model_directory() {
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model().join("decode.json")).unwrap())
            .unwrap();
    let grid = written["calibration"]["grid"].as_array().unwrap();
    assert_eq!(grid.len(), rnmt::calibrate::ALPHA_GRID.len());
    let best = grid
        .iter()
        .map(|g| g[1].as_f64().unwrap())
        .fold(f64::MIN, f64::max);
    let alpha = written["alpha"].as_f64().unwrap();
    assert!(
        grid.iter()
            .any(|g| g[0].as_f64() == Some(alpha) && g[1].as_f64() == Some(best)),
        "the chosen alpha has the best BLEU of the grid: {written}"
    );

    let input = b"Click the Save button.\nChoose Format - Cells.\nThe Navigator window.\nTo insert a new row, choose Insert - Rows.\n";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_dir(model(), &dir);
    // The n-best lists without their scores: the last digit of a score can differ between
    // two processes (libtorch's threaded reductions), the hypotheses and their order do not.
    let run = |args: &[&str]| {
        let o = translate_with(&dir, args, input, Duration::from_secs(300));
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                format!("{}\t{}", f[0], f[2])
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let nbest = ["--beam", "4", "--n-best", "4"];
    let stated = |alpha: &str, stop: &str| {
        run(&[&nbest[..], &["--alpha", alpha, "--beam-stop", stop]].concat())
    };
    // With the calibrated file: its alpha.
    assert_eq!(run(&nbest), stated(&alpha.to_string(), "finished"));
    // Without it: today's defaults.
    std::fs::remove_file(dir.join("decode.json")).unwrap();
    assert_eq!(run(&nbest), stated("1", "finished"));
    // Another file: other defaults, which the command can still override.
    let (old, other) = (stated("1", "finished"), stated("3", "patient"));
    assert_ne!(
        old, other,
        "the two settings must decode differently for this test"
    );
    std::fs::write(
        dir.join("decode.json"),
        r#"{"alpha": 3.0, "stop": "patient"}"#,
    )
    .unwrap();
    assert_eq!(run(&nbest), other);
    assert_eq!(stated("1", "finished"), old);
}
