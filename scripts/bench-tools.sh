#!/usr/bin/env bash
# The BLEU effect of checkpoint averaging and of a two-model ensemble on the bundled
# English-French corpus, with update budgets (so the result does not depend on machine load):
#
#   1. trains two models that differ only in --seed, STEPS updates each, validating every
#      VALID updates and keeping the last K validated checkpoints (train.keep_checkpoints);
#   2. averages the last N checkpoints of each model for every N in AVG (rnmt-average --last N);
#   3. translates the test set with beam 5 and scores it (rnmt-bleu, BLEU and chrF) for:
#      each model's best checkpoint, its last checkpoint, the averages of its last N
#      checkpoints, and the ensemble of both models' best checkpoints.
#
#   scripts/bench-tools.sh                 # STEPS=600 VALID=100 K=5 AVG="2 3 5" SEEDS="42 7"
#   STEPS=1500 scripts/bench-tools.sh      # resumes both models to 1500 updates
#
# Re-running resumes the trainings (a finished one does nothing) and re-scores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STEPS=${STEPS:-600}
VALID=${VALID:-100}
K=${K:-5}
AVG=(${AVG:-2 3 $K})
SEEDS=(${SEEDS:-42 7})
CORPUS=${CORPUS:-lohelp.en-fr}
OUT=${OUT:-runs/bench-tools}
bin=target/release
[[ -x $bin/rnmt-train && -x $bin/rnmt-average && -x $bin/rnmt-translate && -x $bin/rnmt-bleu ]] \
    || cargo build --release --workspace --bins
mkdir -p "$OUT"
test_tsv=corpora/$CORPUS.test.tsv
cut -f1 "$test_tsv" > "$OUT/test.src"
cut -f2 "$test_tsv" > "$OUT/test.ref"

dirs=()
for seed in "${SEEDS[@]}"; do
    dir=$OUT/seed$seed
    dirs+=("$dir")
    echo "== training seed $seed for $STEPS updates ($dir)"
    $bin/rnmt-train --train "corpora/$CORPUS.train.tsv" --valid "corpora/$CORPUS.dev.tsv" \
        --model-dir "$dir" --seed "$seed" --max-steps "$STEPS" \
        --set train.valid_every="$VALID" --set train.keep_checkpoints="$K" 2>&1 | tail -4
done

for i in "${!SEEDS[@]}"; do
    dir=${dirs[$i]}
    for n in 1 "${AVG[@]}"; do
        # N = 1: the last checkpoint alone, as a model directory.
        rm -rf "$dir-avg$n"
        $bin/rnmt-average --last "$n" --output "$dir-avg$n" "$dir"
    done
done

score() { # NAME MODEL_ARGS...
    local name=$1; shift
    $bin/rnmt-translate "$@" --beam 5 --input "$OUT/test.src" --output "$OUT/$name.hyp"
    local bleu chrf
    bleu=$($bin/rnmt-bleu "$OUT/test.ref" --input "$OUT/$name.hyp" -b)
    chrf=$($bin/rnmt-bleu "$OUT/test.ref" --input "$OUT/$name.hyp" --metrics chrf -b)
    printf '| %s | %s | %s |\n' "$name" "$bleu" "$chrf" | tee -a "$OUT/results.md"
}

{
    echo "STEPS=$STEPS VALID=$VALID K=$K AVG=${AVG[*]} SEEDS=${SEEDS[*]} corpus=$CORPUS, test set beam 5, $(date -u +%F)"
    echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores"
    echo
    for i in "${!SEEDS[@]}"; do
        echo "seed ${SEEDS[$i]}: checkpoints $(ls "${dirs[$i]}/checkpoints" | sed 's/step-0*//; s/.safetensors//' | tr '\n' ' ')"
    done
    echo
    echo "| system | test BLEU | test chrF |"
    echo "|---|---|---|"
} > "$OUT/results.md"
for i in "${!SEEDS[@]}"; do
    dir=${dirs[$i]}
    score "seed${SEEDS[$i]}-best" --model "$dir"
    score "seed${SEEDS[$i]}-last-checkpoint" --model "$dir-avg1"
    for n in "${AVG[@]}"; do
        score "seed${SEEDS[$i]}-average-of-last-$n" --model "$dir-avg$n"
    done
done
ens_args=()
for d in "${dirs[@]}"; do ens_args+=(--model "$d"); done
score "ensemble-of-${#dirs[@]}-best" "${ens_args[@]}"
echo
echo "results: $OUT/results.md"
cat "$OUT/results.md"
