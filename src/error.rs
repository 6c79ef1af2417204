//! Typed errors of the library. Binaries print them with [`crate::cli`], which walks the
//! cause chain once: a variant names what failed and keeps its cause in a `#[source]` field,
//! never also in its own message.
use std::path::{Path, PathBuf};

/// Everything that can go wrong in rnmt's library code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A bad configuration value; the message names the key.
    #[error("config: {0}")]
    Config(String),
    /// A model directory that is not usable as it is.
    #[error("model directory: {0}")]
    ModelDir(String),
    #[error(transparent)]
    Corpus(#[from] crate::corpus::CorpusError),
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::TokenizerError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("libtorch")]
    Torch(#[from] tch::TchError),
    /// Copying a tensor from the device to the host failed (`what` names the tensor).
    #[error("copying the {what} to the host")]
    ToHost {
        what: String,
        #[source]
        source: tch::TchError,
    },
    /// Writing or reading JSON (`what` names the file or the value).
    #[error("{what}: JSON")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// Writing a CSV file.
    #[error("{}", path.display())]
    Csv {
        path: PathBuf,
        #[source]
        source: csv::Error,
    },
    #[error("training diverged: the {what} is {value} at update {step}; the best checkpoint is untouched (try a lower train.lr or train.clip_norm)")]
    NonFinite { step: u64, what: String, value: f64 },
    /// The model gave NaN or infinite scores while decoding (broken weights).
    #[error("the model's scores are not finite (NaN or infinity) at output step {step}: its weights are broken, e.g. by a diverged training run")]
    NonFiniteScores { step: usize },
    /// Drawing a picture failed (`what` names it).
    #[error("drawing the {what}")]
    Plot {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Attention weights were asked of a model without attention.
    #[error("the model has no attention (model.decoder.attention = \"none\"), so there are no attention weights to write")]
    NoAttention,
    /// A stop was requested (Ctrl-C, SIGTERM) while a long operation ran.
    #[error("interrupted")]
    Interrupted,
    /// A collective or the rendezvous of data-parallel training failed, or its launch
    /// environment is wrong (the message names the operation, rank and cause).
    #[error("distributed training: {0}")]
    Distributed(String),
    /// Bad input data (names the input and line).
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

    /// A JSON error while handling `what`.
    pub fn json(what: impl std::fmt::Display, source: serde_json::Error) -> Self {
        Error::Json {
            what: what.to_string(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
