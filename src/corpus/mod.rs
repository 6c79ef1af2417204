//! Parallel corpora: reading sentence pairs from files, normalizing and filtering them.
//!
//! A corpus is either one delimited file (TSV or CSV, one pair per record, see
//! [`CorpusSource::Delimited`]) or two line-aligned plain text files
//! ([`CorpusSource::Aligned`]). [`open`] returns a streaming [`PairReader`] (constant memory);
//! [`read_all`] collects it. Every text goes through [`normalize`], the same function the
//! translation path must apply to its input, so that training and translation see identical
//! text.
//!
//! # Bad input
//! By default the reader stops at the first bad line, with a one-line [`CorpusError`] naming
//! the file and 1-based line number. With [`ReadOptions::skip_bad_lines`], bad lines (wrong field
//! count, invalid UTF-8, an empty side, a blank line before the end of the file) are skipped and
//! counted in [`SkipCounts`]; a missing file, a line count mismatch between aligned files and an
//! empty corpus stay fatal. `\n` and `\r\n` line endings are accepted, and blank lines at the end
//! of a file are ignored.
//!
//! # Unicode normalization
//! NFKC is the default: it folds compatibility characters (full-width letters `Ａ` → `A`,
//! ligatures `ﬁ` → `fi`, non-breaking spaces → spaces, superscripts `²` → `2`) into their plain
//! forms, so the same word is always spelled with the same characters and the vocabulary gets
//! smaller. NFC only composes accents and keeps those characters, for users who need them;
//! `None` leaves the text as it is.

mod error;
mod filter;
pub mod lines;
mod raw;
mod reader;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use unicode_normalization::{is_nfc_quick, is_nfkc_quick, IsNormalized, UnicodeNormalization};

pub use error::{CorpusError, Side, SkipCounts, SkipReason};
pub use filter::{filter, filter_items, FilterConfig, FilterReport, StreamFilter};
pub use reader::PairReader;

/// Unicode normalization applied to every text, in training and in translation alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// Compatibility composition (the default): folds full-width forms, ligatures,
    /// non-breaking spaces and other compatibility characters.
    #[default]
    Nfkc,
    /// Canonical composition: composes accents, keeps compatibility characters.
    Nfc,
    /// No Unicode normalization (surrounding whitespace is still trimmed).
    None,
}

impl Normalization {
    /// The lowercase name used in configuration files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Normalization::Nfkc => "nfkc",
            Normalization::Nfc => "nfc",
            Normalization::None => "none",
        }
    }
}

impl fmt::Display for Normalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error of [`Normalization::from_str`] for an unknown name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown normalization {0:?}: expected nfkc, nfc or none")]
pub struct ParseNormalizationError(pub String);

impl FromStr for Normalization {
    type Err = ParseNormalizationError;

    /// Parses `nfkc`, `nfc` or `none` (case-insensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "nfkc" => Ok(Normalization::Nfkc),
            "nfc" => Ok(Normalization::Nfc),
            "none" => Ok(Normalization::None),
            _ => Err(ParseNormalizationError(s.to_string())),
        }
    }
}

/// Normalizes one text: Unicode normalization `n`, then leading and trailing whitespace
/// trimmed. Training data and translation input must both go through this function.
pub fn normalize(text: &str, n: Normalization) -> String {
    let already = match n {
        Normalization::Nfkc => is_nfkc_quick(text.chars()) == IsNormalized::Yes,
        Normalization::Nfc => is_nfc_quick(text.chars()) == IsNormalized::Yes,
        Normalization::None => true,
    };
    if already {
        return text.trim().to_string();
    }
    let normalized: String = match n {
        Normalization::Nfkc => text.nfkc().collect(),
        _ => text.nfc().collect(),
    };
    normalized.trim().to_string()
}

/// Layout of a delimited corpus file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DelimitedFormat {
    /// Tab-separated, no quoting: a `"` is ordinary text, a tab always separates fields.
    Tsv,
    /// Comma-separated with standard CSV quoting (`"a, b"`, `""` for a quote).
    Csv,
}

