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
//! * `csrc/*.cpp`, the few libtorch calls that tch does not wrap (autocast's dtype; the c10d
//!   engine of data-parallel training, bound by `src/distributed.rs`), compiled against the
//!   same libtorch headers with the same flags as torch-sys's own C++ (C++17 and its
//!   `_GLIBCXX_USE_CXX11_ABI`, `LIBTORCH_CXX11_ABI`, default 1, `-DGLOG_USE_GLOG_EXPORT`).
//!
//! The c10d shim's Gloo part needs Gloo's headers, which the libtorch wheel lacks: they come
//! from Debian's `libgloo-dev` (`/usr/include/gloo`, or `RNMT_GLOO_INCLUDE=DIR`;
//! `scripts/setup.sh` installs the package, and `csrc/distributed.cpp` says why these headers
//! fit); without them the shim is built without Gloo and distributed training says so. The
//! NCCL part (`csrc/distributed_nccl.cpp`) is compiled only when libtorch has
//! `libtorch_cuda.so` and a CUDA toolkit's headers are found (`CUDA_HOME`, default
//! `/usr/local/cuda`), because `ProcessGroupNCCL.hpp` needs CUDA runtime and CCCL headers that
//! the wheel lacks.
use std::path::{Path, PathBuf};

/// The C++ shim files compiled in every build, into one static library.
const SHIM: &[&str] = &[
    "csrc/adam.cpp",
    "csrc/autocast.cpp",
    "csrc/distributed.cpp",
    "csrc/fused_rnn.cpp",
];

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

/// Compiles [`SHIM`] (and the NCCL part when it can) against the libtorch whose `lib/`
/// directory is `lib`.
fn build_shim(lib: &Path) {
    for v in ["LIBTORCH_CXX11_ABI", "RNMT_GLOO_INCLUDE", "CUDA_HOME"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
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
    for file in [
        "csrc/distributed.h",
        "csrc/distributed_nccl.cpp",
        "csrc/message.h",
    ] {
        println!("cargo:rerun-if-changed={file}");
    }

    let gloo = std::env::var_os("RNMT_GLOO_INCLUDE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include"));
    println!(
        "cargo:rerun-if-changed={}",
        gloo.join("gloo/context.h").display()
    );
    if gloo.join("gloo/context.h").exists() {
        build
            .define("USE_C10D_GLOO", None)
            .define("RNMT_WITH_GLOO", None);
        if gloo != Path::new("/usr/include") {
            build.include(&gloo);
        }
    } else {
        println!(
            "cargo:warning=Gloo headers not found in {} (install libgloo-dev, or set RNMT_GLOO_INCLUDE): rnmt-train is built without data-parallel training on CPU",
            gloo.display()
        );
    }

    let cuda_include = std::env::var_os("CUDA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/cuda"))
        .join("include");
    let toolkit =
        cuda_include.join("cuda_runtime.h").exists() && cuda_include.join("nv/target").exists();
    if lib.join("libtorch_cuda.so").exists() && toolkit {
        build
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .define("RNMT_WITH_NCCL", None)
            .include(&cuda_include)
            .file("csrc/distributed_nccl.cpp");
        // The wheel's NCCL (site-packages/torch/lib -> site-packages/nvidia/nccl/include).
        let nccl = root.parent().map(|sp| sp.join("nvidia/nccl/include"));
        if let Some(nccl) = nccl.filter(|d| d.join("nccl.h").exists()) {
            build.include(nccl);
        }
    }
    build.compile("rnmt_shim");
}
