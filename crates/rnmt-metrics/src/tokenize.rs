//! sacrebleu's BLEU tokenizers (`13a`, `intl`, `char`, `none`) and the few
//! Python string semantics that sacrebleu relies on.
//!
//! Every tokenizer returns a `String` whose tokens are separated by whitespace,
//! exactly like sacrebleu's tokenizer classes; BLEU then splits it with
//! [`py_split`] (Python's `str.split()` with no argument).
//!
//! Python's notion of whitespace (`str.isspace`) is *not* Rust's
//! [`char::is_whitespace`]: Python also treats the ASCII information
//! separators U+001C..U+001F as whitespace. [`is_py_space`] reproduces Python's
//! set, and [`py_split`] / [`py_rstrip`] use it, so text containing those
//! characters is split and stripped as sacrebleu does.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use regex::Regex;

use super::MetricsError;

/// Python's `str.isspace()` for one character.
///
/// Python's whitespace set is Rust's `White_Space` set plus U+001C..U+001F
/// (file, group, record and unit separators).
pub fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `s.split()` (no argument): split on runs of [`is_py_space`]
/// characters, dropping empty pieces.
pub fn py_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_py_space).filter(|t| !t.is_empty())
}

/// Python's `s.rstrip()` (no argument): strip trailing [`is_py_space`]
/// characters (this includes `\r`, so CRLF line endings disappear).
pub fn py_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_py_space)
}

/// Python's `' '.join(s.split())`: collapse whitespace runs to one space and
/// trim both ends.
pub fn py_normalize_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for tok in py_split(s) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(tok);
    }
    out
}

/// The BLEU tokenizers of sacrebleu that do not need external models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tokenizer {
    /// `13a`: mteval-v13a.pl tokenization (sacrebleu's default);
    /// mirrors `sacrebleu.tokenizers.tokenizer_13a.Tokenizer13a`.
    #[default]
    Tok13a,
    /// `intl`: mteval-v14 international tokenization on Unicode punctuation
    /// and symbols; mirrors `tokenizer_intl.TokenizerV14International`.
    Intl,
    /// `char`: every character is a token; mirrors `tokenizer_char.TokenizerChar`.
    Char,
    /// `none`: no tokenization; mirrors `tokenizer_none.NoneTokenizer`.
    None,
}

impl Tokenizer {
    /// All supported tokenizers, in the order sacrebleu documents them.
    pub const ALL: [Tokenizer; 4] = [
        Tokenizer::Tok13a,
        Tokenizer::Intl,
        Tokenizer::Char,
        Tokenizer::None,
    ];

    /// The name used on the command line and in the signature (`tok:13a`),
    /// i.e. sacrebleu's `tokenizer.signature()`.
    pub fn name(self) -> &'static str {
        match self {
            Tokenizer::Tok13a => "13a",
            Tokenizer::Intl => "intl",
            Tokenizer::Char => "char",
            Tokenizer::None => "none",
        }
    }

    /// Tokenize one (already lowercased and right-stripped) segment;
    /// mirrors the tokenizer's `__call__`.
    pub fn tokenize(self, line: &str) -> String {
        match self {
            Tokenizer::Tok13a => tokenize_13a(line),
            Tokenizer::Intl => tokenize_intl(line),
            Tokenizer::Char => tokenize_char(line),
            Tokenizer::None => line.to_string(),
        }
    }
}

impl fmt::Display for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Tokenizer {
    type Err = MetricsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tokenizer::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| MetricsError::UnknownTokenizer(s.to_string()))
    }
}

