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

/// `cmd` split at whitespace (no argument in these tests contains a space).
fn argv(cmd: &str) -> Vec<&str> {
    cmd.split_whitespace().collect()
}

/// Run each `(recorded sacrebleu run, rnmt-bleu command line)` in the fixture directory: its
/// stdout must be the recorded stdout, byte for byte. Returns the outputs in order.
fn assert_runs_match_sacrebleu(cases: &[(&str, &str)]) -> Vec<String> {
    cases
        .iter()
        .map(|&(name, cmd)| {
            let got = ok(&argv(cmd));
            assert_eq!(got, sacrebleu_stdout(name), "rnmt-bleu {cmd}");
            got
        })
        .collect()
}

/// Run in `dir` with `stdin`, expecting failure; stderr must contain every one of `needles`.
fn fails_with(dir: &Path, cmd: &str, stdin: Option<&[u8]>, needles: &[&str]) -> String {
    let err = fails(dir, &argv(cmd), stdin);
    for needle in needles {
        assert!(
            err.contains(needle),
            "rnmt-bleu {cmd}: {needle:?} missing in {err:?}"
        );
    }
    err
}

/// [`fails_with`], and the error is one line.
fn fails_in_one_line(dir: &Path, cmd: &str, stdin: Option<&[u8]>, needles: &[&str]) -> String {
    one_line(&fails_with(dir, cmd, stdin, needles)).to_string()
}

/// A temporary directory holding `files` (name, contents).
fn dir_with(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, contents) in files {
        std::fs::write(dir.path().join(name), contents).expect("write");
    }
    dir
}

#[test]
fn width_1_text_matches_sacrebleu_default_cli_output() {
    assert_runs_match_sacrebleu(&[("text_w1", "lohelp.ref.fr -i lohelp.hyp.fr -w 1")]);
}

#[test]
fn default_output_is_sacrebleu_text_with_two_decimals() {
    assert_runs_match_sacrebleu(&[("text_w2", "lohelp.ref.fr --input lohelp.hyp.fr")]);
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
    assert_runs_match_sacrebleu(&[
        (
            "text_w2_bleu_chrf",
            "lohelp.ref.fr -i lohelp.hyp.fr --metrics bleu,chrf",
        ),
        // sacrebleu sorts metrics by name whatever the order given
        (
            "text_w2_bleu_chrf",
            "lohelp.ref.fr -i lohelp.hyp.fr -m chrf -m bleu",
        ),
    ]);
}

#[test]
fn chrf_plus_plus_with_word_order_2() {
    assert!(sacrebleu_stdout("text_w2_chrfpp_bleu").contains("chrF2++|"));
    assert_runs_match_sacrebleu(&[
        (
            "text_w2_chrfpp_bleu",
            "lohelp.ref.fr -i lohelp.hyp.fr -m chrf,bleu --chrf-word-order 2",
        ),
        (
            "text_w2_chrfpp_bleu",
            "lohelp.ref.fr -i lohelp.hyp.fr -m chrf,bleu -cw 2",
        ),
    ]);
}

#[test]
fn json_format_matches_sacrebleu() {
    let got = assert_runs_match_sacrebleu(&[
        ("json_w2", "lohelp.ref.fr -i lohelp.hyp.fr --format json"),
        (
            "json_w1_bleu_chrf",
            "lohelp.ref.fr -i lohelp.hyp.fr -f json -w 1 -m bleu,chrf",
        ),
        (
            "json_chrf_w2",
            "lohelp.ref.fr -i lohelp.hyp.fr -f json -m chrf",
        ),
    ]);
    let parsed: Value = serde_json::from_str(&got[2]).expect("valid JSON");
    assert_eq!(parsed["name"], "chrF2");
}

#[test]
fn score_only() {
    assert_runs_match_sacrebleu(&[
        ("score_only_w2", "lohelp.ref.fr -i lohelp.hyp.fr -b"),
        (
            "score_only_w2_bleu_chrf",
            "lohelp.ref.fr -i lohelp.hyp.fr --score-only -m bleu,chrf",
        ),
        (
            "score_only_json_bleu_chrf",
            "lohelp.ref.fr -i lohelp.hyp.fr -b -m bleu,chrf -f json",
        ),
    ]);
}

