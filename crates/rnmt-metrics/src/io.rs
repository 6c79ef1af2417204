//! Reading hypothesis and reference files the way sacrebleu's CLI does.
//!
//! sacrebleu opens files with `newline="\n"` and calls `line.rstrip()` on
//! every line: lines are split on `\n` only, and *all* trailing Python
//! whitespace is removed (`\r` of CRLF files, spaces, tabs, U+00A0, ...).
//! A final line without `\n` still counts; an empty file has 0 lines.
//! (sacrebleu reads stdin with universal newlines instead, so a lone `\r`
//! inside a line would split it there; here stdin is read like a file.)

use std::io::Read;
use std::path::{Path, PathBuf};

use super::tokenize::py_rstrip;
use super::MetricsError;

/// Split raw bytes into right-stripped UTF-8 lines. `name` is used in errors.
pub fn split_lines(bytes: &[u8], name: &Path) -> Result<Vec<String>, MetricsError> {
    let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    if pieces.last().is_some_and(|p| p.is_empty()) {
        pieces.pop();
    }
    pieces
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            std::str::from_utf8(raw)
                .map(|s| py_rstrip(s).to_string())
                .map_err(|source| MetricsError::InvalidUtf8 {
                    path: name.to_path_buf(),
                    line: i + 1,
                    source,
                })
        })
        .collect()
}

/// Read a text file as sacrebleu's `smart_open` + `rstrip` would.
pub fn read_lines(path: &Path) -> Result<Vec<String>, MetricsError> {
    let bytes = std::fs::read(path).map_err(|source| MetricsError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    split_lines(&bytes, path)
}

/// Read all of `reader` (stdin) as lines; errors name it `<stdin>`.
pub fn read_lines_from(reader: &mut dyn Read) -> Result<Vec<String>, MetricsError> {
    let name = PathBuf::from("<stdin>");
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|source| MetricsError::Io {
            path: name.clone(),
            source,
        })?;
    split_lines(&bytes, &name)
}

/// sacrebleu's CLI sanity checks for one system: it must have lines
/// (`Test set ... contains no sentence`) and as many as every reference file
/// (`sanity_check_lengths`). `refs` pairs each reference file with its lines.
pub fn check_line_counts(
    hyp_name: &str,
    hyps: &[String],
    refs: &[(PathBuf, Vec<String>)],
) -> Result<(), MetricsError> {
    if hyps.is_empty() {
        return Err(MetricsError::EmptyInput {
            path: hyp_name.into(),
        });
    }
    for (path, lines) in refs {
        if lines.len() != hyps.len() {
            return Err(MetricsError::LineCountMismatch {
                hyp_path: hyp_name.into(),
                hyp_lines: hyps.len(),
                ref_path: path.clone(),
                ref_lines: lines.len(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_python_text_mode() {
        let p = Path::new("x");
        assert_eq!(split_lines(b"", p).unwrap().len(), 0);
        assert_eq!(split_lines(b"a\r\nb \t", p).unwrap(), ["a", "b"]);
        assert_eq!(split_lines(b"a\n\n", p).unwrap(), ["a", ""]);
        assert_eq!(split_lines(b"a\rb\n", p).unwrap(), ["a\rb"]);
        let err = split_lines(b"ok\nbad \xff\n", p).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }
}
