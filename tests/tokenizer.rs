//! Tests of the byte-level BPE tokenizers: exact round trip on every bundled sentence, fixed
//! special ids, save/load (joint and separate) and errors.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Instant;

use rnmt::corpus::{read_all, CorpusSource, Pair, ReadOptions};
use rnmt::tokenizer::{
    SubwordTokenizer, TokenizerConfig, TokenizerError, Tokenizers, BOS_ID, EOS_ID, PAD_ID,
    SPECIAL_TOKENS, UNK_ID,
};
use tempfile::TempDir;

const CORPORA: [&str; 6] = [
    "lohelp.en-fr.train.tsv",
    "lohelp.en-fr.dev.tsv",
    "lohelp.en-fr.test.tsv",
    "bible.en_web-es_rv1909.train.tsv",
    "bible.en_web-es_rv1909.dev.tsv",
    "bible.en_web-es_rv1909.test.tsv",
];

fn read(name: &str) -> Vec<Pair> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpora")
        .join(name);
    read_all(&CorpusSource::from_path(path), &ReadOptions::default())
        .unwrap_or_else(|e| panic!("{e}"))
        .0
}

/// The lohelp train set and a joint tokenizer of 8000 trained on it, shared by the tests.
fn lohelp() -> &'static (Vec<Pair>, SubwordTokenizer) {
    static CELL: OnceLock<(Vec<Pair>, SubwordTokenizer)> = OnceLock::new();
    CELL.get_or_init(|| {
        let pairs = read("lohelp.en-fr.train.tsv");
        let start = Instant::now();
        let texts = pairs.iter().flat_map(|p| [p.src.as_str(), p.tgt.as_str()]);
        let tok = SubwordTokenizer::train(texts, &TokenizerConfig::default()).unwrap();
        eprintln!(
            "trained on {} lohelp sides in {:.2?}",
            2 * pairs.len(),
            start.elapsed()
        );
        (pairs, tok)
    })
}

fn small_pairs() -> Vec<Pair> {
    let lines = [
        ("the cat sat on the mat", "le chat était assis sur le tapis"),
        (
            "the dog sat on the log",
            "le chien était assis sur la bûche",
        ),
        ("a cat and a dog", "un chat et un chien"),
    ];
    lines
        .iter()
        .enumerate()
        .map(|(i, (s, t))| Pair {
            src: s.to_string(),
            tgt: t.to_string(),
            line: i as u64 + 1,
        })
        .collect()
}

fn small_cfg(joint: bool) -> TokenizerConfig {
    TokenizerConfig {
        vocab_size: 300,
        joint,
        min_frequency: 1,
    }
}

