//! The model tools end to end: `rnmt-translate --attention/--attention-svg`, ensembles
//! (`--model A --model B`), `train.keep_checkpoints`, `rnmt-average` and `curves.svg`.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use tch::{Kind, Tensor};

const LIMIT: Duration = Duration::from_secs(120);

fn average_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rnmt-average"));
    c.env_remove("LD_LIBRARY_PATH");
    c
}

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("tools-cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A tiny model trained with `extra` options in its own directory (once per test binary).
fn trained(name: &str, extra: &[&str]) -> PathBuf {
    let dir = scratch(name);
    let model = dir.join("model");
    train_ok(&dir, &model, extra);
    model
}

/// Trained for 40 updates, validated every 10, keeping the last 2 checkpoints.
fn kept_model() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        trained(
            "kept",
            &[
                "--max-steps",
                "40",
                "--set",
                "train.valid_every=10",
                "--set",
                "train.keep_checkpoints=2",
            ],
        )
    })
}

/// The tiny model without attention.
fn no_attention_model() -> &'static Path {
    static M: OnceLock<PathBuf> = OnceLock::new();
    M.get_or_init(|| {
        trained(
            "no-attention",
            &["--max-steps", "5", "--set", "model.decoder.attention=none"],
        )
    })
}

/// One line on stderr, the tool's name first, no panic, failure status.
fn assert_one_line_error(o: &Output, tool: &str, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "{tool} succeeded: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with(&format!("{tool}: error: ")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

/// A minimal XML well-formedness check: tags nest and close, one root element.
fn assert_well_formed(xml: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut rest = xml.trim();
    assert!(rest.starts_with("<svg"), "not an SVG document");
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("unclosed tag") + start;
        let tag = &rest[start + 1..end];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
        } else if !tag.starts_with('?') && !tag.starts_with('!') {
            if stack.is_empty() {
                roots += 1;
            }
            if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().unwrap().to_string();
                stack.push(name);
            }
        }
        rest = &rest[end + 1..];
    }
    assert!(stack.is_empty(), "unclosed elements {stack:?}");
    assert_eq!(roots, 1, "one root element");
    assert!(rest.trim().is_empty() || !rest.contains('<'));
}

#[test]
fn translate_writes_attention_as_json_lines_and_heatmaps() {
    let model = tiny_model();
    let dir = scratch("attention");
    let json = dir.join("att.jsonl");
    let svg = dir.join("svg");
    let input = b"Click the Save button.\n\nOpen the file & close it.\n";
    let args = [
        "--attention",
        json.to_str().unwrap(),
        "--attention-svg",
        svg.to_str().unwrap(),
        "--beam",
        "3",
    ];
    let o = translate_with(model, &args, input, LIMIT);
    assert!(o.status.success(), "{}", stderr(&o));
    let translations: Vec<String> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(translations.len(), 3);
    let text = std::fs::read_to_string(&json).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "one JSON line per input line");
    for (i, v) in lines.iter().enumerate() {
        assert_eq!(v["line"], i + 1);
        let src = v["source"].as_array().unwrap();
        let tgt = v["target"].as_array().unwrap();
        let m = v["attention"].as_array().unwrap();
        if i == 1 {
            assert!(
                src.is_empty() && tgt.is_empty() && m.is_empty(),
                "empty line: {v}"
            );
            continue;
        }
        assert_eq!(src.last().unwrap(), "</s>");
        assert_eq!(tgt.last().unwrap(), "</s>");
        assert_eq!(m.len(), tgt.len(), "rows = target tokens");
        for row in m {
            let row = row.as_array().unwrap();
            assert_eq!(row.len(), src.len(), "columns = source tokens");
            let sum: f64 = row.iter().map(|w| w.as_f64().unwrap()).sum();
            assert!((sum - 1.0).abs() < 1e-4, "row sums to {sum}");
        }
        // The target tokens spell the translation that was printed.
        let joined: String = tgt[..tgt.len() - 1]
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(joined.trim(), translations[i].trim(), "line {}", i + 1);
        // The heatmap: well-formed, one cell per weight, the tokens as labels.
        let path = svg.join(format!("{:06}.svg", i + 1));
        let picture = std::fs::read_to_string(&path).unwrap();
        assert_well_formed(&picture);
        let cells = m.len() * src.len();
        // The background and the frame are rectangles too.
        assert_eq!(
            picture.matches("<rect").count(),
            cells + 2,
            "{}",
            path.display()
        );
        assert!(picture.contains("&lt;/s&gt;"), "the </s> label, escaped");
    }
    assert!(
        !svg.join("000002.svg").exists(),
        "no heatmap for an empty line"
    );
    assert!(
        std::fs::read_to_string(svg.join("000003.svg"))
            .unwrap()
            .contains("&amp;"),
        "the & of the source, escaped"
    );
}

