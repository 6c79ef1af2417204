//! Subword tokenizers: byte-level BPE, trained in memory, saved as a standard `tokenizer.json`.
//!
//! # Why byte-level BPE
//! A translation model meets characters its tokenizer never saw in training (accented letters,
//! symbols, emoji, other scripts). A BPE over a character alphabet without byte fallback maps
//! them to `<unk>` and they vanish on decode ("acabó" → "acab"); on the shared corpora that
//! broke 22% of lines. Here the pre-tokenizer is `ByteLevel` (no prefix space, no offset
//! trimming, GPT-2 regex), the decoder is `ByteLevel`, and the BPE's initial alphabet is all 256
//! byte symbols, so every string is representable and `decode(encode(x)) == x` exactly.
//!
//! The tokenizer has no normalizer of its own: texts are expected to be normalized already by
//! [`crate::corpus::normalize`], the same function for training data and translation input.
//!
//! # Special tokens
//! `<pad>`, `<unk>`, `<s>`, `</s>` have the fixed ids 0, 1, 2, 3 ([`PAD_ID`], [`UNK_ID`],
//! [`BOS_ID`], [`EOS_ID`]); they are checked on every load. [`SubwordTokenizer::encode`] adds none
//! of them and treats their spelling in the input (a literal `<s>`) as ordinary text;
//! [`SubwordTokenizer::decode`] skips them.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, Tokenizer};

use crate::corpus::Pair;

pub mod fast;

/// Id of the padding token `<pad>`.
pub const PAD_ID: u32 = 0;
/// Id of the unknown token `<unk>`.
pub const UNK_ID: u32 = 1;
/// Id of the begin-of-sentence token `<s>`.
pub const BOS_ID: u32 = 2;
/// Id of the end-of-sentence token `</s>`.
pub const EOS_ID: u32 = 3;
/// The special tokens, in id order.
pub const SPECIAL_TOKENS: [&str; 4] = ["<pad>", "<unk>", "<s>", "</s>"];
/// Smallest usable vocabulary: the special tokens and the 256 byte symbols.
pub const MIN_VOCAB_SIZE: usize = SPECIAL_TOKENS.len() + 256;

/// Longest word (a run of non-whitespace characters) the BPE trainer sees. Its merge search is
/// superlinear in word length (a 100,000-character word took 4.4 s, a million over 25
/// minutes), so longer words are cut to this many characters for tokenizer training only;
/// encoding still reads every character.
pub const MAX_TRAINING_WORD_CHARS: usize = 100;

/// `text` with every whitespace-separated word longer than `max_chars` characters cut to its
/// first `max_chars`, and how many words were cut.
pub fn cap_long_words(text: &str, max_chars: usize) -> (std::borrow::Cow<'_, str>, usize) {
    let too_long = |w: &str| w.chars().nth(max_chars).is_some();
    if !text.split_whitespace().any(too_long) {
        return (std::borrow::Cow::Borrowed(text), 0);
    }
    let mut out = String::with_capacity(text.len().min(1 << 16));
    let mut cut = 0;
    let mut run = 0; // characters of the current word written so far
    let mut cutting = false;
    for c in text.chars() {
        if c.is_whitespace() {
            run = 0;
            cutting = false;
            out.push(c);
        } else if run < max_chars {
            run += 1;
            out.push(c);
        } else if !cutting {
            cutting = true;
            cut += 1;
        }
    }
    (std::borrow::Cow::Owned(out), cut)
}

/// File name of a joint tokenizer in a model directory.
pub const JOINT_FILE: &str = "tokenizer.json";
/// File name of the source tokenizer when source and target vocabularies are separate.
pub const SRC_FILE: &str = "tokenizer.src.json";
/// File name of the target tokenizer when source and target vocabularies are separate.
pub const TGT_FILE: &str = "tokenizer.tgt.json";
/// Every tokenizer file name of a model directory (one layout exists at a time).
pub const FILES: [&str; 3] = [JOINT_FILE, SRC_FILE, TGT_FILE];

/// How to train tokenizers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerConfig {
    /// Vocabulary size, special tokens and byte symbols included (default 4000).
    pub vocab_size: usize,
    /// One vocabulary shared by source and target (default true).
    pub joint: bool,
    /// A pair must occur at least this often to be merged (default 2).
    pub min_frequency: u64,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig {
            vocab_size: 4000,
            joint: true,
            min_frequency: 2,
        }
    }
}

