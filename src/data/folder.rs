//! The prepared folder as a place on disk that rnmt owns: which folders it may write, the lock
//! that keeps two processes from preparing into one folder at once, and what it deletes when
//! it prepares again.
//!
//! - **Ownership.** rnmt prepares into a folder that does not exist, is empty, or is already a
//!   prepared folder: one with a `manifest.json` that parses, or with the lock file
//!   [`LOCK_FILE`] (written first by every prepare, so an interrupted prepare is still
//!   recognised). Any other non-empty folder (a model directory, a folder of the user's
//!   files) is refused with one line, and nothing in it is touched.
//! - **What is deleted.** Preparing again deletes only rnmt's own files: the manifest, the
//!   tokenizer files, and in each `corpus-<n>` subfolder the files named `shard-<k>.bin` (and
//!   their temporary names); a `corpus-<n>` folder is removed only when that leaves it empty.
//!   Every other file stays.
//! - **The lock.** A process that reads a prepared folder (rnmt-train, for the whole run)
//!   holds a shared `flock` on [`LOCK_FILE`]; a prepare holds it exclusively. A prepare that
//!   finds the folder in use fails at once with one line; a reader that finds a prepare
//!   running waits for it (saying so), then reads what it left.
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::tokenizer::FILES;

/// The lock file of a prepared folder (also its mark as a prepared folder).
pub const LOCK_FILE: &str = ".rnmt-prepared.lock";

/// A held lock on a prepared folder; released when dropped.
#[derive(Debug)]
pub struct FolderLock {
    file: File,
    exclusive: bool,
    dir: PathBuf,
}

impl FolderLock {
    pub fn is_exclusive(&self) -> bool {
        self.exclusive
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Trades the exclusive lock for a shared one (a prepare done, its data in use).
    pub fn downgrade(self) -> Result<FolderLock> {
        if !self.exclusive {
            return Ok(self);
        }
        self.file
            .lock_shared()
            .map_err(|e| Error::io(&self.dir.join(LOCK_FILE), e))?;
        Ok(FolderLock {
            exclusive: false,
            ..self
        })
    }

    /// Trades a shared lock for the exclusive one (to prepare again); an error naming the
    /// folder when another process holds it too.
    pub fn upgrade(self) -> Result<FolderLock> {
        if self.exclusive {
            return Ok(self);
        }
        let dir = self.dir.clone();
        // flock(2) converts a shared lock into an exclusive one on the same descriptor.
        match self.file.try_lock() {
            Ok(()) => Ok(FolderLock {
                exclusive: true,
                ..self
            }),
            Err(TryLockError::WouldBlock) => Err(in_use(&dir)),
            Err(TryLockError::Error(e)) => Err(Error::io(&dir.join(LOCK_FILE), e)),
        }
    }
}

fn in_use(dir: &Path) -> Error {
    Error::Input(format!(
        "{}: the prepared folder is in use by another rnmt-train or rnmt-prepare, which needs other prepared data; wait for it to end or give another --data-dir / --out",
        dir.display()
    ))
}

/// Whether `dir` may be prepared into: missing, empty, or a prepared folder. Otherwise an
/// error that names it and touches nothing.
pub fn check_owned(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut empty = true;
    for entry in entries {
        let name = entry.map_err(|e| Error::io(dir, e))?.file_name();
        if name == LOCK_FILE {
            return Ok(());
        }
        empty = false;
    }
    if empty || super::prepare::read_manifest(dir).is_some() {
        return Ok(());
    }
    Err(Error::Input(format!(
        "{}: not empty and not a prepared folder (no {} from rnmt-prepare): refusing to prepare into it, which would replace its files; give a new or empty folder",
        dir.display(),
        super::prepare::MANIFEST_FILE
    )))
}

/// Opens (creating it in an existing folder) the lock file of `dir`.
fn open_lock(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))
}

/// Takes the exclusive lock of `dir` to prepare into it (creating the folder; see
/// [`check_owned`] first). Fails at once when another process holds any lock on it.
pub fn lock_exclusive(dir: &Path) -> Result<FolderLock> {
    check_owned(dir)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let file = open_lock(dir)?;
    match file.try_lock() {
        Ok(()) => Ok(FolderLock {
            file,
            exclusive: true,
            dir: dir.to_path_buf(),
        }),
        Err(TryLockError::WouldBlock) => Err(in_use(dir)),
        Err(TryLockError::Error(e)) => Err(Error::io(&dir.join(LOCK_FILE), e)),
    }
}

