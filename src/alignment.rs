//! The attention of one translation in readable form: source and target subword tokens and
//! the weights between them, written by `rnmt-translate --attention` as one JSON line per
//! input line and drawn by [`crate::plot::heatmap`].
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::tokenizer::{SubwordTokenizer, EOS_ID};

/// Attention weights of one hypothesis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alignment {
    /// Source subword tokens as the model read them, `</s>` last.
    pub source: Vec<String>,
    /// Output subword tokens, `</s>` last.
    pub target: Vec<String>,
    /// `[target.len()][source.len()]`: row `i` is the distribution over the source tokens
    /// when the model chose target token `i`; every row sums to 1.
    pub attention: Vec<Vec<f32>>,
}

impl Alignment {
    /// From subword ids (without `</s>`) and the search's matrix
    /// `[tgt.len() + 1][src.len() + 1]`.
    pub fn new(
        src_tok: &SubwordTokenizer,
        src: &[u32],
        tgt_tok: &SubwordTokenizer,
        tgt: &[u32],
        attention: Vec<Vec<f32>>,
    ) -> Result<Self> {
        let names = |tok: &SubwordTokenizer, ids: &[u32]| -> Result<Vec<String>> {
            ids.iter()
                .chain(std::iter::once(&EOS_ID))
                .map(|&id| display_token(tok, id))
                .collect()
        };
        let a = Alignment {
            source: names(src_tok, src)?,
            target: names(tgt_tok, tgt)?,
            attention,
        };
        if a.attention.len() != a.target.len()
            || a.attention.iter().any(|r| r.len() != a.source.len())
        {
            return Err(Error::Input(format!(
                "attention matrix of {} rows for {} target tokens and {} source tokens",
                a.attention.len(),
                a.target.len(),
                a.source.len()
            )));
        }
        Ok(a)
    }

    /// The alignment as one JSON object (no newline), with `line` (1-based input line) first.
    pub fn to_json_line(&self, line: usize) -> Result<String> {
        #[derive(Serialize)]
        struct Row<'a> {
            line: usize,
            #[serde(flatten)]
            alignment: &'a Alignment,
        }
        serde_json::to_string(&Row {
            line,
            alignment: self,
        })
        .map_err(|e| Error::json("the attention line", e))
    }
}

/// A subword as text: its own decoding (a byte-level token such as `Ġthe` shows as ` the`),
/// or the raw vocabulary entry when it is a part of a multi-byte character.
fn display_token(tok: &SubwordTokenizer, id: u32) -> Result<String> {
    if id == EOS_ID {
        return Ok("</s>".into());
    }
    let text = tok.decode(&[id])?;
    if text.is_empty() || text.contains('\u{FFFD}') {
        return Ok(tok.id_to_token(id).unwrap_or_else(|| format!("<{id}>")));
    }
    Ok(text)
}