#[test]
fn multiple_references_lowercase_and_intl_short_and_long_options() {
    let expected = sacrebleu_stdout("text_w2_2ref_lc_intl");
    assert!(expected.contains("nrefs:2|case:lc"));
    assert_runs_match_sacrebleu(&[
        (
            "text_w2_2ref_lc_intl",
            "lohelp.ref.fr lohelp.ref2.fr -i lohelp.hyp.fr -lc -tok intl",
        ),
        (
            "text_w2_2ref_lc_intl",
            "lohelp.ref.fr lohelp.ref2.fr -i lohelp.hyp.fr --lowercase --tokenize intl",
        ),
        (
            "text_w2_2ref_lc_intl",
            "lohelp.ref.fr lohelp.ref2.fr -i lohelp.hyp.fr -lc -tok=intl",
        ),
    ]);
    // multiple references also work with stdin
    let hyp = read_fixture("lohelp.hyp.fr");
    let args = argv("lohelp.ref.fr lohelp.ref2.fr -lc -tok intl");
    assert_eq!(
        ok_output(run_in(&fixture_dir(), &args, Some(&hyp)), &args),
        expected
    );
}

#[test]
fn smoothing_options() {
    assert!(sacrebleu_stdout("text_w2_floor").contains("smooth:floor[0.20]"));
    assert_runs_match_sacrebleu(&[
        (
            "text_w2_floor",
            "misc.ref -i misc.hyp --smooth-method floor --smooth-value 0.2",
        ),
        ("text_w2_floor", "misc.ref -i misc.hyp -s floor -sv 0.2"),
        ("text_w2_addk", "short.ref -i short.hyp -s add-k -tok char"),
    ]);
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
        let mut cmd = if ds == "misc_2ref" {
            "misc.ref misc.ref2 -i misc.hyp"
        } else {
            "short.ref -i short.hyp"
        }
        .to_string();
        cmd += &format!(
            " -tok {} --smooth-method {}",
            rec["tokenize"].as_str().expect("str"),
            rec["smooth_method"].as_str().expect("str")
        );
        if let Some(v) = rec["smooth_value"].as_f64() {
            cmd += &format!(" -sv {v}");
        }
        if rec["lowercase"].as_bool().expect("bool") {
            cmd += " -lc";
        }
        let got = ok(&argv(&cmd));
        assert_eq!(
            got.trim_end(),
            rec["line"].as_str().expect("str"),
            "rnmt-bleu {cmd}"
        );
        checked += 1;
    }
    assert!(checked >= 64, "{checked}");
}

#[test]
fn sentence_level_bleu() {
    let expected = sacrebleu_stdout("sentence_w2");
    assert_eq!(expected.lines().count(), 40);
    assert_runs_match_sacrebleu(&[
        ("sentence_w2", "misc.ref -i misc.hyp --sentence-level"),
        ("sentence_w2", "misc.ref -i misc.hyp -sl"),
        // like sacrebleu, sentence-level output ignores --format json
        ("sentence_w2_json", "short.ref -i short.hyp -sl -f json"),
    ]);
    // -b prints one number per line
    let scores = ok(&argv("misc.ref -i misc.hyp -sl -b"));
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
    assert_runs_match_sacrebleu(&[(
        "sentence_w2_chrf",
        "misc.ref -i misc.hyp -sl -m chrf --chrf-word-order 2",
    )]);
}

#[test]
fn sentence_level_rejects_several_metrics_and_paired_tests() {
    let dir = fixture_dir();
    for (cmd, needle) in [
        ("misc.ref -i misc.hyp -sl -m bleu,chrf", "only one metric"),
        (
            "misc.ref -i misc.hyp -sl --paired-bs misc.hyp",
            "sentence-level",
        ),
    ] {
        fails_with(&dir, cmd, None, &[needle]);
    }
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
    let got = ok(&argv(
        "lohelp.ref.fr -i lohelp.hyp.fr --paired-bs lohelp.hyp2.fr -m bleu,chrf",
    ));
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
    let text = ok(&argv(
        "lohelp.ref.fr -i lohelp.hyp.fr --paired-bs lohelp.hyp3.fr --paired-bs-n 200 --seed 7",
    ));
    assert!(text.contains("Paired bootstrap resampling test with 200 resampling trials"));
    assert!(text.contains("nrefs:1|bs:200|seed:7|case:mixed"));
}

/// A reader that went away (`rnmt-bleu ... | head -n 1`) is no error: exit 0, nothing on
/// stderr.
#[test]
fn a_closed_stdout_is_not_an_error() {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_rnmt-bleu"))
        .args(argv("misc.ref -i misc.hyp -sl"))
        .current_dir(fixture_dir())
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(err.is_empty(), "{err}");
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
    let dir = dir_with(&[
        ("ref.txt", b"a b c\nd e f\ng h\n"),
        ("hyp.txt", b"a b c\nd e f\n"),
        ("ref1.txt", b"x\ny\n"),
        ("sys.txt", b"1\n2\n3\n4\n"),
    ]);
    let dir = dir.path();
    fails_in_one_line(
        dir,
        "ref.txt -i hyp.txt",
        None,
        &["hyp.txt", "ref.txt", "2 lines", "3 lines"],
    );
    // the second reference is checked too, also for stdin
    fails_in_one_line(
        dir,
        "ref1.txt ref.txt",
        Some(b"a\nb\n"),
        &["<stdin>", "ref.txt", "3 lines"],
    );
    // and the paired system
    fails_in_one_line(
        dir,
        "ref1.txt -i hyp.txt --paired-bs sys.txt",
        None,
        &["sys.txt has 4 lines"],
    );
}

