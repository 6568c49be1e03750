#!/usr/bin/env bash
# Makes the language-model seeds of fuzz/corpus (fuzz/README.md): a tiny Llama (byte tokenizer,
# 1 block of width 32, group-wise scales of 16, 8-bit embedding and head) trained for 2 + 1 steps
# on Debian's fortunes, exported (artifact-lm-master) and switched to 2 bits (artifact-lm-w2).
# Usage: scripts/make_lm_fuzz_seeds.sh [BITSWITCH]   (default build/bitswitch)
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-build/bitswitch}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$BIN" lm-train --out "$tmp/run" --set tokenizer=byte --set bits=[8,4,2] --set first_last_bits=8 \
  --set arch='{"dim":32,"layers":1,"heads":2,"kv_heads":1,"mlp":64,"context":16,"group_size":16}' \
  --set fp_steps=2 --set steps=1 --set batch=2 --set warmup_steps=1 --set eval_windows=2 --set threads=1 >/dev/null
"$BIN" export --checkpoint "$tmp/run/checkpoint.pt" -o "$tmp/master.safetensors" >/dev/null
"$BIN" switch "$tmp/master.safetensors" --bits 2 -o fuzz/corpus/artifact-lm-w2.safetensors >/dev/null
mv "$tmp/master.safetensors" fuzz/corpus/artifact-lm-master.safetensors
ls -l fuzz/corpus/artifact-lm-*.safetensors
