//! End-to-end tests of the `rnmt-bleu` binary: sacrebleu's CLI output
//! (recorded in tests/fixtures/sacrebleu/expected_cli.json and
//! expected_corpus.json) must be reproduced byte for byte, and bad input must
//! produce clear one-line errors and a non-zero exit status.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sacrebleu")
}

fn load_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture_dir().join(name)).expect("fixture readable");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// sacrebleu's recorded stdout for a named run of the fixture generator.
fn sacrebleu_stdout(run: &str) -> String {
    let fx = load_json("expected_cli.json");
    fx["runs"][run]["stdout"]
        .as_str()
        .unwrap_or_else(|| panic!("no recorded run {run}"))
        .to_string()
}

/// Run the binary in `dir` with `args` and optional stdin bytes.
fn run_in(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rnmt-bleu"))
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(bytes).expect("stdin written");
    }
    child.wait_with_output().expect("binary finishes")
}

fn run(args: &[&str]) -> Output {
    run_in(&fixture_dir(), args, None)
}

/// Run successfully and return stdout.
fn ok(args: &[&str]) -> String {
    ok_output(run(args), args)
}

fn ok_output(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Run expecting failure; return stderr.
fn fails(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> String {
    let out = run_in(dir, args, stdin);
    assert!(!out.status.success(), "{args:?} unexpectedly succeeded");
    assert!(out.stdout.is_empty(), "{args:?} printed to stdout on error");
    let err = String::from_utf8(out.stderr).expect("UTF-8 stderr");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    err
}

fn read_fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).expect("fixture readable")
}

#[test]
fn width_1_text_matches_sacrebleu_default_cli_output() {
    let got = ok(&["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-w", "1"]);
    assert_eq!(got, sacrebleu_stdout("text_w1"));
}

#[test]
fn default_output_is_sacrebleu_text_with_two_decimals() {
    let got = ok(&["lohelp.ref.fr", "--input", "lohelp.hyp.fr"]);
    assert_eq!(got, sacrebleu_stdout("text_w2"));
}

#[test]
fn stdin_and_input_give_the_same_result() {
    let hyp = read_fixture("lohelp.hyp.fr");
    let got = ok_output(run_in(&fixture_dir(), &["lohelp.ref.fr"], Some(&hyp)), &[]);
    assert_eq!(got, sacrebleu_stdout("text_w2"));
}

#[test]
fn stdin_with_crlf_line_endings_is_stripped_like_sacrebleu() {
    let crlf: Vec<u8> = String::from_utf8(read_fixture("lohelp.hyp.fr"))
        .expect("UTF-8")
        .replace('\n', "\r\n")
        .into_bytes();
    let got = ok_output(run_in(&fixture_dir(), &["lohelp.ref.fr"], Some(&crlf)), &[]);
    assert_eq!(got, sacrebleu_stdout("text_w2"));
}

#[test]
fn bleu_and_chrf_lines_are_aligned_like_sacrebleu() {
    let got = ok(&[
        "lohelp.ref.fr",
        "-i",
        "lohelp.hyp.fr",
        "--metrics",
        "bleu,chrf",
    ]);
    assert_eq!(got, sacrebleu_stdout("text_w2_bleu_chrf"));
    // sacrebleu sorts metrics by name whatever the order given
    let got = ok(&[
        "lohelp.ref.fr",
        "-i",
        "lohelp.hyp.fr",
        "-m",
        "chrf",
        "-m",
        "bleu",
    ]);
    assert_eq!(got, sacrebleu_stdout("text_w2_bleu_chrf"));
}

#[test]
fn chrf_plus_plus_with_word_order_2() {
    let expected = sacrebleu_stdout("text_w2_chrfpp_bleu");
    assert!(expected.contains("chrF2++|"));
    let got = ok(&[
        "lohelp.ref.fr",
        "-i",
        "lohelp.hyp.fr",
        "-m",
        "chrf,bleu",
        "--chrf-word-order",
        "2",
    ]);
    assert_eq!(got, expected);
    let got = ok(&[
        "lohelp.ref.fr",
        "-i",
        "lohelp.hyp.fr",
        "-m",
        "chrf,bleu",
        "-cw",
        "2",
    ]);
    assert_eq!(got, expected);
}

