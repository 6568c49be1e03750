#!/usr/bin/env bash
# Sets up everything on a fresh Debian 12, builds, and runs the main job: ResNet-20 on
# Fashion-MNIST, FP32 training then one-shot joint training of {8,6,4,2}, ending with a table
# of test accuracy per width. Extra arguments go to `bitswitch train` (e.g. --no-alrs).
# Usage: scripts/run_main.sh [--long] [bitswitch train flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
config=configs/fmnist-resnet20.yaml
out=runs/main
if [ "${1:-}" = "--long" ]; then
  config=configs/fmnist-resnet20-long.yaml
  out=runs/main-long
  shift
fi
build/bitswitch train --config "$config" --out "$out" "$@"
