//! Where rnmt-translate writes, and how a long job survives an interruption.
//!
//! - `-o FILE` (a regular file, or a name not there yet) is written as it goes to
//!   `FILE.partial`, one complete line at a time; at the end it is synced and renamed over
//!   `FILE`, so `FILE` appears complete or keeps its old content. When the job is stopped
//!   (Ctrl-C, SIGTERM) the lines translated so far stay in `FILE.partial`, and one line on
//!   stderr says how many; after SIGKILL or a crash `FILE.partial` holds every line written
//!   before it (in input order). A job that fails with an error removes it.
//! - `-o -`, no `-o`, or a device, FIFO or pipe (`-o /dev/stdout`) is written directly.
//! - A progress line on stderr (lines done, lines/s, and with an input file, the lines in
//!   it and the time left) at most once a second, with `--progress` (or when stderr is a
//!   terminal and the input is a file).
use std::fs::File;
use std::io::{IsTerminal, LineWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::atomic::{rename_synced, resolve, Target};
use crate::error::{Error, Result};

/// Whether a path given as `-i` / `-o` means stdin / stdout.
pub fn is_std(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The partial file of `FILE`: `FILE.partial`.
pub fn partial_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// The lines of a regular file (a last line without `\n` counted), or `None` for anything
/// else (stdin, a pipe).
pub fn count_lines(path: &Path) -> Option<u64> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() {
        return None;
    }
    let mut f = File::open(path).ok()?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, mut last) = (0u64, b'\n');
    loop {
        let got = f.read(&mut buf).ok()?;
        if got == 0 {
            break;
        }
        n += buf[..got].iter().filter(|&&b| b == b'\n').count() as u64;
        last = buf[got - 1];
    }
    Some(n + u64::from(last != b'\n'))
}

/// Lines written so far, shared with the signal handler. A write and its count happen under
/// one lock, and the handler holds that lock until the process exits, so the count it prints
/// is exactly the number of lines on disk (no line lands between the count and the exit).
#[derive(Clone, Default)]
pub struct LineCount(Arc<Mutex<u64>>);

impl LineCount {
    fn lock(&self) -> MutexGuard<'_, u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self) -> u64 {
        *self.lock()
    }
}

/// The progress line.
struct Progress {
    start: Instant,
    last: Instant,
    total: Option<u64>,
    /// `\r` on a terminal, else one line each time.
    tty: bool,
}

impl Progress {
    fn line(&self, done: u64) -> String {
        let secs = self.start.elapsed().as_secs_f64().max(1e-9);
        let rate = done as f64 / secs;
        match self.total {
            Some(total) if rate > 0.0 => {
                let left = total.saturating_sub(done) as f64 / rate;
                format!(
                    "rnmt-translate: {done}/{total} lines, {rate:.1} lines/s, {} left",
                    clock(left)
                )
            }
            Some(total) => format!("rnmt-translate: {done}/{total} lines"),
            None => format!("rnmt-translate: {done} lines, {rate:.1} lines/s"),
        }
    }

    fn tick(&mut self, done: u64, force: bool) {
        if !force && self.last.elapsed() < Duration::from_secs(1) {
            return;
        }
        self.last = Instant::now();
        let text = self.line(done);
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{text}\x1b[K")
        } else {
            writeln!(err, "{text}")
        };
    }
}

/// `h:mm:ss`.
fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// The output of a translation job (see the module docs).
pub struct Output {
    out: LineWriter<Box<dyn Write + Send>>,
    /// `(FILE.partial, FILE)` when writing a regular file.
    partial: Option<(PathBuf, PathBuf)>,
    lines: LineCount,
    progress: Option<Progress>,
    name: String,
}

