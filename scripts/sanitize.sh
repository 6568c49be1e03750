#!/usr/bin/env bash
# Builds the test suite with AddressSanitizer + UndefinedBehaviorSanitizer (GCC; every UB report
# is fatal; float-to-integer overflow included) in its own build directory and runs it.
# Usage: scripts/sanitize.sh [--deploy | --fast | --full] [extra ctest arguments]
#   --deploy  the torch-free tests only (bitswitch_deploy_tests: safetensors reader, JSON
#             metadata fields, bit packing, GEMM kernels, artifact validation and switching) and
#             the fuzz corpus replayed through them. Builds in a few minutes.
#   --fast    (default) --deploy, plus the LibTorch unit tests of the quantizers, layers,
#             configuration, checkpoints and data (the suites that run in seconds); the slow
#             training, distributed, pretrained-import and CLI suites are left out.
#   --full    every ctest test (slow under the sanitizers: trainings run several times slower).
# Environment: SANITIZE_DIR (default build-asan), JOBS (default 2). LibTorch itself is not
# instrumented; its one-time allocations are not leaks of ours, so LeakSanitizer runs for the
# torch-free tests only.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=fast
case "${1:-}" in
  --deploy | --fast | --full) mode=${1#--}; shift ;;
esac
DIR=${SANITIZE_DIR:-build-asan}
JOBS=${JOBS:-2}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}

flags="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all"
cmake -S . -B "$DIR" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined,float-cast-overflow" -DBITSWITCH_BUILD_BENCH=OFF >/dev/null

targets=(bitswitch_deploy_tests)
[ "$mode" = deploy ] || targets+=(bitswitch_tests dist_worker)
[ "$mode" = full ] && targets+=(bitswitch_cli bitswitch_pretrained_tests)
nice -n 10 cmake --build "$DIR" -j "$JOBS" --target "${targets[@]}"

export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fails=0
# Torch-free: leak checking on.
ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 "$DIR/src/bitswitch/deploy/bitswitch_deploy_tests" || fails=$((fails + 1))

# The fuzz corpus (fuzz/corpus: hand-made seeds and earlier findings) replayed once through the
# fuzz target (reader, artifact validation, switching), built with clang's ASan + UBSan.
if command -v clang++ >/dev/null; then
  scripts/fuzz.sh --replay 2>"$DIR/fuzz_replay.log" || { fails=$((fails + 1)); tail -30 "$DIR/fuzz_replay.log"; }
else
  echo "sanitize.sh: clang++ not installed, fuzz corpus replay skipped (apt-get install clang)" >&2
fi

case "$mode" in
  fast)
    # The quick LibTorch suites (quantizers, layers, configuration, checkpoints, data, transitional BN).
    # Not Allocator.*: it tunes glibc malloc with mallopt, which ASan's allocator replaces (mallopt
    # returns 0 there), so that test can only fail under the sanitizer.
    ASAN_OPTIONS=detect_leaks=0 "$DIR/tests/bitswitch_tests" \
      --gtest_filter='SecondRounding.*:Backward/FusedKernel.*:FusedKernelLayout.*:Gradients.*:Agreement.*:Errors.*:Init.*:Config.*:Checkpoint.*:TransitionalBn.*:SwitchableBN.*:Layers.*:BitConfig.*:BitList.*:Alrs.*:Schedule.*:FashionMnist.*:Loader.*:ShardedLoader.*:Roulette.*:Ilp.*' \
      || fails=$((fails + 1))
    ;;
  full)
    ASAN_OPTIONS=detect_leaks=0 ctest --test-dir "$DIR" --output-on-failure "$@" || fails=$((fails + 1))
    ;;
esac
[ $fails -eq 0 ] && echo "sanitize.sh ($mode): clean" || echo "sanitize.sh ($mode): $fails run(s) failed"
exit $fails
