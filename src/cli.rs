//! What every binary does around its work: run it, print an error as one line with its cause
//! chain (each cause once), and turn the outcome into the exit status. A write into a closed
//! pipe (`rnmt-translate | head`) is not an error: the binary exits quietly with status 0.
use std::process::ExitCode;

/// Runs `body`; on error prints `NAME: error: what: cause: cause` on stderr and returns 1.
pub fn run(name: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The messages of `e` and its causes joined by `: `, each on one line (libtorch messages
/// carry a C++ backtrace after their first line; it is left out).
pub fn chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        let first = text.lines().next().unwrap_or("").trim().to_string();
        // A transparent wrapper repeats its inner error's message: print it once.
        if !first.is_empty() && parts.last() != Some(&first) {
            parts.push(first);
        }
    }
    parts.join(": ")
}

/// True when the error comes from writing to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::StorageFull, "No space left on device");
        let e = anyhow::Error::new(Error::io(std::path::Path::new("/m/x.json"), io))
            .context("saving the config");
        let text = chain(&e);
        assert_eq!(
            text,
            "saving the config: /m/x.json: No space left on device"
        );
        assert_eq!(text.matches("No space").count(), 1);
    }

    #[test]
    fn broken_pipe_is_found_anywhere_in_the_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe");
        let e = anyhow::Error::new(Error::io(std::path::Path::new("<output>"), io)).context("x");
        assert!(is_broken_pipe(&e));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }
}