impl DelimitedFormat {
    /// The field delimiter byte.
    pub fn delimiter(self) -> u8 {
        match self {
            DelimitedFormat::Tsv => b'\t',
            DelimitedFormat::Csv => b',',
        }
    }

    /// How fields are described in error messages (`tab-separated` / `comma-separated`).
    pub fn adjective(self) -> &'static str {
        match self {
            DelimitedFormat::Tsv => "tab-separated",
            DelimitedFormat::Csv => "comma-separated",
        }
    }
}

/// Where sentence pairs come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CorpusSource {
    /// One delimited file, one pair per record, the texts in columns `src_col` and `tgt_col`
    /// (0-based). With `header`, the first record is a header and is not read as a pair.
    ///
    /// Field count rule: with a header every record must have as many fields as the header;
    /// without one, a TSV record must have exactly `max(src_col, tgt_col) + 1` fields (an extra
    /// tab is an error) and a CSV record at least that many (extra columns are ignored).
    Delimited {
        /// The file.
        path: PathBuf,
        /// TSV or CSV.
        format: DelimitedFormat,
        /// 0-based column of the source text.
        src_col: usize,
        /// 0-based column of the target text.
        tgt_col: usize,
        /// Whether the first record is a header.
        header: bool,
    },
    /// Two plain text files, line `i` of `src` translating to line `i` of `tgt`.
    Aligned {
        /// Source-language file.
        src: PathBuf,
        /// Target-language file.
        tgt: PathBuf,
    },
}

impl CorpusSource {
    /// A delimited source guessed from the extension: `.csv` (any case) is CSV, anything
    /// else TSV; columns 0 (source) and 1 (target), no header.
    pub fn from_path(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        let is_csv = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
        let format = if is_csv {
            DelimitedFormat::Csv
        } else {
            DelimitedFormat::Tsv
        };
        CorpusSource::Delimited {
            path,
            format,
            src_col: 0,
            tgt_col: 1,
            header: false,
        }
    }

    /// Two line-aligned plain text files.
    pub fn aligned(src: impl AsRef<Path>, tgt: impl AsRef<Path>) -> Self {
        CorpusSource::Aligned {
            src: src.as_ref().to_path_buf(),
            tgt: tgt.as_ref().to_path_buf(),
        }
    }
}

impl fmt::Display for CorpusSource {
    /// The file name, or `SRC + TGT` for aligned files.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorpusSource::Delimited { path, .. } => write!(f, "{}", path.display()),
            CorpusSource::Aligned { src, tgt } => {
                write!(f, "{} + {}", src.display(), tgt.display())
            }
        }
    }
}

/// How to read a corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReadOptions {
    /// Unicode normalization applied to both sides (default NFKC).
    pub normalization: Normalization,
    /// Skip and count bad lines instead of stopping at the first one (default false).
    pub skip_bad_lines: bool,
    /// A physical line longer than this many bytes is a bad line
    /// ([`CorpusError::LineTooLong`]); memory per line stays bounded (default 65536).
    pub max_line_bytes: usize,
}

/// Default of [`ReadOptions::max_line_bytes`]: far above any sentence pair, far below what
/// would make tokenization slow or memory-hungry.
pub const DEFAULT_MAX_LINE_BYTES: usize = 1 << 16;

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            normalization: Normalization::default(),
            skip_bad_lines: false,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// One sentence pair, normalized.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pair {
    /// Source text.
    pub src: String,
    /// Target text.
    pub tgt: String,
    /// 1-based line in the file where the pair starts.
    pub line: u64,
}

/// Opens a corpus for streaming. Fails at once if a file cannot be opened; every other
/// problem comes out of the iterator.
pub fn open(source: &CorpusSource, opts: &ReadOptions) -> Result<PairReader, CorpusError> {
    PairReader::open(source, opts)
}

/// Reads a whole corpus into memory, with the counts of skipped lines.
pub fn read_all(
    source: &CorpusSource,
    opts: &ReadOptions,
) -> Result<(Vec<Pair>, SkipCounts), CorpusError> {
    let mut reader = open(source, opts)?;
    let mut pairs = Vec::new();
    for pair in reader.by_ref() {
        pairs.push(pair?);
    }
    Ok((pairs, *reader.skipped()))
}
