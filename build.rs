//! Link settings for the libtorch that torch-sys linked against (torch-sys reports its
//! directory to crates that depend on it directly as `DEP_TCH_LIBTORCH_LIB`):
//!
//! * an rpath to it, so that the binaries and test executables start without
//!   `LD_LIBRARY_PATH`;
//! * `libtorch_cuda.so`, when that libtorch has it, linked whether or not a symbol of it is
//!   referenced. rustc links with `--as-needed`, and rnmt calls no CUDA symbol directly, so the
//!   linker would drop the library; libtorch then never loads its CUDA backend and sees no GPU
//!   (`cuda:0 requested but libtorch sees 0 CUDA device(s)`). A test (`tests/link.rs`) checks
//!   the built binaries' `NEEDED` entries;
//! * `csrc/*.cpp`, the few libtorch calls that tch does not wrap (autocast's dtype), compiled
//!   against the same libtorch headers with the same flags as torch-sys's own C++ (C++17 and
//!   its `_GLIBCXX_USE_CXX11_ABI`, `LIBTORCH_CXX11_ABI`, default 1).
use std::path::{Path, PathBuf};

/// The C++ shim files, compiled into one static library.
const SHIM: &[&str] = &["csrc/autocast.cpp"];

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
        build_shim(&dir);
    } else {
        println!("cargo:rustc-env=RNMT_LIBTORCH_LIB=");
        panic!("DEP_TCH_LIBTORCH_LIB is not set: torch-sys did not report its libtorch");
    }
}

/// Compiles [`SHIM`] against the libtorch whose `lib/` directory is `lib`.
fn build_shim(lib: &Path) {
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_owned());
    let root = lib.parent().expect("libtorch lib dir has a parent");
    let include = root.join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT");
    for file in SHIM {
        println!("cargo:rerun-if-changed={file}");
        build.file(file);
    }
    build.compile("rnmt_shim");
}
