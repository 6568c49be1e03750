#!/usr/bin/env bash
# The GPU check of docs/cuda.md, as one script for a lent GPU machine (issue 14):
# build against that machine's CUDA PyTorch, the CUDA test subset, the joint-training step time of
# ResNet-18 (224x224, batch 128, {8,6,4,2} against four FP32 steps, fused and composed-ATen
# quantizers), and the main job (configs/fmnist-resnet20.yaml) with --device cuda, then the
# checkpoint it wrote evaluated on the CPU. Everything lands under $OUT (default gpu-check-out/).
#
# Two steps:
#   scripts/gpu_check.sh prepare   here, on a Debian 12 machine with its package mirror: fills the
#                                  ignored folder .gpu-carry/ (the build dependencies that the GPU
#                                  image lacks, as .deb files, and Fashion-MNIST) and prints the
#                                  device call to make.
#   scripts/gpu_check.sh           there; takes about 9 minutes at most (BUDGET_S, default 530 s:
#                                  each step gets what is left, the main job is cut off in time).
#
# The GPU image (/work/.library/device/KINDS.md) has nvcc, CMake, ninja and a python3 with a CUDA
# torch, but none of yaml-cpp, CLI11, nlohmann-json, GLPK, TurboJPEG, GoogleTest or Google
# Benchmark, and no network: those come from Debian 12 packages unpacked into /tmp/deps (not /).
set -uo pipefail
cd "$(dirname "$0")/.."
CARRY=.gpu-carry

