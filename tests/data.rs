//! The prepared corpus: rnmt-prepare, the cache of rnmt-train, several shards, changed and
//! damaged inputs, an interrupted prepare, weighted corpora.
mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use rnmt::corpus::{self, CorpusSource, ReadOptions};
use rnmt::data::prepare::{read_manifest, Manifest};
use rnmt::tokenizer::Tokenizers;

fn prepare(train: &[&Path], out: &Path, config: &Path, extra: &[&str]) -> Output {
    let mut c = bin("rnmt-prepare");
    for t in train {
        c.arg("--train").arg(t);
    }
    c.arg("--out").arg(out).arg("--config").arg(config);
    c.args(extra).output().unwrap()
}

fn manifest(dir: &Path) -> Manifest {
    read_manifest(dir).expect("a manifest")
}

/// rnmt-train (the tiny corpus `train`/`valid` and `config`) into `model` on the prepared
/// directory `data_dir`, with `extra` arguments.
fn train_prepared(
    (train, valid, config): (&Path, &Path, &Path),
    model: &Path,
    data_dir: &Path,
    extra: &[&str],
) -> Output {
    train_command(train, valid, model, Some(config))
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .output()
        .unwrap()
}

fn weights(dir: &Path) -> PathBuf {
    dir.join("last/weights.safetensors")
}

/// rnmt-prepare writes several shards; rnmt-train on them uses them as they are, and trains
/// exactly as on its own one-shard prepare; the tokenizers are those trained on every pair.
#[test]
fn prepared_shards_train_like_the_default_prepare() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, valid) = tiny_corpus(tmp.path());
    let config = tiny_config(tmp.path());
    let prepared = tmp.path().join("prepared");
    let shards = ["--set", "data.shard_pairs=64"];
    let o = prepare(&[&train], &prepared, &config, &shards);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("train: 300 pairs read from"), "{err}");
    assert!(err.contains("pairs/s"), "{err}");
    let m = manifest(&prepared);
    let kept = m.corpora[0].kept;
    assert!(kept > 200 && kept <= 300, "{kept}");
    assert_eq!(m.corpora[0].shards.len() as u64, kept.div_ceil(64));
    assert_eq!(m.id_width, 2);
    assert_eq!(m.inputs[0].bytes, std::fs::metadata(&train).unwrap().len());
    // A second prepare finds it done.
    let again = prepare(&[&train], &prepared, &config, &shards);
    assert!(
        stderr(&again).contains("nothing to do"),
        "{}",
        stderr(&again)
    );

    // The tokenizers are exactly those trained on all pairs in memory (the sample holds all).
    let cfg: rnmt::config::Config =
        toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let (pairs, _) =
        corpus::read_all(&CorpusSource::from_path(&train), &ReadOptions::default()).unwrap();
    let direct = Tokenizers::train(&pairs, &cfg.data.tokenizer).unwrap();
    let direct_dir = tmp.path().join("direct");
    direct.save_dir(&direct_dir).unwrap();
    assert_eq!(
        std::fs::read(direct_dir.join("tokenizer.json")).unwrap(),
        std::fs::read(prepared.join("tokenizer.json")).unwrap()
    );

    let sharded = tmp.path().join("sharded");
    let o = train_prepared(
        (&train, &valid, &config),
        &sharded,
        &prepared,
        &[&shards[..], &["--max-steps", "6"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("(prepared earlier;"), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(sharded.join("tokenizer.json")).unwrap(),
        std::fs::read(prepared.join("tokenizer.json")).unwrap()
    );
    let plain = tmp.path().join("plain");
    let o = train_ok(tmp.path(), &plain, &["--max-steps", "6"]);
    assert!(stderr(&o).contains("data: prepared"), "{}", stderr(&o));
    assert_eq!(manifest(&plain.join("prepared")).corpora[0].shards.len(), 1);
    assert!(same_tensors(&weights(&sharded), &weights(&plain)));
    // The same run again starts from its cache.
    let o = train_ok(tmp.path(), &plain, &["--max-steps", "7"]);
    assert!(stderr(&o).contains("(prepared earlier;"), "{}", stderr(&o));
}

/// A training file changed since its data were prepared: a fresh run prepares again, a
/// resumed run stops with one line naming the file.
#[test]
fn a_changed_input_is_prepared_again_or_stops_a_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, valid) = tiny_corpus(tmp.path());
    let config = tiny_config(tmp.path());
    let model = tmp.path().join("m");
    let run = |model: &Path, steps: &str| {
        train_command(&train, &valid, model, Some(&config))
            .args(["--max-steps", steps])
            .output()
            .unwrap()
    };
    let o = run(&model, "2");
    assert!(o.status.success(), "{}", stderr(&o));
    let before = tmp.path().join("before");
    copy_dir(&model.join("prepared"), &before);
    // Same size, other content.
    let text = std::fs::read_to_string(&train).unwrap();
    std::fs::write(&train, text.replacen('e', "E", 1)).unwrap();
    assert_ne!(std::fs::read_to_string(&train).unwrap(), text);
    let o = run(&model, "4");
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("train.tsv: the file changed since this run's training data were prepared"),
        "{err}"
    );
    assert_eq!(
        err.lines().filter(|l| l.contains("error")).count(),
        1,
        "{err}"
    );
    // Even with the prepared directory gone, the resume sees other data.
    std::fs::remove_dir_all(model.join("prepared")).unwrap();
    let o = run(&model, "4");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("the training data differ from those this run trained on"),
        "{}",
        stderr(&o)
    );
    // A fresh run on the old prepared directory prepares the new content.
    let o = train_prepared(
        (&train, &valid, &config),
        &tmp.path().join("fresh"),
        &before,
        &["--max-steps", "1"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("data: prepared"), "{}", stderr(&o));
    assert_eq!(
        manifest(&before).inputs[0].checksum,
        rnmt::data::prepare::checksum_file(&train).unwrap().checksum
    );
}

