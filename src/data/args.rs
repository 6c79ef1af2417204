//! The command-line options that name training corpora, shared by `rnmt-train` and
//! `rnmt-prepare`.
use std::path::PathBuf;

use clap::Args;

use crate::corpus::{CorpusSource, DelimitedFormat};
use crate::error::{Error, Result};

/// Training corpora and how to read them.
#[derive(Args, Debug, Clone)]
pub struct TrainDataArgs {
    /// Training pairs: a TSV (`source<TAB>target`) or CSV file; repeat for several corpora
    /// (weights in data.weights, in this order).
    #[arg(long, required_unless_present = "train_src")]
    pub train: Vec<PathBuf>,
    /// Training source file, line-aligned with --train-tgt (instead of --train).
    #[arg(long, requires = "train_tgt", conflicts_with = "train")]
    pub train_src: Option<PathBuf>,
    #[arg(long, requires = "train_src")]
    pub train_tgt: Option<PathBuf>,
    /// Delimited format (default: from the extension, .csv is CSV, anything else TSV).
    #[arg(long, value_parser = ["tsv", "csv"])]
    pub format: Option<String>,
    /// 0-based source and target columns of a TSV/CSV file.
    #[arg(long, default_value_t = 0)]
    pub src_col: usize,
    #[arg(long, default_value_t = 1)]
    pub tgt_col: usize,
    /// The TSV/CSV files start with a header line.
    #[arg(long)]
    pub header: bool,
    /// Skip malformed lines (reported with counts per reason) instead of stopping.
    #[arg(long)]
    pub skip_bad_lines: bool,
}

impl TrainDataArgs {
    /// A corpus from one delimited file or a pair of aligned files, read as these options say.
    pub fn source(
        &self,
        file: Option<&PathBuf>,
        src: Option<&PathBuf>,
        tgt: Option<&PathBuf>,
    ) -> Result<CorpusSource> {
        Ok(match (file, src, tgt) {
            (Some(_), _, _) if self.src_col == self.tgt_col => {
                return Err(Error::Config(format!(
                    "--src-col {} and --tgt-col {} name the same column; the source and the target must be different columns",
                    self.src_col, self.tgt_col
                )))
            }
            (Some(f), _, _) => match CorpusSource::from_path(f) {
                CorpusSource::Delimited { path, format, .. } => CorpusSource::Delimited {
                    path,
                    format: match self.format.as_deref() {
                        Some("csv") => DelimitedFormat::Csv,
                        Some(_) => DelimitedFormat::Tsv,
                        None => format,
                    },
                    src_col: self.src_col,
                    tgt_col: self.tgt_col,
                    header: self.header,
                },
                other => other,
            },
            (None, Some(s), Some(t)) => CorpusSource::aligned(s, t),
            _ => {
                return Err(Error::Config(
                    "give a corpus file or a pair of aligned files".into(),
                ))
            }
        })
    }

    /// The training corpora, in order.
    pub fn train_sources(&self) -> Result<Vec<CorpusSource>> {
        if self.train.is_empty() {
            return Ok(vec![self.source(
                None,
                self.train_src.as_ref(),
                self.train_tgt.as_ref(),
            )?]);
        }
        self.train
            .iter()
            .map(|f| self.source(Some(f), None, None))
            .collect()
    }
}
