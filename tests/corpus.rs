//! Tests of the corpus reader, normalization and filters, on small hand-made files and on the
//! bundled corpora.

use std::fs;
use std::path::{Path, PathBuf};

use rnmt::corpus::{
    filter, normalize, open, read_all, CorpusError, CorpusSource, DelimitedFormat, FilterConfig,
    FilterReport, Normalization, Pair, ReadOptions, Side, SkipCounts,
};
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    path
}

fn strict() -> ReadOptions {
    ReadOptions::default()
}

fn skipping() -> ReadOptions {
    ReadOptions {
        skip_bad_lines: true,
        ..ReadOptions::default()
    }
}

/// Reads a TSV written from `bytes`; returns the file path and the result.
fn read_tsv(
    bytes: &[u8],
    opts: ReadOptions,
) -> (PathBuf, Result<(Vec<Pair>, SkipCounts), CorpusError>) {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "x.tsv", bytes);
    let result = read_all(&CorpusSource::from_path(&path), &opts);
    (path, result)
}

/// Asserts that strict reading fails with a message naming the file and `line`, containing
/// `needle`, and that the message is one line.
fn assert_strict_error(bytes: &[u8], line: u64, needle: &str) {
    let (path, result) = read_tsv(bytes, strict());
    let msg = result.expect_err("expected an error").to_string();
    let prefix = format!("{}:{line}: ", path.display());
    assert!(
        msg.starts_with(&prefix),
        "{msg:?} should start with {prefix:?}"
    );
    assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
    assert!(!msg.contains('\n'), "{msg:?} should be one line");
}

fn texts(pairs: &[Pair]) -> Vec<(&str, &str, u64)> {
    pairs
        .iter()
        .map(|p| (p.src.as_str(), p.tgt.as_str(), p.line))
        .collect()
}

#[test]
fn tsv_reads_pairs_with_quotes_as_text() {
    let (_, r) = read_tsv(b"say \"hi\"\tdis \"salut\"\n\"a\tb\"\n", strict());
    let (pairs, skipped) = r.unwrap();
    assert_eq!(
        texts(&pairs),
        [("say \"hi\"", "dis \"salut\"", 1), ("\"a", "b\"", 2)]
    );
    assert_eq!(skipped.total(), 0);
}

#[test]
fn crlf_and_trailing_blank_lines_are_accepted() {
    let (_, r) = read_tsv(b"a\tb\r\nc\td\r\n\r\n\n", strict());
    let (pairs, _) = r.unwrap();
    assert_eq!(texts(&pairs), [("a", "b", 1), ("c", "d", 2)]);
    // No final newline at all.
    let (_, r) = read_tsv(b"a\tb\nc\td", strict());
    assert_eq!(texts(&r.unwrap().0), [("a", "b", 1), ("c", "d", 2)]);
}

#[test]
fn missing_separator_is_an_error() {
    assert_strict_error(
        b"a\tb\nno tab here\nc\td\n",
        2,
        "expected 2 tab-separated fields, found 1",
    );
}

#[test]
fn extra_tab_is_an_error() {
    assert_strict_error(
        b"a\tb\nc\td\te\n",
        2,
        "expected 2 tab-separated fields, found 3",
    );
}

#[test]
fn invalid_utf8_is_an_error_naming_the_line() {
    assert_strict_error(
        b"a\tb\nc\td\ncaf\xe9\tx\n",
        3,
        "invalid UTF-8 in the source field (byte 0xE9 at byte offset 3)",
    );
}

#[test]
fn empty_side_is_an_error() {
    assert_strict_error(b"a\tb\nc\t  \n", 2, "empty target text");
    assert_strict_error(b"\tb\n", 1, "empty source text");
    // Whitespace-only after NFKC (a non-breaking space folds to a space, then is trimmed).
    assert_strict_error("a\tb\n\u{a0}\tb\n".as_bytes(), 2, "empty source text");
}

