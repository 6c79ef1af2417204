#!/usr/bin/env bash
# Decoding speed (sentences/s, target tokens/s) and peak memory, greedy and beam 5, batches
# of 64, on the bundled test set.
#
#   scripts/bench-decode.sh [MODEL_DIR]    (default runs/lohelp.en-fr, from scripts/main.sh;
#                                           trained for 3 minutes first if missing)
#
# JoeyNMT 2.3 with the same architecture on this kind of machine: 14 sentences/s greedy,
# 7.7 sentences/s beam 5 (../shared/notes/anchors.md; its test set was 2015 sentences of
# English-German, so compare ratios with that in mind).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CORPUS=${CORPUS:-lohelp.en-fr}
MODEL=${1:-runs/$CORPUS}
THREADS=${THREADS:-2}

scripts/setup.sh >/dev/null
cargo build --release --workspace --bins --quiet
if [[ ! -f "$MODEL/model.safetensors" ]]; then
    echo "no model in $MODEL: training one for 3 minutes"
    target/release/rnmt-train --train "corpora/$CORPUS.train.tsv" --valid "corpora/$CORPUS.dev.tsv" \
        --model-dir "$MODEL" --max-time 3m --threads "$THREADS" --quiet
fi
src=$(mktemp)
trap 'rm -f "$src"' EXIT
cut -f1 "corpora/$CORPUS.test.tsv" > "$src"
echo "== rnmt decoding benchmark ($CORPUS test, $(wc -l < "$src") sentences, batch 64, $THREADS threads, $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
for beam in 1 5; do
    line=$(target/release/rnmt-translate --model "$MODEL" --input "$src" --output /dev/null \
        --beam "$beam" --batch-size 64 --threads "$THREADS" --verbose 2>&1 | grep "lines in")
    sps=$(sed -n 's/.*(\([0-9.]*\) lines\/s.*/\1/p' <<<"$line")
    anchor=$([[ $beam == 1 ]] && echo 14 || echo 7.7)
    echo "beam $beam: $line"
    echo "        $(awk -v s="$sps" -v a="$anchor" 'BEGIN{printf "%.1fx JoeyNMT (%s sentences/s)", s/a, a}')"
done