/// Characters that the first 13a regex,
/// `([\{-\~\[-\` -\&\(-\+\:-\@\/])`, surrounds with spaces.
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// Apply a `re.sub` whose pattern matches exactly two characters
/// (`(X)(Y)`), scanning left to right without overlaps like Python does.
/// `matches(a, b)` tests a candidate pair; `emit` writes the replacement.
fn sub_pairs(
    s: &str,
    matches: impl Fn(char, char) -> bool,
    emit: impl Fn(&mut String, char, char),
) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 16);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && matches(chars[i], chars[i + 1]) {
            emit(&mut out, chars[i], chars[i + 1]);
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// sacrebleu's `TokenizerRegexp.__call__`: the language-dependent regexes of
/// mteval-v13a, applied in order, then whitespace normalization.
fn post_tokenize_13a(line: &str) -> String {
    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> ' \1 '
    let mut s = String::with_capacity(line.len() * 2);
    for c in line.chars() {
        if is_13a_symbol(c) {
            s.push(' ');
            s.push(c);
            s.push(' ');
        } else {
            s.push(c);
        }
    }
    let is_digit = |c: char| c.is_ascii_digit();
    let is_dot_comma = |c: char| c == '.' || c == ',';
    // ([^0-9])([\.,]) -> '\1 \2 '
    let s = sub_pairs(
        &s,
        |a, b| !is_digit(a) && is_dot_comma(b),
        |o, a, b| {
            o.push(a);
            o.push(' ');
            o.push(b);
            o.push(' ');
        },
    );
    // ([\.,])([^0-9]) -> ' \1 \2'
    let s = sub_pairs(
        &s,
        |a, b| is_dot_comma(a) && !is_digit(b),
        |o, a, b| {
            o.push(' ');
            o.push(a);
            o.push(' ');
            o.push(b);
        },
    );
    // ([0-9])(-) -> '\1 \2 '
    let s = sub_pairs(
        &s,
        |a, b| is_digit(a) && b == '-',
        |o, a, b| {
            o.push(a);
            o.push(' ');
            o.push(b);
            o.push(' ');
        },
    );
    py_normalize_spaces(&s)
}

/// The `13a` tokenizer; mirrors `Tokenizer13a.__call__`: drop `<skipped>`,
/// join `-\n` hyphenation, unescape `&quot; &amp; &lt; &gt;` (in that order,
/// as sequential `str.replace` calls), pad with spaces and apply the
/// mteval-v13a regexes.
pub fn tokenize_13a(line: &str) -> String {
    let mut line = line.replace("<skipped>", "");
    line = line.replace("-\n", "");
    line = line.replace('\n', " ");
    if line.contains('&') {
        line = line.replace("&quot;", "\"");
        line = line.replace("&amp;", "&");
        line = line.replace("&lt;", "<");
        line = line.replace("&gt;", ">");
    }
    post_tokenize_13a(&format!(" {line} "))
}

/// The three regexes of `TokenizerV14International`, compiled once.
fn intl_regexes() -> &'static [(Regex, &'static str); 3] {
    static RES: OnceLock<[(Regex, &'static str); 3]> = OnceLock::new();
    RES.get_or_init(|| {
        let re = |p: &str| Regex::new(p).expect("constant regex is valid");
        [
            // Separate out punctuations preceded by a non-digit
            (re(r"(\P{N})(\p{P})"), "${1} ${2} "),
            // Separate out punctuations followed by a non-digit
            (re(r"(\p{P})(\P{N})"), " ${1} ${2}"),
            // Separate out symbols
            (re(r"(\p{S})"), " ${1} "),
        ]
    })
}

/// The `intl` tokenizer; mirrors `TokenizerV14International.__call__`
/// (Unicode general categories `N`, `P`, `S` via the `regex` crate's tables).
pub fn tokenize_intl(line: &str) -> String {
    let mut s = line.to_string();
    for (re, rep) in intl_regexes() {
        s = re.replace_all(&s, *rep).into_owned();
    }
    py_normalize_spaces(&s)
}

/// The `char` tokenizer; mirrors `TokenizerChar.__call__`
/// (`" ".join(line)`: every character, whitespace included, separated by a
/// space; whitespace characters vanish when BLEU splits the result).
pub fn tokenize_char(line: &str) -> String {
    let mut out = String::with_capacity(line.len() * 2);
    for (i, c) in line.chars().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_whitespace_includes_separators() {
        assert!(is_py_space('\u{1c}') && is_py_space('\u{1f}') && is_py_space('\u{3000}'));
        assert!(!'\u{1c}'.is_whitespace());
        assert_eq!(
            py_split("a\u{1c}b  c\u{a0}").collect::<Vec<_>>(),
            ["a", "b", "c"]
        );
        assert_eq!(py_rstrip("x \t\r\u{1f}"), "x");
    }

    #[test]
    fn thirteen_a_numbers_and_entities() {
        assert_eq!(
            tokenize_13a("1,000.50 and 1.000,50."),
            "1,000.50 and 1.000,50 ."
        );
        assert_eq!(
            tokenize_13a("Tom &amp;amp; &quot;x&quot;"),
            "Tom & amp ; \" x \""
        );
        assert_eq!(tokenize_13a("pages 10-20 a-b"), "pages 10 - 20 a-b");
        assert_eq!(tokenize_13a("x<skipped>y"), "xy");
    }

    #[test]
    fn intl_unicode_classes() {
        assert_eq!(tokenize_intl("«Bonjour!» 5€ 1,5"), "« Bonjour ! » 5 € 1,5");
        assert_eq!(tokenize_intl("公园、吃饭。"), "公园 、 吃饭 。");
    }

    #[test]
    fn char_and_parse() {
        assert_eq!(tokenize_char("ab c"), "a b   c");
        assert_eq!("intl".parse::<Tokenizer>().ok(), Some(Tokenizer::Intl));
        assert!("zh".parse::<Tokenizer>().is_err());
    }
}