#[test]
fn every_bundled_sentence_round_trips_exactly() {
    let (_, tok) = lohelp();
    let start = Instant::now();
    let mut sides = 0;
    let mut failures = Vec::new();
    for name in CORPORA {
        for pair in read(name) {
            for text in [&pair.src, &pair.tgt] {
                let ids = tok.encode(text).unwrap();
                assert_eq!(SubwordTokenizer::count_unk(&ids), 0, "{name}:{}", pair.line);
                let back = tok.decode(&ids).unwrap();
                if &back != text {
                    failures.push(format!("{name}:{}: {text:?} -> {back:?}", pair.line));
                }
                sides += 1;
            }
        }
    }
    eprintln!("round-tripped {sides} sides in {:.2?}", start.elapsed());
    assert_eq!(sides, 2 * (30265 + 1058 + 2019 + 28236 + 1001 + 1504));
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

#[test]
fn the_fast_encoder_gives_the_library_ids_on_every_bundled_sentence() {
    let (_, tok) = lohelp();
    assert!(
        tok.has_fast_path(),
        "rnmt's own tokenizers take the fast path"
    );
    let mut sides = 0;
    for name in CORPORA {
        for pair in read(name) {
            for text in [&pair.src, &pair.tgt] {
                assert_eq!(
                    tok.encode(text).unwrap(),
                    tok.encode_with_library(text).unwrap(),
                    "{name}:{}: {text:?}",
                    pair.line
                );
                sides += 1;
            }
        }
    }
    assert_eq!(sides, 2 * (30265 + 1058 + 2019 + 28236 + 1001 + 1504));
    // Text the corpora lack: runs of white space of every kind, contractions, numbers of
    // other scripts, combining marks, control characters, special tokens' spellings.
    for text in [
        "",
        "   ",
        "a  b\t\t c \n",
        "He's, they'll; we'd 'VE 're'm",
        "e\u{301}t\u{e9} ²Ⅻ٣ 日本語 😀😀",
        "\u{a0}\u{a0}x\u{85}\u{2028} \u{0}\u{7f}",
        "<s> literal </s> <pad> <unk>",
    ] {
        assert_eq!(
            tok.encode(text).unwrap(),
            tok.encode_with_library(text).unwrap(),
            "{text:?}"
        );
    }
}

#[test]
fn a_tokenizer_file_of_another_layout_takes_the_library_path() {
    let (_, tok) = lohelp();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tokenizer.json");
    tok.save(&path).unwrap();
    let mut json: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    json["normalizer"] = serde_json::json!({"type": "Lowercase"});
    fs::write(&path, json.to_string()).unwrap();
    let lower = SubwordTokenizer::load(&path).unwrap();
    assert!(!lower.has_fast_path());
    assert_eq!(
        lower.encode("The CAT").unwrap(),
        tok.encode("the cat").unwrap(),
        "the file's normalizer applies"
    );
}

#[test]
fn special_tokens_have_fixed_ids_and_are_not_produced_from_text() {
    let (_, tok) = lohelp();
    assert_eq!((PAD_ID, UNK_ID, BOS_ID, EOS_ID), (0, 1, 2, 3));
    for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
        assert_eq!(tok.id_to_token(id as u32).as_deref(), Some(*token));
    }
    assert_eq!(tok.vocab_size(), TokenizerConfig::default().vocab_size);
    let text = "<s> literal </s> <pad> <unk>";
    let ids = tok.encode(text).unwrap();
    assert!(ids.iter().all(|&id| id > EOS_ID), "{ids:?}");
    assert_eq!(tok.decode(&ids).unwrap(), text);
    // decode skips special ids.
    let mut framed = vec![BOS_ID];
    framed.extend(tok.encode("Hello").unwrap());
    framed.extend([EOS_ID, PAD_ID, PAD_ID]);
    assert_eq!(tok.decode(&framed).unwrap(), "Hello");
}

#[test]
fn unseen_characters_round_trip_without_unk() {
    let (_, tok) = lohelp();
    for text in [
        "😀 emoji",
        "中文字符",
        "Ελληνικά",
        "ﬁ\u{a0}",
        "\u{0}\u{7f}",
        "",
    ] {
        let ids = tok.encode(text).unwrap();
        assert_eq!(SubwordTokenizer::count_unk(&ids), 0, "{text:?}");
        assert_eq!(tok.decode(&ids).unwrap(), text);
    }
    assert_eq!(SubwordTokenizer::count_unk(&[5, UNK_ID, 7, UNK_ID]), 2);
}

#[test]
fn out_of_range_id_is_an_error_not_a_panic() {
    let (_, tok) = lohelp();
    let err = tok.decode(&[10, 8000]).unwrap_err();
    assert!(matches!(err, TokenizerError::Decode(_)));
    assert!(err.to_string().contains("8000"), "{err}");
}

#[test]
fn saved_tokenizer_reloads_to_identical_ids() {
    let (pairs, tok) = lohelp();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("tokenizer.json");
    tok.save(&path).unwrap();
    assert!(!dir.path().join("tokenizer.json.tmp").exists());
    let loaded = SubwordTokenizer::load(&path).unwrap();
    assert_eq!(loaded.vocab_size(), tok.vocab_size());
    for pair in pairs.iter().step_by(97) {
        for text in [&pair.src, &pair.tgt] {
            assert_eq!(loaded.encode(text).unwrap(), tok.encode(text).unwrap());
        }
    }
    // A literal special token is still text after loading.
    assert!(loaded.encode("<s>").unwrap().iter().all(|&id| id > EOS_ID));
}

