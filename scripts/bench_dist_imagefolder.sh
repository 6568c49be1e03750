#!/usr/bin/env bash
# Data-parallel benchmark on an image folder: ResNet-18 joint training ({8,6,4,2}, a step per
# width) on a generated folder of JPEGs at 1 and 2 processes on this machine, each rank decoding
# only its shard of every global batch; training images/s and the all-reduce wait per optimizer
# step, from the runs' metrics.jsonl. Writes the table into docs/distributed.md (between the
# bench-imagefolder markers).
# (scripts/bench_dist.sh runs the jobs and writes the table.)
# Usage: scripts/bench_dist_imagefolder.sh [--steps 10] [--batch 32] [--image-size 64]
#                                          [--nprocs "1 2"] [--workers 1] [--no-doc]
# The folder (RUNS/jpeg-folder-<size>: 10 classes, steps * batch training images and 64
# validation images of 1.25 x 0.94 the crop size, written by python3-pil) is generated once.
# Run it on an otherwise idle machine; other load makes the numbers meaningless.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=10 batch=32 size=64 nprocs="1 2" workers=1 doc=1
args="$*"
while [ $# -gt 0 ]; do
  case $1 in
    --steps) steps=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --image-size) size=$2; shift 2 ;;
    --nprocs) nprocs=$2; shift 2 ;;
    --workers) workers=$2; shift 2 ;;
    --no-doc) doc=0; shift ;;
    *) echo "bench_dist_imagefolder.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
BIN=${BIN:-build/bitswitch}
PY=${PY:-/usr/bin/python3}
[ -x "$BIN" ] || { echo "bench_dist_imagefolder.sh: $BIN not built (cmake --build build --target bitswitch_cli)" >&2; exit 1; }
mkdir -p runs
train_n=$((steps * batch))
data=runs/jpeg-folder-$size-$train_n
if [ ! -d "$data" ]; then
  "$PY" - "$data" "$train_n" 64 "$size" <<'EOF2'
# Photo-like JPEGs: smooth colour fields with a few edges and noise, per class a colour cast.
import os, random, sys
from PIL import Image, ImageDraw, ImageFilter
root, n_train, n_val, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
tmp = root + ".tmp"
rng = random.Random(1)
for split, n in (("train", n_train), ("val", n_val)):
    for i in range(n):
        c = i % 10
        d = os.path.join(tmp, split, f"n{c:08d}")
        os.makedirs(d, exist_ok=True)
        w, h = size * 5 // 4 + rng.randrange(8), size * 15 // 16 + rng.randrange(8)
        img = Image.new("RGB", (w, h), (25 * c, 255 - 20 * c, rng.randrange(256)))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x0, y0 = rng.randrange(w), rng.randrange(h)
            draw.ellipse([x0, y0, x0 + rng.randrange(1, w), y0 + rng.randrange(1, h)],
                         fill=tuple(rng.randrange(256) for _ in range(3)))
        img = img.filter(ImageFilter.GaussianBlur(1))
        img.save(os.path.join(d, f"{i:06d}.JPEG"), quality=90)
os.rename(tmp, root)
EOF2
fi
scripts/bench_dist.sh --model resnet18 --dataset imagefolder --data-dir "$data" --image-size "$size" \
  --workers "$workers" --steps "$steps" --batch "$batch" --nprocs "$nprocs" --marker bench-imagefolder \
  --describe "ResNet-18 joint training on a generated JPEG folder (10 classes, $train_n training images
about $((size * 5 / 4))x$((size * 15 / 16)) px, RandomResizedCrop ${size}x$size + flip, $workers decoding thread(s) per process,
each rank decoding its shard; 2 processes on 2 cores share them)" \
  --command "scripts/bench_dist_imagefolder.sh $args" $([ $doc = 1 ] || echo --no-doc)
