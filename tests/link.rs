//! The built binaries load libtorch's CUDA backend whenever the libtorch they link has one:
//! `libtorch_cuda.so` must be among their `NEEDED` entries (the linker's `--as-needed` would
//! otherwise drop it, and libtorch would see no GPU). Runs without a GPU: it reads the ELF
//! dynamic section with `readelf`.
use std::path::Path;
use std::process::Command;

fn needed(binary: &str) -> Vec<String> {
    let out = Command::new("readelf")
        .args(["-d", binary])
        .output()
        .expect("readelf (binutils) is needed for this test");
    assert!(out.status.success(), "readelf -d {binary} failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| Some(l.split('[').nth(1)?.trim_end_matches(']').to_string()))
        .collect()
}

#[test]
fn cuda_backend_is_linked_when_libtorch_has_it() {
    let lib = env!("RNMT_LIBTORCH_LIB");
    assert!(
        !lib.is_empty(),
        "torch-sys did not report its libtorch directory (DEP_TCH_LIBTORCH_LIB)"
    );
    let lib = Path::new(lib);
    let has_cuda = lib.join("libtorch_cuda.so").exists();
    for bin in [
        env!("CARGO_BIN_EXE_rnmt-train"),
        env!("CARGO_BIN_EXE_rnmt-translate"),
    ] {
        let libs = needed(bin);
        assert!(
            libs.iter().any(|l| l == "libtorch_cpu.so"),
            "{bin}: {libs:?}"
        );
        assert_eq!(
            libs.iter().any(|l| l == "libtorch_cuda.so"),
            has_cuda,
            "{bin}: NEEDED {libs:?}, but {} {} libtorch_cuda.so",
            lib.display(),
            if has_cuda { "has" } else { "has no" }
        );
    }
}

/// The c10d shim is compiled against Debian's Gloo headers (libgloo-dev), which are older
/// than the Gloo inside libtorch. That is safe only while the binaries use Gloo through
/// libtorch alone: no system Gloo library linked, and no code of Gloo's headers compiled into
/// them (a `gloo::` definition in a binary could stand in for libtorch's own at run time).
#[test]
fn gloo_comes_from_libtorch_only() {
    for bin in [
        env!("CARGO_BIN_EXE_rnmt-train"),
        env!("CARGO_BIN_EXE_rnmt-translate"),
    ] {
        let libs = needed(bin);
        assert!(!libs.iter().any(|l| l.contains("gloo")), "{bin}: {libs:?}");
        let out = Command::new("nm")
            .args(["-C", "--defined-only", bin])
            .output()
            .expect("nm (binutils) is needed for this test");
        assert!(out.status.success(), "nm {bin} failed");
        let text = String::from_utf8_lossy(&out.stdout);
        let gloo: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(2)
                    .is_some_and(|s| s.starts_with("gloo::"))
            })
            .collect();
        assert!(gloo.is_empty(), "{bin} defines Gloo code: {gloo:?}");
        if bin.ends_with("rnmt-train") {
            assert!(text.contains("rnmt_dist_new"), "{bin} lacks the c10d shim");
        }
    }
}