/// Takes a shared lock of the prepared folder `dir` to read it, waiting (with a line on
/// stderr) while a prepare holds it. `None` when `dir` is not a folder rnmt may use (missing
/// or not owned: the caller prepares, which gives the error).
pub fn lock_shared(dir: &Path) -> Result<Option<FolderLock>> {
    if !dir.is_dir() || check_owned(dir).is_err() {
        return Ok(None);
    }
    let file = open_lock(dir)?;
    match file.try_lock_shared() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            eprintln!(
                "data: {} is being prepared by another process; waiting for it",
                dir.display()
            );
            file.lock_shared()
                .map_err(|e| Error::io(&dir.join(LOCK_FILE), e))?;
        }
        Err(TryLockError::Error(e)) => return Err(Error::io(&dir.join(LOCK_FILE), e)),
    }
    Ok(Some(FolderLock {
        file,
        exclusive: false,
        dir: dir.to_path_buf(),
    }))
}

/// Whether `name` is a shard file name as prepares write them (`shard-<digits>.bin`), or the
/// temporary name of one.
fn is_shard_name(name: &str) -> bool {
    let name = name
        .strip_prefix('.')
        .and_then(|n| n.strip_suffix(".tmp.bin"))
        .unwrap_or(name);
    name.strip_prefix("shard-")
        .and_then(|n| n.strip_suffix(".bin"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `name` is a corpus subfolder name as prepares write them (`corpus-<digits>`).
pub fn is_corpus_name(name: &str) -> bool {
    name.strip_prefix("corpus-")
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}

/// Deletes rnmt's own files from the prepared folder `dir` (see the module docs), the
/// manifest first. Needs the exclusive lock.
pub fn clear(lock: &FolderLock) -> Result<()> {
    debug_assert!(lock.exclusive);
    let dir = &lock.dir;
    let remove = |p: &Path| -> Result<()> {
        match std::fs::remove_file(p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(p, e)),
        }
    };
    remove(&dir.join(super::prepare::MANIFEST_FILE))?;
    for name in FILES {
        remove(&dir.join(name))?;
    }
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !is_corpus_name(&name) {
            continue;
        }
        // Never follow a link out of the folder: a link in a corpus's place is removed (not
        // what it points to), and only real subfolders are cleared.
        let ft = entry.file_type().map_err(|e| Error::io(&path, e))?;
        if ft.is_symlink() {
            remove(&path)?;
            continue;
        }
        if !ft.is_dir() {
            continue;
        }
        for shard in std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))? {
            let shard = shard.map_err(|e| Error::io(&path, e))?;
            let file = shard.file_name().to_string_lossy().into_owned();
            if is_shard_name(&file) && shard.file_type().is_ok_and(|t| t.is_file()) {
                remove(&shard.path())?;
            }
        }
        // Left when it still holds other files.
        let _ = std::fs::remove_dir(&path);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_rnmt_files() {
        assert!(is_shard_name("shard-00000.bin"));
        assert!(is_shard_name(".shard-00012.bin.tmp.bin"));
        assert!(!is_shard_name("shard-.bin"));
        assert!(!is_shard_name("notes.txt"));
        assert!(!is_shard_name("shard-1.bin.bak"));
        assert!(is_corpus_name("corpus-0"));
        assert!(!is_corpus_name("corpus-2024-interviews"));
    }

    #[test]
    fn a_user_folder_is_refused_and_a_prepare_is_exclusive() {
        let tmp = tempfile::tempdir().unwrap();
        let user = tmp.path().join("user");
        std::fs::create_dir_all(user.join("corpus-0")).unwrap();
        std::fs::write(user.join("corpus-0/notes.txt"), "mine").unwrap();
        let e = lock_exclusive(&user).unwrap_err().to_string();
        assert!(e.contains("not empty and not a prepared folder"), "{e}");
        assert!(lock_shared(&user).unwrap().is_none());
        assert!(!user.join(LOCK_FILE).exists());

        let dir = tmp.path().join("prep");
        let lock = lock_exclusive(&dir).unwrap();
        std::fs::create_dir_all(dir.join("corpus-0")).unwrap();
        std::fs::write(dir.join("corpus-0/shard-00000.bin"), "x").unwrap();
        std::fs::write(dir.join("corpus-0/notes.txt"), "mine").unwrap();
        std::fs::create_dir_all(dir.join("corpus-1")).unwrap();
        std::fs::write(dir.join("corpus-1/shard-00000.bin"), "x").unwrap();
        // A second prepare, or a reader, while the first prepares: refused at once.
        let e = lock_exclusive(&dir).unwrap_err().to_string();
        assert!(e.contains("in use by another"), "{e}");
        clear(&lock).unwrap();
        assert!(!dir.join("corpus-0/shard-00000.bin").exists());
        assert_eq!(
            std::fs::read_to_string(dir.join("corpus-0/notes.txt")).unwrap(),
            "mine"
        );
        assert!(!dir.join("corpus-1").exists());
        drop(lock);
        let shared = lock_shared(&dir).unwrap().expect("a prepared folder");
        let other = lock_shared(&dir).unwrap().expect("shared twice");
        let e = shared.upgrade().unwrap_err().to_string();
        assert!(e.contains("in use by another"), "{e}");
        drop(other);
        assert!(lock_shared(&dir).unwrap().unwrap().upgrade().is_ok());
    }
}
