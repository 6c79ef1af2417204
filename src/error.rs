//! Typed errors of the library. Binaries wrap them in `anyhow` and print the cause chain.
use std::path::{Path, PathBuf};

/// Everything that can go wrong in rnmt's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Config(String),
    #[error("model directory: {0}")]
    ModelDir(String),
    #[error(transparent)]
    Corpus(#[from] crate::corpus::CorpusError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("training diverged: the {what} is {value} at update {step}; the best checkpoint is untouched (try a lower train.lr or train.clip_norm)")]
    NonFinite {
        step: u64,
        what: &'static str,
        value: f64,
    },
    #[error("{0}")]
    Input(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
