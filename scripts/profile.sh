#!/usr/bin/env bash
# Where the time goes: a training update and a beam-search step of a model, part by part, and
# the machine's measured matrix-multiply peak (examples/profile.rs says how each part is timed).
#
#   scripts/profile.sh [MODEL_DIR]
#
# Without MODEL_DIR it first trains the default model for STEPS updates (default 600) into
# runs/profile (reused on later runs), so that decoding sees realistic output lengths.
# Environment: CORPUS (lohelp.en-fr), STEPS, UPDATES (40 timed updates), SENTENCES (256 test
# sentences decoded), BEAM (5), BATCH (64), THREADS, DEVICE (cpu | cuda). Prints Markdown
# tables; keep the machine otherwise idle.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CORPUS=${CORPUS:-lohelp.en-fr}
STEPS=${STEPS:-600}
model=${1:-runs/profile}
threads=()
[[ -n "${THREADS:-}" ]] && threads=(--threads "$THREADS")

scripts/setup.sh >/dev/null
cargo build --release --workspace --bins --quiet
cargo build --release --example profile --quiet
if [[ ! -f "$model/model.safetensors" ]]; then
    echo "== training $model for $STEPS updates (once)" >&2
    target/release/rnmt-train --train "corpora/$CORPUS.train.tsv" --valid "corpora/$CORPUS.dev.tsv" \
        --model-dir "$model" --max-steps "$STEPS" --set train.calibrate=false "${threads[@]}" --quiet
fi
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo "# $(date -u +%Y-%m-%d), $(nproc) cores ($cpu), flags: $(grep -m1 '^flags' /proc/cpuinfo | grep -o -w -E 'avx2|fma|avx512f|avx512_bf16|avx512_vnni|avx_vnni|amx_bf16' | sort -u | tr '\n' ' ')"
target/release/examples/profile "$model" "corpora/$CORPUS.train.tsv" "corpora/$CORPUS.test.tsv"
