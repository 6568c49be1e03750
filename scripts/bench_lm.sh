#!/usr/bin/env bash
# LM benchmark (docs/lm.md): from the main LM job's FP32 checkpoint (scripts/run_lm.sh, runs/lm),
# the same joint run with --no-alrs, and w8, w4, w2 each trained alone (single-width QAT, the same
# number of steps per width as the joint run), and w2 alone with group-wise scales (G = 64). Prints one line per run from its summary.json.
# Usage: scripts/bench_lm.sh [MAIN_RUN_DIR] (default runs/lm)
set -euo pipefail
cd "$(dirname "$0")/.."
main=${1:-runs/lm}
fp=$main/fp32.pt
[ -f "$fp" ] || { echo "bench_lm: $fp is missing: run scripts/run_lm.sh first" >&2; exit 1; }
run() {
  local out=$1
  shift
  build/bitswitch lm-train --config configs/lm-tiny.yaml --set init="\"$fp\"" --out "$out" "$@" > "$out.log" 2>&1
  python3 -c "import json,sys; s=json.load(open('$out/summary.json')); print('$out', json.dumps(s['perplexity']), 'bpb', json.dumps(s['bits_per_byte']), 's', s['seconds'])"
}
mkdir -p "$(dirname "$main")"
run "$main-no-alrs" --no-alrs
for b in 8 4 2; do run "$main-w$b-alone" --set bits=[$b]; done
run "$main-w2-g64-alone" --set bits=[2] --set arch='{"preset":"tiny","group_size":64}'