#[test]
fn json_format_matches_sacrebleu() {
    let got = ok(&["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "--format", "json"]);
    assert_eq!(got, sacrebleu_stdout("json_w2"));
    let got = ok(&[
        "lohelp.ref.fr",
        "-i",
        "lohelp.hyp.fr",
        "-f",
        "json",
        "-w",
        "1",
        "-m",
        "bleu,chrf",
    ]);
    assert_eq!(got, sacrebleu_stdout("json_w1_bleu_chrf"));
    let got = ok(&[
        "lohelp.ref.fr",
        "-i",
        "lohelp.hyp.fr",
        "-f",
        "json",
        "-m",
        "chrf",
    ]);
    assert_eq!(got, sacrebleu_stdout("json_chrf_w2"));
    let parsed: Value = serde_json::from_str(&got).expect("valid JSON");
    assert_eq!(parsed["name"], "chrF2");
}

#[test]
fn score_only() {
    let got = ok(&["lohelp.ref.fr", "-i", "lohelp.hyp.fr", "-b"]);
    assert_eq!(got, sacrebleu_stdout("score_only_w2"));
    let got = ok(&[
        "lohelp.ref.fr",
        "-i",
        "lohelp.hyp.fr",
        "--score-only",
        "-m",
        "bleu,chrf",
    ]);
    assert_eq!(got, sacrebleu_stdout("score_only_w2_bleu_chrf"));
    let got = ok(&[
        "lohelp.ref.fr",
        "-i",
        "lohelp.hyp.fr",
        "-b",
        "-m",
        "bleu,chrf",
        "-f",
        "json",
    ]);
    assert_eq!(got, sacrebleu_stdout("score_only_json_bleu_chrf"));
}

#[test]
fn multiple_references_lowercase_and_intl_short_and_long_options() {
    let expected = sacrebleu_stdout("text_w2_2ref_lc_intl");
    assert!(expected.contains("nrefs:2|case:lc"));
    let short = ok(&[
        "lohelp.ref.fr",
        "lohelp.ref2.fr",
        "-i",
        "lohelp.hyp.fr",
        "-lc",
        "-tok",
        "intl",
    ]);
    assert_eq!(short, expected);
    let long = ok(&[
        "lohelp.ref.fr",
        "lohelp.ref2.fr",
        "-i",
        "lohelp.hyp.fr",
        "--lowercase",
        "--tokenize",
        "intl",
    ]);
    assert_eq!(long, expected);
    let eq = ok(&[
        "lohelp.ref.fr",
        "lohelp.ref2.fr",
        "-i",
        "lohelp.hyp.fr",
        "-lc",
        "-tok=intl",
    ]);
    assert_eq!(eq, expected);
    // multiple references also work with stdin
    let hyp = read_fixture("lohelp.hyp.fr");
    let args = ["lohelp.ref.fr", "lohelp.ref2.fr", "-lc", "-tok", "intl"];
    assert_eq!(
        ok_output(run_in(&fixture_dir(), &args, Some(&hyp)), &args),
        expected
    );
}

#[test]
fn smoothing_options() {
    let expected = sacrebleu_stdout("text_w2_floor");
    assert!(expected.contains("smooth:floor[0.20]"));
    let got = ok(&[
        "misc.ref",
        "-i",
        "misc.hyp",
        "--smooth-method",
        "floor",
        "--smooth-value",
        "0.2",
    ]);
    assert_eq!(got, expected);
    let got = ok(&["misc.ref", "-i", "misc.hyp", "-s", "floor", "-sv", "0.2"]);
    assert_eq!(got, expected);
    let got = ok(&[
        "short.ref",
        "-i",
        "short.hyp",
        "-s",
        "add-k",
        "-tok",
        "char",
    ]);
    assert_eq!(got, sacrebleu_stdout("text_w2_addk"));
}

/// Every tokenizer x smoothing x case combination through the CLI, against
/// the API-level fixtures (sacrebleu's `str(score)` line).
#[test]
fn every_tokenizer_smoothing_and_case_through_the_cli() {
    let fx = load_json("expected_corpus.json");
    let mut checked = 0;
    for rec in fx["bleu"].as_array().expect("array") {
        let ds = rec["dataset"].as_str().expect("str");
        if !(ds == "misc_2ref" || ds == "short") {
            continue;
        }
        let mut args: Vec<String> = if ds == "misc_2ref" {
            vec![
                "misc.ref".into(),
                "misc.ref2".into(),
                "-i".into(),
                "misc.hyp".into(),
            ]
        } else {
            vec!["short.ref".into(), "-i".into(), "short.hyp".into()]
        };
        args.extend(["-tok".into(), rec["tokenize"].as_str().expect("str").into()]);
        args.extend([
            "--smooth-method".into(),
            rec["smooth_method"].as_str().expect("str").into(),
        ]);
        if let Some(v) = rec["smooth_value"].as_f64() {
            args.extend(["-sv".into(), v.to_string()]);
        }
        if rec["lowercase"].as_bool().expect("bool") {
            args.push("-lc".into());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let got = ok(&argv);
        assert_eq!(
            got.trim_end(),
            rec["line"].as_str().expect("str"),
            "{argv:?}"
        );
        checked += 1;
    }
    assert!(checked >= 64, "{checked}");
}

#[test]
fn sentence_level_bleu() {
    let expected = sacrebleu_stdout("sentence_w2");
    assert_eq!(expected.lines().count(), 40);
    assert_eq!(
        ok(&["misc.ref", "-i", "misc.hyp", "--sentence-level"]),
        expected
    );
    assert_eq!(ok(&["misc.ref", "-i", "misc.hyp", "-sl"]), expected);
    // like sacrebleu, sentence-level output ignores --format json
    assert_eq!(
        ok(&["short.ref", "-i", "short.hyp", "-sl", "-f", "json"]),
        sacrebleu_stdout("sentence_w2_json")
    );
    // -b prints one number per line
    let scores = ok(&["misc.ref", "-i", "misc.hyp", "-sl", "-b"]);
    let from_lines: Vec<&str> = expected
        .lines()
        .map(|l| {
            l.split(" = ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .expect("score")
        })
        .collect();
    assert_eq!(scores.lines().collect::<Vec<_>>(), from_lines);
}

#[test]
fn sentence_level_chrf_plus_plus() {
    let got = ok(&[
        "misc.ref",
        "-i",
        "misc.hyp",
        "-sl",
        "-m",
        "chrf",
        "--chrf-word-order",
        "2",
    ]);
    assert_eq!(got, sacrebleu_stdout("sentence_w2_chrf"));
}

#[test]
fn sentence_level_rejects_several_metrics_and_paired_tests() {
    let err = fails(
        &fixture_dir(),
        &["misc.ref", "-i", "misc.hyp", "-sl", "-m", "bleu,chrf"],
        None,
    );
    assert!(err.contains("only one metric"), "{err}");
    let err = fails(
        &fixture_dir(),
        &[
            "misc.ref",
            "-i",
            "misc.hyp",
            "-sl",
            "--paired-bs",
            "misc.hyp",
        ],
        None,
    );
    assert!(err.contains("sentence-level"), "{err}");
}

/// Replace the bootstrap-dependent numbers `(μ ± ci)` and `(p = ...)` so the
/// rest of the paired report can be compared byte for byte.
fn mask_bootstrap_numbers(s: &str) -> String {
    let mut out = String::new();
    for line in s.lines() {
        let mut l = line.to_string();
        for (open, close) in [("(", " ± "), (" ± ", ")"), ("(p = ", ")")] {
            let mut start = 0;
            while let Some(i) = l[start..].find(open) {
                let a = start + i + open.len();
                let Some(j) = l[a..].find(close) else { break };
                let inner = &l[a..a + j];
                if !inner.is_empty() && inner.chars().all(|c| c.is_ascii_digit() || c == '.') {
                    l.replace_range(a..a + j, &"#".repeat(inner.len()));
                }
                start = a;
            }
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

#[test]
fn paired_bootstrap_text_report_matches_sacrebleu_layout() {
    let args = [
        "lohelp.ref.fr",
        "-i",
        "lohelp.hyp.fr",
        "--paired-bs",
        "lohelp.hyp2.fr",
        "-m",
        "bleu,chrf",
    ];
    let got = ok(&args);
    let expected = sacrebleu_stdout("paired_bs_text");
    assert_eq!(
        mask_bootstrap_numbers(&got),
        mask_bootstrap_numbers(&expected)
    );
    assert_ne!(
        mask_bootstrap_numbers(&got),
        got,
        "masking must hide something"
    );
    // the actual scores (not resampled) are identical, and the difference is significant
    assert!(got.contains("│ Baseline: lohelp.hyp.fr │ 75.85 ("), "{got}");
    assert!(got.contains("│          lohelp.hyp2.fr │ 53.06 ("), "{got}");
    assert_eq!(got.matches(")*").count(), 2, "{got}");
    assert!(got.contains(" - BLEU       nrefs:1|bs:1000|seed:12345|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0"));
}

fn paired_json(system: &str, extra: &[&str]) -> Value {
    let mut args = vec![
        "lohelp.ref.fr",
        "-i",
        "lohelp.hyp.fr",
        "--paired-bs",
        system,
        "-m",
        "bleu,chrf",
        "-f",
        "json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&ok(&args)).expect("valid JSON")
}

#[test]
fn paired_bootstrap_json_p_values_agree_with_sacrebleu() {
    let fx = load_json("expected_paired.json");
    for rec in fx["paired"].as_array().expect("array") {
        let system = rec["system"].as_str().expect("str");
        let got = paired_json(system, &[]);
        assert_eq!(got[0]["system"], "Baseline: lohelp.hyp.fr");
        assert_eq!(got[1]["system"], system);
        for key in ["BLEU", "chrF2"] {
            let exp = &rec["results"][key];
            assert!(got[0][key]["p_value"].is_null());
            for i in 0..2 {
                let (a, b) = (got[i][key]["score"].as_f64(), exp[i]["score"].as_f64());
                assert!(
                    (a.expect("score") - b.expect("score")).abs() < 1e-9,
                    "{system} {key}"
                );
            }
            let p = got[1][key]["p_value"].as_f64().expect("p");
            let sp = exp[1]["p_value"].as_f64().expect("p");
            assert_eq!(
                p <= 0.05,
                sp <= 0.05,
                "{system} {key}: {p} vs sacrebleu {sp}"
            );
        }
    }
}

#[test]
fn paired_bootstrap_options_n_and_seed() {
    let a = paired_json("lohelp.hyp3.fr", &["--seed", "7", "--paired-bs-n", "200"]);
    let b = paired_json("lohelp.hyp3.fr", &["--seed", "7", "-pbsn", "200"]);
    assert_eq!(a, b, "same seed must give the same resamples");
    let c = paired_json("lohelp.hyp3.fr", &["--seed", "8", "--paired-bs-n", "200"]);
    assert_ne!(
        a[1]["BLEU"]["mean"], c[1]["BLEU"]["mean"],
        "seed must matter"
    );
    assert_eq!(a[1]["BLEU"]["score"], c[1]["BLEU"]["score"]);
    // p-values are multiples of 1 / (n + 1)
    let p = a[1]["BLEU"]["p_value"].as_f64().expect("p") * 201.0;
    assert!((p - p.round()).abs() < 1e-6, "{p}");
    let text = ok(&[
        "lohelp.ref.fr",
        "-i",
        "lohelp.hyp.fr",
        "--paired-bs",
        "lohelp.hyp3.fr",
        "--paired-bs-n",
        "200",
        "--seed",
        "7",
    ]);
    assert!(text.contains("Paired bootstrap resampling test with 200 resampling trials"));
    assert!(text.contains("nrefs:1|bs:200|seed:7|case:mixed"));
}

// ---------------------------------------------------------------- bad input

fn one_line(err: &str) -> &str {
    let trimmed = err.trim_end();
    assert_eq!(
        trimmed.lines().count(),
        1,
        "error must be one line: {err:?}"
    );
    trimmed
}

#[test]
fn different_line_counts_name_both_files_and_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ref.txt"), "a b c\nd e f\ng h\n").expect("write");
    std::fs::write(dir.path().join("hyp.txt"), "a b c\nd e f\n").expect("write");
    let err = fails(dir.path(), &["ref.txt", "-i", "hyp.txt"], None);
    let line = one_line(&err);
    for needle in ["hyp.txt", "ref.txt", "2 lines", "3 lines"] {
        assert!(line.contains(needle), "{needle:?} missing in {line:?}");
    }
    // the second reference is checked too, also for stdin
    std::fs::write(dir.path().join("ref1.txt"), "x\ny\n").expect("write");
    let err = fails(dir.path(), &["ref1.txt", "ref.txt"], Some(b"a\nb\n"));
    let line = one_line(&err);
    assert!(
        line.contains("<stdin>") && line.contains("ref.txt") && line.contains("3 lines"),
        "{line}"
    );
    // and the paired system
    std::fs::write(dir.path().join("sys.txt"), "1\n2\n3\n4\n").expect("write");
    let err = fails(
        dir.path(),
        &["ref1.txt", "-i", "hyp.txt", "--paired-bs", "sys.txt"],
        None,
    );
    assert!(one_line(&err).contains("sys.txt has 4 lines"), "{err}");
}

#[test]
fn invalid_utf8_names_file_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ref.txt"), "a\nb\nc\n").expect("write");
    std::fs::write(
        dir.path().join("bad.txt"),
        b"ok\nfine\nbroken \xff\xfe here\n",
    )
    .expect("write");
    let line = one_line(&fails(dir.path(), &["ref.txt", "-i", "bad.txt"], None)).to_string();
    assert!(
        line.contains("bad.txt") && line.contains("line 3"),
        "{line}"
    );
    assert!(line.contains("not valid UTF-8"), "{line}");
    // invalid reference
    let line = one_line(&fails(dir.path(), &["bad.txt", "-i", "ref.txt"], None)).to_string();
    assert!(
        line.contains("bad.txt") && line.contains("line 3"),
        "{line}"
    );
    // invalid stdin
    let line = one_line(&fails(dir.path(), &["ref.txt"], Some(b"\xc3\n"))).to_string();
    assert!(
        line.contains("<stdin>") && line.contains("line 1"),
        "{line}"
    );
}

#[test]
fn missing_files_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ref.txt"), "a\n").expect("write");
    let line = one_line(&fails(dir.path(), &["nope.txt", "-i", "ref.txt"], None)).to_string();
    assert!(line.contains("nope.txt"), "{line}");
    let line = one_line(&fails(
        dir.path(),
        &["ref.txt", "-i", "missing-hyp.txt"],
        None,
    ))
    .to_string();
    assert!(
        line.contains("missing-hyp.txt") && line.contains("cannot read"),
        "{line}"
    );
    let line = one_line(&fails(
        dir.path(),
        &["ref.txt", "-i", "ref.txt", "--paired-bs", "gone.txt"],
        None,
    ))
    .to_string();
    assert!(line.contains("gone.txt"), "{line}");
}

/// sacrebleu exits with "Test set None contains no sentence" for an empty
/// hypothesis file and with a length error when only the reference is empty.
#[test]
fn empty_files_give_clear_errors_like_sacrebleu() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("empty.txt"), "").expect("write");
    std::fs::write(dir.path().join("one.txt"), "a b c\n").expect("write");
    let line = one_line(&fails(dir.path(), &["empty.txt", "-i", "empty.txt"], None)).to_string();
    assert!(
        line.contains("empty.txt") && line.contains("no lines"),
        "{line}"
    );
    let line = one_line(&fails(dir.path(), &["empty.txt"], Some(b""))).to_string();
    assert!(
        line.contains("<stdin>") && line.contains("no lines"),
        "{line}"
    );
    let line = one_line(&fails(dir.path(), &["empty.txt", "-i", "one.txt"], None)).to_string();
    assert!(
        line.contains("one.txt has 1 line but") && line.contains("empty.txt has 0 lines"),
        "{line}"
    );
}

#[test]
fn empty_lines_score_like_sacrebleu() {
    // one empty hypothesis against a non-empty reference: BLEU 0 with BP 0
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("ref.txt"), "a b c\n").expect("write");
    std::fs::write(dir.path().join("hyp.txt"), "\n").expect("write");
    let out = ok_output(
        run_in(
            dir.path(),
            &["ref.txt", "-i", "hyp.txt", "-m", "bleu,chrf"],
            None,
        ),
        &[],
    );
    assert_eq!(
        out,
        "  BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = 0.00 0.0/0.0/0.0/0.0 \
         (BP = 0.000 ratio = 0.000 hyp_len = 0 ref_len = 3)\n\
         chrF2|nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0 = 0.00\n"
    );
}

#[test]
fn invalid_options_are_rejected() {
    let dir = fixture_dir();
    let err = fails(&dir, &["misc.ref", "-i", "misc.hyp", "-tok", "zh"], None);
    assert!(err.contains("zh"), "{err}");
    let err = fails(
        &dir,
        &["misc.ref", "-i", "misc.hyp", "-s", "floor", "-sv", "-1"],
        None,
    );
    assert!(err.contains("smooth_value"), "{err}");
    let err = fails(&dir, &["misc.ref", "-i", "misc.hyp", "-m", "ter"], None);
    assert!(err.contains("ter"), "{err}");
    let err = fails(
        &dir,
        &[
            "misc.ref",
            "-i",
            "misc.hyp",
            "--paired-bs",
            "misc.hyp",
            "--paired-bs-n",
            "0",
        ],
        None,
    );
    assert!(err.contains("at least 1"), "{err}");
    let err = fails(&dir, &["-i", "misc.hyp"], None);
    assert!(err.contains("REF"), "{err}");
}
