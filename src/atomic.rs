//! Crash-safe writes: a file is written under a temporary name in its directory, flushed to
//! the disk (`fsync`), renamed over the final name, and the directory is flushed, so that a
//! crash or a power loss leaves either the old file or the complete new one under the final
//! name, never a partial or empty one.
//!
//! Only a regular file (or a name that does not exist yet) is replaced that way. A symbolic
//! link is followed and its target written atomically (the link stays a link); a character or
//! block device, a FIFO or a socket is opened and written directly (`-o /dev/stdout`, a pipe),
//! never replaced by a regular file; a directory is an error. See [`resolve`].
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

/// Where a write to a path goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A regular file, or a name that does not exist yet (links followed): written
    /// atomically under this path.
    Replace(PathBuf),
    /// A device, FIFO or socket: opened and written in place.
    Direct(PathBuf),
}

/// Most symbolic links followed from one path (as the kernel's `ELOOP` limit).
const MAX_LINKS: usize = 40;

/// Where writing `path` must go: links are followed (also a dangling one, whose target is
/// then created), a regular or missing file is [`Target::Replace`], a device, FIFO or socket
/// [`Target::Direct`], and a directory (or a loop of links) an error.
pub fn resolve(path: &Path) -> Result<Target> {
    // The kernel's view first: `/dev/stdout` is a link to `/proc/self/fd/1`, whose "target"
    // (`pipe:[123]`) names no file, yet opening the link opens the pipe.
    if let Ok(meta) = std::fs::metadata(path) {
        let ft = meta.file_type();
        if !ft.is_file() && !ft.is_dir() {
            return Ok(Target::Direct(path.to_path_buf()));
        }
    }
    let mut p = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Target::Replace(p)),
            Err(e) => return Err(Error::io(&p, e)),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let to = std::fs::read_link(&p).map_err(|e| Error::io(&p, e))?;
            p = match p.parent() {
                Some(dir) if to.is_relative() => dir.join(to),
                _ => to,
            };
        } else if ft.is_file() {
            return Ok(Target::Replace(p));
        } else if ft.is_dir() {
            return Err(Error::Input(format!(
                "{} is a directory; give a file to write",
                path.display()
            )));
        } else {
            return Ok(Target::Direct(p));
        }
    }
    Err(Error::Input(format!(
        "{}: more than {MAX_LINKS} symbolic links to follow (a loop?)",
        path.display()
    )))
}

/// A file written under a temporary name that replaces `path` only on [`AtomicFile::commit`];
/// dropped without it, the temporary file is removed and `path` is untouched. For a device,
/// FIFO or socket ([`Target::Direct`]) the bytes go straight to it instead.
pub struct AtomicFile {
    out: Option<BufWriter<File>>,
    /// The temporary file; `None` when writing directly.
    tmp: Option<PathBuf>,
    path: PathBuf,
}

impl AtomicFile {
    /// Starts writing what will become `path` (see [`resolve`]).
    pub fn create(path: &Path) -> Result<Self> {
        match resolve(path)? {
            Target::Replace(path) => {
                let tmp = tmp_name(&path);
                let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
                Ok(AtomicFile {
                    out: Some(BufWriter::new(file)),
                    tmp: Some(tmp),
                    path,
                })
            }
            Target::Direct(path) => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                Ok(AtomicFile {
                    out: Some(BufWriter::new(file)),
                    tmp: None,
                    path,
                })
            }
        }
    }

    /// The file that is written: the temporary file, or the device itself.
    fn written(&self) -> &Path {
        self.tmp.as_deref().unwrap_or(&self.path)
    }

    /// Flushes and syncs the data, then renames it over `path` (for a device: flushes).
    pub fn commit(mut self) -> Result<()> {
        let out = self.out.take().expect("not committed yet");
        let file = match out.into_inner() {
            Ok(f) => f,
            Err(e) => {
                let err = Error::io(self.written(), e.into_error());
                if let Some(tmp) = &self.tmp {
                    let _ = std::fs::remove_file(tmp);
                }
                return Err(err);
            }
        };
        let Some(tmp) = self.tmp.clone() else {
            return Ok(());
        };
        SYNCS.fetch_add(1, Ordering::SeqCst);
        let synced = file.sync_all().map_err(|e| Error::io(&tmp, e));
        drop(file);
        let done = synced.and_then(|()| rename_synced(&tmp, &self.path));
        if done.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        done
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
            if let Some(tmp) = &self.tmp {
                let _ = std::fs::remove_file(tmp);
            }
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

    /// Links are followed, devices and FIFOs written in place, never replaced (issue 21,
    /// item 1); the nodes are made inside a temporary directory.
    #[test]
    fn links_devices_and_fifos_are_written_through() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target.txt");
        std::fs::write(&target, "old").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink("target.txt", &link).unwrap();
        write_atomic(&link, b"new").unwrap();
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        // A dangling link: its target is created.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("made.txt", &dangling).unwrap();
        write_atomic(&dangling, b"made").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("made.txt")).unwrap(),
            "made"
        );
        assert!(std::fs::symlink_metadata(&dangling)
            .unwrap()
            .file_type()
            .is_symlink());

        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        assert!(matches!(resolve(&fifo).unwrap(), Target::Direct(_)));
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(&fifo).unwrap())
        };
        write_atomic(&fifo, b"through the pipe").unwrap();
        assert_eq!(reader.join().unwrap(), b"through the pipe");
        assert!(std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo());
        let err = write_atomic(dir.path(), b"x").unwrap_err().to_string();
        assert!(err.contains("is a directory"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 5, "a temporary file was left: {names:?}");
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
