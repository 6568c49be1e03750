#!/usr/bin/env bash
# LM benchmark (docs/lm.md): from the main LM job's FP32 checkpoint (scripts/run_lm.sh, runs/lm),
# the same joint run with --no-alrs, and w8, w4, w2 each trained alone (single-width QAT, the same
# number of steps per width as the joint run), w2 alone with group-wise scales (G = 64), the joint
# {8,6,4,2} run with group-wise scales and the joint {8,4,3,2} list. Prints one line per run from
# its summary.json. ONLY="name ..." runs just those rows (no-alrs w8-alone w4-alone w2-alone
# w2-g64-alone joint-g64 joint-8432).
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
want() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
want no-alrs && run "$main-no-alrs" --no-alrs
for b in 8 4 2; do want "w$b-alone" && run "$main-w$b-alone" --set bits=[$b]; done
want w2-g64-alone && run "$main-w2-g64-alone" --set bits=[2] --set arch='{"preset":"tiny","group_size":64}'
want joint-g64 && run "$main-joint-g64" --set arch='{"preset":"tiny","group_size":64}'
want joint-8432 && run "$main-joint-8432" --set bits=[8,4,3,2]
exit 0