/// An error of the tokenizer layer; each message is one line, naming the file where there is
/// one.
#[derive(Debug, Error)]
pub enum TokenizerError {
    /// A file could not be read, written or renamed.
    #[error("{}: cannot {op}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`read`, `write`, `rename to …`).
        op: String,
        /// The OS error.
        #[source]
        cause: io::Error,
    },
    /// A file is not a tokenizer this crate can use.
    #[error("{}: not a valid tokenizer file: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tokenizer directory lacks a file.
    #[error("{}: {message}", dir.display())]
    Missing {
        /// The directory.
        dir: PathBuf,
        /// Which file is missing.
        message: String,
    },
    /// The configuration cannot be trained.
    #[error("invalid tokenizer configuration: {0}")]
    Config(String),
    /// Training failed.
    #[error("tokenizer training failed: {0}")]
    Train(String),
    /// Encoding failed.
    #[error("cannot encode text: {0}")]
    Encode(String),
    /// Decoding failed (e.g. an id outside the vocabulary).
    #[error("cannot decode ids: {0}")]
    Decode(String),
}

/// Flattens a `tokenizers` error into one line.
/// Largest tokenizer file read: a vocabulary of [`crate::config::MAX_VOCAB`] tokens with its
/// merges takes well under this.
pub const MAX_TOKENIZER_BYTES: u64 = 256 << 20;

/// Most bytes a text may have after a tokenizer file's normalizer.
pub const MAX_NORMALIZED_BYTES: usize = 1 << 20;

/// Most a tokenizer file's normalizer may multiply a text's length by, judged from its
/// settings when it is loaded (see [`normalizer_growth`]).
pub const MAX_NORMALIZER_GROWTH: f64 = 256.0;

/// Settings of a tokenizer file that rnmt cannot honour, refused by name: BPE dropout (a
/// different segmentation, so a different translation, on every run), truncation and padding
/// (sources are cut by `--max-input-tokens`, batches padded by rnmt), and a normalizer that can
/// grow a text by more than [`MAX_NORMALIZER_GROWTH`] times.
fn check_settings(v: &serde_json::Value) -> Result<(), String> {
    if let Some(d) = v.pointer("/model/dropout").filter(|d| !d.is_null()) {
        if d.as_f64() != Some(0.0) {
            return Err(format!(
                "its BPE model has dropout {d}, which segments (and translates) every text differently on each run; set \"dropout\": null"
            ));
        }
    }
    for key in ["truncation", "padding"] {
        if v.get(key).is_some_and(|t| !t.is_null()) {
            return Err(format!(
                "it sets \"{key}\", which would silently change the input (rnmt cuts sources with --max-input-tokens and pads batches itself); set \"{key}\": null"
            ));
        }
    }
    if let Some(n) = v.get("normalizer").filter(|n| !n.is_null()) {
        let growth = normalizer_growth(n)?;
        if growth > MAX_NORMALIZER_GROWTH {
            return Err(format!(
                "its normalizer can make a text up to {growth:.0} times longer (at most {MAX_NORMALIZER_GROWTH:.0} is accepted)"
            ));
        }
    }
    Ok(())
}

/// An upper bound on how many times longer (in bytes) a `tokenizers` normalizer can make a
/// text, from its JSON settings; an unknown normalizer is an error.
pub fn normalizer_growth(n: &serde_json::Value) -> Result<f64, String> {
    let ty = n.get("type").and_then(|t| t.as_str()).unwrap_or("");
    let text = |k: &str| n.get(k).and_then(|c| c.as_str()).unwrap_or("").len() as f64;
    Ok(match ty {
        "Sequence" => {
            let mut g = 1.0f64;
            for inner in n
                .get("normalizers")
                .and_then(|l| l.as_array())
                .into_iter()
                .flatten()
            {
                g *= normalizer_growth(inner)?;
            }
            g
        }
        "Replace" => {
            let content = text("content");
            match n.pointer("/pattern/String").and_then(|p| p.as_str()) {
                Some(p) if !p.is_empty() => (content / p.len() as f64).max(1.0),
                // A regex (or an empty string) may match between any two bytes.
                _ => 1.0 + content,
            }
        }
        // Unicode decompositions: at most 18 code points for one (U+FDFA).
        "NFC" | "NFD" | "NFKC" | "NFKD" | "Precompiled" => 18.0,
        "Lowercase" => 3.0,
        "BertNormalizer" => 9.0,
        "ByteLevel" => 2.0,
        "Prepend" => 1.0 + text("prepend"),
        "Strip" | "StripAccents" | "Nmt" => 1.0,
        other => return Err(format!("its normalizer type {other:?} is not supported")),
    })
}

