#!/usr/bin/env bash
# The main job on the bundled English-French corpus: set-up, train with a time budget,
# translate and score the test set, translate a few sentences from stdin.
#
# Environment (all optional):
#   TRAIN_TIME   training budget of this run (default 10m; e.g. 30m, 2h)
#   MODEL_DIR    model directory (default runs/lohelp-en-fr)
#   CORPUS       corpus prefix under corpora/ (default lohelp.en-fr; also bible.en_web-es_rv1909)
#   THREADS      libtorch threads (default: one per physical core)
#   PRECISION    --precision of training (default auto: bf16 on a CPU with bfloat16
#                instructions, fp32 elsewhere; README, Speed)
# Running it again resumes training in MODEL_DIR for another TRAIN_TIME.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TRAIN_TIME=${TRAIN_TIME:-10m}
PRECISION=${PRECISION:-auto}
CORPUS=${CORPUS:-lohelp.en-fr}
MODEL_DIR=${MODEL_DIR:-runs/$CORPUS}
threads=()
[[ -n "${THREADS:-}" ]] && threads=(--threads "$THREADS")

scripts/setup.sh
echo "== building (release)"
cargo build --release --workspace --bins

echo "== training on corpora/$CORPUS.train.tsv for $TRAIN_TIME (model: $MODEL_DIR)"
target/release/rnmt-train \
    --train "corpora/$CORPUS.train.tsv" \
    --valid "corpora/$CORPUS.dev.tsv" \
    --model-dir "$MODEL_DIR" \
    --max-time "$TRAIN_TIME" --precision "$PRECISION" "${threads[@]}" \
    --set train.keep_checkpoints=3 --set train.average_last=3

echo "== evaluating on corpora/$CORPUS.test.tsv (beam 5)"
scripts/evaluate.sh "$MODEL_DIR" "corpora/$CORPUS.test.tsv"

echo "== translating from stdin"
examples=(
    "Click the Save button."
    "To insert a new row, choose Insert - Rows."
    "This function returns the number of characters in a text string."
)
printf '%s\n' "${examples[@]}" | target/release/rnmt-translate --model "$MODEL_DIR" "${threads[@]}" \
    | paste <(printf '%s\n' "${examples[@]}") - | sed 's/\t/\n  -> /'

cat <<MSG

Model: $MODEL_DIR (config.json, tokenizer.json, model.safetensors, metrics.csv)
Translate:    target/release/rnmt-translate --model $MODEL_DIR < input.txt
Train longer: run scripts/main.sh again (resumes; TRAIN_TIME=30m scripts/main.sh for a longer run)
MSG
