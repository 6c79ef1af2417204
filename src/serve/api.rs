//! The HTTP API's request and response shapes, and the checks of a request before it reaches
//! a model. The shapes are OpenNMT-py's translation server's (`onmt/bin/server.py`), so its
//! clients work unchanged:
//!
//! ```text
//! POST /translator/translate  [{"src": "Open the file.", "id": 100}, ...]
//!   -> [[{"src": "Open the file.", "tgt": "Ouvrez le fichier.", "n_best": 1, "pred_score": -1.9}, ...]]
//! ```
//!
//! The outer list has one list per rank of the n-best (`n_best` lists), each with one entry per
//! input sentence in order. rnmt adds optional per-sentence fields `beam_size`, `n_best` and
//! `attention` (the same for every sentence of a request); with `"attention": true` every
//! translation carries its attention weights (source and target subword tokens and the
//! `[target][source]` matrix, rows summing to 1). Errors are `{"error": "..."}` with a 4xx or
//! 5xx status.
use serde::{Deserialize, Serialize};

use crate::alignment::Alignment;

/// One input sentence.
#[derive(Debug, Clone, Deserialize)]
pub struct SourceItem {
    pub src: String,
    /// The model (`GET /translator/models`); the first model when absent.
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub beam_size: Option<usize>,
    #[serde(default)]
    pub n_best: Option<usize>,
    #[serde(default)]
    pub attention: Option<bool>,
    /// Word alignment of every translation (`"align"` in the response, Pharaoh `i-j`).
    #[serde(default)]
    pub align: Option<bool>,
    /// Target phrases that must appear in this sentence's translation (constrained beam
    /// search).
    #[serde(default)]
    pub constraints: Option<Vec<String>>,
}

/// One translation in the response.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetItem {
    pub src: String,
    pub tgt: String,
    pub n_best: usize,
    /// Log-probability of `tgt` (length-penalized beam score as in `rnmt-translate --scores`).
    pub pred_score: f64,
    /// With `"attention": true`: the attention of this translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention: Option<Alignment>,
    /// With `"align": true`: the word alignment, Pharaoh `i-j` pairs as `rnmt-translate
    /// --align` writes them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub align: Option<String>,
}

/// An error response body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: String,
}

/// Per-request search settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SearchOptions {
    pub beam: usize,
    pub n_best: usize,
    /// Return the attention weights of every translation.
    pub attention: bool,
    /// Return the word alignment of every translation.
    pub align: bool,
}

/// Bounds on what one request may ask for.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of a request body.
    pub max_body_bytes: usize,
    /// Sentences in one request.
    pub max_sentences: usize,
    /// Bytes of one source sentence.
    pub max_input_bytes: usize,
    /// Largest `beam_size` a request may ask for.
    pub max_beam: usize,
    /// The work of one request at most: the sum over its sentences of their bytes (a bound on
    /// their subword tokens) times the beam size. It bounds how long one request keeps the
    /// model busy, so that small requests queued behind it stay responsive.
    pub max_work: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_sentences: 256,
            max_input_bytes: 4096,
            max_beam: 16,
            max_work: 262_144,
        }
    }
}

/// A rejected request: the HTTP status and the message of its `{"error": ...}` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub message: String,
}

impl Rejection {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Rejection {
            status,
            message: message.into(),
        }
    }
}

/// A checked request: the model, the sentences and the search settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    pub model: u64,
    pub sentences: Vec<String>,
    /// Each sentence's target phrases (empty: none).
    pub constraints: Vec<Vec<String>>,
    pub options: SearchOptions,
}

/// Most constraint phrases of one sentence.
pub const MAX_CONSTRAINTS: usize = 16;

