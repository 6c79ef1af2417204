//! Errors of the corpus reader, and the per-reason counts of skipped lines.
//!
//! Every [`CorpusError`] displays as one line that starts with the file (and the 1-based line
//! number where there is one), e.g. `corpora/x.tsv:17: expected 2 tab-separated fields, found 1`.

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde::Serialize;
use thiserror::Error;

/// Why a line was rejected. Lines rejected for one of these reasons are skipped (and counted)
/// when [`ReadOptions::skip_bad_lines`](super::ReadOptions) is set; every other error is fatal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// The line has too few or too many fields.
    WrongFieldCount,
    /// A text field (or an aligned line) is not valid UTF-8.
    InvalidUtf8,
    /// The source or the target is empty or whitespace-only after normalization.
    EmptySide,
    /// A blank line that is not at the end of the file.
    BlankLine,
    /// A line longer than [`ReadOptions::max_line_bytes`](super::ReadOptions).
    TooLong,
}

impl SkipReason {
    /// Short human-readable name, as used in [`SkipCounts`]'s display.
    pub fn name(self) -> &'static str {
        match self {
            SkipReason::WrongFieldCount => "wrong field count",
            SkipReason::InvalidUtf8 => "invalid UTF-8",
            SkipReason::EmptySide => "empty side",
            SkipReason::BlankLine => "blank line",
            SkipReason::TooLong => "line too long",
        }
    }
}

/// Which side of a pair an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The source text.
    Source,
    /// The target text.
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// Number of lines skipped, by reason (all zero unless `skip_bad_lines` is set).
///
/// Displays as e.g. `skipped 3 lines: 2 wrong field count, 1 empty side`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SkipCounts {
    /// Lines with too few or too many fields.
    pub wrong_field_count: u64,
    /// Lines that are not valid UTF-8.
    pub invalid_utf8: u64,
    /// Lines whose source or target is empty after normalization.
    pub empty_side: u64,
    /// Blank lines before the end of the file.
    pub blank_line: u64,
    /// Lines longer than the byte limit.
    pub too_long: u64,
}

impl SkipCounts {
    /// Total number of skipped lines.
    pub fn total(&self) -> u64 {
        self.wrong_field_count
            + self.invalid_utf8
            + self.empty_side
            + self.blank_line
            + self.too_long
    }

    /// The count for one reason.
    pub fn get(&self, reason: SkipReason) -> u64 {
        match reason {
            SkipReason::WrongFieldCount => self.wrong_field_count,
            SkipReason::InvalidUtf8 => self.invalid_utf8,
            SkipReason::EmptySide => self.empty_side,
            SkipReason::BlankLine => self.blank_line,
            SkipReason::TooLong => self.too_long,
        }
    }

    /// Adds `n` lines skipped for `reason`.
    pub fn add(&mut self, reason: SkipReason, n: u64) {
        let slot = match reason {
            SkipReason::WrongFieldCount => &mut self.wrong_field_count,
            SkipReason::InvalidUtf8 => &mut self.invalid_utf8,
            SkipReason::EmptySide => &mut self.empty_side,
            SkipReason::BlankLine => &mut self.blank_line,
            SkipReason::TooLong => &mut self.too_long,
        };
        *slot += n;
    }
}

impl fmt::Display for SkipCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total = self.total();
        write!(
            f,
            "skipped {total} line{}",
            if total == 1 { "" } else { "s" }
        )?;
        let reasons = [
            SkipReason::WrongFieldCount,
            SkipReason::InvalidUtf8,
            SkipReason::EmptySide,
            SkipReason::BlankLine,
            SkipReason::TooLong,
        ];
        let mut sep = ": ";
        for reason in reasons {
            let n = self.get(reason);
            if n > 0 {
                write!(f, "{sep}{n} {}", reason.name())?;
                sep = ", ";
            }
        }
        Ok(())
    }
}

