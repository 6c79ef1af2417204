//! The byte-level BPE encoder without the `tokenizers` pipeline, for rnmt's own tokenizer
//! layout: the same ids as `Tokenizer::encode_fast`, at several times its speed.
//!
//! The library's encode runs, per text, an added-token scan, a `NormalizedString` with byte
//! alignments, the GPT-2 pre-tokenizer regex in `fancy_regex` (a backtracking VM, 20% of the
//! prepare's time), the byte-to-symbol mapping with its alignments, the BPE model per piece
//! (a fresh `String` per subword) and an `Encoding` with offsets; on 1.6M pairs that was 60 s of
//! the prepare's 69. This module does the same steps directly:
//!
//! 1. [`split`] cuts the text into the pieces of the GPT-2 pattern
//!    `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` with its
//!    leftmost-first, backtracking semantics, by hand: the letter, number and white-space
//!    classes are the `regex` crate's own Unicode tables (from `regex-syntax`), so the classes
//!    are exactly those `fancy_regex` matches.
//! 2. Each piece's ids come from a per-thread cache keyed by the piece's text; on a miss the
//!    piece's bytes are mapped to the byte-level symbols (GPT-2's `bytes_to_unicode`) and the
//!    library's own BPE model merges them, so merges, `<unk>` and every model option behave as
//!    in the library.
//!
//! [`FastPath::of`] accepts a tokenizer only when this is exactly what the library would do:
//! no normalizer, the `ByteLevel` pre-tokenizer without prefix space and with the regex, a BPE
//! model without dropout, no post-processor, truncation or padding, and only special added
//! tokens, which rnmt encodes as text (`encode_special_tokens`). Any other tokenizer file
//! takes the library's path. The tests compare both paths on the bundled corpora and on
//! random text.
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use rustc_hash::FxHashMap;
use tokenizers::models::bpe::BPE;
use tokenizers::models::ModelWrapper;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{Model, Tokenizer};

/// The character classes of the GPT-2 pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// `\p{L}`
    Letter,
    /// `\p{N}`
    Number,
    /// `\s` (Unicode `White_Space`)
    Space,
    /// everything else: `[^\s\p{L}\p{N}]`
    Other,
}

/// Sorted, disjoint ranges of the three named classes, and a table for ASCII.
struct Classes {
    ranges: Vec<(u32, u32, Class)>,
    ascii: [Class; 128],
}

static CLASSES: LazyLock<Classes> = LazyLock::new(|| {
    let mut ranges = Vec::new();
    for (pattern, class) in [
        (r"\p{L}", Class::Letter),
        (r"\p{N}", Class::Number),
        (r"\s", Class::Space),
    ] {
        let hir = regex_syntax::ParserBuilder::new()
            .unicode(true)
            .build()
            .parse(pattern)
            .expect("a Unicode class of regex-syntax");
        match hir.kind() {
            regex_syntax::hir::HirKind::Class(regex_syntax::hir::Class::Unicode(c)) => {
                ranges.extend(
                    c.ranges()
                        .iter()
                        .map(|r| (r.start() as u32, r.end() as u32, class)),
                );
            }
            other => unreachable!("{pattern} parsed as {other:?}"),
        }
    }
    ranges.sort_unstable_by_key(|r| r.0);
    let mut ascii = [Class::Other; 128];
    for (c, slot) in ascii.iter_mut().enumerate() {
        *slot = lookup(&ranges, c as u32);
    }
    Classes { ranges, ascii }
});

fn lookup(ranges: &[(u32, u32, Class)], c: u32) -> Class {
    let i = ranges.partition_point(|r| r.0 <= c);
    match i.checked_sub(1).map(|i| ranges[i]) {
        Some((_, end, class)) if c <= end => class,
        _ => Class::Other,
    }
}

fn class(c: char) -> Class {
    let classes = &*CLASSES;
    match classes.ascii.get(c as usize) {
        Some(&k) => k,
        None => lookup(&classes.ranges, c as u32),
    }
}