impl Output {
    /// Opens `path` (`None` or `-`: stdout). `progress`: the number of input lines when
    /// known (`Some(None)`: show progress without a total), `None` for no progress line.
    pub fn open(path: Option<&Path>, progress: Option<Option<u64>>) -> Result<Output> {
        let (inner, partial, name): (Box<dyn Write + Send>, _, _) = match path {
            None => (Box::new(std::io::stdout()), None, "<stdout>".to_string()),
            Some(p) if is_std(p) => (Box::new(std::io::stdout()), None, "<stdout>".to_string()),
            Some(p) => match resolve(p)? {
                Target::Direct(d) => {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&d)
                        .map_err(|e| Error::io(&d, e))?;
                    (Box::new(f), None, d.display().to_string())
                }
                Target::Replace(file) => {
                    let part = partial_name(&file);
                    if std::fs::symlink_metadata(&part).is_ok_and(|m| !m.file_type().is_file()) {
                        return Err(Error::Input(format!(
                            "{} exists and is not a regular file; remove it to write {}",
                            part.display(),
                            file.display()
                        )));
                    }
                    let f = File::create(&part).map_err(|e| Error::io(&part, e))?;
                    let name = part.display().to_string();
                    (Box::new(f), Some((part, file)), name)
                }
            },
        };
        Ok(Output {
            out: LineWriter::new(inner),
            partial,
            lines: LineCount::default(),
            progress: progress.map(|total| Progress {
                start: Instant::now(),
                last: Instant::now(),
                total,
                tty: std::io::stderr().is_terminal(),
            }),
            name,
        })
    }

    /// The lines written so far (for a signal handler).
    pub fn line_count(&self) -> LineCount {
        self.lines.clone()
    }

    /// `FILE.partial` when writing a regular file.
    pub fn partial_path(&self) -> Option<&Path> {
        self.partial.as_ref().map(|(p, _)| p.as_path())
    }

    /// Flushes; for a regular file syncs `FILE.partial` and renames it over `FILE`.
    pub fn commit(mut self) -> Result<u64> {
        self.out
            .flush()
            .map_err(|e| Error::io(Path::new(&self.name), e))?;
        let done = self.lines.get();
        if let Some(p) = &mut self.progress {
            p.tick(done, true);
            if p.tty {
                eprintln!();
            }
        }
        if let Some((part, file)) = self.partial.take() {
            File::open(&part)
                .and_then(|f| f.sync_all())
                .map_err(|e| Error::io(&part, e))?;
            rename_synced(&part, &file)?;
        }
        Ok(done)
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut count = self.lines.lock();
        let n = self.out.write(buf)?;
        let ends = buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
        *count += ends;
        let done = *count;
        drop(count);
        if ends > 0 {
            if let Some(p) = &mut self.progress {
                p.tick(done, false);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

impl Drop for Output {
    /// Not committed (an error stopped the job): `FILE.partial` is removed, as a failed
    /// write leaves nothing behind. A signal ends the process without this (see
    /// [`stop_on_signal`]), so its partial file stays.
    fn drop(&mut self) {
        if let Some((part, _)) = self.partial.take() {
            let _ = std::fs::remove_file(part);
        }
    }
}

/// On Ctrl-C or SIGTERM: say how many lines `partial` holds (see [`interrupted_message`])
/// and exit with status 130, leaving `partial` (its lines are on disk as written) and `file`.
pub fn stop_on_signal(partial: &Path, file: &Path, lines: LineCount) -> Result<()> {
    let (partial, file) = (partial.to_path_buf(), file.to_path_buf());
    ctrlc::set_handler(move || {
        // Held until _exit: no writer adds a line after it is counted.
        let count = lines.lock();
        eprintln!("{}", interrupted_message(&partial, *count, &file));
        // SAFETY: _exit ends the process at once, running no destructors or atexit
        // handlers, which other threads (libtorch's) could be using.
        unsafe { libc::_exit(130) };
    })
    .map_err(|e| Error::Config(format!("cannot handle Ctrl-C and SIGTERM: {e}")))
}

/// What the signal handler says when a job writing `partial` is stopped after `lines`.
pub fn interrupted_message(partial: &Path, lines: u64, file: &Path) -> String {
    format!(
        "rnmt-translate: interrupted: the {lines} line(s) translated so far are in {} ({} is unchanged)",
        partial.display(),
        file.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_written_as_it_goes_and_renamed_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("out.txt");
        std::fs::write(&file, "old\n").unwrap();
        let mut o = Output::open(Some(&file), None).unwrap();
        let part = o.partial_path().unwrap().to_path_buf();
        assert_eq!(part, dir.path().join("out.txt.partial"));
        o.write_all(b"one\ntw").unwrap();
        // Complete lines are on disk before the end; the old file is untouched.
        assert_eq!(std::fs::read_to_string(&part).unwrap(), "one\n");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "old\n");
        assert_eq!(o.line_count().get(), 1);
        o.write_all(b"o\n").unwrap();
        assert_eq!(o.commit().unwrap(), 2);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "one\ntwo\n");
        assert!(!part.exists());
    }

    #[test]
    fn lines_and_progress() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("in.txt");
        std::fs::write(&f, "a\nb\nc").unwrap();
        assert_eq!(count_lines(&f), Some(3));
        std::fs::write(&f, "a\n\n").unwrap();
        assert_eq!(count_lines(&f), Some(2));
        assert_eq!(count_lines(dir.path()), None);
        let p = Progress {
            start: Instant::now() - Duration::from_secs(10),
            last: Instant::now(),
            total: Some(300),
            tty: false,
        };
        let line = p.line(100);
        assert!(line.contains("100/300 lines"), "{line}");
        assert!(line.contains("0:00:20 left"), "{line}");
        assert!(is_std(Path::new("-")) && !is_std(Path::new("./-")));
    }
}