/// An error while reading a corpus. Each message is a single line naming the file, and the
/// 1-based line number where there is one.
#[derive(Debug, Error)]
pub enum CorpusError {
    /// A file could not be opened.
    #[error("{}: cannot open", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        cause: io::Error,
    },
    /// Reading failed part-way through a file.
    #[error("{}:{line}: read error", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The line being read.
        line: u64,
        /// The OS error.
        #[source]
        cause: io::Error,
    },
    /// A physical line is longer than the limit (it is never read whole).
    #[error("{}:{line}: line longer than {limit} bytes (data.max_line_bytes); use --skip-bad-lines to skip such lines", path.display())]
    LineTooLong {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The limit in bytes.
        limit: usize,
    },
    /// A line has too few or too many fields.
    #[error("{}:{line}: expected {expected}, found {found}", path.display())]
    WrongFieldCount {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What was expected, e.g. `2 tab-separated fields`.
        expected: String,
        /// Number of fields found.
        found: usize,
    },
    /// A field or line is not valid UTF-8 (it is never replaced silently).
    #[error("{}:{line}: invalid UTF-8 in the {what} (byte 0x{byte:02X} at byte offset {offset})", path.display())]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// Which text, e.g. `source field`.
        what: String,
        /// Offset of the first invalid byte within the text.
        offset: usize,
        /// The first invalid byte.
        byte: u8,
    },
    /// A CSV quote opened on `line` is never closed: the field runs to the end of the file.
    #[error("{}:{line}: unterminated quote: the quoted field that opens on line {line} runs to the end of the file (close it with \", or write a quote inside a quoted field as \"\")", path.display())]
    UnterminatedQuote {
        /// The file.
        path: PathBuf,
        /// 1-based line where the record with the open quote starts.
        line: u64,
    },
    /// The source or target is empty or whitespace-only after normalization.
    #[error("{}:{line}: empty {side} text", path.display())]
    EmptySide {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// The empty side.
        side: Side,
    },
    /// A blank line before the end of the file.
    #[error("{}:{line}: blank line", path.display())]
    BlankLine {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
    },
    /// The header line of a delimited file is unusable (too few columns, not UTF-8).
    #[error("{}:{line}: bad header: {detail}", path.display())]
    Header {
        /// The file.
        path: PathBuf,
        /// 1-based line number of the header.
        line: u64,
        /// What is wrong.
        detail: String,
    },
    /// Two line-aligned files have different numbers of lines.
    #[error(
        "line count mismatch: {} ran out at line {line} ({} lines) but {} has more lines",
        shorter.display(), line - 1, longer.display()
    )]
    LineCountMismatch {
        /// The file that ended first.
        shorter: PathBuf,
        /// The file that has more lines.
        longer: PathBuf,
        /// The first line number that `shorter` lacks (its line count + 1).
        line: u64,
    },
    /// Reading produced no sentence pair at all.
    #[error("{source_name}: no sentence pairs{}", skipped_note(skipped))]
    EmptyCorpus {
        /// The corpus (file name, or both file names for aligned files).
        source_name: String,
        /// Lines skipped while reading, if any.
        skipped: SkipCounts,
    },
}

fn skipped_note(skipped: &SkipCounts) -> String {
    if skipped.total() == 0 {
        String::new()
    } else {
        format!(" ({skipped})")
    }
}

impl CorpusError {
    /// The reason a line can be skipped for, or `None` for a fatal error.
    pub fn skip_reason(&self) -> Option<SkipReason> {
        match self {
            CorpusError::WrongFieldCount { .. } => Some(SkipReason::WrongFieldCount),
            CorpusError::InvalidUtf8 { .. } => Some(SkipReason::InvalidUtf8),
            CorpusError::EmptySide { .. } => Some(SkipReason::EmptySide),
            CorpusError::BlankLine { .. } => Some(SkipReason::BlankLine),
            CorpusError::LineTooLong { .. } => Some(SkipReason::TooLong),
            _ => None,
        }
    }

    /// The 1-based line number the error is about, where there is one.
    pub fn line(&self) -> Option<u64> {
        match self {
            CorpusError::Read { line, .. }
            | CorpusError::WrongFieldCount { line, .. }
            | CorpusError::InvalidUtf8 { line, .. }
            | CorpusError::EmptySide { line, .. }
            | CorpusError::BlankLine { line, .. }
            | CorpusError::LineTooLong { line, .. }
            | CorpusError::UnterminatedQuote { line, .. }
            | CorpusError::Header { line, .. }
            | CorpusError::LineCountMismatch { line, .. } => Some(*line),
            CorpusError::Open { .. } | CorpusError::EmptyCorpus { .. } => None,
        }
    }
}