/// Calls `piece` with each piece of `text` under the GPT-2 pattern, in order (their
/// concatenation is `text`).
pub fn split<'t>(text: &'t str, mut piece: impl FnMut(&'t str)) {
    // Characters with their byte offsets, and a sentinel offset at the end.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let n = chars.len();
    let at = |i: usize| if i < n { chars[i].0 } else { text.len() };
    let ch = |i: usize| chars.get(i).map(|&(_, c)| c);
    // End of the run of `k` characters starting at `i`.
    let run = |mut i: usize, k: Class| {
        while i < n && class(chars[i].1) == k {
            i += 1;
        }
        i
    };
    let mut i = 0;
    while i < n {
        let c = chars[i].1;
        // 's 't 're 've 'm 'll 'd
        if c == '\'' {
            let len = match (ch(i + 1), ch(i + 2)) {
                (Some('s' | 't' | 'm' | 'd'), _) => 2,
                (Some('r'), Some('e')) | (Some('v'), Some('e')) | (Some('l'), Some('l')) => 3,
                _ => 0,
            };
            if len > 0 {
                piece(&text[at(i)..at(i + len)]);
                i += len;
                continue;
            }
        }
        // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the optional space is taken when a
        // run of the class follows it (the class of the character after a space decides
        // which alternative matches, and no earlier one can).
        let start = if c == ' ' { i + 1 } else { i };
        if let Some(next) = ch(start) {
            let k = class(next);
            if k != Class::Space {
                let end = run(start, k);
                piece(&text[at(i)..at(end)]);
                i = end;
                continue;
            }
        }
        // `\s+(?!\S)` then `\s+`: a run of white space gives back its last character when a
        // non-space follows and the run is longer than one.
        let end = run(i, Class::Space);
        let end = if end < n && end - i > 1 { end - 1 } else { end };
        piece(&text[at(i)..at(end)]);
        i = end;
    }
}

/// GPT-2's `bytes_to_unicode`: the printable bytes stand for themselves, the others for
/// `U+0100` upwards in byte order. The `ByteLevel` pre-tokenizer's mapping.
static BYTE_SYMBOLS: LazyLock<[char; 256]> = LazyLock::new(|| {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut out = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        out[b as usize] = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).expect("U+0100..U+0143")
        };
    }
    out
});

/// The byte-level symbols of `piece`.
pub fn byte_symbols(piece: &str) -> String {
    let table = &*BYTE_SYMBOLS;
    piece.bytes().map(|b| table[b as usize]).collect()
}

/// Most pieces a thread keeps per tokenizer before it starts over (about 10 MB).
const CACHE_ENTRIES: usize = 1 << 17;

/// Most tokenizers a thread keeps caches for.
const CACHED_TOKENIZERS: usize = 8;

/// Identifies a tokenizer's cache across threads.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Piece text -> ids, of one tokenizer.
type PieceIds = FxHashMap<Box<str>, Box<[u32]>>;

thread_local! {
    /// Per tokenizer id.
    static CACHE: RefCell<FxHashMap<u64, PieceIds>> =
        RefCell::new(FxHashMap::default());
}

/// The fast encoder of one tokenizer, when its layout allows one.
#[derive(Debug, Clone)]
pub struct FastPath {
    id: u64,
}

