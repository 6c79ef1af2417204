#!/usr/bin/env bash
# Data-parallel scaling on this machine: the same updates (2 batches of train.batch_tokens
# each) trained three ways on the bundled corpus, CPU, Gloo over loopback:
#
#   1 process,  1 thread,  1 batch per update     the per-core baseline (half the work per update)
#   1 process,  2 threads, 2 batches per update   (train.accumulate=2)
#   2 processes x 1 thread, 1 batch each          (torchrun --nproc-per-node 2, or the
#                                                  environment variables when torchrun is absent)
#
#   scripts/bench-dist.sh                  (STEPS=60 updates)
#   STEPS=200 CONFIG=presets/joeynmt.toml scripts/bench-dist.sh
#
# Prints, per way, target tokens/s and updates/s over the updates (from rank 0's
# last/trainer.json: tokens and seconds spent in updates, all-reduce included, validation
# excluded) and the wall-clock time of the whole command (start-up and the final validation
# included). Run it on an otherwise idle machine: the figures are meaningless otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STEPS=${STEPS:-60}
CORPUS=${CORPUS:-lohelp.en-fr}
CONFIG=${CONFIG:-}
config=()
[[ -n "$CONFIG" ]] && config=(--config "$CONFIG")

scripts/setup.sh >/dev/null
cargo build --release --bins --quiet
torchrun=${TORCHRUN:-$(readlink -f .libtorch)/../../../../bin/torchrun}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
bin=$PWD/target/release/rnmt-train
common=(--train "corpora/$CORPUS.train.tsv" --valid "corpora/$CORPUS.dev.tsv"
    --max-steps "$STEPS" --device cpu "${config[@]}"
    --set train.valid_every=1000000 --set train.valid_bleu_sentences=100 -q)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

report() { # NAME MODEL_DIR SECONDS
    python3 - "$@" <<'PY'
import json, sys
name, model, wall = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = json.load(open(f"{model}/last/trainer.json"))
secs = s["train_seconds"]
print(f"{name:<36} {s['tokens'] / secs:>9.0f} tgt tok/s {s['step'] / secs:>7.2f} updates/s"
      f"   ({s['step']} updates, {s['tokens']} target tokens, {wall:.1f}s wall)")
PY
}

timed() { # MODEL_DIR COMMAND...
    local model=$1
    shift
    local t0=$SECONDS
    "$@" > "$dir/log" 2>&1 || { cat "$dir/log" >&2; exit 1; }
    echo $((SECONDS - t0))
}

echo "== data-parallel scaling ($CORPUS, config ${CONFIG:-default}, $STEPS updates, $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
w=$(timed "$dir/a" "$bin" "${common[@]}" --model-dir "$dir/a" --threads 1)
report "1 process, 1 thread, 1 batch/update" "$dir/a" "$w"
w=$(timed "$dir/b" "$bin" "${common[@]}" --model-dir "$dir/b" --threads 2 --set train.accumulate=2)
report "1 process, 2 threads, 2 batches/update" "$dir/b" "$w"
if [[ -x "$torchrun" ]]; then
    launcher="torchrun"
    w=$(timed "$dir/c" env GLOO_SOCKET_IFNAME=lo OMP_NUM_THREADS=1 "$torchrun" --no-python \
        --nnodes 1 --nproc-per-node 2 --master-addr 127.0.0.1 --master-port "$port" \
        "$bin" "${common[@]}" --model-dir "$dir/c" --threads 1)
else
    launcher="env"
    w=$(timed "$dir/c" bash -c '
        export WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT='"$port"' GLOO_SOCKET_IFNAME=lo
        RANK=1 "$0" "$@" & RANK=0 "$0" "$@"; s=$?; wait $! && exit $s' \
        "$bin" "${common[@]}" --model-dir "$dir/c" --threads 1)
fi
report "2 processes x 1 thread ($launcher)" "$dir/c" "$w"
