//! Raw sources of sentence pairs: the records of a delimited file (read with the `csv` crate)
//! or the lines of two aligned files, as UTF-8 strings with line endings stripped, before
//! normalization. Blank lines come out as [`RawItem::Blank`]; the caller decides whether they
//! are trailing (ignored) or not (an error).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use csv::{ByteRecord, ReaderBuilder, Terminator};

use super::{CorpusError, CorpusSource, DelimitedFormat};

/// One line (or CSV record) of a corpus, before normalization.
pub(super) enum RawItem {
    /// An empty or whitespace-only line, at this 1-based line number.
    Blank(u64),
    /// A pair of texts starting at `line`.
    Pair { line: u64, src: String, tgt: String },
}

/// A raw source of one of the two kinds.
pub(super) enum RawSource {
    Delimited(Box<DelimitedLines>),
    Aligned(Box<AlignedLines>),
}

impl RawSource {
    /// Opens the file(s) of `source`.
    pub(super) fn open(source: &CorpusSource) -> Result<Self, CorpusError> {
        Ok(match source {
            CorpusSource::Delimited {
                path,
                format,
                src_col,
                tgt_col,
                header,
            } => RawSource::Delimited(Box::new(DelimitedLines::open(
                path, *format, *src_col, *tgt_col, *header,
            )?)),
            CorpusSource::Aligned { src, tgt } => RawSource::Aligned(Box::new(AlignedLines {
                src: LineFile::open(src)?,
                tgt: LineFile::open(tgt)?,
                line: 0,
            })),
        })
    }

    /// The next item, `None` at the end.
    pub(super) fn next_item(&mut self) -> Option<Result<RawItem, CorpusError>> {
        match self {
            RawSource::Delimited(d) => d.next_item(),
            RawSource::Aligned(a) => a.next_item(),
        }
    }
}

fn open_file(path: &Path) -> Result<File, CorpusError> {
    File::open(path).map_err(|cause| CorpusError::Open {
        path: path.to_path_buf(),
        cause,
    })
}

fn is_blank(bytes: &[u8]) -> bool {
    std::str::from_utf8(bytes).is_ok_and(|s| s.trim().is_empty())
}

/// Decodes UTF-8 strictly, naming the file, line and text on failure.
fn to_text(bytes: &[u8], path: &Path, line: u64, what: &str) -> Result<String, CorpusError> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => Err(CorpusError::InvalidUtf8 {
            path: path.to_path_buf(),
            line,
            what: what.to_string(),
            offset: e.valid_up_to(),
            byte: bytes[e.valid_up_to()],
        }),
    }
}

/// How many fields a delimited record must have.
#[derive(Clone, Copy)]
enum Width {
    Exact(usize),
    AtLeast(usize),
}

/// Records of a TSV/CSV file. The `csv` crate skips empty lines silently, so their line
/// numbers are recovered from the reader's position and reported as blank lines.
pub(super) struct DelimitedLines {
    rdr: csv::Reader<File>,
    record: ByteRecord,
    path: PathBuf,
    format: DelimitedFormat,
    src_col: usize,
    tgt_col: usize,
    has_header: bool,
    header_pending: bool,
    width: Width,
    /// File length and whether it ends with `\n`, to tell an unterminated last line.
    file_len: Option<u64>,
    ends_with_newline: bool,
    /// The line just after the previous record.
    next_line: u64,
    blank_line: u64,
    blanks_left: u64,
    /// Start line of a record read but not yet returned (after the blank lines before it).
    record_pending: Option<u64>,
}

impl DelimitedLines {
    fn open(
        path: &Path,
        format: DelimitedFormat,
        src_col: usize,
        tgt_col: usize,
        header: bool,
    ) -> Result<Self, CorpusError> {
        let mut file = open_file(path)?;
        let (file_len, ends_with_newline) = last_byte(&mut file)
            .map_err(|cause| CorpusError::Read {
                path: path.to_path_buf(),
                line: 1,
                cause,
            })?
            .map_or((None, true), |(len, last)| (Some(len), last == b'\n'));
        let rdr = ReaderBuilder::new()
            .delimiter(format.delimiter())
            .quoting(format == DelimitedFormat::Csv)
            .has_headers(false)
            .flexible(true)
            .terminator(Terminator::Any(b'\n'))
            .buffer_capacity(1 << 16)
            .from_reader(file);
        let needed = src_col.max(tgt_col) + 1;
        let width = match format {
            DelimitedFormat::Tsv => Width::Exact(needed),
            DelimitedFormat::Csv => Width::AtLeast(needed),
        };
        Ok(DelimitedLines {
            rdr,
            record: ByteRecord::new(),
            path: path.to_path_buf(),
            format,
            src_col,
            tgt_col,
            has_header: header,
            header_pending: header,
            width,
            file_len,
            ends_with_newline,
            next_line: 1,
            blank_line: 0,
            blanks_left: 0,
            record_pending: None,
        })
    }