#[test]
fn joint_and_separate_save_and_load() {
    let pairs = small_pairs();
    let dir = TempDir::new().unwrap();

    let joint = Tokenizers::train(&pairs, &small_cfg(true)).unwrap();
    assert!(joint.is_joint());
    joint.save_dir(dir.path()).unwrap();
    assert!(dir.path().join("tokenizer.json").is_file());
    let loaded = Tokenizers::load_dir(dir.path()).unwrap();
    assert!(loaded.is_joint());
    let text = "the chat sat";
    assert_eq!(
        loaded.tgt().encode(text).unwrap(),
        joint.src().encode(text).unwrap()
    );

    let separate = Tokenizers::train(&pairs, &small_cfg(false)).unwrap();
    assert!(!separate.is_joint());
    // Each side learned its own merges.
    assert_ne!(
        separate.src().encode("the cat").unwrap(),
        separate.tgt().encode("the cat").unwrap()
    );
    separate.save_dir(dir.path()).unwrap();
    assert!(
        !dir.path().join("tokenizer.json").exists(),
        "stale joint file removed"
    );
    let loaded = Tokenizers::load_dir(dir.path()).unwrap();
    assert!(!loaded.is_joint());
    for p in &pairs {
        assert_eq!(
            loaded.src().encode(&p.src).unwrap(),
            separate.src().encode(&p.src).unwrap()
        );
        assert_eq!(
            loaded.tgt().encode(&p.tgt).unwrap(),
            separate.tgt().encode(&p.tgt).unwrap()
        );
        assert_eq!(
            loaded
                .tgt()
                .decode(&loaded.tgt().encode(&p.tgt).unwrap())
                .unwrap(),
            p.tgt
        );
    }
}

#[test]
fn load_dir_names_the_missing_file() {
    let pairs = small_pairs();
    let dir = TempDir::new().unwrap();
    let msg = Tokenizers::load_dir(dir.path()).unwrap_err().to_string();
    assert!(msg.starts_with(&dir.path().display().to_string()), "{msg}");
    assert!(
        msg.contains("tokenizer.json") && msg.contains("tokenizer.src.json"),
        "{msg}"
    );

    Tokenizers::train(&pairs, &small_cfg(false))
        .unwrap()
        .save_dir(dir.path())
        .unwrap();
    fs::remove_file(dir.path().join("tokenizer.tgt.json")).unwrap();
    let msg = Tokenizers::load_dir(dir.path()).unwrap_err().to_string();
    assert!(msg.contains("tokenizer.tgt.json is missing"), "{msg}");
}

fn load_error(dir: &TempDir, content: &str) -> (PathBuf, String) {
    let path = dir.path().join("bad.json");
    fs::write(&path, content).unwrap();
    let msg = SubwordTokenizer::load(&path).unwrap_err().to_string();
    (path, msg)
}

#[test]
fn load_errors_name_the_file() {
    let dir = TempDir::new().unwrap();
    let missing = dir.path().join("none.json");
    let err = SubwordTokenizer::load(&missing).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: cannot read", missing.display())
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "the OS error is the source"
    );

    let (path, msg) = load_error(&dir, "{ not json");
    assert!(
        msg.starts_with(&format!("{}: not a valid tokenizer file", path.display())),
        "{msg}"
    );
    assert!(!msg.contains('\n'));

    // A valid tokenizer.json whose special tokens are not at the fixed ids.
    let tok = Tokenizers::train(&small_pairs(), &small_cfg(true)).unwrap();
    let json = tok.src().inner().to_string(false).unwrap();
    let swapped = json.replacen("\"<pad>\"", "\"<PAD>\"", usize::MAX);
    let (_, msg) = load_error(&dir, &swapped);
    assert!(msg.contains("<pad> is missing"), "{msg}");
}

#[test]
fn too_small_vocab_is_a_config_error() {
    let cfg = TokenizerConfig {
        vocab_size: 100,
        ..TokenizerConfig::default()
    };
    let err = Tokenizers::train(&small_pairs(), &cfg).unwrap_err();
    assert!(matches!(err, TokenizerError::Config(_)), "{err}");
    let parsed: TokenizerConfig = serde_json::from_str(r#"{"joint":false}"#).unwrap();
    assert_eq!(
        (parsed.vocab_size, parsed.joint, parsed.min_frequency),
        (TokenizerConfig::default().vocab_size, false, 2)
    );
}

#[test]
fn save_to_a_missing_directory_names_the_file() {
    let (_, tok) = lohelp();
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("no/such/dir/tokenizer.json");
    let msg = tok.save(&path).unwrap_err().to_string();
    assert!(msg.contains("tokenizer.json.tmp: cannot write"), "{msg}");
}