fn one_line(e: impl std::fmt::Display) -> String {
    e.to_string().replace(['\n', '\r'], " ")
}

/// A byte-level BPE tokenizer with the fixed special tokens.
#[derive(Debug, Clone)]
pub struct SubwordTokenizer {
    inner: Tokenizer,
    /// Cached: `Tokenizer::get_vocab_size(true)` rebuilds the whole vocabulary map.
    vocab_size: usize,
    /// The encoder without the library's pipeline, for rnmt's own layout ([`fast`]).
    fast: Option<fast::FastPath>,
}

impl SubwordTokenizer {
    /// Trains a tokenizer on in-memory texts (already normalized).
    pub fn train<I, S>(texts: I, cfg: &TokenizerConfig) -> Result<Self, TokenizerError>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        if cfg.vocab_size < MIN_VOCAB_SIZE {
            return Err(TokenizerError::Config(format!(
                "vocab_size {} is below the minimum {MIN_VOCAB_SIZE} (4 special tokens + 256 bytes)",
                cfg.vocab_size
            )));
        }
        let model = BPE::builder()
            .unk_token(SPECIAL_TOKENS[UNK_ID as usize].to_string())
            .build()
            .map_err(|e| TokenizerError::Train(one_line(e)))?;
        let mut inner = Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, false, true)));
        inner.with_decoder(Some(ByteLevelDecoder::new(false, false, true)));
        let trainer = BpeTrainerBuilder::new()
            .vocab_size(cfg.vocab_size)
            .min_frequency(cfg.min_frequency)
            .show_progress(false)
            .special_tokens(
                SPECIAL_TOKENS
                    .iter()
                    .map(|t| AddedToken::from(t.to_string(), true))
                    .collect(),
            )
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build();
        let mut trainer = TrainerWrapper::from(trainer);
        inner
            .train(&mut trainer, texts)
            .map_err(|e| TokenizerError::Train(one_line(e)))?;
        Self::from_inner(inner).map_err(TokenizerError::Train)
    }

    /// Wraps a loaded or trained tokenizer after checking the special-token ids.
    fn from_inner(mut inner: Tokenizer) -> Result<Self, String> {
        for (id, token) in SPECIAL_TOKENS.iter().enumerate() {
            match inner.token_to_id(token) {
                Some(found) if found == id as u32 => {}
                Some(found) => return Err(format!("{token} has id {found}, expected {id}")),
                None => return Err(format!("{token} is missing, expected with id {id}")),
            }
        }
        let vocab_size = inner.get_vocab_size(true);
        if let Some(gap) = (0..vocab_size as u32).find(|&id| inner.id_to_token(id).is_none()) {
            return Err(format!(
                "ids are not contiguous: {gap} is missing below {vocab_size}"
            ));
        }
        // A literal "<s>" in the input is text, not a control token.
        inner.set_encode_special_tokens(true);
        let fast = fast::FastPath::of(&inner);
        Ok(SubwordTokenizer {
            inner,
            vocab_size,
            fast,
        })
    }

    /// Saves as `tokenizer.json`-format JSON, atomically (writes `PATH.tmp`, then renames).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), TokenizerError> {
        let path = path.as_ref();
        let json = self
            .inner
            .to_string(true)
            .map_err(|e| TokenizerError::Invalid {
                path: path.to_path_buf(),
                message: one_line(e),
            })?;
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let io_err = |p: &Path, op: String| {
            let p = p.to_path_buf();
            move |cause| TokenizerError::Io { path: p, op, cause }
        };
        let write = || -> io::Result<()> {
            let mut f = fs::File::create(&tmp)?;
            f.write_all(json.as_bytes())?;
            f.sync_all()
        };
        if let Err(cause) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp, "write".into())(cause));
        }
        fs::rename(&tmp, path).map_err(|cause| {
            let _ = fs::remove_file(&tmp);
            io_err(&tmp, format!("rename to {}", path.display()))(cause)
        })?;
        // Flush the rename too: a power loss must not leave an empty file under the name.
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir, "sync directory".into()))
    }

    /// Loads a tokenizer saved by [`SubwordTokenizer::save`] (or any `tokenizer.json` with the
    /// same special-token ids).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let invalid = |message: String| TokenizerError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        // A regular file of bounded size only (not a FIFO, not /dev/zero).
        let bytes = crate::modelfile::read_bounded(path, MAX_TOKENIZER_BYTES, "a tokenizer file")
            .map_err(|e| match e {
            crate::error::Error::Io { source, .. } => TokenizerError::Io {
                path: path.to_path_buf(),
                op: "read".into(),
                cause: source,
            },
            other => invalid(other.to_string()),
        })?;
        let json = String::from_utf8(bytes).map_err(|_| invalid("not valid UTF-8".into()))?;
        // The `tokenizers` deserializer can panic on malformed input (a file cut inside its
        // "decoder" object did): check the JSON first, and contain a panic all the same.
        let value = serde_json::from_str::<serde_json::Value>(&json)
            .map_err(|e| invalid(crate::config::cut_message(&one_line(e))))?;
        check_settings(&value).map_err(invalid)?;
        let inner: Tokenizer = crate::panic::contain(|| json.parse::<Tokenizer>())
            .map_err(|m| invalid(format!("the tokenizers library failed on it: {m}")))?
            .map_err(|e| invalid(one_line(e)))?;
        Self::from_inner(inner).map_err(invalid)
    }

    /// Token ids of `text`, without special tokens. A normalizer in the tokenizer file may
    /// not make the text longer than [`MAX_NORMALIZED_BYTES`] (an error, never unbounded
    /// memory; rnmt's own tokenizers have no normalizer).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        match &self.fast {
            Some(f) => f
                .encode(&self.inner, text)
                .map_err(|e| TokenizerError::Encode(one_line(e))),
            None => self.encode_with_library(text),
        }
    }

    /// Whether [`SubwordTokenizer::encode`] takes the fast path ([`fast`]); else the
    /// library's pipeline.
    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// [`SubwordTokenizer::encode`] through the `tokenizers` pipeline (what the fast path
    /// must equal).
    pub fn encode_with_library(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        if let Some(n) = self.inner.get_normalizer() {
            use tokenizers::Normalizer;
            let mut normalized = tokenizers::NormalizedString::from(text);
            n.normalize(&mut normalized)
                .map_err(|e| TokenizerError::Encode(one_line(e)))?;
            let len = normalized.get().len();
            if len > MAX_NORMALIZED_BYTES {
                return Err(TokenizerError::Encode(format!(
                    "the tokenizer's normalizer makes a text of {} bytes {len} bytes long, more than {MAX_NORMALIZED_BYTES}",
                    text.len()
                )));
            }
        }
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| TokenizerError::Encode(one_line(e)))?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens skipped. An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let size = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= size) {
            return Err(TokenizerError::Decode(format!(
                "id {bad} is outside the vocabulary of {size}"
            )));
        }
        let ids: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id as usize >= SPECIAL_TOKENS.len())
            .collect();
        self.inner
            .decode(&ids, true)
            .map_err(|e| TokenizerError::Decode(one_line(e)))
    }

    /// Vocabulary size, special tokens included; ids are `0..vocab_size()`.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The token string of an id (byte-level symbols, e.g. `Ġthe`), if in the vocabulary.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of `<unk>` ids in `ids`. Byte-level encoding never produces one; this is a
    /// safety check for reports.
    pub fn count_unk(ids: &[u32]) -> usize {
        ids.iter().filter(|&&id| id == UNK_ID).count()
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }
}