impl FastPath {
    /// `Some` when encoding with `tok` is exactly [`split`] and its BPE model per piece.
    pub fn of(tok: &Tokenizer) -> Option<Self> {
        let byte_level = matches!(
            tok.get_pre_tokenizer(),
            Some(PreTokenizerWrapper::ByteLevel(b)) if !b.add_prefix_space && b.use_regex
        );
        let bpe =
            matches!(tok.get_model(), ModelWrapper::BPE(m) if m.dropout.is_none_or(|d| d == 0.0));
        let added_special = tok.get_added_tokens_decoder().values().all(|t| t.special);
        let fits = tok.get_normalizer().is_none()
            && byte_level
            && bpe
            && tok.get_post_processor().is_none()
            && tok.get_truncation().is_none()
            && tok.get_padding().is_none()
            && added_special
            && tok.get_encode_special_tokens();
        fits.then(|| FastPath {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The ids of `text` (what `tok.encode_fast(text, false)` gives; `tok` is the tokenizer
    /// this path was made for).
    pub fn encode(&self, tok: &Tokenizer, text: &str) -> tokenizers::Result<Vec<u32>> {
        let ModelWrapper::BPE(bpe) = tok.get_model() else {
            unreachable!("FastPath::of accepts BPE models only")
        };
        CACHE.with(|cache| {
            let mut all = cache.borrow_mut();
            if !all.contains_key(&self.id) && all.len() >= CACHED_TOKENIZERS {
                all.clear(); // tokenizers dropped long ago keep no memory
            }
            let cache = all.entry(self.id).or_default();
            let mut ids = Vec::with_capacity(text.len() / 3 + 1);
            let mut failed = None;
            split(text, |piece| {
                if failed.is_some() {
                    return;
                }
                if let Some(hit) = cache.get(piece) {
                    ids.extend_from_slice(hit);
                    return;
                }
                match merge(bpe, piece) {
                    Ok(found) => {
                        ids.extend_from_slice(&found);
                        if cache.len() >= CACHE_ENTRIES {
                            cache.clear();
                        }
                        cache.insert(piece.into(), found);
                    }
                    Err(e) => failed = Some(e),
                }
            });
            match failed {
                Some(e) => Err(e),
                None => Ok(ids),
            }
        })
    }
}

fn merge(bpe: &BPE, piece: &str) -> tokenizers::Result<Box<[u32]>> {
    Ok(bpe
        .tokenize(&byte_symbols(piece))?
        .into_iter()
        .map(|t| t.id)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<&str> {
        let mut out = Vec::new();
        split(text, |p| out.push(p));
        out
    }

    /// The library's own split of `text` by the same pattern.
    fn library_pieces(text: &str) -> Vec<String> {
        let re = fancy_regex::Regex::new(
            r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
        )
        .unwrap();
        re.find_iter(text)
            .map(|m| m.unwrap().as_str().to_string())
            .collect()
    }

    #[test]
    fn pieces_follow_the_gpt2_pattern() {
        assert_eq!(
            pieces("He's here,  isn't he?\t\n 42x"),
            ["He", "'s", " here", ",", " ", " isn", "'t", " he", "?", "\t\n", " 42", "x"]
        );
        for text in [
            "",
            " ",
            "   ",
            "a  ",
            "  a",
            "'",
            "''s",
            "x'l",
            "'ll'",
            " 're",
            "\u{a0}\u{a0}a",
            "e\u{301}t\u{e9} ²Ⅻ٣",
            "日本語 テキスト",
            "emoji 😀😀 ok",
            "\u{85}\u{2028}\t \t",
            "a\u{0}b",
        ] {
            assert_eq!(
                pieces(text),
                library_pieces(text),
                "{text:?} is split as the regex splits it"
            );
        }
    }

    #[test]
    fn byte_symbols_are_the_byte_level_alphabet() {
        let ours: std::collections::HashSet<char> = BYTE_SYMBOLS.iter().copied().collect();
        let theirs: std::collections::HashSet<char> =
            tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
                .into_iter()
                .collect();
        assert_eq!(ours, theirs);
        assert_eq!(byte_symbols(" a"), "Ġa");
        assert_eq!(byte_symbols("\n"), "Ċ");
    }

    use proptest::prelude::*;

    proptest! {
        #[test]
        fn random_text_splits_as_the_regex_does(
            chars in proptest::collection::vec(proptest::sample::select(vec![
                ' ', ' ', '\t', '\n', '\'', 's', 't', 'r', 'e', 'v', 'l', 'm', 'd', 'A', '7', '²',
                'Ⅻ', '\u{301}', 'é', '語', '😀', '\u{a0}', '\u{2028}', '\u{0}', '.', ',', '-',
            ]), 0..40)
        ) {
            let text: String = chars.into_iter().collect();
            prop_assert_eq!(pieces(&text), library_pieces(&text));
        }
    }
}
