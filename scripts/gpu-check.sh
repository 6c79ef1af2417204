#!/usr/bin/env bash
# Everything issue 10 asks to measure on a GPU, in one run on a machine with an NVIDIA GPU:
#
#   1. the CUDA tests: the test suite's model, search, training and translation tests with
#      RNMT_TEST_DEVICE=cuda (batch invariance of beam search, flat cuDNN weights, bf16, exact
#      resume and seeds on CUDA);
#   2. training throughput on the bundled corpus: target tokens/s, updates/s, GPU memory and
#      utilisation, for the default config, the JoeyNMT-equal preset and the GPU preset at
#      2k/4k/8k/16k-token batches, fp32 and bf16;
#   3. decoding: greedy and beam 5 sentences/s on the test set.
#
#   scripts/gpu-check.sh                      (after scripts/setup.sh and a release build)
#   RUN_TIME=60s scripts/gpu-check.sh         (longer runs per grid point; default 30s)
#   GRID=quick scripts/gpu-check.sh           (4 grid points instead of 14)
#   TESTS=0 scripts/gpu-check.sh              (measurements only)
#
# The binaries come from BIN (default: rnmt-train on PATH, else target/release). The tests
# run with cargo when there is one; on a machine without cargo, TEST_BIN_DIR names a
# directory of prebuilt test executables (`cargo test --release --no-run`, the files under
# target/release/deps named model-*, search-*, train_cli-*, translate_cli-*), run from the
# checkout with the RNMT_TEST_* variables set. Results: OUT_DIR (default runs/gpu-check):
# train.tsv, decode.tsv, tests.log and summary.md.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
RUN_TIME=${RUN_TIME:-30s}
GRID=${GRID:-full}
OUT_DIR=${OUT_DIR:-runs/gpu-check}
CORPUS=${CORPUS:-lohelp.en-fr}
DEVICE=${DEVICE:-cuda}
if [[ -z "${BIN:-}" ]]; then
    if command -v rnmt-train >/dev/null; then BIN=$(dirname "$(command -v rnmt-train)"); else BIN=target/release; fi
fi
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
summary=$OUT_DIR/summary.md
gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -1)
{
    echo "# rnmt GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "GPU: ${gpu:-none found by nvidia-smi}; CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
    echo "binaries: $BIN; corpus: $CORPUS; $RUN_TIME per training run"
    echo
} > "$summary"

# --- 1. tests on CUDA -----------------------------------------------------------------------
tests_log=$OUT_DIR/tests.log
export RNMT_TEST_DEVICE=$DEVICE
if [[ "${TESTS:-1}" == 0 ]]; then
    echo "TESTS=0: tests not run" > "$tests_log"
    status=skipped
elif [[ -n "${TEST_BIN_DIR:-}" ]]; then
    export RNMT_TEST_ROOT=$PWD RNMT_TEST_BIN_DIR=$BIN RNMT_TEST_TMPDIR=$work/test-tmp
    mkdir -p "$RNMT_TEST_TMPDIR"
    status=0
    for t in "$TEST_BIN_DIR"/*; do
        [[ -x "$t" ]] || continue
        echo "== $(basename "$t")" >> "$tests_log"
        "$t" --test-threads 1 >> "$tests_log" 2>&1 || status=1
    done
elif command -v cargo >/dev/null; then
    cargo test --release --test model --test search --test train_cli --test translate_cli \
        -- --test-threads 1 > "$tests_log" 2>&1
    status=$?
else
    echo "no cargo and no TEST_BIN_DIR: tests not run" > "$tests_log"
    status=skipped
fi
unset RNMT_TEST_DEVICE
passed=$(grep -ho '[0-9]* passed' "$tests_log" | awk '{s+=$1} END {print s+0}')
failed=$(grep -ho '[0-9]* failed' "$tests_log" | awk '{s+=$1} END {print s+0}')
echo "## Tests on $DEVICE: $passed passed, $failed failed (status $status; tests.log)" >> "$summary"
echo >> "$summary"

# --- 2. training throughput -------------------------------------------------------------------
# One training run: "<name> <config or -> <batch tokens> <precision>".
train_tsv=$OUT_DIR/train.tsv
echo -e "config\tbatch_tokens\tprecision\tupdates\tseconds\ttarget_tok_per_s\tupdates_per_s\tgpu_util_mean_pct\tgpu_mem_max_mib\tstatus" > "$train_tsv"
run_train() {
    local name=$1 config=$2 batch=$3 precision=$4
    local m=$work/m-$name-$batch-$precision log=$work/log-$name-$batch-$precision
    local args=(--train "corpora/$CORPUS.train.tsv" --valid "corpora/$CORPUS.dev.tsv" --model-dir "$m"
        --device "$DEVICE" --max-time "$RUN_TIME" --precision "$precision"
        --set "train.batch_tokens=$batch" --set train.valid_every=1000000000 --set train.log_every=50)
    [[ "$config" != - ]] && args+=(--config "$config")
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
        > "$log.smi" 2>/dev/null &
    local smi=$!
    "$BIN/rnmt-train" "${args[@]}" > "$log" 2>&1
    local rc=$?
    kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
    local tps steps secs ups util mem
    tps=$(sed -n 's/.* \([0-9.]*\) target tokens\/s in updates.*/\1/p' "$log" | tail -1)
    steps=$(sed -n 's/.*"step": *\([0-9]*\).*/\1/p' "$m/last/trainer.json" 2>/dev/null | head -1)
    secs=$(sed -n 's/.*"train_seconds": *\([0-9.e+-]*\).*/\1/p' "$m/last/trainer.json" 2>/dev/null | head -1)
    ups=$(awk -v s="${steps:-0}" -v t="${secs:-0}" 'BEGIN { if (t > 0) printf "%.2f", s / t; else print "-" }')
    # Utilisation while training: the samples after the first quarter (data preparation,
    # tokenizer training and start-up come first).
    util=$(awk -F', *' '{u[NR]=$1} END {n=0; s=0; for (i=int(NR/4)+1; i<=NR; i++) {s+=u[i]; n++} if (n) printf "%.0f", s/n; else print "-"}' "$log.smi")
    mem=$(awk -F', *' 'BEGIN {m=0} {if ($2+0 > m) m=$2+0} END {print m}' "$log.smi")
    local status=ok
    [[ $rc -ne 0 ]] && status="exit $rc: $(grep -m1 -i 'error\|rnmt-train:' "$log" | cut -c1-120)"
    grep -q "contiguous chunk" "$log" && status="$status; RNN weight warning x$(grep -c 'contiguous chunk' "$log")"
    echo -e "$name\t$batch\t$precision\t${steps:--}\t${secs:--}\t${tps:--}\t$ups\t$util\t$mem\t$status" >> "$train_tsv"
    cp "$log" "$OUT_DIR/train-$name-$batch-$precision.log"
}
if [[ "$GRID" == quick ]]; then
    run_train default - 4000 fp32
    run_train default - 16000 fp32
    run_train default - 16000 bf16
    run_train joeynmt presets/joeynmt.toml 2000 fp32
