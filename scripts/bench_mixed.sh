#!/usr/bin/env bash
# Mixed-precision benchmark (SPEC.md Sec. 6; docs/mixed.md): from a multi-precision checkpoint,
#   1. Hessian traces (bitswitch hessian),
#   2. HASB SuperNet training with the Hessian-aware roulette, and the uniform-roulette ablation,
#   3. ILP search (reference and HAWQ objectives) swept over average bits, on the starting
#      checkpoint and on both HASB runs, every candidate evaluated on the test set,
#   4. at each target average: the ILP config, random per-layer configs of the same average and
#      uniform widths,
#   5. the table (docs/mixed.md) and the HTML report of the HASB run.
# Usage: scripts/bench_mixed.sh [--tiny]
#   --tiny: a few hundred images, to check the pipeline end to end in a minute or two
#           (writes runs/mixed-tiny/mixed.md, not docs/mixed.md).
# Environment: CKPT (default runs/main/checkpoint.pt), OUT (runs/mixed), CONFIG (the config
# of the starting run, default configs/fmnist-resnet20.yaml), HASB_EPOCHS (2), HASB_LR (1e-4), TARGETS ("4 5";
# "3" for {4,3,2}), RANDOM_N (10), IMAGES (1000), PROBES (20), THREADS (0: all cores),
# TRAIN_LIMIT / TEST_LIMIT (use only the first N training / test images; default all).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=build/bitswitch
CKPT=${CKPT:-runs/main/checkpoint.pt}
CONFIG=${CONFIG:-configs/fmnist-resnet20.yaml}
OUT=${OUT:-runs/mixed}
HASB_EPOCHS=${HASB_EPOCHS:-2}
# Fine-tuning a converged checkpoint with a fresh Adam at the joint phase's 5e-4 costs w2 most of
# its accuracy in the first steps (seen at tiny size, also without HASB); a lower rate by default.
HASB_LR=${HASB_LR:-1e-4}
TARGETS=${TARGETS:-4 5}
RANDOM_N=${RANDOM_N:-10}
IMAGES=${IMAGES:-1000}
PROBES=${PROBES:-20}
THREADS=${THREADS:-0}
SWEEP=${SWEEP:-avg-bits:2:8:13}
DOC=docs/mixed.md
LIMITS=()
TRAIN_LIMITS=()
# Optional smaller runs: TRAIN_LIMIT (HASB training images), TEST_LIMIT (evaluation images).
if [ -n "${TRAIN_LIMIT:-}" ]; then TRAIN_LIMITS+=(--train-limit "$TRAIN_LIMIT"); fi
if [ -n "${TEST_LIMIT:-}" ]; then LIMITS+=(--test-limit "$TEST_LIMIT"); TRAIN_LIMITS+=(--test-limit "$TEST_LIMIT"); fi
if [ "${1:-}" = "--tiny" ]; then
  OUT=${OUT/%mixed/mixed-tiny}
  HASB_EPOCHS=1 RANDOM_N=2 IMAGES=64 PROBES=3 SWEEP=avg-bits:3:6:4
  LIMITS=(--test-limit 200)
  TRAIN_LIMITS=(--train-limit 256 --test-limit 200)
  DOC=$OUT/mixed.md
fi
[ -f "$CKPT" ] || { echo "bench_mixed: checkpoint '$CKPT' does not exist (run scripts/run_main.sh first, or set CKPT)" >&2; exit 1; }
mkdir -p "$OUT"
start=$(date +%s)
step() { echo "[bench_mixed] $(( $(date +%s) - start ))s: $*"; }

step "Hessian traces of $CKPT"
$BIN hessian --checkpoint "$CKPT" -o "$OUT/traces.json" --images "$IMAGES" --max-probes "$PROBES" --threads "$THREADS"

for roulette in hessian uniform; do
  step "HASB training, $roulette roulette"
  $BIN train --config "$CONFIG" --init "$CKPT" --hasb --roulette "$roulette" --traces "$OUT/traces.json" \
    --epochs "$HASB_EPOCHS" --lr "$HASB_LR" --out "$OUT/hasb-$roulette" --threads "$THREADS" ${TRAIN_LIMITS[@]+"${TRAIN_LIMITS[@]}"}
done

search() {  # search RUN_DIR CHECKPOINT OBJECTIVE
  local dir=$1 ckpt=$2 obj=$3
  mkdir -p "$dir"
  step "search $dir ($obj): sweep $SWEEP"
  $BIN search --checkpoint "$ckpt" --traces "$OUT/traces.json" --objective "$obj" --sweep "$SWEEP" \
    -o "$dir/pareto-$obj.json" --threads "$THREADS" ${LIMITS[@]+"${LIMITS[@]}"}
  for t in $TARGETS; do
    step "search $dir ($obj): average $t bits, $RANDOM_N random configs"
    $BIN search --checkpoint "$ckpt" --traces "$OUT/traces.json" --objective "$obj" --avg-bits "$t" \
      --random "$RANDOM_N" -o "$dir/at-$t-$obj.json" --layer-bits-out "$dir/layer-bits-$t-$obj.json" \
      --threads "$THREADS" ${LIMITS[@]+"${LIMITS[@]}"}
  done
}
search "$OUT/hasb-hessian" "$OUT/hasb-hessian/checkpoint.pt" reference
search "$OUT/hasb-hessian" "$OUT/hasb-hessian/checkpoint.pt" hawq
search "$OUT/hasb-uniform" "$OUT/hasb-uniform/checkpoint.pt" reference
search "$OUT/start" "$CKPT" reference

step "table and report"
python3 scripts/mixed_table.py "$OUT" "$DOC" $TARGETS
cp "$OUT/hasb-hessian/pareto-reference.json" "$OUT/hasb-hessian/pareto.json"
cp "$OUT/traces.json" "$OUT/hasb-hessian/traces.json"
$BIN report "$OUT/hasb-hessian" -o "$OUT/report.html"
step "done: $DOC, $OUT/report.html (check it with scripts/check_report.sh $OUT/report.html)"
