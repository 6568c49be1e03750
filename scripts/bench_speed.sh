#!/usr/bin/env bash
# Benchmarks 1 and 2 of the core issue, written to docs/benchmarks.md:
#  1. fused quantizer forward+backward vs the composed-ATen reference, next to memcpy bandwidth;
#  2. joint-training step time (ResNet-20, batch 128, {8,6,4,2}) vs four FP32 steps, in the
#     NCHW and the channels-last layout.
# Usage: scripts/bench_speed.sh   (a few minutes; run on an otherwise idle machine)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mkdir -p runs
build/bench/bench_quant --benchmark_min_time=0.5 --benchmark_repetitions=3 \
  --benchmark_report_aggregates_only=true --benchmark_out=runs/bench_quant.json --benchmark_out_format=json
step1=$(build/bench/bench_train_step --threads 1 --rounds 5 --steps 4)
step2=$(build/bench/bench_train_step --threads 2 --rounds 5 --steps 4)
# The trainer's default layout (channels_last: true)
step3=$(build/bench/bench_train_step --threads 1 --rounds 5 --steps 4 --channels-last)
step4=$(build/bench/bench_train_step --threads 2 --rounds 5 --steps 4 --channels-last)
python3 scripts/bench_table.py runs/bench_quant.json "$step1" "$step2" "$step3" "$step4" >docs/benchmarks.md
cat docs/benchmarks.md