#[test]
fn blank_line_in_the_middle_is_an_error() {
    assert_strict_error(b"a\tb\n\nc\td\n", 2, "blank line");
    assert_strict_error(b"a\tb\r\n\r\nc\td\r\n", 2, "blank line");
}

#[test]
fn line_numbers_stay_right_after_blank_lines_in_skip_mode() {
    let (_, r) = read_tsv(b"a\tb\n\n\n\nc\td\nbad\n", skipping());
    let (pairs, skipped) = r.unwrap();
    assert_eq!(texts(&pairs), [("a", "b", 1), ("c", "d", 5)]);
    assert_eq!(skipped.blank_line, 3);
    assert_eq!(skipped.wrong_field_count, 1);
}

#[test]
fn skip_mode_counts_each_reason() {
    let bytes = b"ok\tfine\nno tab\nx\ty\tz\nbad \xff\tq\nq\t \n\ngood\tbon\n";
    let (_, r) = read_tsv(bytes, skipping());
    let (pairs, skipped) = r.unwrap();
    assert_eq!(texts(&pairs), [("ok", "fine", 1), ("good", "bon", 7)]);
    assert_eq!(skipped.wrong_field_count, 2);
    assert_eq!(skipped.invalid_utf8, 1);
    assert_eq!(skipped.empty_side, 1);
    assert_eq!(skipped.blank_line, 1);
    assert_eq!(skipped.total(), 5);
    assert_eq!(
        skipped.to_string(),
        "skipped 5 lines: 2 wrong field count, 1 invalid UTF-8, 1 empty side, 1 blank line"
    );
}

#[test]
fn skip_counts_display() {
    let counts = SkipCounts {
        wrong_field_count: 2,
        empty_side: 1,
        ..SkipCounts::default()
    };
    assert_eq!(
        counts.to_string(),
        "skipped 3 lines: 2 wrong field count, 1 empty side"
    );
    assert_eq!(SkipCounts::default().to_string(), "skipped 0 lines");
}

#[test]
fn streaming_reader_reports_skips_and_stops_after_first_error() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "s.tsv", b"a\tb\nbad\nc\td\n");
    let src = CorpusSource::from_path(&path);
    let mut reader = open(&src, &skipping()).unwrap();
    assert_eq!(reader.by_ref().filter_map(Result::ok).count(), 2);
    assert_eq!(reader.skipped().wrong_field_count, 1);

    let items: Vec<_> = open(&src, &strict()).unwrap().collect();
    assert_eq!(items.len(), 2, "one pair, then the error, then the end");
    assert!(items[0].is_ok());
    assert!(matches!(
        items[1],
        Err(CorpusError::WrongFieldCount { line: 2, .. })
    ));
}

#[test]
fn missing_file_is_fatal_and_named() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("nope.tsv");
    for opts in [strict(), skipping()] {
        let err = read_all(&CorpusSource::from_path(&path), &opts).unwrap_err();
        // The message names the file; the OS error is its source, printed once by the binary.
        assert_eq!(err.to_string(), format!("{}: cannot open", path.display()));
        let cause = std::error::Error::source(&err)
            .expect("the OS error")
            .to_string();
        assert!(cause.contains("No such file"), "{cause}");
    }
}

#[test]
fn empty_corpus_is_fatal_and_named() {
    let (path, r) = read_tsv(b"", strict());
    let msg = r.unwrap_err().to_string();
    assert_eq!(msg, format!("{}: no sentence pairs", path.display()));

    let (path, r) = read_tsv(b"\n\n", strict());
    assert!(matches!(r, Err(CorpusError::EmptyCorpus { .. })));
    drop(path);

    let (path, r) = read_tsv(b"only one field\nanother\n", skipping());
    let msg = r.unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: no sentence pairs (skipped 2 lines: 2 wrong field count)",
            path.display()
        )
    );
}