/// The source and target tokenizers of a model: one shared (joint) or two separate ones.
#[derive(Debug, Clone)]
pub struct Tokenizers {
    src: SubwordTokenizer,
    tgt: SubwordTokenizer,
    joint: bool,
}

impl Tokenizers {
    /// One tokenizer for both sides.
    pub fn joint(tok: SubwordTokenizer) -> Self {
        Tokenizers {
            src: tok.clone(),
            tgt: tok,
            joint: true,
        }
    }

    /// Separate source and target tokenizers.
    pub fn separate(src: SubwordTokenizer, tgt: SubwordTokenizer) -> Self {
        Tokenizers {
            src,
            tgt,
            joint: false,
        }
    }

    /// Trains on `pairs`: one vocabulary on sources and targets together if `cfg.joint`,
    /// else one per side, each of `cfg.vocab_size`. Words longer than
    /// [`MAX_TRAINING_WORD_CHARS`] are cut for training.
    pub fn train(pairs: &[Pair], cfg: &TokenizerConfig) -> Result<Self, TokenizerError> {
        Self::train_counting_cuts(pairs, cfg).map(|(t, _)| t)
    }

    /// [`Tokenizers::train`], also returning how many words were cut for training.
    pub fn train_counting_cuts(
        pairs: &[Pair],
        cfg: &TokenizerConfig,
    ) -> Result<(Self, usize), TokenizerError> {
        let cut = std::sync::atomic::AtomicUsize::new(0);
        let capped = |text: &'_ str| {
            let (t, n) = cap_long_words(text, MAX_TRAINING_WORD_CHARS);
            cut.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            t.into_owned()
        };
        let srcs = pairs.iter().map(|p| capped(&p.src));
        let tgts = pairs.iter().map(|p| capped(&p.tgt));
        let tok = if cfg.joint {
            Self::joint(SubwordTokenizer::train(srcs.chain(tgts), cfg)?)
        } else {
            Self::separate(
                SubwordTokenizer::train(srcs, cfg)?,
                SubwordTokenizer::train(tgts, cfg)?,
            )
        };
        Ok((tok, cut.into_inner()))
    }

    /// The source-side tokenizer.
    pub fn src(&self) -> &SubwordTokenizer {
        &self.src
    }

    /// The target-side tokenizer.
    pub fn tgt(&self) -> &SubwordTokenizer {
        &self.tgt
    }

    /// Whether source and target share one vocabulary.
    pub fn is_joint(&self) -> bool {
        self.joint
    }

    /// Writes `dir/tokenizer.json` (joint) or `dir/tokenizer.src.json` and
    /// `dir/tokenizer.tgt.json` (separate), creating `dir`, and removes files of the other
    /// layout so that [`Tokenizers::load_dir`] is never ambiguous.
    pub fn save_dir(&self, dir: impl AsRef<Path>) -> Result<(), TokenizerError> {
        let dir = dir.as_ref();
        fs::create_dir_all(dir).map_err(|cause| TokenizerError::Io {
            path: dir.to_path_buf(),
            op: "create directory".into(),
            cause,
        })?;
        let stale: &[&str] = if self.joint {
            self.src.save(dir.join(JOINT_FILE))?;
            &[SRC_FILE, TGT_FILE]
        } else {
            self.src.save(dir.join(SRC_FILE))?;
            self.tgt.save(dir.join(TGT_FILE))?;
            &[JOINT_FILE]
        };
        for name in stale {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(cause) => {
                    return Err(TokenizerError::Io {
                        path,
                        op: "remove stale file".into(),
                        cause,
                    })
                }
            }
        }
        Ok(())
    }

    /// Loads what [`Tokenizers::save_dir`] wrote, detecting joint or separate.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let dir = dir.as_ref();
        // Any kind of file counts as present; `load` refuses what is not a regular file.
        let [joint, src, tgt] = [JOINT_FILE, SRC_FILE, TGT_FILE].map(|f| dir.join(f).exists());
        let missing = |message: String| TokenizerError::Missing {
            dir: dir.to_path_buf(),
            message,
        };
        match (joint, src, tgt) {
            (true, false, false) => Ok(Self::joint(SubwordTokenizer::load(dir.join(JOINT_FILE))?)),
            (true, _, _) => Err(missing(format!(
                "both {JOINT_FILE} (joint) and {SRC_FILE}/{TGT_FILE} (separate) exist; remove one layout"
            ))),
            (false, true, true) => Ok(Self::separate(
                SubwordTokenizer::load(dir.join(SRC_FILE))?,
                SubwordTokenizer::load(dir.join(TGT_FILE))?,
            )),
            (false, true, false) => Err(missing(format!("{TGT_FILE} is missing (found {SRC_FILE})"))),
            (false, false, true) => Err(missing(format!("{SRC_FILE} is missing (found {TGT_FILE})"))),
            (false, false, false) => Err(missing(format!(
                "no tokenizer: expected {JOINT_FILE} (joint) or {SRC_FILE} and {TGT_FILE} (separate)"
            ))),
        }
    }
}
