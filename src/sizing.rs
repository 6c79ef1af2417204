//! Bounds of the sizing flags and keys: a size given on the command line or in a config is
//! checked against what it can use before anything is allocated for it, so that a typo
//! (`--window 30000000`, `--queue 18446744073709551615`) is one line instead of an abort or
//! a panic. Buffers that follow these sizes are allocated as they fill, never up front.
use crate::error::{Error, Result};

/// `--window` (rnmt-translate): lines ordered by length together.
pub const MAX_WINDOW: usize = 1 << 16;
/// `--batch-size` (rnmt-translate, rnmt-serve): sentences translated together.
pub const MAX_BATCH_SIZE: usize = 1 << 16;
/// `--workers` (rnmt-translate): each holds its own copy of the model.
pub const MAX_WORKERS: usize = 256;
/// `--queue` (rnmt-serve): requests waiting per model.
pub const MAX_QUEUE: usize = 1 << 16;
/// `--max-connections` (rnmt-serve).
pub const MAX_CONNECTIONS: usize = 1 << 16;
/// `data.tokenizer.vocab_size`: ids are stored in at most 32 bits, and the tokenizer
/// trainer's tables grow with the vocabulary.
pub const MAX_VOCAB_SIZE: usize = 1 << 24;

/// `value` of `flag` when it is in `1..=max`, else one line saying what it may be and why.
pub fn check(flag: &str, value: usize, max: usize, why: &str) -> Result<usize> {
    if value == 0 {
        return Err(Error::Config(format!("{flag} must be at least 1")));
    }
    if value > max {
        return Err(Error::Config(format!(
            "{flag} {value} is more than {max}, the most it may be ({why})"
        )));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_before_use() {
        assert_eq!(check("--window", 7, MAX_WINDOW, "x").unwrap(), 7);
        let e = check("--window", usize::MAX, MAX_WINDOW, "lines ordered together")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--window 18446744073709551615 is more than 65536"),
            "{e}"
        );
        let e = check("--queue", 0, MAX_QUEUE, "x").unwrap_err().to_string();
        assert!(e.contains("--queue must be at least 1"), "{e}");
    }
}