#[test]
fn csv_with_header_and_column_selection() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "c.csv",
        b"id,en,note,fr\r\n1,\"Hello, world\",x,\"Bonjour, \"\"monde\"\"\"\r\n2,\"two\nlines\",y,deux\r\n3,Bye,z,Salut\r\n",
    );
    let src = CorpusSource::Delimited {
        path: path.clone(),
        format: DelimitedFormat::Csv,
        src_col: 1,
        tgt_col: 3,
        header: true,
    };
    let (pairs, _) = read_all(&src, &strict()).unwrap();
    assert_eq!(
        texts(&pairs),
        [
            ("Hello, world", "Bonjour, \"monde\"", 2),
            ("two\nlines", "deux", 3),
            ("Bye", "Salut", 5),
        ]
    );
    assert_eq!(CorpusSource::from_path(&path), {
        let mut s = src.clone();
        if let CorpusSource::Delimited {
            src_col,
            tgt_col,
            header,
            ..
        } = &mut s
        {
            (*src_col, *tgt_col, *header) = (0, 1, false);
        }
        s
    });
}

#[test]
fn csv_wrong_field_count_says_what_is_expected() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "c.csv", b"id,en,fr\n1,a,b\n2,c\n");
    let mut src = CorpusSource::Delimited {
        path: path.clone(),
        format: DelimitedFormat::Csv,
        src_col: 1,
        tgt_col: 2,
        header: true,
    };
    let msg = read_all(&src, &strict()).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}:3: expected 3 comma-separated fields (as in the header), found 2",
            path.display()
        )
    );
    if let CorpusSource::Delimited { header, .. } = &mut src {
        *header = false;
    }
    let (pairs, skipped) = read_all(&src, &skipping()).unwrap();
    assert_eq!(texts(&pairs), [("en", "fr", 1), ("a", "b", 2)]);
    assert_eq!(skipped.wrong_field_count, 1);
    let msg = read_all(&src, &strict()).unwrap_err().to_string();
    assert!(
        msg.ends_with(
            ":3: expected at least 3 comma-separated fields (columns 1 and 2 are read), found 2"
        ),
        "{msg}"
    );
}

#[test]
fn csv_header_without_the_selected_column_is_fatal() {
    let dir = TempDir::new().unwrap();
    let path = write(&dir, "c.csv", b"en,fr\na,b\n");
    let src = CorpusSource::Delimited {
        path: path.clone(),
        format: DelimitedFormat::Csv,
        src_col: 0,
        tgt_col: 2,
        header: true,
    };
    let err = read_all(&src, &skipping()).unwrap_err();
    assert!(err
        .to_string()
        .starts_with(&format!("{}:1: bad header", path.display())));
}

#[test]
fn aligned_files_are_read_in_step() {
    let dir = TempDir::new().unwrap();
    let en = write(&dir, "a.en", b"Hello\r\nBye \"now\"\r\n");
    let fr = write(&dir, "a.fr", b"Bonjour\nSalut\n\n");
    let (pairs, _) = read_all(&CorpusSource::aligned(&en, &fr), &strict()).unwrap();
    assert_eq!(
        texts(&pairs),
        [("Hello", "Bonjour", 1), ("Bye \"now\"", "Salut", 2)]
    );
}

fn mismatch_message(src: &Path, tgt: &Path, opts: ReadOptions) -> String {
    read_all(&CorpusSource::aligned(src, tgt), &opts)
        .unwrap_err()
        .to_string()
}

#[test]
fn aligned_line_count_mismatch_is_fatal_and_names_both_files() {
    let dir = TempDir::new().unwrap();
    let short = write(&dir, "s.en", b"one\ntwo\n");
    let long = write(&dir, "l.fr", b"un\ndeux\ntrois\n");
    let expected = format!(
        "line count mismatch: {} ran out at line 3 (2 lines) but {} has more lines",
        short.display(),
        long.display()
    );
    assert_eq!(mismatch_message(&short, &long, strict()), expected);
    assert_eq!(mismatch_message(&short, &long, skipping()), expected);
    assert!(mismatch_message(&long, &short, strict())
        .contains(&format!("{} ran out at line 3", short.display())));
}

