#!/usr/bin/env bash
# The test suite, from a fresh clone: installs libtorch if needed (scripts/setup.sh), then
# checks formatting and lints, then runs every test of the workspace (rnmt and
# crates/rnmt-metrics). Everything builds in the release profile so the build is shared with
# scripts/main.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --release --workspace
