#!/usr/bin/env bash
# The main LM job: sets up (Debian packages, build), then trains configs/lm-tiny.yaml (a tiny
# Llama on the fortunes corpus, FP32 then joint {8,6,4,2}) into runs/lm and ends with the table
# of held-out perplexity per width; then samples a continuation at 4 bits.
# Extra arguments go to `bitswitch lm-train` (e.g. --no-alrs --out runs/lm-no-alrs).
# Usage: scripts/run_lm.sh [bitswitch lm-train flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
out=runs/lm
args=("$@")
for ((i = 0; i < ${#args[@]}; ++i)); do [ "${args[i]}" = "--out" ] && out=${args[i + 1]}; done
[[ " $* " == *" --out "* ]] || set -- --out "$out" "$@"
build/bitswitch lm-train --config configs/lm-tiny.yaml "$@"
build/bitswitch sample --checkpoint "$out/checkpoint.pt" --bits 4 --tokens 60 --prompt "The meaning of life is"
