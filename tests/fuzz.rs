//! Property tests (proptest) over the input paths that read untrusted bytes: the corpus
//! reader (TSV, CSV, aligned files) and the translation input (bounded line reading,
//! normalization, tokenization). Random inputs must never panic, every error must be one line
//! naming the file, and what is read must match the input. The case counts are fixed, so the
//! run is bounded in time (a few seconds) in CI; `PROPTEST_CASES=N` runs more by hand.
use std::io::BufReader;
use std::sync::OnceLock;

use proptest::prelude::*;
use rnmt::corpus::lines::read_line_bounded;
use rnmt::corpus::{normalize, read_all, CorpusSource, Normalization, Pair, ReadOptions};
use rnmt::tokenizer::{SubwordTokenizer, TokenizerConfig};

/// Bytes that look like corpus text: letters, separators, line ends, quotes, BOMs, invalid
/// UTF-8 and multi-byte characters.
fn corpus_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"a".to_vec()),
        Just(b"word ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just("é€😀".as_bytes().to_vec()),
        Just(vec![0xff]),
        Just(vec![0xc3]),
        Just(vec![0]),
        proptest::collection::vec(any::<u8>(), 1..4),
    ];
    proptest::collection::vec(piece, 0..60).prop_map(|v| v.concat())
}

fn options(skip: bool, max_line_bytes: usize) -> ReadOptions {
    ReadOptions {
        skip_bad_lines: skip,
        max_line_bytes,
        normalization: Normalization::Nfkc,
    }
}

fn check_corpus(source: &CorpusSource, opts: &ReadOptions, names: &[&str]) {
    match read_all(source, opts) {
        Ok((pairs, _skipped)) => {
            assert!(!pairs.is_empty());
            for p in &pairs {
                assert!(!p.src.is_empty() && !p.tgt.is_empty(), "{p:?}");
                assert_eq!(p.src, normalize(&p.src, Normalization::Nfkc));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains('\n'), "not one line: {msg:?}");
            assert!(
                names.iter().any(|n| msg.contains(n)),
                "no file named: {msg}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn delimited_files_never_panic(bytes in corpus_bytes(), skip: bool, csv: bool, cap in 1usize..40) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(if csv { "c.csv" } else { "c.tsv" });
        std::fs::write(&path, &bytes).unwrap();
        check_corpus(&CorpusSource::from_path(&path), &options(skip, cap), &["c.csv", "c.tsv"]);
        check_corpus(&CorpusSource::from_path(&path), &options(skip, 1 << 16), &["c.csv", "c.tsv"]);
    }

    #[test]
    fn aligned_files_never_panic(src in corpus_bytes(), tgt in corpus_bytes(), skip: bool, cap in 1usize..40) {
        let dir = tempfile::tempdir().unwrap();
        let (s, t) = (dir.path().join("a.src"), dir.path().join("a.tgt"));
        std::fs::write(&s, &src).unwrap();
        std::fs::write(&t, &tgt).unwrap();
        let source = CorpusSource::aligned(&s, &t);
        check_corpus(&source, &options(skip, cap), &["a.src", "a.tgt"]);
        check_corpus(&source, &options(skip, 1 << 16), &["a.src", "a.tgt"]);
    }

    /// The translation input reader: lines come out in order, each the input line (without
    /// its line end) or its first `max` bytes, and the reported lengths add up.
    #[test]
    fn bounded_lines_match_the_input(bytes in corpus_bytes(), max in 1usize..32, cap in 1usize..9) {
        let mut r = BufReader::with_capacity(cap, bytes.as_slice());
        let mut buf = Vec::new();
        let mut expected = bytes.split(|&b| b == b'\n').collect::<Vec<_>>();
        if bytes.last() == Some(&b'\n') || bytes.is_empty() {
            expected.pop();
        }
        let mut got = 0;
        while let Some(len) = read_line_bounded(&mut r, &mut buf, max).unwrap() {
            let line = expected[got];
            let line = if len <= max { line.strip_suffix(b"\r").unwrap_or(line) } else { line };
            prop_assert!(buf.len() <= max);
            prop_assert_eq!(len, line.len());
            prop_assert!(line.starts_with(&buf));
            if len <= max {
                prop_assert_eq!(&buf[..], line);
            }
            got += 1;
        }
        prop_assert_eq!(got, expected.len());
    }

    /// Normalized input always tokenizes, and decoding gives the normalized text back.
    #[test]
    fn any_text_round_trips_through_the_tokenizer(bytes in corpus_bytes()) {
        let text = String::from_utf8_lossy(&bytes).replace('\n', " ");
        let text = normalize(&text, Normalization::Nfkc);
        let tok = tokenizer();
        let ids = tok.encode(&text).unwrap();
        prop_assert_eq!(tok.decode(&ids).unwrap(), text);
    }
}

/// 300 cases per property, or `PROPTEST_CASES`.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn tokenizer() -> &'static SubwordTokenizer {
    static T: OnceLock<SubwordTokenizer> = OnceLock::new();
    T.get_or_init(|| {
        let pairs: Vec<Pair> = (0..40)
            .map(|i| Pair {
                src: format!("the word {i} and more words"),
                tgt: format!("le mot {i} et plus de mots"),
                line: i + 1,
            })
            .collect();
        let cfg = TokenizerConfig {
            vocab_size: 300,
            ..TokenizerConfig::default()
        };
        SubwordTokenizer::train(
            pairs.iter().flat_map(|p| [p.src.as_str(), p.tgt.as_str()]),
            &cfg,
        )
        .unwrap()
    })
}