/// Checks a request body against the limits and the model ids. `defaults` are the server's
/// search settings (`--beam`, n-best 1) and `first_model` the id used when none is given.
pub fn check_request(
    body: &[u8],
    limits: &Limits,
    models: &[u64],
    defaults: SearchOptions,
) -> Result<Checked, Rejection> {
    if body.len() > limits.max_body_bytes {
        return Err(Rejection::new(
            413,
            format!(
                "request body of {} bytes, at most {} (--max-body-bytes)",
                body.len(),
                limits.max_body_bytes
            ),
        ));
    }
    let text = std::str::from_utf8(body).map_err(|e| {
        Rejection::new(
            400,
            format!(
                "request body is not valid UTF-8 (at byte {})",
                e.valid_up_to()
            ),
        )
    })?;
    let items: Vec<SourceItem> = serde_json::from_str(text).map_err(|e| {
        Rejection::new(
            400,
            format!("malformed request: {e}; expected [{{\"src\": \"...\", \"id\": 100}}]"),
        )
    })?;
    if items.is_empty() {
        return Err(Rejection::new(
            400,
            "no sentences: send [{\"src\": \"...\", \"id\": 100}]",
        ));
    }
    if items.len() > limits.max_sentences {
        return Err(Rejection::new(
            413,
            format!(
                "{} sentences in one request, at most {} (--max-sentences)",
                items.len(),
                limits.max_sentences
            ),
        ));
    }
    let first = &items[0];
    let model = first.id.unwrap_or(models[0]);
    if !models.contains(&model) {
        return Err(Rejection::new(
            404,
            format!("no model with id {model}; GET /translator/models lists them"),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        if item.id.unwrap_or(models[0]) != model
            || item.beam_size != first.beam_size
            || item.n_best != first.n_best
            || item.attention != first.attention
            || item.align != first.align
        {
            return Err(Rejection::new(
                400,
                format!(
                    "sentence {i}: every sentence of a request must name the same model, \
                     beam_size, n_best, attention and align"
                ),
            ));
        }
        if item.src.len() > limits.max_input_bytes {
            return Err(Rejection::new(
                413,
                format!(
                    "sentence {i}: {} bytes, at most {} (--max-input-bytes)",
                    item.src.len(),
                    limits.max_input_bytes
                ),
            ));
        }
        let phrases = item.constraints.as_deref().unwrap_or(&[]);
        let bytes: usize = phrases.iter().map(String::len).sum();
        if phrases.len() > MAX_CONSTRAINTS || bytes > limits.max_input_bytes {
            return Err(Rejection::new(
                413,
                format!(
                    "sentence {i}: {} constraints of {bytes} bytes, at most {MAX_CONSTRAINTS} of {} bytes (--max-input-bytes)",
                    phrases.len(),
                    limits.max_input_bytes
                ),
            ));
        }
    }
    let beam = first.beam_size.unwrap_or(defaults.beam);
    if beam == 0 || beam > limits.max_beam {
        return Err(Rejection::new(
            400,
            format!(
                "beam_size {beam}: use 1 to {} (--max-beam)",
                limits.max_beam
            ),
        ));
    }
    let n_best = first.n_best.unwrap_or(defaults.n_best);
    if n_best == 0 || n_best > beam {
        return Err(Rejection::new(
            400,
            format!("n_best {n_best}: use 1 to beam_size ({beam})"),
        ));
    }
    let work = items
        .iter()
        .map(|i| i.src.len().max(1))
        .sum::<usize>()
        .saturating_mul(beam);
    if work > limits.max_work {
        return Err(Rejection::new(
            413,
            format!(
                "the request asks for {work} units of work (source bytes x beam_size), at most {} (--max-request-work): send fewer or shorter sentences, or a smaller beam_size",
                limits.max_work
            ),
        ));
    }
    let attention = first.attention.unwrap_or(false);
    let align = first.align.unwrap_or(false);
    let constraints = items
        .iter()
        .map(|i| i.constraints.clone().unwrap_or_default())
        .collect();
    Ok(Checked {
        model,
        sentences: items.into_iter().map(|i| i.src).collect(),
        constraints,
        options: SearchOptions {
            beam,
            n_best,
            attention,
            align,
        },
    })
}

/// One hypothesis of a sentence: translation, score and (when asked for) attention.
#[derive(Debug, Clone)]
pub struct Hypothesis {
    pub text: String,
    pub score: f64,
    pub attention: Option<Alignment>,
    pub align: Option<String>,
}

/// Arranges translations in OpenNMT-py's response shape: `n_best` lists, list `k` holding the
/// `k`-th best of every sentence. A sentence with fewer hypotheses (an empty line) gets empty
/// translations with score 0, so every list has one entry per sentence.
pub fn response(
    sentences: &[String],
    hypotheses: &[Vec<Hypothesis>],
    n_best: usize,
) -> Vec<Vec<TargetItem>> {
    (0..n_best)
        .map(|k| {
            sentences
                .iter()
                .zip(hypotheses)
                .map(|(src, hyps)| {
                    let h = hyps.get(k);
                    TargetItem {
                        src: src.clone(),
                        tgt: h.map(|h| h.text.clone()).unwrap_or_default(),
                        n_best,
                        pred_score: h.map_or(0.0, |h| h.score),
                        attention: h.and_then(|h| h.attention.clone()),
                        align: h.and_then(|h| h.align.clone()),
                    }
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULTS: SearchOptions = SearchOptions {
        beam: 5,
        n_best: 1,
        attention: false,
        align: false,
    };

    fn check(body: &str) -> Result<Checked, Rejection> {
        check_request(body.as_bytes(), &Limits::default(), &[100, 7], DEFAULTS)
    }

    #[test]
    fn accepts_opennmt_requests() {
        let c = check(r#"[{"src": "a b", "id": 100}, {"src": "", "id": 100}]"#).unwrap();
        assert_eq!(c.model, 100);
        assert_eq!(c.sentences, ["a b", ""]);
        assert_eq!(c.options, DEFAULTS);
        let c = check(r#"[{"src": "x", "id": 7, "beam_size": 3, "n_best": 2, "attention": true}]"#)
            .unwrap();
        assert_eq!((c.model, c.options.beam, c.options.n_best), (7, 3, 2));
        assert!(c.options.attention);
        // No id: the first model.
        assert_eq!(check(r#"[{"src": "x"}]"#).unwrap().model, 100);
    }

    #[test]
    fn rejects_bad_requests_with_a_status_and_a_reason() {
        let status = |b: &str| check(b).unwrap_err().status;
        assert_eq!(status("[{\"src\": "), 400);
        assert_eq!(status("{\"src\": \"x\"}"), 400);
        assert_eq!(status("[]"), 400);
        assert_eq!(status(r#"[{"src": "x", "id": 5}]"#), 404);
        assert_eq!(
            status(r#"[{"src": "x", "id": 100}, {"src": "y", "id": 7}]"#),
            400
        );
        assert_eq!(status(r#"[{"src": "x", "beam_size": 0}]"#), 400);
        assert_eq!(status(r#"[{"src": "x", "beam_size": 17}]"#), 400);
        assert_eq!(
            status(r#"[{"src": "x", "beam_size": 2, "n_best": 3}]"#),
            400
        );
        let long = format!(r#"[{{"src": "{}"}}]"#, "a".repeat(5000));
        assert_eq!(status(&long), 413);
        let many = format!("[{}]", vec![r#"{"src": "a"}"#; 257].join(","));
        assert_eq!(status(&many), 413);
        let e = check_request(b"[{\"src\": \"\xff\"}]", &Limits::default(), &[1], DEFAULTS);
        assert_eq!(e.unwrap_err().status, 400);
        let small = Limits {
            max_body_bytes: 10,
            ..Limits::default()
        };
        let e = check_request(br#"[{"src": "abcdef"}]"#, &small, &[1], DEFAULTS).unwrap_err();
        assert_eq!(e.status, 413);
        assert!(e.message.contains("--max-body-bytes"), "{}", e.message);
    }

    /// Issue 21, item 4: the request the attack sent (256 sentences of 3,700 bytes, beam 16)
    /// is within every other limit but over the work bound; a normal one is not.
    #[test]
    fn the_work_of_one_request_is_bounded() {
        let s = format!(
            r#"{{"src": "{}", "beam_size": 16, "n_best": 16}}"#,
            "a ".repeat(1850)
        );
        let big = format!("[{}]", vec![s.as_str(); 256].join(","));
        assert!(big.len() <= Limits::default().max_body_bytes);
        let e = check(&big).unwrap_err();
        assert_eq!(e.status, 413);
        assert!(e.message.contains("--max-request-work"), "{}", e.message);
        let normal = format!(
            "[{}]",
            vec![r#"{"src": "Open the file.", "beam_size": 5}"#; 64].join(",")
        );
        check(&normal).unwrap();
    }

    #[test]
    fn response_has_one_list_per_rank() {
        let sentences = vec!["a".to_string(), String::new()];
        let h = |text: &str, score| Hypothesis {
            text: text.to_string(),
            score,
            attention: None,
            align: None,
        };
        let hyps = vec![vec![h("A", -1.0), h("B", -2.0)], vec![]];
        let r = response(&sentences, &hyps, 2);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0][0].tgt, "A");
        assert_eq!(r[1][0].tgt, "B");
        assert_eq!(r[1][1].tgt, "");
        assert!(r.iter().flatten().all(|t| t.n_best == 2));
    }
}
