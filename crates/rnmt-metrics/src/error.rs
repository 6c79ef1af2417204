//! The error type of the metrics module.

use std::path::PathBuf;

/// Everything that can go wrong when reading evaluation data or configuring
/// and computing a metric. Messages are single lines meant for end users;
/// the underlying cause (I/O or UTF-8 error) is available via
/// [`std::error::Error::source`].
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A file (or stdin) could not be opened or read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file name as given (or `<stdin>`).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A line of an input is not valid UTF-8.
    #[error("{}: line {line} is not valid UTF-8", path.display())]
    InvalidUtf8 {
        /// The file name as given (or `<stdin>`).
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The decoding error.
        #[source]
        source: std::str::Utf8Error,
    },
    /// Hypothesis and reference files have different numbers of lines.
    #[error(
        "line count mismatch: hypothesis file {} has {} but reference file {} has {}",
        hyp_path.display(), lines(*hyp_lines), ref_path.display(), lines(*ref_lines)
    )]
    LineCountMismatch {
        /// Hypothesis file name.
        hyp_path: PathBuf,
        /// Number of hypothesis lines.
        hyp_lines: usize,
        /// Reference file name.
        ref_path: PathBuf,
        /// Number of reference lines.
        ref_lines: usize,
    },
    /// The hypothesis input has no lines (sacrebleu's CLI exits with
    /// "Test set ... contains no sentence" in that case).
    #[error("{} contains no lines: nothing to score", path.display())]
    EmptyInput {
        /// File name of the empty input.
        path: PathBuf,
    },
    /// In-memory inputs of different lengths passed to the API.
    #[error("{what}: expected {expected} segments, got {got}")]
    LengthMismatch {
        /// Which input is wrong (e.g. "reference stream 2").
        what: String,
        /// Expected number of segments (the number of hypotheses).
        expected: usize,
        /// Actual number of segments.
        got: usize,
    },
    /// No hypotheses or no reference streams were given to the API.
    #[error("nothing to score: {0}")]
    NoData(String),
    /// Unknown BLEU tokenizer name.
    #[error("unknown tokenizer {0:?} (supported: 13a, intl, char, none)")]
    UnknownTokenizer(String),
    /// Unknown BLEU smoothing method name.
    #[error("unknown smoothing method {0:?} (supported: exp, floor, add-k, none)")]
    UnknownSmoothMethod(String),
    /// Unknown metric name.
    #[error("unknown metric {0:?} (supported: bleu, chrf)")]
    UnknownMetric(String),
    /// A configuration value outside its valid range.
    #[error("invalid {name}: {reason}")]
    InvalidConfig {
        /// The parameter name.
        name: &'static str,
        /// Why the value is rejected.
        reason: String,
    },
}

/// `1 line`, `2 lines`.
fn lines(n: usize) -> String {
    if n == 1 {
        "1 line".to_string()
    } else {
        format!("{n} lines")
    }
}
