#!/usr/bin/env bash
# Fails when the library's modules (src/, the binaries apart) import each other in a circle,
# naming one file and line per edge of each circle (tests/imports.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo test --release --test imports -- --include-ignored