#[test]
fn attention_of_a_model_without_attention_is_a_clear_error() {
    let dir = scratch("attention-none");
    let json = dir.join("att.jsonl");
    let o = translate_with(
        no_attention_model(),
        &["--attention", json.to_str().unwrap()],
        b"Click the Save button.\n",
        LIMIT,
    );
    assert_one_line_error(&o, "rnmt-translate", &["--attention", "no attention"]);
    assert!(!json.exists(), "no partial attention file");
    // Translating without --attention works.
    let o = translate_with(
        no_attention_model(),
        &[],
        b"Click the Save button.\n",
        LIMIT,
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn an_ensemble_of_a_model_with_itself_translates_as_the_model() {
    let model = tiny_model();
    let input = b"Click the Save button.\nOpen the file.\n\nSelect a cell in the table.\n";
    let m = model.to_str().unwrap();
    for args in [
        vec!["--n-best", "3", "--beam", "3"],
        vec!["--beam", "1", "--scores"],
    ] {
        let single = translate_with(model, &args, input, LIMIT);
        let mut twice = args.clone();
        twice.extend(["--model", m]);
        let double = translate_with(model, &twice, input, LIMIT);
        assert!(
            single.status.success() && double.status.success(),
            "{}",
            stderr(&double)
        );
        assert!(!single.stdout.is_empty());
        assert_eq!(
            String::from_utf8_lossy(&single.stdout),
            String::from_utf8_lossy(&double.stdout),
            "{args:?}: translations and scores"
        );
    }
}

#[test]
fn an_ensemble_needs_one_tokenizer() {
    let other = trained(
        "other-vocab",
        &["--max-steps", "3", "--set", "data.tokenizer.vocab_size=300"],
    );
    let o = translate_with(
        tiny_model(),
        &["--model", other.to_str().unwrap()],
        b"Click the Save button.\n",
        LIMIT,
    );
    assert_one_line_error(
        &o,
        "rnmt-translate",
        &[other.to_str().unwrap(), "vocabulary", "same tokenizer"],
    );
}

fn f64_of(t: &Tensor) -> Tensor {
    t.to_kind(Kind::Double)
}

#[test]
fn training_keeps_the_last_checkpoints_and_averaging_gives_their_mean() {
    let model = kept_model();
    // Kept: the last two validations of metrics.csv.
    let metrics = std::fs::read_to_string(model.join("metrics.csv")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert!(steps.len() >= 4, "{metrics}");
    let mut kept: Vec<String> = std::fs::read_dir(model.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    let expected: Vec<String> = steps[steps.len() - 2..]
        .iter()
        .map(|s| format!("step-{s:08}.safetensors"))
        .collect();
    assert_eq!(kept, expected);
    // The last checkpoint is the final weights.
    assert!(same_tensors(
        &model.join("checkpoints").join(&expected[1]),
        &model.join("last").join("weights.safetensors")
    ));

    let out = scratch("averaged").join("model");
    let o = average_bin()
        .args(["--last", "2", "--output"])
        .arg(&out)
        .arg(model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let a = tensors(&model.join("checkpoints").join(&expected[0]));
    let b = tensors(&model.join("checkpoints").join(&expected[1]));
    let mean = tensors(&out.join("model.safetensors"));
    assert_eq!(mean.len(), a.len());
    let mut differed = false;
    for (((na, ta), (_, tb)), (nm, tm)) in a.iter().zip(&b).zip(&mean) {
        assert_eq!(na, nm);
        assert_eq!(tm.kind(), ta.kind());
        let want = ((f64_of(ta) + f64_of(tb)) / 2.0).to_kind(ta.kind());
        assert!(tm.equal(&want), "{na}: not the element-wise mean");
        differed |= !ta.equal(tb);
    }
    assert!(differed, "the two checkpoints should differ");
    for f in ["config.json", "tokenizer.json"] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(model.join(f)).unwrap(),
            "{f}"
        );
    }
    // The averaged directory is a model directory.
    let o = translate_with(&out, &[], b"Click the Save button.\n", LIMIT);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 1);
    // Averaging a checkpoint with itself gives it back.
    let same = scratch("averaged-same").join("model");
    let ck = model.join("checkpoints").join(&expected[1]);
    let o = average_bin()
        .arg("--output")
        .arg(&same)
        .arg(&ck)
        .arg(&ck)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(same_tensors(&same.join("model.safetensors"), &ck));
}

/// `train.average_last`: the mean of the last kept checkpoints is validated against the
/// best validated weights and becomes `model.safetensors` only when its BLEU is higher; the
/// line says which happened, and `model.safetensors` is then exactly what it says.
#[test]
fn training_averages_the_last_checkpoints_when_that_validates_better() {
    let dir = scratch("average-last");
    let model = dir.join("model");
    let o = train_ok(
        &dir,
        &model,
        &[
            "--max-steps",
            "40",
            "--set",
            "train.valid_every=10",
            "--set",
            "train.keep_checkpoints=3",
            "--set",
            "train.average_last=3",
        ],
    );
    let err = stderr(&o);
    // "averaging the checkpoints of updates A, B, C: validation BLEU X (loss L) against Y (M)
    // for the best validated weights, Ns: ..."
    let line = err
        .lines()
        .find(|l| l.starts_with("averaging the checkpoints of updates "))
        .unwrap_or_else(|| panic!("no averaging line: {err}"));
    let (head, tail) = line.split_once(": validation BLEU ").unwrap();
    let steps: Vec<u64> = head["averaging the checkpoints of updates ".len()..]
        .split(", ")
        .map(|s| s.parse().unwrap())
        .collect();
    // The last three validations' checkpoints (every 10 updates and at each epoch's end).
    assert_eq!(steps.len(), 3, "{line}");
    assert_eq!(steps[2], 40, "{line}");
    let words: Vec<&str> = tail.split_whitespace().collect();
    let num = |w: &str| -> f64 { w.trim_matches(|c| c == '(' || c == ')').parse().unwrap() };
    assert_eq!((words[1], words[3]), ("(loss", "against"), "{line}");
    let (averaged, averaged_loss, best, best_loss) =
        (num(words[0]), num(words[2]), num(words[4]), num(words[5]));
    let better = averaged > best || averaged == best && averaged_loss < best_loss;
    let ck = |s: u64| {
        model
            .join("checkpoints")
            .join(format!("step-{s:08}.safetensors"))
    };
    let parts = [
        tensors(&ck(steps[0])),
        tensors(&ck(steps[1])),
        tensors(&ck(steps[2])),
    ];
    let weights = tensors(&model.join("model.safetensors"));
    let is_mean = weights.iter().all(|(name, t)| {
        let sum = parts
            .iter()
            .map(|p| f64_of(&p.iter().find(|(n, _)| n == name).unwrap().1))
            .fold(None::<tch::Tensor>, |acc, x| {
                Some(acc.map_or(x.shallow_clone(), |a| a + x))
            })
            .unwrap();
        (sum / 3.0).to_kind(t.kind()).allclose(t, 1e-6, 1e-7, false)
    });
    if line.ends_with("is now the average") {
        assert!(better, "{line}");
        assert!(is_mean, "model.safetensors is not the mean: {line}");
    } else {
        assert!(line.ends_with("kept the best validated weights"), "{line}");
        assert!(!better, "{line}");
        assert!(!is_mean, "model.safetensors became the mean: {line}");
    }
    // Averaging needs the checkpoints it averages.
    let o = train(
        &dir,
        &dir.join("model-2"),
        &["--max-steps", "2", "--set", "train.average_last=3"],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("train.keep_checkpoints"), "{err}");
}

#[test]
fn averaging_checks_config_tokenizer_and_shapes() {
    let dir = scratch("average-errors");
    let tiny = tiny_model();
    let run = |inputs: &[&Path], out: &Path| {
        let mut c = average_bin();
        c.arg("--output").arg(out);
        for i in inputs {
            c.arg(i);
        }
        c.output().unwrap()
    };
    // Another model config.
    let o = run(&[tiny, no_attention_model()], &dir.join("a"));
    assert_one_line_error(
        &o,
        "rnmt-average",
        &[no_attention_model().to_str().unwrap(), "model config"],
    );
    assert!(!dir.join("a").join("model.safetensors").exists());
    // Weights of another shape under the same config.json.
    let wrong = dir.join("wrong");
    copy_dir(tiny, &wrong);
    std::fs::copy(
        no_attention_model().join("model.safetensors"),
        wrong.join("model.safetensors"),
    )
    .unwrap();
    let o = run(&[tiny, &wrong], &dir.join("b"));
    assert_one_line_error(
        &o,
        "rnmt-average",
        &["wrong/model.safetensors", "parameter"],
    );
    // A file outside any model directory, and an existing output directory.
    let stray = dir.join("stray.safetensors");
    std::fs::copy(tiny.join("model.safetensors"), &stray).unwrap();
    let o = run(&[&stray], &dir.join("c"));
    assert_one_line_error(&o, "rnmt-average", &["stray.safetensors", "config.json"]);
    let o = run(&[tiny], tiny);
    assert_one_line_error(&o, "rnmt-average", &["not empty"]);
    // --last with fewer kept checkpoints.
    let o = average_bin()
        .args(["--last", "2", "--output"])
        .arg(dir.join("d"))
        .arg(tiny)
        .output()
        .unwrap();
    assert_one_line_error(&o, "rnmt-average", &["train.keep_checkpoints"]);
}

#[test]
fn training_draws_learning_curves_from_the_metrics() {
    let model = kept_model();
    let svg = std::fs::read_to_string(model.join("curves.svg")).unwrap();
    assert_well_formed(&svg);
    for label in [
        "validation BLEU",
        "validation perplexity",
        "learning rate",
        "updates",
        "minutes of training",
    ] {
        assert!(svg.contains(label), "no label {label:?}");
    }
    let rows = std::fs::read_to_string(model.join("metrics.csv"))
        .unwrap()
        .lines()
        .count()
        - 1;
    // One marker per validation on each of the six panels.
    assert_eq!(svg.matches("<circle").count(), 6 * rows);
    assert!(
        !model.join(".curves.svg.tmp.svg").exists(),
        "written atomically"
    );
    // The default (keep_checkpoints = 0) keeps no checkpoints but draws the curves.
    assert!(!tiny_model().join("checkpoints").exists());
    assert!(tiny_model().join("curves.svg").is_file());
}
