//! Reading the files of a model directory (and config files) that may be hostile: only a
//! regular file is opened (a link is followed to one; a device such as `/dev/zero`, a FIFO or
//! a socket is refused before it is opened, so it can neither stream without end nor block),
//! and its size is checked against a bound before anything is read. The read itself stops at
//! the bound too, in case the file grows meanwhile.
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Checks that `path` is a regular file (after following links) of at most `max` bytes, and
/// returns its size. `what` names the kind of file in the message ("a config file").
pub fn check_regular(path: &Path, max: u64, what: &str) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        return Err(Error::Input(format!(
            "{} is {}, not a regular file; {what} must be a regular file",
            path.display(),
            kind_of(&ft)
        )));
    }
    if meta.len() > max {
        return Err(Error::Input(format!(
            "{} is {} bytes; {what} is at most {max} bytes",
            path.display(),
            meta.len()
        )));
    }
    Ok(meta.len())
}

/// The bytes of `path` after [`check_regular`].
pub fn read_bounded(path: &Path, max: u64, what: &str) -> Result<Vec<u8>> {
    let len = check_regular(path, max, what)?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > max {
        return Err(Error::Input(format!(
            "{} grew past {max} bytes while being read; {what} is at most {max} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

/// The text of `path` after [`check_regular`] (valid UTF-8, else an error naming it).
pub fn read_text_bounded(path: &Path, max: u64, what: &str) -> Result<String> {
    let bytes = read_bounded(path, max, what)?;
    String::from_utf8(bytes)
        .map_err(|e| Error::Input(format!("{}: not UTF-8 text: {e}", path.display())))
}

/// "a directory", "a character device", ... for messages.
pub fn kind_of(ft: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bounded_regular_files_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.json");
        std::fs::write(&f, b"{}").unwrap();
        assert_eq!(read_bounded(&f, 2, "a config file").unwrap(), b"{}");
        let err = read_bounded(&f, 1, "a config file")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is 2 bytes; a config file is at most 1 bytes"),
            "{err}"
        );
        let err = read_bounded(dir.path(), 10, "x").unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        // A zero device made here (1,5), never the machine's /dev/zero; needs root.
        let zero = dir.path().join("zero");
        let made = std::process::Command::new("mknod")
            .arg(&zero)
            .args(["c", "1", "5"])
            .status()
            .is_ok_and(|s| s.success());
        if made {
            let err = read_bounded(&zero, 10, "x").unwrap_err().to_string();
            assert!(
                err.contains("is a character device, not a regular file"),
                "{err}"
            );
        }
    }
}
