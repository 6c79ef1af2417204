#!/usr/bin/env bash
# Time to quality: trains for a budget, stopping POINTS times along the way to score the model
# on the test set, and prints validation and test BLEU/chrF against minutes and updates.
#
#   scripts/bench-quality.sh [BUDGET] [POINTS] [-- rnmt-train options...]
#   scripts/bench-quality.sh 10m 5                                   # default config
#   scripts/bench-quality.sh 10m 5 -- --config configs/joeynmt.toml  # a preset
#   scripts/bench-quality.sh 5m 1 -- --set train.lr=0.002            # one override
#
# Environment: CORPUS (lohelp.en-fr), MODEL_DIR (runs/bench-quality/<time>), THREADS (one per
# core), BEAM (5). The run is cut into POINTS pieces of BUDGET/POINTS; each piece resumes the
# previous one exactly (rnmt-train's resume), then the test set is translated with beam BEAM
# and scored. "minutes" is the wall-clock time of the training pieces (start-up, tokenizer
# training and validations included; test decoding excluded), "updates" the updates done.
#
# Each point is also translated greedily, and both are reported with the brevity penalty (BP).
# Beam search uses the model's calibrated decoding defaults (decode.json, written by rnmt-train
# at the end of every piece). With the budgeted learning-rate decay (train.decay, the default)
# each piece ends with the rate decayed over the last part of all pieces so far, so every point
# is a model cooled down at that time, as a single run of that length would end (the earlier
# pieces' decays are then re-warmed; see src/schedule.rs).
#
# Output: a table on stdout, and MODEL_DIR/quality.tsv and MODEL_DIR/quality.svg (the curve).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

