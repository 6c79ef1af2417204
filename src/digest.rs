//! Digests of weight files, so that a corrupted or truncated copy of a model is one clear
//! error instead of garbage translations. safetensors carries no checksum of its own, so every
//! weights file rnmt writes records the SHA-256 of its data section in the file's own header,
//! as the metadata entry `rnmt.sha256` (safetensors' `__metadata__` string map, ignored by
//! other readers). The digest travels with the file through copies and renames, and a crash
//! can never leave a digest that belongs to other bytes. Loading checks it when present; a
//! file written before digests existed (or by another tool) loads as before.
//!
//! Cost: one extra read, hash and write of the file when saving, one read and hash when
//! loading (SHA-256 on one core; README "Reliability" gives the measured rate).
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The metadata key of the digest.
pub const KEY: &str = "rnmt.sha256";

/// The parts of a safetensors file: `(header JSON, data section)`, or a message.
fn split(bytes: &[u8]) -> std::result::Result<(&[u8], &[u8]), String> {
    if bytes.len() < 8 {
        return Err(format!(
            "{} bytes, shorter than a safetensors header",
            bytes.len()
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > (bytes.len() - 8) as u64 {
        return Err(format!(
            "its header claims {n} bytes but the file has {} after the length",
            bytes.len() - 8
        ));
    }
    let n = n as usize;
    Ok((&bytes[8..8 + n], &bytes[8 + n..]))
}

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The SHA-256 of `data`, in hex.
pub fn sha256(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// `bytes` (a safetensors file) with the digest of its data section in its header.
pub fn seal(bytes: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let (header, data) = split(bytes)?;
    let mut map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|e| format!("its header: {e}"))?;
    let meta = map
        .entry("__metadata__")
        .or_insert_with(|| serde_json::Value::Object(Default::default()));
    let meta = meta
        .as_object_mut()
        .ok_or("its __metadata__ is not an object")?;
    meta.insert(KEY.into(), sha256(data).into());
    let mut text = serde_json::to_vec(&map).map_err(|e| e.to_string())?;
    // Keep the data section 8-byte aligned, as safetensors writers do.
    while text.len() % 8 != 0 {
        text.push(b' ');
    }
    let mut out = Vec::with_capacity(8 + text.len() + data.len());
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    out.extend_from_slice(data);
    Ok(out)
}

/// Adds the digest to the safetensors file at `path` (rewritten in place: call it on a
/// temporary file before it is synced and renamed).
pub fn seal_file(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let sealed = seal(&bytes).map_err(|m| {
        Error::ModelDir(format!("{}: cannot record its digest: {m}", path.display()))
    })?;
    std::fs::write(path, sealed).map_err(|e| Error::io(path, e))
}

/// The digest recorded in the header of the safetensors file at `path`, reading only the
/// header (bounded by [`crate::checkpoint::MAX_SAFETENSORS_HEADER`]); `None` when the file
/// records none (or is missing, or not safetensors).
pub fn recorded(path: &Path) -> Option<String> {
    use std::io::Read;
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len);
    if n > crate::checkpoint::MAX_SAFETENSORS_HEADER {
        return None;
    }
    let mut header = Vec::new();
    f.take(n).read_to_end(&mut header).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&header).ok()?;
    value
        .get("__metadata__")?
        .get(KEY)?
        .as_str()
        .map(str::to_string)
}

/// What [`verify`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The recorded digest matches.
    Matches,
    /// No digest is recorded (a file from before digests, or from another tool).
    Unrecorded,
}

/// Checks the digest recorded in a safetensors file's header against its data section.
/// A mismatch, or a file too short for its header, is an error naming `path`.
pub fn verify(bytes: &[u8], path: &Path) -> Result<Checked> {
    let bad = |m: String| Error::ModelDir(format!("{}: {m}", path.display()));
    let (header, data) =
        split(bytes).map_err(|m| bad(format!("truncated or not safetensors: {m}")))?;
    // A header that is not JSON is left to the safetensors reader's own message.
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return Ok(Checked::Unrecorded);
    };
    let Some(recorded) = value
        .get("__metadata__")
        .and_then(|m| m.get(KEY))
        .and_then(|d| d.as_str())
    else {
        return Ok(Checked::Unrecorded);
    };
    let actual = sha256(data);
    if actual != recorded {
        return Err(bad(format!(
            "the weights do not match the digest recorded when they were written (sha256 {actual}, recorded {recorded}): the file is corrupt or truncated; copy it again"
        )));
    }
    Ok(Checked::Matches)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn a_sealed_file_verifies_and_a_flipped_bit_does_not() {
        let p = Path::new("w.safetensors");
        let raw = file(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#,
            &[0, 0, 128, 63, 0, 0, 0, 64],
        );
        assert_eq!(verify(&raw, p).unwrap(), Checked::Unrecorded);
        let sealed = seal(&raw).unwrap();
        assert_eq!(u64::from_le_bytes(sealed[..8].try_into().unwrap()) % 8, 0);
        assert_eq!(verify(&sealed, p).unwrap(), Checked::Matches);
        assert!(sealed.ends_with(&[0, 0, 128, 63, 0, 0, 0, 64]));
        let mut flipped = sealed.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        let err = verify(&flipped, p).unwrap_err().to_string();
        assert!(
            err.contains("w.safetensors: the weights do not match the digest"),
            "{err}"
        );
        let cut = &sealed[..sealed.len() - 3];
        assert!(verify(cut, p).is_err());
        // Sealing twice keeps one digest, of the same data.
        assert_eq!(seal(&sealed).unwrap(), sealed);
    }
}