    fn next_item(&mut self) -> Option<Result<RawItem, CorpusError>> {
        loop {
            if self.blanks_left > 0 {
                self.blanks_left -= 1;
                self.blank_line += 1;
                return Some(Ok(RawItem::Blank(self.blank_line - 1)));
            }
            if let Some(line) = self.record_pending.take() {
                match self.process(line) {
                    Some(item) => return Some(item),
                    None => continue, // the header
                }
            }
            match self.rdr.read_byte_record(&mut self.record) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    let cause = match e.into_kind() {
                        csv::ErrorKind::Io(io) => io,
                        other => io::Error::other(format!("{other:?}")),
                    };
                    return Some(Err(CorpusError::Read {
                        path: self.path.clone(),
                        line: self.next_line,
                        cause,
                    }));
                }
            }
            let pos = self.rdr.position();
            let newlines_inside = self.record.as_slice().iter().filter(|&&b| b == b'\n');
            let terminated = match self.file_len {
                Some(len) if pos.byte() == len => self.ends_with_newline,
                _ => true,
            };
            let start = pos
                .line()
                .saturating_sub(newlines_inside.count() as u64 + u64::from(terminated));
            self.blank_line = self.next_line;
            self.blanks_left = start.saturating_sub(self.next_line);
            self.next_line = pos.line();
            self.record_pending = Some(start);
        }
    }

    /// Turns the current record into an item; `None` for the header.
    fn process(&mut self, line: u64) -> Option<Result<RawItem, CorpusError>> {
        let n = self.record.len();
        let field = |i: usize| -> &[u8] {
            let f = &self.record[i];
            if i + 1 == n {
                f.strip_suffix(b"\r").unwrap_or(f)
            } else {
                f
            }
        };
        if n == 1 && is_blank(field(0)) {
            return Some(Ok(RawItem::Blank(line)));
        }
        let max_col = self.src_col.max(self.tgt_col);
        if self.header_pending {
            self.header_pending = false;
            if n <= max_col {
                return Some(Err(CorpusError::Header {
                    path: self.path.clone(),
                    line,
                    detail: format!(
                        "{n} {} fields, but column {max_col} (0-based) is selected",
                        self.format.adjective()
                    ),
                }));
            }
            self.width = Width::Exact(n);
            return None;
        }
        let ok = match self.width {
            Width::Exact(w) => n == w,
            Width::AtLeast(w) => n >= w,
        };
        if !ok {
            let adj = self.format.adjective();
            let expected = match (self.width, self.has_header) {
                (Width::Exact(w), true) => format!("{w} {adj} fields (as in the header)"),
                (Width::Exact(w), false) => format!("{w} {adj} fields"),
                (Width::AtLeast(w), _) => format!(
                    "at least {w} {adj} fields (columns {} and {} are read)",
                    self.src_col, self.tgt_col
                ),
            };
            return Some(Err(CorpusError::WrongFieldCount {
                path: self.path.clone(),
                line,
                expected,
                found: n,
            }));
        }
        let texts =
            to_text(field(self.src_col), &self.path, line, "source field").and_then(|src| {
                let tgt = to_text(field(self.tgt_col), &self.path, line, "target field")?;
                Ok(RawItem::Pair { line, src, tgt })
            });
        Some(texts)
    }
}

/// The file's length and last byte, or `None` if it is empty or cannot seek; the file is left
/// at its start.
fn last_byte(file: &mut File) -> io::Result<Option<(u64, u8)>> {
    let len = match file.seek(SeekFrom::End(0)) {
        Ok(len) => len,
        Err(_) => return Ok(None),
    };
    if len == 0 {
        return Ok(None);
    }
    file.seek(SeekFrom::Start(len - 1))?;
    let mut last = [0u8; 1];
    file.read_exact(&mut last)?;
    file.seek(SeekFrom::Start(0))?;
    Ok(Some((len, last[0])))
}

/// One of two aligned plain text files.
struct LineFile {
    path: PathBuf,
    reader: BufReader<File>,
    buf: Vec<u8>,
}

impl LineFile {
    fn open(path: &Path) -> Result<Self, CorpusError> {
        Ok(LineFile {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, open_file(path)?),
            buf: Vec::new(),
        })
    }

    /// Reads line `line` into `buf` without its `\n` / `\r\n`; false at the end of the file.
    fn read_line(&mut self, line: u64) -> Result<bool, CorpusError> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|cause| CorpusError::Read {
                path: self.path.clone(),
                line,
                cause,
            })?;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(n > 0)
    }

    /// Whether the current line and all lines after it are blank.
    fn rest_is_blank(&mut self, mut line: u64) -> Result<bool, CorpusError> {
        loop {
            if !is_blank(&self.buf) {
                return Ok(false);
            }
            line += 1;
            if !self.read_line(line)? {
                return Ok(true);
            }
        }
    }
}

/// Lines of two aligned files, read in step.
pub(super) struct AlignedLines {
    src: LineFile,
    tgt: LineFile,
    line: u64,
}

impl AlignedLines {
    fn next_item(&mut self) -> Option<Result<RawItem, CorpusError>> {
        self.line += 1;
        let line = self.line;
        let step = (|| {
            let has_src = self.src.read_line(line)?;
            let has_tgt = self.tgt.read_line(line)?;
            let (shorter, longer) = match (has_src, has_tgt) {
                (false, false) => return Ok(None),
                (true, true) => {
                    if is_blank(&self.src.buf) && is_blank(&self.tgt.buf) {
                        return Ok(Some(RawItem::Blank(line)));
                    }
                    let src = to_text(&self.src.buf, &self.src.path, line, "line")?;
                    let tgt = to_text(&self.tgt.buf, &self.tgt.path, line, "line")?;
                    return Ok(Some(RawItem::Pair { line, src, tgt }));
                }
                (false, true) => (&self.src, &mut self.tgt),
                (true, false) => (&self.tgt, &mut self.src),
            };
            // Blank lines at the end of the longer file are not a mismatch.
            if longer.rest_is_blank(line)? {
                return Ok(None);
            }
            Err(CorpusError::LineCountMismatch {
                shorter: shorter.path.clone(),
                longer: longer.path.clone(),
                line,
            })
        })();
        step.transpose()
    }
}
