#!/usr/bin/env bash
# Data-parallel benchmark: joint multi-precision training ({8,6,4,2}, a step per width) at 1 and
# 2 processes on this machine; training images/s and the all-reduce wait per optimizer step, from
# the runs' metrics.jsonl. Writes the table into docs/distributed.md (between the bench markers).
# Usage: scripts/bench_dist.sh [--model resnet20|resnet18] [--steps 200] [--batch 128]
#                              [--nprocs "1 2"] [--dataset fashion-mnist] [--no-doc]
#                              [--data-dir DIR --image-size S --workers N] [--marker NAME]
#                              [--describe TEXT] [--command TEXT]
#   --marker: the table goes between <!-- NAME:begin --> and <!-- NAME:end --> (default bench);
#   --describe: the table's first line (what was trained on what); --command: the command line
#   the table names; scripts/bench_dist_imagefolder.sh uses these for image folders.
# Run it on an otherwise idle machine; other load makes the numbers meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
model=resnet20 steps=200 batch=128 nprocs="1 2" dataset=fashion-mnist doc=1 marker=bench describe=""
extra=()
command="scripts/bench_dist.sh $*"
while [ $# -gt 0 ]; do
  case $1 in
    --model) model=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --nprocs) nprocs=$2; shift 2 ;;
    --dataset) dataset=$2; shift 2 ;;
    --no-doc) doc=0; shift ;;
    --data-dir | --image-size | --workers) extra+=("$1" "$2"); shift 2 ;;
    --marker) marker=$2; shift 2 ;;
    --describe) describe=$2; shift 2 ;;
    --command) command=$2; shift 2 ;;
    *) echo "bench_dist.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
BIN=${BIN:-build/bitswitch}
[ -x "$BIN" ] || { echo "bench_dist.sh: $BIN not built (cmake --build build --target bitswitch_cli)" >&2; exit 1; }
mkdir -p runs
rows=""
for n in $nprocs; do
  out=runs/bench-dist-$model-n$n
  echo "[bench_dist] $model, $n process(es), $steps iterations of global batch $batch" >&2
  "$BIN" train --model "$model" --dataset "$dataset" --nproc "$n" --batch "$batch" \
    --train-limit $((steps * batch)) --test-limit 500 --fp-epochs 0 --epochs 1 \
    --log-interval 30 ${extra[@]+"${extra[@]}"} --out "$out" >/dev/null
  row=$(python3 - "$out/metrics.jsonl" "$n" <<'EOF'
import json, sys
m = json.loads(open(sys.argv[1]).read().splitlines()[-1])
print(f"| {sys.argv[2]} | {m['train_images_per_s']:.1f} | {m['allreduce_wait_ms_per_step']:.2f} |")
EOF
)
  echo "$row" >&2
  rows+="$row"$'\n'
done
cpu=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
[ -n "$describe" ] || describe="Joint training of $model on $dataset"
table="$describe, bits {8,6,4,2} (a step per width), global batch $batch,
$steps iterations, $(nproc) cores ($cpu), threads per process = cores / processes,
\`$command\` on $(date -u +%Y-%m-%d):

| processes | training images/s | all-reduce wait (ms per optimizer step) |
|---|---|---|
$rows"
echo "$table"
if [ $doc = 1 ]; then
  python3 - docs/distributed.md "$table" "$marker" <<'EOF'
import sys
path, table, marker = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(path).read()
begin, end = f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"
i, j = text.index(begin) + len(begin), text.index(end)
open(path, "w").write(text[:i] + "\n" + table.rstrip() + "\n" + text[j:])
EOF
  echo "[bench_dist] written to docs/distributed.md" >&2
fi
