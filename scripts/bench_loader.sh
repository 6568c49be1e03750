#!/usr/bin/env bash
# Images per second of the image-folder loader alone (decode + RandomResizedCrop/flip or
# Resize+CenterCrop + normalise + batch), at 1 and 2 decoding threads, on 2048 generated
# 500x375 JPEGs; appends a markdown table to docs/benchmarks.md.
# Usage: scripts/bench_loader.sh [--images N] [...]  (a minute or two; run on an idle machine;
# extra arguments go to build/bench/bench_loader)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --build build --target bench_loader >/dev/null
mkdir -p runs
out=runs/bench_loader.jsonl
: >"$out"
build/bench/bench_loader --images 2048 --threads 1,2 --batch 64 "$@" | tee -a "$out"
build/bench/bench_loader --images 2048 --threads 1,2 --batch 64 --eval "$@" | tee -a "$out"
python3 - "$out" <<'PY' >>docs/benchmarks.md
import json, subprocess, sys, datetime
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], capture_output=True, text=True).stdout.strip()
print(f"\n## Image-folder loader alone\n\n`scripts/bench_loader.sh`, {datetime.date.today()}, {cpu}, "
      f"{subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores: {rows[0]['images']} generated "
      f"500x375 JPEGs (quality 90), batch {rows[0]['batch']}, crop 224, DCT-domain downscaling "
      f"{'on' if rows[0]['dct_scaling'] else 'off'}, timed over one epoch after a warm-up; decoding threads only "
      "(no training running).\n")
print("| transform | threads | images/s |\n|---|---|---|")
for r in rows:
    t = "RandomResizedCrop + flip" if r["mode"] == "train" else "Resize 256 + CenterCrop 224"
    print(f"| {t} | {r['threads']} | {r['images_per_second']:.0f} |")
PY
tail -12 docs/benchmarks.md
