//! Link settings for the libtorch that torch-sys linked against (torch-sys reports its
//! directory to crates that depend on it directly as `DEP_TCH_LIBTORCH_LIB`), and the C++
//! shim over libtorch's c10d engine (`csrc/`, bound by `src/distributed.rs`):
//!
//! * an rpath to it, so that the binaries and test executables start without
//!   `LD_LIBRARY_PATH`;
//! * `libtorch_cuda.so`, when that libtorch has it, linked whether or not a symbol of it is
//!   referenced. rustc links with `--as-needed`, and rnmt calls no CUDA symbol directly, so the
//!   linker would drop the library; libtorch then never loads its CUDA backend and sees no GPU
//!   (`cuda:0 requested but libtorch sees 0 CUDA device(s)`). A test (`tests/link.rs`) checks
//!   the built binaries' `NEEDED` entries.
//! * `csrc/distributed.cpp`, compiled with the `cc` crate exactly as torch-sys 0.26 compiles
//!   its `torch_api.cpp` (`-std=c++17`, `-D_GLIBCXX_USE_CXX11_ABI` from `LIBTORCH_CXX11_ABI`,
//!   default 1, `-DGLOG_USE_GLOG_EXPORT`, libtorch's two include directories). Its Gloo part
//!   needs Gloo's headers, which the libtorch wheel lacks: they come from Debian's
//!   `libgloo-dev` (`/usr/include/gloo`, or `RNMT_GLOO_INCLUDE=DIR`); without them the shim is
//!   built without Gloo and distributed training says so. The NCCL part
//!   (`csrc/distributed_nccl.cpp`) is compiled only when libtorch has `libtorch_cuda.so` and a
//!   CUDA toolkit's headers are found (`CUDA_HOME`, default `/usr/local/cuda`), because
//!   `ProcessGroupNCCL.hpp` needs CUDA runtime and CCCL headers that the wheel lacks.
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo::rustc-check-cfg=cfg(rnmt_dist_shim)");
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
        shim(&dir);
    } else {
        println!("cargo:rustc-env=RNMT_LIBTORCH_LIB=");
    }
}

/// Compiles `csrc/` against the libtorch whose `lib/` is `lib`.
fn shim(lib: &Path) {
    for f in [
        "csrc/distributed.cpp",
        "csrc/distributed.h",
        "csrc/distributed_nccl.cpp",
    ] {
        println!("cargo:rerun-if-changed={f}");
    }
    for v in ["LIBTORCH_CXX11_ABI", "RNMT_GLOO_INCLUDE", "CUDA_HOME"] {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let Some(torch) = lib.parent() else { return };
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".to_string());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/distributed.cpp");

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

    let cuda_home = std::env::var_os("CUDA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/local/cuda"));
    let cuda_include = cuda_home.join("include");
    // The wheel's NCCL (site-packages/torch/lib -> site-packages/nvidia/nccl/include).
    let nccl = torch
        .parent()
        .map(|sp| sp.join("nvidia/nccl/include"))
        .filter(|d| d.join("nccl.h").exists());
    let toolkit =
        cuda_include.join("cuda_runtime.h").exists() && cuda_include.join("nv/target").exists();
    if lib.join("libtorch_cuda.so").exists() && toolkit {
        build
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .define("RNMT_WITH_NCCL", None)
            .include(&cuda_include)
            .file("csrc/distributed_nccl.cpp");
        if let Some(nccl) = nccl {
            build.include(nccl);
        }
    }
    build.compile("rnmt_dist");
    println!("cargo:rustc-cfg=rnmt_dist_shim");
}
