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
