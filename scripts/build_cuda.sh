#!/usr/bin/env bash
# Builds bitswitch against a CUDA LibTorch 2.x, with the fused CUDA quantizer kernels
# (docs/cuda.md). The LibTorch is the one inside PyPI's `torch` wheel, installed into a venv
# whose CUDA matches the local nvcc, or the one of an existing Python (BITSWITCH_TORCH_PYTHON).
# The default build (Debian's CPU LibTorch 1.13, build/) is not touched.
#
#   scripts/build_cuda.sh [TARGET...]        default targets: bitswitch_cli bitswitch_tests
#
# Environment:
#   BITSWITCH_TORCH_PYTHON  a python3 whose torch is a CUDA build (skips the venv), e.g. python3
#   BITSWITCH_CUDA_VENV     venv for the torch wheel (default /opt/bitswitch-cuda-venv)
#   BITSWITCH_TORCH         pip requirement for torch (default: by nvcc's CUDA major, see below)
#   BITSWITCH_CUDA_BUILD    build directory (default build-cuda)
#   BITSWITCH_CUDA_ARCHITECTURES  GPU architectures of the fused kernels (default 90: H100/H200)
#   JOBS                    parallel compile jobs (default 2); NICE: nice level (default 19)
#   BUILD_TYPE              CMake build type (default Release)
#   CMAKE_EXTRA             extra cmake arguments, e.g. -DBITSWITCH_BUILD_BENCH=OFF
set -euo pipefail
cd "$(dirname "$0")/.."

NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[[ -x "$NVCC" ]] || { echo "build_cuda.sh: nvcc not found (install the CUDA toolkit or set NVCC)" >&2; exit 1; }
CUDA_VERSION=$("$NVCC" --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
CUDA_MAJOR=${CUDA_VERSION%%.*}
echo "build_cuda.sh: nvcc $NVCC, CUDA $CUDA_VERSION"

if [[ -n "${BITSWITCH_TORCH_PYTHON:-}" ]]; then
  PY=$BITSWITCH_TORCH_PYTHON
else
  VENV=${BITSWITCH_CUDA_VENV:-/opt/bitswitch-cuda-venv}
  # PyPI's default torch wheels carry their CUDA as nvidia-* wheels: 2.11.0 is built with CUDA
  # 13.0 (the pairing tested here). For another CUDA, name a wheel whose CUDA major matches.
  case "$CUDA_MAJOR" in
    13) DEFAULT_TORCH="torch==2.11.0" ;;
    *) DEFAULT_TORCH="" ;;
  esac
  TORCH_REQ=${BITSWITCH_TORCH:-$DEFAULT_TORCH}
  [[ -n "$TORCH_REQ" ]] || { echo "build_cuda.sh: no default torch wheel for CUDA $CUDA_VERSION; set BITSWITCH_TORCH" >&2; exit 1; }
  PY=$VENV/bin/python
  if [[ ! -x "$PY" ]]; then
    /usr/bin/python3 -m venv "$VENV"
  fi
  if ! "$PY" -c 'import torch' 2>/dev/null; then
    echo "build_cuda.sh: installing $TORCH_REQ into $VENV (several GB: torch plus its nvidia-* CUDA wheels)"
    "$PY" -m pip install --progress-bar off "$TORCH_REQ"
  fi
fi

read -r TORCH_VERSION TORCH_CUDA PREFIX < <("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda, torch.utils.cmake_prefix_path)' 2>/dev/null)
[[ "$TORCH_CUDA" != "None" ]] || { echo "build_cuda.sh: torch $TORCH_VERSION of $PY has no CUDA" >&2; exit 1; }
# One CUDA runtime per process: the kernels built by nvcc and LibTorch's must share a major version.
[[ "${TORCH_CUDA%%.*}" == "$CUDA_MAJOR" ]] || {
  echo "build_cuda.sh: torch $TORCH_VERSION is built for CUDA $TORCH_CUDA, nvcc is CUDA $CUDA_VERSION: pick a matching wheel (BITSWITCH_TORCH)" >&2
  exit 1
}
echo "build_cuda.sh: LibTorch $TORCH_VERSION (CUDA $TORCH_CUDA) from $PREFIX"

BUILD=${BITSWITCH_CUDA_BUILD:-build-cuda}
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)
# c10d off: pip wheels ship no Gloo headers, and Debian's libgloo-dev is not the Gloo inside the
# wheel (multi-process training on GPUs is untested, docs/cuda.md).
# shellcheck disable=SC2086
cmake -S . -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
  -DCMAKE_PREFIX_PATH="$PREFIX${CMAKE_PREFIX_EXTRA:+;$CMAKE_PREFIX_EXTRA}" \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DBITSWITCH_CUDA=ON -DBITSWITCH_C10D=OFF \
  -DBITSWITCH_CUDA_ARCHITECTURES="${BITSWITCH_CUDA_ARCHITECTURES:-90}" ${CMAKE_EXTRA:-}

TARGETS=("$@")
[[ ${#TARGETS[@]} -gt 0 ]] || TARGETS=(bitswitch_cli bitswitch_tests)
nice -n "${NICE:-19}" cmake --build "$BUILD" -j"${JOBS:-2}" --target "${TARGETS[@]}"
echo "build_cuda.sh: built ${TARGETS[*]} in $BUILD"
