#!/usr/bin/env bash
# Benchmark 3 of the core issue: the README's main job with and without ALRS, one after the
# other on this machine, and the accuracy table written to docs/results.md.
# Usage: scripts/bench_accuracy.sh [extra bitswitch train flags]   (about 40 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
CONFIG=${CONFIG:-configs/fmnist-resnet20.yaml}
build/bitswitch train --config "$CONFIG" --out runs/bench-alrs "$@"
# The same FP32 model for both: the second run starts from the first run's FP32 checkpoint.
build/bitswitch train --config "$CONFIG" --out runs/bench-noalrs --no-alrs --init runs/bench-alrs/fp32.pt "$@"
python3 scripts/results_table.py "$CONFIG" runs/bench-alrs runs/bench-noalrs >docs/results.md
cat docs/results.md