BUDGET=${1:-10m}
POINTS=${2:-5}
shift $(( $# >= 2 ? 2 : $# ))
[[ "${1:-}" == "--" ]] && shift
CORPUS=${CORPUS:-lohelp.en-fr}
MODEL_DIR=${MODEL_DIR:-runs/bench-quality/$(date +%Y%m%d-%H%M%S)}
BEAM=${BEAM:-5}
threads=()
[[ -n "${THREADS:-}" ]] && threads=(--threads "$THREADS")

die() { echo "bench-quality: $*" >&2; exit 1; }
budget_s=$(python3 -c "
import sys; s='$BUDGET'.strip(); u={'s':1,'m':60,'min':60,'h':3600}
n=s.rstrip('smhin'); unit=s[len(n):] or 's'
print(float(n)*u[unit])") || die "bad budget '$BUDGET' (use e.g. 90s, 10m, 1h)"
[[ "$POINTS" =~ ^[1-9][0-9]*$ ]] || die "POINTS must be a positive integer"
piece=$(python3 -c "print(f'{$budget_s/$POINTS:.3f}s')")

scripts/setup.sh >/dev/null
cargo build --release --workspace --bins --quiet
mkdir -p "$MODEL_DIR"
table="$MODEL_DIR/quality.tsv"
printf 'minutes\tupdates\tvalid_bleu\ttest_bleu\ttest_chrf\ttest_bp\tgreedy_bleu\tgreedy_bp\talpha\n' > "$table"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
echo "== bench-quality: $CORPUS, budget $BUDGET in $POINTS pieces, beam $BEAM, $(nproc) cores ($cpu)"
echo "   model: $MODEL_DIR; rnmt-train options: ${*:-(defaults)}"
wall=0
for ((i = 1; i <= POINTS; i++)); do
    t0=$(date +%s.%N)
    target/release/rnmt-train \
        --train "corpora/$CORPUS.train.tsv" --valid "corpora/$CORPUS.dev.tsv" \
        --model-dir "$MODEL_DIR" --max-time "$piece" "${threads[@]}" "$@" \
        2>> "$MODEL_DIR/train.log" || die "rnmt-train failed (see $MODEL_DIR/train.log)"
    t1=$(date +%s.%N)
    wall=$(python3 -c "print($wall + $t1 - $t0)")
    # The last metrics.csv row is this piece's final validation (greedy BLEU on the dev set).
    last=$(tail -n 1 "$MODEL_DIR/metrics.csv")
    step=$(cut -d, -f1 <<< "$last")
    vbleu=$(cut -d, -f6 <<< "$last")
    out=$(TRANSLATE_OPTS="--beam $BEAM ${THREADS:+--threads $THREADS}" \
        scripts/evaluate.sh "$MODEL_DIR" "corpora/$CORPUS.test.tsv") || die "evaluation failed"
    tbleu=$(grep -m1 'BLEU|' <<< "$out" | sed 's/^[^=]*= \([0-9.]*\).*/\1/') || true
    tchrf=$(grep -m1 'chrF2|' <<< "$out" | sed 's/^[^=]*= \([0-9.]*\).*/\1/') || true
    tbp=$(grep -m1 'BLEU|' <<< "$out" | sed 's/.*BP = \([0-9.]*\).*/\1/') || true
    [[ -n "$tbleu" && -n "$tchrf" ]] || die "no BLEU/chrF in the evaluation output: $out"
    gout=$(TRANSLATE_OPTS="--beam 1 ${THREADS:+--threads $THREADS}" \
        scripts/evaluate.sh "$MODEL_DIR" "corpora/$CORPUS.test.tsv") || die "evaluation failed"
    gbleu=$(grep -m1 'BLEU|' <<< "$gout" | sed 's/^[^=]*= \([0-9.]*\).*/\1/') || true
    gbp=$(grep -m1 'BLEU|' <<< "$gout" | sed 's/.*BP = \([0-9.]*\).*/\1/') || true
    alpha=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['alpha'])" "$MODEL_DIR/decode.json" 2>/dev/null || echo 1.0)
    mins=$(python3 -c "print(f'{$wall/60:.2f}')")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mins" "$step" "$vbleu" "$tbleu" "$tchrf" "$tbp" "$gbleu" "$gbp" "$alpha" >> "$table"
    echo "   $mins min | $step updates | valid BLEU (greedy) $vbleu | test BLEU beam $BEAM $tbleu (BP $tbp, alpha $alpha) | greedy $gbleu (BP $gbp) | chrF $tchrf"
done
# The model selected for the test set is model.safetensors, the best by validation BLEU.

python3 - "$table" "$MODEL_DIR/quality.svg" "$CORPUS" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
W, H, L, B, T, R = 640, 400, 60, 50, 40, 20
xs = [float(r["minutes"]) for r in rows]
series = [("valid_bleu", "#1f77b4", "validation BLEU (greedy)"),
          ("test_bleu", "#d62728", "test BLEU (beam)"),
          ("test_chrf", "#2ca02c", "test chrF")]
xmax = max(xs + [1e-9]) * 1.05
ymax = max([float(r[k]) for r in rows for k, _, _ in series] + [1.0]) * 1.1
px = lambda x: L + (W - L - R) * x / xmax
py = lambda y: H - B - (H - B - T) * y / ymax
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
       f'<rect width="{W}" height="{H}" fill="white"/>',
       f'<text x="{W/2}" y="20" text-anchor="middle" font-size="14">rnmt time to quality: {sys.argv[3]}</text>',
       f'<line x1="{L}" y1="{H-B}" x2="{W-R}" y2="{H-B}" stroke="black"/>',
       f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H-B}" stroke="black"/>',
       f'<text x="{(L+W-R)/2}" y="{H-12}" text-anchor="middle">minutes of training (updates in labels)</text>']
for i in range(6):
    y = ymax * i / 5
    out.append(f'<text x="{L-6}" y="{py(y)+4}" text-anchor="end">{y:.0f}</text>')
    out.append(f'<line x1="{L}" y1="{py(y)}" x2="{W-R}" y2="{py(y)}" stroke="#ddd"/>')
for r, x in zip(rows, xs):
    out.append(f'<text x="{px(x)}" y="{H-B+16}" text-anchor="middle">{x:.1f} ({r["updates"]})</text>')
for n, (k, color, label) in enumerate(series):
    pts = " ".join(f"{px(x):.1f},{py(float(r[k])):.1f}" for r, x in zip(rows, xs))
    out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts}"/>')
    for r, x in zip(rows, xs):
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(float(r[k])):.1f}" r="3" fill="{color}"/>')
    out.append(f'<text x="{L+10}" y="{T+16+16*n}" fill="{color}">{label}</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
PY
echo "== table: $table; plot: $MODEL_DIR/quality.svg"
column -t -s $'\t' "$table"
