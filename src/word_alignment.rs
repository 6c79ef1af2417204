//! Word alignments from attention (`rnmt-translate --align`), in Pharaoh format: `i-j` pairs,
//! source word `i` and output word `j`, both counted from 0 over the whitespace-separated
//! words.
//!
//! The convention (one link per output word, as fairseq's `--print-alignment` does for
//! tokens):
//! - The words are those of the texts the model read and wrote: the source line after the
//!   model's normalization (for ordinary text the line itself), and the output line. A
//!   subword token belongs to the word its non-space characters fall in; a token of spaces
//!   only, and `</s>` on both sides, belong to none and are left out.
//! - Output word `j` is linked to the one source word `i` with the most attention summed over
//!   the attention rows of `j`'s tokens and the columns of `i`'s tokens (ties: the lower `i`).
//! - Links are written in output word order, `j = 0, 1, ..`, separated by spaces; an empty
//!   source or output has no links.
use crate::error::Result;
use crate::tokenizer::SubwordTokenizer;

/// The word (0-based, over the whitespace-separated words of the decoded text) of each
/// token of `ids`; `None` for a token that adds only spaces.
pub fn token_words(tok: &SubwordTokenizer, ids: &[u32]) -> Result<Vec<Option<usize>>> {
    let mut out = Vec::with_capacity(ids.len());
    let mut before = String::new();
    for i in 0..ids.len() {
        let text = tok.decode(&ids[..=i])?;
        let words = text.split_whitespace().count();
        // The characters this token added; a word-final byte of a multi-byte character may
        // change the last character instead, which is still that word.
        let common = before
            .char_indices()
            .zip(text.chars())
            .find(|((_, a), b)| a != b)
            .map_or(before.len().min(text.len()), |((at, _), _)| at);
        let added = text.get(common..).unwrap_or("");
        out.push((words > 0 && !added.trim().is_empty()).then(|| words - 1));
        before = text;
    }
    Ok(out)
}

/// The links `(i, j)` from `attention [target tokens (+ </s>)][source tokens (+ </s>)]`
/// (rows beyond `tgt_words`, columns beyond `src_words`: `</s>`, ignored) with each token's
/// word.
pub fn links(
    attention: &[Vec<f32>],
    src_words: &[Option<usize>],
    tgt_words: &[Option<usize>],
) -> Vec<(usize, usize)> {
    let n_src = src_words.iter().flatten().max().map_or(0, |m| m + 1);
    let n_tgt = tgt_words.iter().flatten().max().map_or(0, |m| m + 1);
    if n_src == 0 {
        return vec![];
    }
    let mut mass = vec![vec![0.0f64; n_src]; n_tgt];
    for (row, tw) in attention.iter().zip(tgt_words) {
        let Some(j) = *tw else { continue };
        for (w, sw) in row.iter().zip(src_words) {
            if let Some(i) = *sw {
                mass[j][i] += *w as f64;
            }
        }
    }
    mass.iter()
        .enumerate()
        .map(|(j, m)| {
            let mut best = 0;
            for (i, &x) in m.iter().enumerate() {
                if x > m[best] {
                    best = i;
                }
            }
            (best, j)
        })
        .collect()
}

/// The alignment of a translation as Pharaoh text: source subword ids `src`, output subword
/// ids `tgt` (both without `</s>`) and the search's attention matrix.
pub fn pharaoh(
    src_tok: &SubwordTokenizer,
    src: &[u32],
    tgt_tok: &SubwordTokenizer,
    tgt: &[u32],
    attention: &[Vec<f32>],
) -> Result<String> {
    let s = token_words(src_tok, src)?;
    let t = token_words(tgt_tok, tgt)?;
    Ok(links(attention, &s, &t)
        .iter()
        .map(|(i, j)| format!("{i}-{j}"))
        .collect::<Vec<_>>()
        .join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_output_word_links_to_its_most_attended_source_word() {
        // Source words: tokens 0,1 -> word 0; token 2 -> word 1; column 3 is </s>.
        let src = [Some(0), Some(0), Some(1)];
        // Output: tokens 0 -> word 0; 1 (spaces) -> none; 2, 3 -> word 1; row 4 is </s>.
        let tgt = [Some(0), None, Some(1), Some(1)];
        let att = vec![
            vec![0.1, 0.1, 0.7, 0.1], // word 0 -> source word 1 (0.7 > 0.2)
            vec![0.9, 0.0, 0.0, 0.1], // a space token: ignored
            vec![0.3, 0.2, 0.4, 0.1], // word 1: source 0 gets 0.5 + 0.6 ...
            vec![0.3, 0.3, 0.3, 0.1], // ... and source 1 0.4 + 0.3
            vec![0.0, 0.0, 0.0, 1.0], // </s>
        ];
        assert_eq!(links(&att, &src, &tgt), vec![(1, 0), (0, 1)]);
        // Ties go to the lower source word; the </s> column never wins.
        let att = vec![vec![0.25, 0.25, 0.5, 0.0]];
        assert_eq!(
            links(&att, &[Some(0), Some(1), Some(1)], &[Some(0)]),
            vec![(1, 0)]
        );
        let att = vec![vec![0.3, 0.3, 0.4]];
        assert_eq!(links(&att, &[Some(0), Some(1)], &[Some(0)]), vec![(0, 0)]);
        assert!(links(&att, &[], &[Some(0)]).is_empty());
    }
}
