//! Link settings for the libtorch that torch-sys linked against (torch-sys reports its
//! directory to crates that depend on it directly as `DEP_TCH_LIBTORCH_LIB`):
//!
//! * an rpath to it, so that the binaries and test executables start without
//!   `LD_LIBRARY_PATH`;
//! * `libtorch_cuda.so`, when that libtorch has it, linked whether or not a symbol of it is
//!   referenced. rustc links with `--as-needed`, and rnmt calls no CUDA symbol directly, so the
//!   linker would drop the library; libtorch then never loads its CUDA backend and sees no GPU
//!   (`cuda:0 requested but libtorch sees 0 CUDA device(s)`). A test (`tests/link.rs`) checks
//!   the built binaries' `NEEDED` entries.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        // Resolve the `.libtorch` symlink so the rpath survives the checkout moving or going.
        let dir = std::fs::canonicalize(&dir).unwrap_or_else(|_| PathBuf::from(&dir));
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
        let cuda = dir.join("libtorch_cuda.so");
        println!("cargo:rerun-if-changed={}", cuda.display());
        if cuda.exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
            println!("cargo:rustc-link-arg=-ltorch_cuda");
            println!("cargo:rustc-link-arg=-Wl,--as-needed");
        }
        // Where tests/link.rs looks for libtorch_cuda.so.
        println!("cargo:rustc-env=RNMT_LIBTORCH_LIB={}", dir.display());
    } else {
        println!("cargo:rustc-env=RNMT_LIBTORCH_LIB=");
    }
}