#[test]
fn aligned_bad_lines_name_the_right_file() {
    let dir = TempDir::new().unwrap();
    let en = write(&dir, "b.en", b"a\nb\nc\n");
    let fr = write(&dir, "b.fr", b"x\n\nz\xc3\n");
    let src = CorpusSource::aligned(&en, &fr);
    let msg = read_all(&src, &strict()).unwrap_err().to_string();
    assert_eq!(msg, format!("{}:2: empty target text", fr.display()));
    let (pairs, skipped) = read_all(&src, &skipping()).unwrap();
    assert_eq!(texts(&pairs), [("a", "x", 1)]);
    assert_eq!((skipped.empty_side, skipped.invalid_utf8), (1, 1));
}

#[test]
fn normalization_nfkc_folds_and_nfc_keeps() {
    let text = " ﬁne Ｆｕｌｌ\u{a0}width x² ";
    assert_eq!(normalize(text, Normalization::Nfkc), "fine Full width x2");
    assert_eq!(
        normalize(text, Normalization::Nfc),
        "ﬁne Ｆｕｌｌ\u{a0}width x²"
    );
    // NFC composes accents: e + combining acute -> é.
    assert_eq!(normalize("e\u{301}", Normalization::Nfc), "é");
    assert_eq!(normalize("e\u{301}", Normalization::None), "e\u{301}");
    assert_eq!(Normalization::default(), Normalization::Nfkc);
    assert_eq!("NFC".parse::<Normalization>(), Ok(Normalization::Nfc));
    assert!("nfd".parse::<Normalization>().is_err());
    let json = serde_json::to_string(&Normalization::None).unwrap();
    assert_eq!(json, "\"none\"");
    let opts: ReadOptions = serde_json::from_str(r#"{"normalization":"nfc"}"#).unwrap();
    assert_eq!(opts.normalization, Normalization::Nfc);
    assert!(!opts.skip_bad_lines);
}

#[test]
fn reader_applies_normalization() {
    let bytes = "ﬁle\tﬁchier\n".as_bytes();
    let (_, r) = read_tsv(bytes, strict());
    assert_eq!(texts(&r.unwrap().0), [("file", "fichier", 1)]);
    let opts = ReadOptions {
        normalization: Normalization::Nfc,
        ..strict()
    };
    let (_, r) = read_tsv(bytes, opts);
    assert_eq!(texts(&r.unwrap().0), [("ﬁle", "ﬁchier", 1)]);
}

fn pair(src: &str, tgt: &str) -> Pair {
    Pair {
        src: src.into(),
        tgt: tgt.into(),
        line: 0,
    }
}

/// Token count for filter tests: whitespace-separated words.
fn words(_side: Side, s: &str) -> usize {
    s.split_whitespace().count()
}

#[test]
fn filter_counts_each_reason_once() {
    let pairs = vec![
        pair("a b", "c d"),                 // kept
        pair("a b c d e f", "x"),           // too long (6 > 5)
        pair("a", "w x y z"),               // ratio 4 > 3
        pair("a b", "c d"),                 // duplicate
        pair("a b", "c d e"),               // kept
        pair("a b c d e f g", "a b c d e"), // too long, also a bad ratio: counted once
        pair("a", "b c d"),                 // ratio exactly 3: kept
        pair("a", "w x y z"),               // bad ratio, not counted as duplicate
    ];
    let cfg = FilterConfig {
        max_len: Some(5),
        max_ratio: Some(3.0),
        dedup: true,
    };
    let (kept, report) = filter(pairs, &cfg, words);
    assert_eq!(
        report,
        FilterReport {
            input: 8,
            kept: 3,
            too_long: 2,
            bad_ratio: 2,
            duplicate: 1,
        }
    );
    assert_eq!(
        kept.iter().map(|p| p.tgt.as_str()).collect::<Vec<_>>(),
        ["c d", "c d e", "b c d"]
    );
    assert_eq!(
        report.to_string(),
        "kept 3 of 8 pairs (dropped 2 too long, 2 length ratio, 1 duplicate)"
    );
}

#[test]
fn filter_checks_can_be_disabled() {
    let pairs = vec![pair("a", "b c d e"), pair("a", "b c d e"), pair("x", "y")];
    let off = FilterConfig {
        max_len: None,
        max_ratio: None,
        dedup: false,
    };
    let (kept, report) = filter(pairs.clone(), &off, words);
    assert_eq!((kept.len(), report.kept), (3, 3));
    let dedup_only = FilterConfig { dedup: true, ..off };
    let (_, report) = filter(pairs, &dedup_only, words);
    assert_eq!((report.kept, report.duplicate), (2, 1));
    let cfg = FilterConfig::default();
    assert_eq!(
        (cfg.max_len, cfg.max_ratio, cfg.dedup),
        (Some(100), Some(3.0), true)
    );
    let parsed: FilterConfig = serde_json::from_str(r#"{"max_len":null}"#).unwrap();
    assert_eq!((parsed.max_len, parsed.max_ratio), (None, Some(3.0)));
}

fn corpus(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpora")
        .join(name)
}

#[test]
fn bundled_corpora_read_cleanly_with_their_documented_sizes() {
    let sizes = [
        ("lohelp.en-fr.train.tsv", 30265),
        ("lohelp.en-fr.dev.tsv", 1058),
        ("lohelp.en-fr.test.tsv", 2019),
        ("bible.en_web-es_rv1909.train.tsv", 28236),
        ("bible.en_web-es_rv1909.dev.tsv", 1001),
        ("bible.en_web-es_rv1909.test.tsv", 1504),
    ];
    for (name, n) in sizes {
        let (pairs, skipped) = read_all(&CorpusSource::from_path(corpus(name)), &strict())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pairs.len(), n, "{name}");
        assert_eq!(skipped.total(), 0, "{name}");
        assert_eq!(pairs.last().unwrap().line, n as u64, "{name}");
    }
}

/// A UTF-8 byte order mark at the start of an aligned file is not text (the CSV reader drops
/// it for TSV/CSV files already), and a long line is cut, never read whole, in both kinds.
#[test]
fn aligned_files_drop_a_bom_and_bound_their_lines() {
    let dir = TempDir::new().unwrap();
    let src = write(&dir, "a.en", b"\xEF\xBB\xBFHello\nWorld\n");
    let tgt = write(&dir, "a.fr", b"\xEF\xBB\xBFBonjour\nMonde\n");
    let (pairs, _) = read_all(&CorpusSource::aligned(&src, &tgt), &strict()).unwrap();
    assert_eq!(
        texts(&pairs),
        vec![("Hello", "Bonjour", 1), ("World", "Monde", 2)]
    );
    let tsv = write(&dir, "b.tsv", b"\xEF\xBB\xBFHello\tBonjour\n");
    let (pairs, _) = read_all(&CorpusSource::from_path(&tsv), &strict()).unwrap();
    assert_eq!(texts(&pairs), vec![("Hello", "Bonjour", 1)]);

    let short = ReadOptions {
        max_line_bytes: 8,
        ..skipping()
    };
    let src = write(&dir, "c.en", b"ok\nmuch too long a line\nfine\n");
    let tgt = write(&dir, "c.fr", b"oui\nbien\nbon\n");
    let (pairs, skipped) = read_all(&CorpusSource::aligned(&src, &tgt), &short).unwrap();
    assert_eq!(texts(&pairs), vec![("ok", "oui", 1), ("fine", "bon", 3)]);
    assert_eq!(skipped.too_long, 1);
    let tsv = write(&dir, "d.tsv", b"a\tb\nmuch too long\tline\nc\td");
    let (pairs, skipped) = read_all(&CorpusSource::from_path(&tsv), &short).unwrap();
    assert_eq!(texts(&pairs), vec![("a", "b", 1), ("c", "d", 3)]);
    assert_eq!(skipped.too_long, 1);
    let err = read_all(
        &CorpusSource::from_path(&tsv),
        &ReadOptions {
            max_line_bytes: 8,
            ..strict()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.ends_with("d.tsv:2: line longer than 8 bytes (data.max_line_bytes); use --skip-bad-lines to skip such lines"), "{err}");
}
