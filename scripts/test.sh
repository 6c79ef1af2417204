#!/usr/bin/env bash
# The test suite, from a fresh clone: installs libtorch if needed (scripts/setup.sh), then
# checks formatting and lints, then runs every test of the workspace (rnmt and
# crates/rnmt-metrics). Everything builds in the release profile so the build is shared with
# scripts/main.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
# The web page test of rnmt-serve (tests/serve.rs) drives headless Chromium: Debian's package.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "== installing Debian's chromium for the browser test (once per machine)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null \
            || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null; }
    else
        echo "test: tests/serve.rs needs Chromium; install it (Debian: apt-get install chromium)" >&2
    fi
fi
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --release --workspace
