//! Containing panics of code rnmt does not own (libtorch's allocator through `tch`, the
//! `tokenizers` crate's deserializer), so that they become one-line errors, not crashes.
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Mutex;

static HOOK: Mutex<()> = Mutex::new(());

/// Runs `f`; a panic inside it comes back as `Err(message)` (its first line), without the
/// default hook's report on stderr.
pub fn contain<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    let _guard = HOOK.lock().unwrap_or_else(|p| p.into_inner());
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = catch_unwind(AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    result.map_err(|payload| message(payload.as_ref()))
}

/// The first line of a panic's message (`String` or `&str` payloads; else "unknown panic").
pub fn message(payload: &(dyn std::any::Any + Send)) -> String {
    let text = payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".to_string());
    text.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_becomes_its_message() {
        assert_eq!(super::contain(|| 7), Ok(7));
        let r: Result<(), String> = super::contain(|| panic!("boom\nbacktrace"));
        assert_eq!(r, Err("boom".to_string()));
    }
}