#[test]
fn invalid_utf8_names_file_and_line() {
    let dir = dir_with(&[
        ("ref.txt", b"a\nb\nc\n"),
        ("bad.txt", b"ok\nfine\nbroken \xff\xfe here\n"),
    ]);
    let dir = dir.path();
    fails_in_one_line(
        dir,
        "ref.txt -i bad.txt",
        None,
        &["bad.txt", "line 3", "not valid UTF-8"],
    );
    // invalid reference
    fails_in_one_line(dir, "bad.txt -i ref.txt", None, &["bad.txt", "line 3"]);
    // invalid stdin
    fails_in_one_line(dir, "ref.txt", Some(b"\xc3\n"), &["<stdin>", "line 1"]);
}

#[test]
fn missing_files_are_named() {
    let dir = dir_with(&[("ref.txt", b"a\n")]);
    let dir = dir.path();
    let line = fails_in_one_line(dir, "nope.txt -i ref.txt", None, &["nope.txt"]);
    // the message, then its cause (the I/O error) once: the whole chain in one place
    let enoent = std::io::Error::from_raw_os_error(2);
    assert_eq!(
        line,
        format!("rnmt-bleu: error: cannot read nope.txt: {enoent}")
    );
    fails_in_one_line(
        dir,
        "ref.txt -i missing-hyp.txt",
        None,
        &["missing-hyp.txt", "cannot read"],
    );
    fails_in_one_line(
        dir,
        "ref.txt -i ref.txt --paired-bs gone.txt",
        None,
        &["gone.txt"],
    );
}

/// sacrebleu exits with "Test set None contains no sentence" for an empty
/// hypothesis file and with a length error when only the reference is empty.
#[test]
fn empty_files_give_clear_errors_like_sacrebleu() {
    let dir = dir_with(&[("empty.txt", b""), ("one.txt", b"a b c\n")]);
    let dir = dir.path();
    fails_in_one_line(
        dir,
        "empty.txt -i empty.txt",
        None,
        &["empty.txt", "no lines"],
    );
    fails_in_one_line(dir, "empty.txt", Some(b""), &["<stdin>", "no lines"]);
    fails_in_one_line(
        dir,
        "empty.txt -i one.txt",
        None,
        &["one.txt has 1 line but", "empty.txt has 0 lines"],
    );
}

#[test]
fn empty_lines_score_like_sacrebleu() {
    // one empty hypothesis against a non-empty reference: BLEU 0 with BP 0
    let dir = dir_with(&[("ref.txt", b"a b c\n"), ("hyp.txt", b"\n")]);
    let args = argv("ref.txt -i hyp.txt -m bleu,chrf");
    let out = ok_output(run_in(dir.path(), &args, None), &args);
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
    for (cmd, needle) in [
        ("misc.ref -i misc.hyp -tok zh", "zh"),
        ("misc.ref -i misc.hyp -s floor -sv -1", "smooth_value"),
        ("misc.ref -i misc.hyp -m ter", "ter"),
        (
            "misc.ref -i misc.hyp --paired-bs misc.hyp --paired-bs-n 0",
            "at least 1",
        ),
        ("-i misc.hyp", "REF"),
    ] {
        fails_with(&dir, cmd, None, &[needle]);
    }
}

/// Issue 21, item 2: a huge `-w` is a usage error, not a panic ("Formatting argument out of
/// range", exit 101); the largest accepted width still works.
#[test]
fn a_huge_width_is_an_error_not_a_panic() {
    let dir = dir_with(&[("ref", b"a b c d\n")]);
    for w in ["1000000", "21"] {
        let out = run_in(dir.path(), &["ref", "-i", "ref", "-w", w], None);
        assert_eq!(out.status.code(), Some(2), "-w {w}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("0..=20"), "-w {w}: {err}");
    }
    let out = run_in(dir.path(), &["ref", "-i", "ref", "-w", "20", "-b"], None);
    assert!(out.status.success(), "{out:?}");
    let score = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(score.starts_with("100.0"), "{score}");
    assert_eq!(score.split('.').nth(1).map(str::len), Some(20), "{score}");
}