else
    for b in 2000 4000 8000 16000; do run_train default - "$b" fp32; done
    for b in 8000 16000; do run_train default - "$b" bf16; done
    for b in 2000 4000 8000 16000; do run_train joeynmt presets/joeynmt.toml "$b" fp32; done
    run_train gpu presets/gpu.toml 8000 fp32
    run_train gpu presets/gpu.toml 8000 bf16
    run_train gpu presets/gpu.toml 16000 fp32
    run_train gpu presets/gpu.toml 16000 bf16
fi
{
    echo "## Training ($RUN_TIME per run; validation off; train.tsv)"
    echo
    echo "| config | batch tokens | precision | target tok/s | updates/s | GPU util % | GPU MiB | status |"
    echo "|---|---|---|---|---|---|---|---|"
    tail -n +2 "$train_tsv" | awk -F'\t' '{printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $6, $7, $8, $9, $10}'
    echo
} >> "$summary"

# --- 3. decoding --------------------------------------------------------------------------------
# The default config's model from the 16k fp32 run (weights after RUN_TIME of training).
decode_tsv=$OUT_DIR/decode.tsv
echo -e "model\tsearch\tprecision\tlines\tseconds\tlines_per_s" > "$decode_tsv"
m=$work/m-default-16000-fp32
cut -f1 "corpora/$CORPUS.test.tsv" > "$work/test.src"
if [[ -f "$m/model.safetensors" ]]; then
    for search in "--beam 1" "--beam 5"; do
        for precision in fp32 bf16; do
            # shellcheck disable=SC2086
            "$BIN/rnmt-translate" --model "$m" --device "$DEVICE" $search --precision "$precision" \
                --batch-size 128 --verbose -i "$work/test.src" -o "$work/out.txt" 2> "$work/dec.log"
            line=$(grep 'lines in' "$work/dec.log")
            lines=$(sed -n 's/.*: \([0-9]*\) lines in.*/\1/p' <<<"$line")
            secs=$(sed -n 's/.* lines in \([0-9.]*\)s.*/\1/p' <<<"$line")
            lps=$(sed -n 's/.*(\([0-9.]*\) lines\/s.*/\1/p' <<<"$line")
            echo -e "default\t${search#--}\t$precision\t${lines:--}\t${secs:--}\t${lps:-$(head -c 200 "$work/dec.log")}" >> "$decode_tsv"
        done
    done
fi
{
    echo "## Decoding (test set, batch 128; decode.tsv)"
    echo
    echo "| search | precision | lines | seconds | lines/s |"
    echo "|---|---|---|---|---|"
    tail -n +2 "$decode_tsv" | awk -F'\t' '{printf "| %s | %s | %s | %s | %s |\n", $2, $3, $4, $5, $6}'
} >> "$summary"
cat "$summary"
