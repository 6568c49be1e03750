#!/usr/bin/env bash
# Writes the HF Llama import fixture (scripts/hf_llama_fixture.py) with Hugging Face transformers
# as the reference: a venv over Debian's python3-torch 1.13 (--system-site-packages) with
# transformers 4.36.2 (the last series that supports torch 1.13), made once. A test dependency
# only. Without PyPI the fixture falls back to the formula forward with plain python3-torch.
# Usage: scripts/hf_llama_fixture.sh OUT_DIR [VENV_DIR]
set -euo pipefail
out=$1
venv=${2:-$(dirname "$out")/venv-hf}
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import transformers" 2>/dev/null; then
  if /usr/bin/python3 -m venv --system-site-packages "$venv" &&
     "$venv/bin/pip" install -q "transformers==4.36.2" safetensors >/dev/null 2>&1; then
    py="$venv/bin/python"
  else
    echo "hf_llama_fixture: transformers unavailable (no PyPI?); the reference is the formula forward" >&2
  fi
else
  py="$venv/bin/python"
fi
exec "$py" "$here/hf_llama_fixture.py" "$out"
