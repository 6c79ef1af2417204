#!/usr/bin/env bash
# Terminology constraints taken from the reference (Post & Vilar 2018's setup: one or two
# target phrases per sentence), on a test set of source<TAB>reference lines:
#   scripts/bench-constraints.sh MODEL_DIR TEST.tsv [OUT_DIR] [-- rnmt-translate options]
# Per sentence: its longest reference word (punctuation trimmed off its ends) and, for
# references of 8 words or more, the two words in the middle. Prints the constraints met
# (counted by substring, as the test does) and BLEU without and with the constraints.
set -euo pipefail
model=$1 test=$2 out=${3:-bench-constraints}
shift $(( $# >= 3 ? 3 : 2 ))
[ "${1:-}" = "--" ] && shift
bin=${RNMT_BIN:-target/release}
mkdir -p "$out"
cut -f1 "$test" > "$out/src"
cut -f2 "$test" > "$out/ref"
awk '{
  best = ""
  for (i = 1; i <= NF; i++) {
    w = $i; gsub(/^[^[:alnum:]]+|[^[:alnum:]]+$/, "", w)
    if (length(w) > length(best)) best = w
  }
  line = best
  if (NF >= 8) {
    m = int(NF / 2); two = $m " " $(m + 1)
    if (index(two, best) == 0 && index(best, $m) == 0) line = line "\t" two
  }
  print line
}' "$out/ref" > "$out/constraints"
"$bin/rnmt-translate" --model "$model" -i "$out/src" -o "$out/plain" "$@"
"$bin/rnmt-translate" --model "$model" -i "$out/src" -o "$out/constrained" \
  --constraints "$out/constraints" "$@"
for run in plain constrained; do
  paste "$out/constraints" "$out/$run" | awk -F'\t' -v run="$run" '{
    n = NF - 1
    for (i = 1; i <= n; i++) if ($i != "") { total++; if (index($NF, $i) > 0) met++ }
  } END { printf "%s: %d of %d constraints met (%.2f%%)\n", run, met, total, 100 * met / total }'
  printf '%s: BLEU ' "$run"
  "$bin/rnmt-bleu" "$out/ref" -i "$out/$run" -b
done
