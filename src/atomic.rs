//! Crash-safe writes: a file is written under a temporary name in its directory, flushed to
//! the disk (`fsync`), renamed over the final name, and the directory is flushed, so that a
//! crash or a power loss leaves either the old file or the complete new one under the final
//! name, never a partial or empty one.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Error, Result};

static SYNCS: AtomicUsize = AtomicUsize::new(0);

/// How many `fsync`s this process has made through this module (for tests).
pub fn sync_count() -> usize {
    SYNCS.load(Ordering::SeqCst)
}

/// `dir/.name.tmp.ext` next to `path`, keeping the extension (libtorch picks the format by it).
pub fn tmp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp{ext}"))
}

/// Flushes a file's data to the disk.
pub fn sync_file(path: &Path) -> Result<()> {
    SYNCS.fetch_add(1, Ordering::SeqCst);
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Flushes a directory (the renames in it) to the disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    SYNCS.fetch_add(1, Ordering::SeqCst);
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// Renames `from` to `to` and flushes `to`'s directory.
pub fn rename_synced(from: &Path, to: &Path) -> Result<()> {
    std::fs::rename(from, to).map_err(|e| Error::io(to, e))?;
    sync_dir(to.parent().unwrap_or(Path::new(".")))
}

/// Writes `bytes` to `path` atomically (see the module docs).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.commit()
}

/// A file written under a temporary name that replaces `path` only on [`AtomicFile::commit`];
/// dropped without it, the temporary file is removed and `path` is untouched.
pub struct AtomicFile {
    out: Option<BufWriter<File>>,
    tmp: PathBuf,
    path: PathBuf,
}

impl AtomicFile {
    /// Starts writing what will become `path`.
    pub fn create(path: &Path) -> Result<Self> {
        let tmp = tmp_name(path);
        let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(AtomicFile {
            out: Some(BufWriter::new(file)),
            tmp,
            path: path.to_path_buf(),
        })
    }

    /// Flushes and syncs the data, then renames it over `path`.
    pub fn commit(mut self) -> Result<()> {
        let out = self.out.take().expect("not committed yet");
        let file = out
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, e.into_error()))?;
        SYNCS.fetch_add(1, Ordering::SeqCst);
        file.sync_all().map_err(|e| Error::io(&self.tmp, e))?;
        drop(file);
        rename_synced(&self.tmp, &self.path)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.as_mut().expect("not committed").write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_syncs_the_file_and_the_directory() {
        let dir = std::env::temp_dir().join(format!("rnmt-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.json");
        let before = sync_count();
        write_atomic(&path, b"{}").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        // One fsync of the data before the rename, one of the directory after it.
        assert!(sync_count() >= before + 2, "{} -> {}", before, sync_count());
        assert!(!tmp_name(&path).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_uncommitted_file_leaves_the_old_one() {
        let dir = std::env::temp_dir().join(format!("rnmt-atomic2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.txt");
        std::fs::write(&path, "old").unwrap();
        {
            let mut f = AtomicFile::create(&path).unwrap();
            f.write_all(b"new, half written").unwrap();
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "old");
        assert!(!tmp_name(&path).exists());
        let mut f = AtomicFile::create(&path).unwrap();
        f.write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
