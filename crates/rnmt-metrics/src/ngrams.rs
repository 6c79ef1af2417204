//! n-gram counting shared by BLEU and chrF, on borrowed slices (no
//! allocation per n-gram) with a fast non-cryptographic hasher.
//!
//! Word n-grams are slices of a token vector (`&[&str]`), which is what
//! sacrebleu's tuple keys (`extract_all_word_ngrams`) and space-joined keys
//! (`extract_word_ngrams`) amount to, since tokens never contain whitespace.
//! Character n-grams are substrings of the line (`extract_char_ngrams`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The Fx hash (rustc's): multiply-rotate over 8-byte words. Fast for short
/// keys; HashDoS resistance is irrelevant for evaluation data.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// n-gram → count.
pub type Counts<K> = HashMap<K, u64, BuildHasherDefault<FxHasher>>;

/// Word n-grams of order `n` of `tokens`.
pub fn word_ngrams<'a>(tokens: &'a [&'a str], n: usize) -> Counts<&'a [&'a str]> {
    let mut m = Counts::with_capacity_and_hasher(tokens.len(), Default::default());
    for w in tokens.windows(n) {
        *m.entry(w).or_insert(0) += 1;
    }
    m
}

/// Character n-grams of order `n` of `text`, whose character boundaries
/// (byte offsets of every character plus `text.len()`) are `bounds`.
pub fn char_ngrams<'a>(text: &'a str, bounds: &[usize], n: usize) -> Counts<&'a str> {
    let mut m = Counts::with_capacity_and_hasher(bounds.len(), Default::default());
    for w in bounds.windows(n + 1) {
        *m.entry(&text[w[0]..w[n]]).or_insert(0) += 1;
    }
    m
}

/// Byte offsets of every character of `text`, plus `text.len()`.
pub fn char_bounds(text: &str) -> Vec<usize> {
    text.char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect()
}
