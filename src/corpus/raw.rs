//! Raw sources of sentence pairs: the records of a delimited file (read with the `csv` crate)
//! or the lines of two aligned files, as UTF-8 strings with line endings stripped, before
//! normalization. Blank lines come out as [`RawItem::Blank`]; the caller decides whether they
//! are trailing (ignored) or not (an error).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use csv::{ByteRecord, ReaderBuilder, Terminator};

use super::lines::{read_line_bounded, strip_bom};
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
    /// Opens the file(s) of `source`; lines longer than `max_line_bytes` are never held whole
    /// and come out as [`CorpusError::LineTooLong`].
    pub(super) fn open(source: &CorpusSource, max_line_bytes: usize) -> Result<Self, CorpusError> {
        Ok(match source {
            CorpusSource::Delimited {
                path,
                format,
                src_col,
                tgt_col,
                header,
            } => RawSource::Delimited(Box::new(DelimitedLines::open(
                path,
                *format,
                *src_col,
                *tgt_col,
                *header,
                max_line_bytes,
            )?)),
            CorpusSource::Aligned { src, tgt } => RawSource::Aligned(Box::new(AlignedLines {
                src: LineFile::open(src, max_line_bytes)?,
                tgt: LineFile::open(tgt, max_line_bytes)?,
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
    rdr: csv::Reader<CappedLines<File>>,
    /// What the [`CappedLines`] inside `rdr` cut.
    cut_lines: Arc<Mutex<CutLog>>,
    max_line_bytes: usize,
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
        max_line_bytes: usize,
    ) -> Result<Self, CorpusError> {
        let mut file = open_file(path)?;
        let (file_len, ends_with_newline) = last_byte(&mut file)
            .map_err(|cause| CorpusError::Read {
                path: path.to_path_buf(),
                line: 1,
                cause,
            })?
            .map_or((None, true), |(len, last)| (Some(len), last == b'\n'));
        let cut_lines = Arc::new(Mutex::new(CutLog::default()));
        let rdr = ReaderBuilder::new()
            .delimiter(format.delimiter())
            .quoting(format == DelimitedFormat::Csv)
            .has_headers(false)
            .flexible(true)
            .terminator(Terminator::Any(b'\n'))
            .buffer_capacity(1 << 16)
            .from_reader(CappedLines {
                inner: file,
                max: max_line_bytes,
                line: 1,
                in_line: 0,
                cut: cut_lines.clone(),
                chunk: Vec::new(),
            });
        let needed = src_col.max(tgt_col) + 1;
        let width = match format {
            DelimitedFormat::Tsv => Width::Exact(needed),
            DelimitedFormat::Csv => Width::AtLeast(needed),
        };
        Ok(DelimitedLines {
            rdr,
            cut_lines,
            max_line_bytes,
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
            let dropped = self
                .cut_lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .dropped;
            let at_end = self.file_len.is_some_and(|len| pos.byte() + dropped == len);
            // The file's last line end inside the record: a quote opened and never closed.
            if self.format == DelimitedFormat::Csv
                && at_end
                && self.ends_with_newline
                && self.record.as_slice().ends_with(b"\n")
            {
                let inside = self
                    .record
                    .as_slice()
                    .iter()
                    .filter(|&&b| b == b'\n')
                    .count();
                return Some(Err(CorpusError::UnterminatedQuote {
                    path: self.path.clone(),
                    line: pos.line().saturating_sub(inside as u64).max(1),
                }));
            }
            let terminated = match self.file_len {
                Some(len) if pos.byte() + dropped == len => self.ends_with_newline,
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
        // A record that contains a cut physical line is incomplete: never read it as a pair.
        let cut = {
            let mut log = self.cut_lines.lock().unwrap_or_else(|p| p.into_inner());
            let end = self.next_line.max(line + 1);
            let hit = log.lines.iter().copied().find(|&l| l >= line && l < end);
            log.lines.retain(|&l| l >= end);
            hit
        };
        if let Some(cut_line) = cut {
            self.header_pending = false;
            return Some(Err(CorpusError::LineTooLong {
                path: self.path.clone(),
                line: cut_line,
                limit: self.max_line_bytes,
            }));
        }
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

/// What a [`CappedLines`] cut: the 1-based numbers of the lines, and the bytes dropped.
#[derive(Default)]
struct CutLog {
    lines: Vec<u64>,
    dropped: u64,
}

/// A reader that passes at most `max` bytes of each physical line (`\n`-terminated) and
/// drops the rest, recording what it cut in `cut`.
struct CappedLines<R> {
    inner: R,
    max: usize,
    line: u64,
    in_line: usize,
    cut: Arc<Mutex<CutLog>>,
    /// Reused read buffer (no allocation per read).
    chunk: Vec<u8>,
}

impl<R: Read> Read for CappedLines<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let mut chunk = std::mem::take(&mut self.chunk);
        chunk.resize(out.len().max(1), 0);
        let result = self.read_into(out, &mut chunk);
        self.chunk = chunk;
        result
    }
}

impl<R: Read> CappedLines<R> {
    fn read_into(&mut self, out: &mut [u8], chunk: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.inner.read(chunk)?;
            if n == 0 {
                return Ok(0);
            }
            let mut w = 0;
            let mut dropped = 0u64;
            for &b in &chunk[..n] {
                if b == b'\n' {
                    out[w] = b;
                    w += 1;
                    self.line += 1;
                    self.in_line = 0;
                } else if self.in_line < self.max {
                    out[w] = b;
                    w += 1;
                    self.in_line += 1;
                } else {
                    dropped += 1;
                    if self.in_line == self.max {
                        self.in_line += 1;
                        self.cut
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .lines
                            .push(self.line);
                    }
                }
            }
            if dropped > 0 {
                self.cut.lock().unwrap_or_else(|p| p.into_inner()).dropped += dropped;
            }
            if w > 0 {
                return Ok(w);
            }
        }
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
    max_line_bytes: usize,
    /// The current line was longer than `max_line_bytes` (and `buf` holds its start).
    cut: bool,
}

impl LineFile {
    fn open(path: &Path, max_line_bytes: usize) -> Result<Self, CorpusError> {
        Ok(LineFile {
            path: path.to_path_buf(),
            reader: BufReader::with_capacity(1 << 16, open_file(path)?),
            buf: Vec::new(),
            max_line_bytes,
            cut: false,
        })
    }

    /// Reads line `line` into `buf` without its `\n` / `\r\n` (and, on line 1, without a
    /// byte order mark); false at the end of the file.
    fn read_line(&mut self, line: u64) -> Result<bool, CorpusError> {
        let n = read_line_bounded(&mut self.reader, &mut self.buf, self.max_line_bytes).map_err(
            |cause| CorpusError::Read {
                path: self.path.clone(),
                line,
                cause,
            },
        )?;
        self.cut = n.is_some_and(|n| n > self.max_line_bytes);
        if line == 1 {
            strip_bom(&mut self.buf);
        }
        Ok(n.is_some())
    }

    fn too_long(&self, line: u64) -> CorpusError {
        CorpusError::LineTooLong {
            path: self.path.clone(),
            line,
            limit: self.max_line_bytes,
        }
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
                    for f in [&self.src, &self.tgt] {
                        if f.cut {
                            return Err(f.too_long(line));
                        }
                    }
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
