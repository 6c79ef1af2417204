#!/usr/bin/env bash
# Evaluates a model directory on a test set: translates the sources with rnmt-translate,
# scores with rnmt-bleu (BLEU and chrF), writes the hypotheses next to the model
# (MODEL_DIR/eval/NAME.hyp) and prints the scores with their signatures.
#
#   scripts/evaluate.sh MODEL_DIR TEST.tsv            (source<TAB>reference lines)
#   scripts/evaluate.sh MODEL_DIR SOURCE.txt REF.txt  (line-aligned files)
#
# Extra rnmt-translate options go in TRANSLATE_OPTS (e.g. TRANSLATE_OPTS="--beam 1").
# It stops with a message if any step fails, and never scores a partial output.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { echo "evaluate: $*" >&2; exit 1; }
[[ $# -eq 2 || $# -eq 3 ]] || die "usage: scripts/evaluate.sh MODEL_DIR TEST.tsv | MODEL_DIR SOURCE REF"
model=$1
[[ -d "$model" ]] || die "$model is not a model directory"
bin=target/release
[[ -x $bin/rnmt-translate && -x $bin/rnmt-bleu ]] || cargo build --release --workspace --bins --quiet \
    || die "building the binaries failed"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ $# -eq 2 ]]; then
    [[ -f "$2" ]] || die "$2: no such file"
    name=$(basename "$2" .tsv)
    awk -F'\t' -v f="$2" 'NF != 2 { printf "evaluate: %s:%d: expected 2 tab-separated fields, found %d\n", f, NR, NF > "/dev/stderr"; exit 1 }' "$2" \
        || die "bad test file"
    cut -f1 "$2" > "$work/src"
    cut -f2 "$2" > "$work/ref"
else
    [[ -f "$2" ]] || die "$2: no such file"
    [[ -f "$3" ]] || die "$3: no such file"
    name=$(basename "$2")
    cp "$2" "$work/src"
    cp "$3" "$work/ref"
fi

mkdir -p "$model/eval"
hyp="$model/eval/$name.hyp"
# shellcheck disable=SC2086
if ! $bin/rnmt-translate --model "$model" --input "$work/src" --output "$work/hyp" ${TRANSLATE_OPTS:-}; then
    die "rnmt-translate failed; no score reported"
fi
n_src=$(wc -l < "$work/src"); n_hyp=$(wc -l < "$work/hyp")
[[ "$n_src" -eq "$n_hyp" ]] || die "rnmt-translate wrote $n_hyp lines for $n_src sources; no score reported"
mv "$work/hyp" "$hyp"
echo "hypotheses: $hyp"
$bin/rnmt-bleu "$work/ref" --input "$hyp" --metrics bleu,chrf || die "rnmt-bleu failed"
