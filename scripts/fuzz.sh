#!/usr/bin/env bash
# Long fuzzing of the artifact reader (fuzz/fuzz_safetensors.cpp, fuzz/README.md): builds the
# libFuzzer target with clang (ASan + UBSan, UB fatal), makes real seeds (a master ResNet-20
# artifact and 4- and 2-bit artifacts switched from it, from a tiny checkpoint trained here),
# and runs the fuzzer for SECONDS with -max_len large enough to hold the largest seed.
# Usage: scripts/fuzz.sh SECONDS
#        scripts/fuzz.sh --replay    build if needed and run every file of fuzz/corpus once
# Environment: BITSWITCH (default build/bitswitch, used only to make the seeds), FUZZ_DIR
# (default build/fuzz: binary, seeds, the growing corpus, crash-* files and fuzz.log), TIMEOUT
# (default 120: seconds one input may take; libFuzzer counts wall time, so on a loaded machine a
# lower limit reports the load as a hang: an input of a ResNet-20 seed takes ~0.5 s here alone).
# Exits non-zero when the fuzzer finds a crash, a sanitizer report or a timeout.
set -euo pipefail
cd "$(dirname "$0")/.."
replay=0
if [ "${1:-}" = --replay ]; then replay=1; else SECONDS_TO_RUN=${1:?usage: scripts/fuzz.sh SECONDS | --replay}; fi
BIN=${BITSWITCH:-build/bitswitch}
DIR=${FUZZ_DIR:-build/fuzz}
TIMEOUT=${TIMEOUT:-120}
mkdir -p "$DIR"

if ! command -v clang++ >/dev/null; then
  echo "fuzz.sh: installing clang (Debian) for libFuzzer" >&2
  apt-get install -y clang
fi

# 1. The fuzzer: the reader, the artifact validation and switching, nothing else. Rebuilt when
# one of the files it is built from is newer than it.
# Sources: the torch-free deployment library (src/bitswitch/deploy but export.cpp, which needs
# LibTorch, and the decoder itself, lm_decoder.cpp and lm_eval.cpp: the target loads decoder
# weights, it does not decode; clang 14 has no _Float16 on x86-64 without AVX-512 FP16), the file
# formats and the utilities they use.
sources=(src/bitswitch/format/*.cpp src/bitswitch/nn/bit_config.cpp src/bitswitch/util/atomic_file.cpp)
for f in src/bitswitch/deploy/*.cpp; do
  case "$f" in */export.cpp | */lm_decoder.cpp | */lm_eval.cpp) ;; *) sources+=("$f") ;; esac
done
inputs=(fuzz/fuzz_safetensors.cpp src/bitswitch/format src/bitswitch/deploy src/bitswitch/nn/bit_config.cpp
  src/bitswitch/nn/bit_config.h src/bitswitch/quant/double_rounding.h src/bitswitch/util)
if [ ! -x "$DIR/fuzz_safetensors" ] || [ -n "$(find "${inputs[@]}" -type f -newer "$DIR/fuzz_safetensors" | head -1)" ]; then
  [ -e /usr/lib/llvm-14/lib/libomp.so ] || apt-get install -y libomp-dev
  clang++ -std=c++17 -g -O1 -ffp-contract=off -fopenmp -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I src fuzz/fuzz_safetensors.cpp "${sources[@]}" -o "$DIR/fuzz_safetensors.tmp"
  mv "$DIR/fuzz_safetensors.tmp" "$DIR/fuzz_safetensors"
fi

if [ $replay = 1 ]; then
  exec "$DIR/fuzz_safetensors" fuzz/corpus/*
fi

# 2. Real seeds: a tiny ResNet-20 run ({8,4,2}, 128 training images), exported and switched.
SEEDS="$DIR/seeds"
if [ ! -f "$SEEDS/resnet20-master.safetensors" ]; then
  [ -x "$BIN" ] || { echo "fuzz.sh: $BIN not found (cmake --build build --target bitswitch_cli)" >&2; exit 2; }
  mkdir -p "$SEEDS"
  "$BIN" train --model resnet20 --bits 8,4,2 --fp-epochs 1 --epochs 1 --train-limit 128 --test-limit 64 --batch 64 \
    --threads 1 --log-interval 1000 --out "$DIR/seed-run" >/dev/null
  "$BIN" export --checkpoint "$DIR/seed-run/checkpoint.pt" -o "$SEEDS/resnet20-master.safetensors.tmp"
  "$BIN" switch "$SEEDS/resnet20-master.safetensors.tmp" --bits 4 -o "$SEEDS/resnet20-w4.safetensors"
  "$BIN" switch "$SEEDS/resnet20-master.safetensors.tmp" --bits 2 -o "$SEEDS/resnet20-w2.safetensors"
  mv "$SEEDS/resnet20-master.safetensors.tmp" "$SEEDS/resnet20-master.safetensors"
fi
largest=$(stat -c %s fuzz/corpus/* "$SEEDS"/* | sort -n | tail -1)
max_len=$((largest + largest / 8 + 4096))

# 3. The run. New inputs go to $DIR/corpus (the committed seeds stay read-only); crashes to $DIR.
mkdir -p "$DIR/corpus"
echo "fuzz.sh: $SECONDS_TO_RUN s, max_len $max_len, seeds: $(ls fuzz/corpus "$SEEDS" | grep -c safetensors) files" >&2
set +e
"$DIR/fuzz_safetensors" "$DIR/corpus" fuzz/corpus "$SEEDS" -dict=fuzz/safetensors.dict \
  -max_len="$max_len" -max_total_time="$SECONDS_TO_RUN" -timeout="$TIMEOUT" -print_final_stats=1 \
  -artifact_prefix="$DIR/" 2>&1 | tee "$DIR/fuzz.log"
rc=${PIPESTATUS[0]}
set -e
echo "fuzz.sh: exit $rc; corpus $(ls "$DIR/corpus" | wc -l) files; crashes: $(ls "$DIR" | grep -cE '^(crash|timeout|oom|leak)-' || true)" >&2
exit "$rc"
