//! Embeds an rpath to the libtorch that torch-sys linked against, so that the binaries and test
//! executables start without `LD_LIBRARY_PATH`. torch-sys reports the directory to crates that
//! depend on it directly as `DEP_TCH_LIBTORCH_LIB`.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        // Resolve the `.libtorch` symlink so the rpath survives the checkout moving or going.
        let dir = std::fs::canonicalize(&dir).unwrap_or_else(|_| PathBuf::from(&dir));
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
}
