#!/usr/bin/env bash
# The main LM job: sets up (Debian packages, build), then trains configs/lm-tiny.yaml (a tiny
# Llama on the fortunes corpus, FP32 then joint {8,6,4,2}) into runs/lm and ends with the table
# of held-out perplexity per width; then samples a continuation at 4 bits from the LibTorch model,
# exports the INT8 master artifact, switches it to every width (integer second rounding only) and
# runs each switched artifact on the integer decoder: held-out perplexity (the windows the
# trainer evaluated) and a greedy continuation with prompt and decode tokens/s.
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
build/bitswitch export --checkpoint "$out/checkpoint.pt" -o "$out/model.safetensors"
for b in 8 6 4 2; do
  build/bitswitch switch "$out/model.safetensors" --bits "$b" -o "$out/model-w$b.safetensors"
  build/bitswitch perplexity "$out/model-w$b.safetensors" --threads 1
  build/bitswitch generate "$out/model-w$b.safetensors" --prompt "The meaning of life is" --max-tokens 40 \
    --temperature 0 --threads 1
done
build/bitswitch inspect "$out/model-w4.safetensors"