if [[ "${1:-}" == "prepare" ]]; then
  set -e
  git check-ignore -q "$CARRY/" || { echo "gpu_check.sh: $CARRY must be ignored by git (.gitignore)" >&2; exit 1; }
  rm -rf "$CARRY" && mkdir -p "$CARRY/debs" "$CARRY/fashion-mnist"
  (cd "$CARRY/debs" && apt-get download nlohmann-json3-dev libyaml-cpp-dev libyaml-cpp0.7 libcli11-dev \
     libglpk-dev libglpk40 libamd2 libcolamd2 libsuitesparseconfig5 libltdl7 libgmp10 libturbojpeg0-dev \
     libturbojpeg0 zlib1g-dev libgtest-dev libbenchmark-dev libbenchmark1debian)
  # Plain names only (the transfer takes letters, digits, '.', '_' and '-').
  for f in "$CARRY"/debs/*.deb; do
    g="$(dirname "$f")/$(basename "$f" | sed 's/%3a/_/g; s/[^A-Za-z0-9._-]/_/g')"
    [[ "$f" == "$g" ]] || mv "$f" "$g"
  done
  cp /usr/share/datasets/fashion-mnist/*.gz "$CARRY/fashion-mnist/"
  du -sh "$CARRY"
  cat <<EOF
Prepared $CARRY. The device call (one run; rerun at most once):
  run(command="bash scripts/gpu_check.sh", carry=["$CARRY"], timeout_s=600)
Its files come back under files_at: gpu_check.log, env.txt, tests.txt, bench.txt, train.log,
metrics.jsonl, summary.md.
EOF
  exit 0
fi

OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log
exec > >(tee -a "$LOG") 2>&1
BUDGET_S=${BUDGET_S:-530}
T0=$(date +%s)
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
# step NAME CAP_S COMMAND...: runs COMMAND under a timeout of min(CAP_S, what is left - 20 s).
step() {
  local name=$1 cap=$2
  shift 2
  local t=$(($(left) - 20))
  ((t > cap)) && t=$cap
  if ((t < 10)); then
    echo "== $name: skipped, no time left"
    return 124
  fi
  echo "== $name (limit ${t}s, $(left)s of the budget left)"
  local s=$(date +%s)
  timeout -s INT -k 10 "$t" "$@"
  local rc=$?
  echo "== $name: exit $rc after $(($(date +%s) - s))s"
  return $rc
}

echo "== gpu_check.sh $(date -u +%FT%TZ) on $(hostname)"
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  command -v nvcc g++ cmake python3
  nvcc --version | tail -2
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version(), torch.cuda.get_device_name(0))'
  g++ --version | head -1
  cmake --version | head -1
  ninja --version
  ldd --version | head -1
  nproc
  lscpu | grep 'Model name'
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# Build dependencies from the carried Debian packages.
DEPS=/tmp/deps
mkdir -p $DEPS
for f in "$CARRY"/debs/*.deb; do
  if command -v dpkg >/dev/null; then dpkg -x "$f" $DEPS
  else ar p "$f" data.tar.xz | tar -xJ -C $DEPS; fi  # Debian 12 packages hold data.tar.xz
done
# zlib1g-dev's libz.so points at Debian's absolute /lib path: point it at this system's zlib.
if [[ ! -e $DEPS/usr/lib/x86_64-linux-gnu/libz.so ]]; then
  SYS_Z=$(ldconfig -p | awk '/libz\.so\.1 .*x86-64/ {print $NF; exit}')
  if [[ -n "$SYS_Z" ]]; then ln -sf "$SYS_Z" $DEPS/usr/lib/x86_64-linux-gnu/libz.so
  else rm -f $DEPS/usr/lib/x86_64-linux-gnu/libz.so; fi  # then the static libz.a
fi
# The tests read Fashion-MNIST from the Debian package's place.
if [[ ! -e /usr/share/datasets/fashion-mnist ]]; then
  mkdir -p /usr/share/datasets && ln -s "$PWD/$CARRY/fashion-mnist" /usr/share/datasets/fashion-mnist
fi
export CPATH=$DEPS/usr/include${CPATH:+:$CPATH}
export LIBRARY_PATH=$DEPS/usr/lib/x86_64-linux-gnu${LIBRARY_PATH:+:$LIBRARY_PATH}
export LD_LIBRARY_PATH=$DEPS/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CMAKE_PREFIX_EXTRA=$DEPS/usr

BUILD=build-gpu
BITSWITCH_TORCH_PYTHON=python3 BITSWITCH_CUDA_BUILD=$BUILD JOBS=$(nproc) NICE=0 \
  step build 330 scripts/build_cuda.sh bitswitch_cli bitswitch_tests bench_train_step
BUILD_RC=$?
if [[ $BUILD_RC -ne 0 ]]; then
  echo "== build failed: nothing else can run"
  printf '# GPU check\n\nbuild failed (exit %s); see gpu_check.log\n' "$BUILD_RC" > "$OUT/summary.md"
  exit 1
fi
TORCH_LIB=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH=$TORCH_LIB:$LD_LIBRARY_PATH

# 1. The CUDA test subset, and the CPU quantizer tests as a check of this build.
step tests 120 $BUILD/tests/bitswitch_tests --gtest_filter='Cuda*:Device.*:*FusedKernel*:SecondRounding.*' \
  2>&1 | tee "$OUT/tests.txt"
TESTS_RC=${PIPESTATUS[0]}

# 2. Joint-training step time, ResNet-18 224x224 batch 128, channels-last as the trainer runs.
step bench 120 $BUILD/bench/bench_train_step --device cuda --model resnet18 --image 224 --classes 1000 \
  --batch 128 --channels-last --rounds 5 --steps 4 2>&1 | tee "$OUT/bench.txt"
BENCH_RC=${PIPESTATUS[0]}

# 3. The main job with --device cuda; cut off in time (the metrics so far are kept).
RUN=/tmp/gpu-run-fmnist
rm -rf $RUN
step train 330 $BUILD/bitswitch train --config configs/fmnist-resnet20.yaml --device cuda \
  --data-dir "$CARRY/fashion-mnist" --out $RUN 2>&1 | tee "$OUT/train.log"
TRAIN_RC=${PIPESTATUS[0]}
cp $RUN/metrics.jsonl "$OUT/" 2>/dev/null
cp $RUN/summary.json "$OUT/" 2>/dev/null

# 4. That checkpoint on the CPU: integer-exact evaluation (what the deployed model computes).
EVAL_RC=skipped
if [[ -f $RUN/checkpoint.pt ]]; then
  step cpu-eval 60 $BUILD/bitswitch eval --checkpoint $RUN/checkpoint.pt --data-dir "$CARRY/fashion-mnist" \
    --test-limit 2000 2>&1 | tee "$OUT/cpu_eval.txt"
  EVAL_RC=${PIPESTATUS[0]}
fi

{
  echo "# GPU check $(date -u +%F)"
  echo
  echo '```'
  cat "$OUT/env.txt"
  echo '```'
  echo
  echo "exit codes: build $BUILD_RC, tests $TESTS_RC, bench $BENCH_RC, train $TRAIN_RC, cpu-eval $EVAL_RC; total $(($(date +%s) - T0)) s"
  echo
  echo "## Tests"
  grep -E '^\[  (PASSED|FAILED|SKIPPED) |^\[  FAILED  \]|tests? ran' "$OUT/tests.txt" | head -40
  echo
  echo "## Step time (bench_train_step)"
  cat "$OUT/bench.txt" 2>/dev/null | grep -E '^\||^device'
  echo
  echo "## Main job (configs/fmnist-resnet20.yaml --device cuda)"
  grep -E '^\||test accuracy|done in|images' "$OUT/train.log" | tail -30
  [[ -f $RUN/metrics.jsonl ]] && python3 - "$RUN/metrics.jsonl" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    print(f"- {m['phase']} epoch {m['epoch']}: {m.get('train_images_per_s', 0):.0f} train images/s, "
          f"{m['seconds']:.1f} s of training so far, accuracy {m['test_accuracy']}")
EOF
  echo
  echo "## The GPU checkpoint evaluated on the CPU (first 2000 test images)"
  cat "$OUT/cpu_eval.txt" 2>/dev/null | tail -12
} > "$OUT/summary.md"
cat "$OUT/summary.md"
sleep 1  # let tee write the log out
