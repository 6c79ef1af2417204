#!/usr/bin/env bash
# Training throughput and peak memory with the default config on the bundled corpus.
#
#   scripts/bench-train.sh                                  (STEPS=60 updates, THREADS=2)
#   CONFIG=presets/joeynmt.toml scripts/bench-train.sh      (the JoeyNMT-equal architecture)
#
# Prints target tokens/s over the updates (validation excluded), the peak resident memory
# of the process, and the ratio to JoeyNMT 2.3's figures for its architecture (the preset
# presets/joeynmt.toml) on this kind of machine (317 target tokens/s, 6.1 GB peak;
# ../shared/notes/anchors.md); the ratio compares like with like only with that preset.
# For a side-by-side run of both toolkits use ../shared/anchors/joeynmt/side-by-side.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STEPS=${STEPS:-60}
THREADS=${THREADS:-2}
CORPUS=${CORPUS:-lohelp.en-fr}
CONFIG=${CONFIG:-}
config=()
[[ -n "$CONFIG" ]] && config=(--config "$CONFIG")

scripts/setup.sh >/dev/null
cargo build --release --workspace --bins --quiet
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
target/release/rnmt-train \
    --train "corpora/$CORPUS.train.tsv" --valid "corpora/$CORPUS.dev.tsv" \
    --model-dir "$dir/model" --max-steps "$STEPS" --threads "$THREADS" "${config[@]}" \
    --set train.valid_every=1000000 --set train.valid_bleu_sentences=100 --set train.log_every=20 \
    2> "$dir/log" || { cat "$dir/log" >&2; exit 1; }
grep -E "^(model|train|step|stopped)" "$dir/log"
tps=$(sed -n 's/.* \([0-9.]*\) target tokens\/s in updates.*/\1/p' "$dir/log")
peak=$(sed -n 's/^peak memory \([0-9.]*\) GB.*/\1/p' "$dir/log")
cat <<MSG

== rnmt training benchmark ($CORPUS, config ${CONFIG:-default}, $STEPS updates, $THREADS threads, $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))
throughput:  $tps target tokens/s  ($(awk -v t="$tps" 'BEGIN{printf "%.1f", t/317}')x JoeyNMT's 317)
peak memory: $peak GB  (JoeyNMT: 3.6 to 6.1 GB)
MSG
