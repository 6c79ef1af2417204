//! [`PairReader`]: the streaming iterator over the normalized pairs of a corpus.

use std::path::PathBuf;

use super::raw::{RawItem, RawSource};
use super::{
    normalize, CorpusError, CorpusSource, Pair, ReadOptions, Side, SkipCounts, SkipReason,
};

/// Streams the sentence pairs of a corpus, normalized, in file order, in constant memory.
///
/// Yields `Err` for a bad line and then stops, unless `skip_bad_lines` is set, in which case
/// bad lines are counted in [`PairReader::skipped`] and reading goes on. Fatal errors (read
/// failure, bad header, aligned files of different lengths) always end the iteration. If the
/// corpus yields no pair at all, the last item is [`CorpusError::EmptyCorpus`].
pub struct PairReader {
    raw: RawSource,
    source: CorpusSource,
    opts: ReadOptions,
    skipped: SkipCounts,
    yielded: u64,
    /// First line and number of blank lines not yet known to be trailing.
    pending_blank: Option<(u64, u64)>,
    done: bool,
}

impl PairReader {
    pub(super) fn open(source: &CorpusSource, opts: &ReadOptions) -> Result<Self, CorpusError> {
        Ok(PairReader {
            raw: RawSource::open(source, opts.max_line_bytes)?,
            source: source.clone(),
            opts: *opts,
            skipped: SkipCounts::default(),
            yielded: 0,
            pending_blank: None,
            done: false,
        })
    }

    /// Lines skipped so far, by reason (all zero unless `skip_bad_lines`).
    pub fn skipped(&self) -> &SkipCounts {
        &self.skipped
    }

    /// Number of pairs yielded so far.
    pub fn pairs_read(&self) -> u64 {
        self.yielded
    }

    /// The corpus being read.
    pub fn source(&self) -> &CorpusSource {
        &self.source
    }

    /// The file that holds `side` (the same file for both sides of a delimited corpus).
    fn side_path(&self, side: Side) -> PathBuf {
        match (&self.source, side) {
            (CorpusSource::Delimited { path, .. }, _) => path.clone(),
            (CorpusSource::Aligned { src, .. }, Side::Source) => src.clone(),
            (CorpusSource::Aligned { tgt, .. }, Side::Target) => tgt.clone(),
        }
    }

    /// Normalizes a raw pair, rejecting an empty side.
    fn make_pair(&self, line: u64, src: &str, tgt: &str) -> Result<Pair, CorpusError> {
        let n = self.opts.normalization;
        let src = normalize(src, n);
        let tgt = normalize(tgt, n);
        for (side, text) in [(Side::Source, &src), (Side::Target, &tgt)] {
            if text.is_empty() {
                return Err(CorpusError::EmptySide {
                    path: self.side_path(side),
                    line,
                    side,
                });
            }
        }
        Ok(Pair { src, tgt, line })
    }

    /// Counts a skippable error in skip mode (returns `None`), or ends the iteration with it.
    fn fail(&mut self, err: CorpusError) -> Option<CorpusError> {
        match err.skip_reason() {
            Some(reason) if self.opts.skip_bad_lines => {
                self.skipped.add(reason, 1);
                None
            }
            _ => {
                self.done = true;
                Some(err)
            }
        }
    }
}

impl Iterator for PairReader {
    type Item = Result<Pair, CorpusError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let raw = match self.raw.next_item() {
                None => {
                    // Blank lines still pending are trailing: ignored.
                    self.done = true;
                    if self.yielded == 0 {
                        return Some(Err(CorpusError::EmptyCorpus {
                            source_name: self.source.to_string(),
                            skipped: self.skipped,
                        }));
                    }
                    return None;
                }
                Some(Ok(RawItem::Blank(line))) => {
                    let (first, count) = self.pending_blank.unwrap_or((line, 0));
                    self.pending_blank = Some((first, count + 1));
                    continue;
                }
                Some(raw) => raw,
            };
            // Something follows the pending blank lines: they are not trailing.
            if let Some((first, count)) = self.pending_blank.take() {
                if self.opts.skip_bad_lines {
                    self.skipped.add(SkipReason::BlankLine, count);
                } else {
                    self.done = true;
                    return Some(Err(CorpusError::BlankLine {
                        path: self.side_path(Side::Source),
                        line: first,
                    }));
                }
            }
            let result = match raw {
                Ok(RawItem::Pair { line, src, tgt }) => self.make_pair(line, &src, &tgt),
                Ok(RawItem::Blank(line)) => Err(CorpusError::BlankLine {
                    path: self.side_path(Side::Source),
                    line,
                }),
                Err(err) => Err(err),
            };
            match result {
                Ok(pair) => {
                    self.yielded += 1;
                    return Some(Ok(pair));
                }
                Err(err) => {
                    if let Some(err) = self.fail(err) {
                        return Some(Err(err));
                    }
                }
            }
        }
    }
}