/// A prepare cut short (no manifest, a partial shard left) or a damaged shard is prepared
/// again from scratch, to the same data.
#[test]
fn an_interrupted_prepare_restarts_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let (train, valid) = tiny_corpus(tmp.path());
    let config = tiny_config(tmp.path());
    let prepared = tmp.path().join("p");
    let shards = ["--set", "data.shard_pairs=50"];
    assert!(prepare(&[&train], &prepared, &config, &shards)
        .status
        .success());
    let first = manifest(&prepared);
    // Interrupted: the manifest is written last; a temporary shard was left behind.
    std::fs::remove_file(prepared.join("manifest.json")).unwrap();
    let shard = prepared.join(&first.corpora[0].shards[1].file);
    std::fs::write(&shard, b"RNMTIDS1 partial").unwrap();
    std::fs::write(prepared.join("corpus-0/.shard-00009.bin.tmp.bin"), b"x").unwrap();
    let model = tmp.path().join("m");
    let o = train_prepared(
        (&train, &valid, &config),
        &model,
        &prepared,
        &[&shards[..], &["--max-steps", "1"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("data: prepared"), "{}", stderr(&o));
    let second = manifest(&prepared);
    assert_eq!(second.content_hash, first.content_hash);
    assert!(!prepared.join("corpus-0/.shard-00009.bin.tmp.bin").exists());
    // A shard damaged after the prepare: prepared again, not trained on.
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 2]).unwrap();
    let o = train_prepared(
        (&train, &valid, &config),
        &tmp.path().join("m2"),
        &prepared,
        &[&shards[..], &["--max-steps", "1"]].concat(),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("data: prepared"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&shard).unwrap().len(), bytes.len());
}

/// Two corpora, the second oversampled: the epoch holds the weighted counts, and a run cut
/// by a resume (across an epoch end) ends exactly as one run.
#[test]
fn weighted_corpora_mix_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, valid) = tiny_corpus(tmp.path());
    let b = tmp.path().join("b.tsv");
    std::fs::write(
        &b,
        head("lohelp.en-fr.train.tsv", 400)
            .lines()
            .skip(300)
            .map(|l| format!("{l}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let config = tiny_config(tmp.path());
    let run = |model: &Path, steps: &str| {
        let o = bin("rnmt-train")
            .arg("--train")
            .arg(&a)
            .arg("--train")
            .arg(&b)
            .arg("--valid")
            .arg(&valid)
            .arg("--model-dir")
            .arg(model)
            .arg("--config")
            .arg(&config)
            .args(["--device", &device_arg(), "--threads", "1"])
            .args([
                "--set",
                "data.weights=[1.0,2.5]",
                "--set",
                "data.shard_pairs=70",
                "--set",
                "train.batch_tokens=1500",
            ])
            .args(["--max-steps", steps])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    let one = tmp.path().join("one");
    let o = run(&one, "30");
    let err = stderr(&o);
    assert!(err.contains("from 2 corpora"), "{err}");
    let m = manifest(&one.join("prepared"));
    let (ka, kb) = (m.corpora[0].kept, m.corpora[1].kept);
    let items = ka + (2.5 * kb as f64).round() as u64;
    assert!(err.contains(&format!("{items} items per epoch")), "{err}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(one.join("last/trainer.json")).unwrap())
            .unwrap();
    assert!(
        state["epoch"].as_u64().unwrap() >= 1,
        "crosses an epoch: {state}"
    );
    let two = tmp.path().join("two");
    run(&two, "17");
    let o = run(&two, "30");
    assert!(stderr(&o).contains("resuming at step 17"), "{}", stderr(&o));
    assert!(same_tensors(&weights(&one), &weights(&two)));
    // The weights matter: without them the run differs.
    let plain = tmp.path().join("plain");
    let o = bin("rnmt-train")
        .arg("--train")
        .arg(&a)
        .arg("--train")
        .arg(&b)
        .arg("--valid")
        .arg(&valid)
        .arg("--model-dir")
        .arg(&plain)
        .arg("--config")
        .arg(&config)
        .args([
            "--device",
            &device_arg(),
            "--threads",
            "1",
            "--max-steps",
            "17",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let mid = tmp.path().join("mid");
    run(&mid, "17");
    assert!(!same_tensors(&weights(&plain), &weights(&mid)));
    // A weight count that does not match the corpora is one config error.
    let o = bin("rnmt-train")
        .arg("--train")
        .arg(&a)
        .arg("--valid")
        .arg(&valid)
        .arg("--model-dir")
        .arg(tmp.path().join("bad"))
        .arg("--config")
        .arg(&config)
        .args(["--set", "data.weights=[1.0,2.5]", "--max-steps", "1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("data.weights has 2 weight(s) for 1"),
        "{}",
        stderr(&o)
    );
}
