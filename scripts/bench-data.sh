#!/usr/bin/env bash
# Corpora of any size: prepare time and peak memory, then the time from `rnmt-train` start to
# the end of its first update and of a resume, on a prepared corpus of N unique pairs.
#
#   scripts/bench-data.sh                   (SIZES="1600000 10000000", THREADS=2)
#   SIZES=100000 scripts/bench-data.sh      (a quick look)
#
# The corpus repeats the bundled training pairs (LibreOffice help en-fr, then the Bible
# en-es), each copy marked on both sides (`<copy> k`) so that none is a duplicate. It is
# written under $BENCH_DIR (default /work/bench-data, outside the repository) and deleted at
# the end. Every command runs under /usr/bin/time -v; "first update" is the whole
# `rnmt-train --max-steps 1` in a fresh model directory on the prepared corpus (start,
# mapping, model build, one update, the final validation on 100 dev pairs, saving), and
# "resume" the same command with --max-steps 2 on that model directory. The default model
# (Config::default) trains.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
SIZES=${SIZES:-"1600000 10000000"}
THREADS=${THREADS:-2}
BENCH_DIR=${BENCH_DIR:-/work/bench-data}

scripts/setup.sh >/dev/null
cargo build --release --workspace --bins --quiet
mkdir -p "$BENCH_DIR"
work=$(mktemp -d "$BENCH_DIR/run.XXXX")
trap 'rm -rf "$work"' EXIT
head -n 100 corpora/lohelp.en-fr.dev.tsv > "$work/valid.tsv"

# `time -v` figures of a finished command: wall seconds and peak memory in GB.
wall() { awk -F': ' '/Elapsed \(wall clock\)/ {n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.1f", s}' "$1"; }
peak() { awk -F': ' '/Maximum resident set size/ {printf "%.2f", $2 / 1048576}' "$1"; }
cpu() { awk -F': ' '/Percent of CPU/ {print $2}' "$1"; }

rows=()
for n in $SIZES; do
    corpus="$work/train.$n.tsv"
    awk -v n="$n" 'BEGIN { k = 0; c = 0 }
        { src[c] = $0; c++ }
        END {
            while (k < n) {
                copy = int(k / c); i = k % c
                split(src[i], f, "\t")
                if (copy == 0) print f[1] "\t" f[2]; else print f[1] " <copy> " copy "\t" f[2] " <copy> " copy
                k++
            }
        }' corpora/lohelp.en-fr.train.tsv corpora/bible.en_web-es_rv1909.train.tsv > "$corpus"
    echo "== $n pairs: $(du -h "$corpus" | cut -f1)" >&2
    prepared="$work/prepared.$n"
    /usr/bin/time -v target/release/rnmt-prepare --train "$corpus" --out "$prepared" \
        2> "$work/prepare.log" || { cat "$work/prepare.log" >&2; exit 1; }
    grep -E "^(train|tokenizers|prepared)" "$work/prepare.log" >&2
    rate=$(sed -n 's/.* \([0-9]*\) pairs\/s$/\1/p' "$work/prepare.log")
    model="$work/model.$n"
    for steps in 1 2; do
        /usr/bin/time -v target/release/rnmt-train --train "$corpus" --valid "$work/valid.tsv" \
            --data-dir "$prepared" --model-dir "$model" --max-steps "$steps" --threads "$THREADS" \
            --set train.valid_bleu_sentences=100 2> "$work/train.$steps.log" \
            || { cat "$work/train.$steps.log" >&2; exit 1; }
    done
    grep -E "^(data|model|stopped|peak)" "$work/train.1.log" >&2
    rows+=("| $n | $(wall "$work/prepare.log") s | $rate | $(cpu "$work/prepare.log") | $(peak "$work/prepare.log") GB | $(wall "$work/train.1.log") s | $(wall "$work/train.2.log") s | $(peak "$work/train.1.log") / $(peak "$work/train.2.log") GB |")
    rm -rf "$corpus" "$prepared" "$model"
done
cat <<MSG

== rnmt data benchmark ($THREADS threads, $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(date -u +%F))
| pairs | prepare | pairs/s | CPU | prepare peak memory | rnmt-train start to end of update 1 | resume to update 2 | training peak memory (fresh / resume) |
|---|---|---|---|---|---|---|---|
MSG
printf '%s\n' "${rows[@]}"
