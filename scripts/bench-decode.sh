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
#
# ABLATE=1 also decodes with the throughput features turned off one at a time (input order
# instead of length windows, one worker with all threads instead of one per thread, float32
# instead of --precision auto), and with OLD_BIN=DIR the rnmt-translate in DIR (an earlier
# build) too, all in one run so that the ratios compare like with like.
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
run() { # beam, label, binary, extra arguments...
    local beam=$1 label=$2 bin=$3
    shift 3
    local line sps
    line=$("$bin" --model "$MODEL" --input "$src" --output /dev/null \
        --beam "$beam" --batch-size 64 --threads "$THREADS" --verbose "$@" 2>&1 | grep "lines in")
    sps=$(sed -n 's/.*(\([0-9.]*\) lines\/s.*/\1/p' <<<"$line")
    echo "beam $beam, $label: $line"
    [[ -n "${ABLATE:-}" ]] && return
    anchor=$([[ $beam == 1 ]] && echo 14 || echo 7.7)
    echo "        $(awk -v s="$sps" -v a="$anchor" 'BEGIN{printf "%.1fx JoeyNMT (%s sentences/s)", s/a, a}')"
}
for beam in 1 5; do
    run "$beam" "defaults" target/release/rnmt-translate
    if [[ -n "${ABLATE:-}" ]]; then
        run "$beam" "input order (--window 1)" target/release/rnmt-translate --window 1
        run "$beam" "one worker (--workers 1)" target/release/rnmt-translate --workers 1
        run "$beam" "--precision fp32" target/release/rnmt-translate --precision fp32
        run "$beam" "--workers 1 --window 1 --precision fp32" target/release/rnmt-translate \
            --workers 1 --window 1 --precision fp32
        if [[ -n "${OLD_BIN:-}" ]]; then
            run "$beam" "$OLD_BIN (--precision auto)" "$OLD_BIN/rnmt-translate" --precision auto
            run "$beam" "$OLD_BIN (fp32)" "$OLD_BIN/rnmt-translate"
        fi
    fi
done
