//! The `--constraints FILE` of `rnmt-translate`: line `N` holds the target phrases of input
//! line `N`, separated by tabs (an empty line: none).
//!
//! The file is read as the translation goes, shared by the workers: a worker asks for the
//! phrases of the lines of its batch; lines read ahead of the one asked for wait in a table
//! until their batch asks. Batches are cut from a bounded window of input lines, so the table
//! stays bounded too, and each line is held at most `max_line_bytes`.
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::corpus::lines::{read_line_bounded, strip_bom};
use crate::error::{Error, Result};

/// A constraints file read on demand.
pub struct ConstraintFile {
    path: PathBuf,
    max_line_bytes: usize,
    inner: Mutex<Inner>,
}

struct Inner {
    reader: Box<dyn BufRead + Send>,
    /// Lines read so far.
    read: usize,
    /// Lines read and not yet asked for.
    waiting: BTreeMap<usize, Vec<String>>,
    at_end: bool,
}

impl std::fmt::Debug for ConstraintFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConstraintFile({})", self.path.display())
    }
}

impl ConstraintFile {
    /// Opens `path`; lines longer than `max_line_bytes` are refused when read.
    pub fn open(path: &Path, max_line_bytes: usize) -> Result<Self> {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self::from_reader(
            path,
            Box::new(std::io::BufReader::new(f)),
            max_line_bytes,
        ))
    }

    /// Reads constraints from `reader`, named `path` in messages.
    pub fn from_reader(
        path: &Path,
        reader: Box<dyn BufRead + Send>,
        max_line_bytes: usize,
    ) -> Self {
        ConstraintFile {
            path: path.to_path_buf(),
            max_line_bytes,
            inner: Mutex::new(Inner {
                reader,
                read: 0,
                waiting: BTreeMap::new(),
                at_end: false,
            }),
        }
    }

    /// The phrases of input line `line` (1-based; each line asked for once). A file with
    /// fewer lines than the input, a line that is not UTF-8 or is too long are errors
    /// naming the file and the line.
    pub fn phrases(&self, line: usize) -> Result<Vec<String>> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Error::Input("the constraints reader failed".into()))?;
        if let Some(p) = inner.waiting.remove(&line) {
            return Ok(p);
        }
        while inner.read < line {
            let no = inner.read + 1;
            let name = self.path.display();
            let mut buf = Vec::new();
            let got = read_line_bounded(&mut inner.reader, &mut buf, self.max_line_bytes)
                .map_err(|e| Error::Input(format!("{name}:{no}: read error: {e}")))?;
            let Some(len) = got else {
                inner.at_end = true;
                return Err(Error::Input(format!(
                    "{name} has {} lines, fewer than the input (line {line} has no constraints line)",
                    inner.read
                )));
            };
            if len > self.max_line_bytes {
                return Err(Error::Input(format!(
                    "{name}:{no}: {len} bytes, more than --max-line-bytes {}",
                    self.max_line_bytes
                )));
            }
            if no == 1 {
                strip_bom(&mut buf);
            }
            let text = String::from_utf8(buf).map_err(|e| {
                Error::Input(format!("{name}:{no}: invalid UTF-8 ({})", e.utf8_error()))
            })?;
            let phrases: Vec<String> = text
                .trim_end_matches('\r')
                .split('\t')
                .filter(|p| !p.trim().is_empty())
                .map(str::to_string)
                .collect();
            inner.read = no;
            if no == line {
                return Ok(phrases);
            }
            inner.waiting.insert(no, phrases);
        }
        Err(Error::Input(format!(
            "{}: the constraints of line {line} were asked for twice",
            self.path.display()
        )))
    }

    /// Whether lines are left after the last one asked for (the file is longer than the
    /// input).
    pub fn has_more(&self) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        if inner.at_end || !inner.waiting.is_empty() {
            return !inner.waiting.is_empty();
        }
        let mut buf = Vec::new();
        matches!(
            read_line_bounded(&mut inner.reader, &mut buf, 1),
            Ok(Some(_))
        )
    }

    /// The file's name.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> ConstraintFile {
        let r = std::io::Cursor::new(text.as_bytes().to_vec());
        ConstraintFile::from_reader(Path::new("c.txt"), Box::new(r), 100)
    }

    #[test]
    fn lines_come_in_any_order_and_split_at_tabs() {
        let c = file("a\tb c\n\nd\t\t\n");
        assert_eq!(c.phrases(3).unwrap(), vec!["d"]);
        assert_eq!(c.phrases(1).unwrap(), vec!["a", "b c"]);
        assert!(c.phrases(2).unwrap().is_empty());
        assert!(!c.has_more());
    }

    #[test]
    fn a_short_file_is_one_clear_error() {
        let c = file("a\n");
        assert_eq!(c.phrases(1).unwrap(), vec!["a"]);
        let e = c.phrases(2).unwrap_err().to_string();
        assert!(e.contains("c.txt has 1 lines, fewer than the input"), "{e}");
    }

    #[test]
    fn a_longer_file_is_noticed() {
        let c = file("a\nb\n");
        assert_eq!(c.phrases(1).unwrap(), vec!["a"]);
        assert!(c.has_more());
    }
}
