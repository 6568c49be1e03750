#!/usr/bin/env bash
# The image-folder deployment path from the command line, as a user runs it: train ResNet-18 on a
# generated JPEG folder (two classes, 32x32 crops), export, then `infer --dataset imagefolder`
# (accuracy and images/s, and --verify against the checkpoint's integer-exact evaluation: no
# top-1 mismatch), `predict --top 2` (class names from the training folder, stored in the
# artifact) and `inspect --graph`. Usage: cli_imagefolder.sh BITSWITCH_BINARY PYTHON TMP_DIR
set -u
BIN=$1
PY=$2
TMP=$3
rm -rf "$TMP" && mkdir -p "$TMP"
failed=0
fail() {
  echo "FAIL: $*"
  failed=$((failed + 1))
}

# Two classes that differ in colour, 12 training and 6 validation images each.
"$PY" - "$TMP/imgs" <<'EOF' || { echo "FAIL: cannot write the JPEG folder"; exit 1; }
import os, random, sys
from PIL import Image
root = sys.argv[1]
rng = random.Random(7)
for split, n in (("train", 12), ("val", 6)):
    for c, (r, g, b) in (("ember", (200, 60, 40)), ("glacier", (40, 90, 210))):
        os.makedirs(os.path.join(root, split, c), exist_ok=True)
        for i in range(n):
            img = Image.new("RGB", (40, 40))
            img.putdata([tuple(max(0, min(255, v + rng.randint(-40, 40))) for v in (r, g, b)) for _ in range(1600)])
            img.save(os.path.join(root, split, c, f"{i}.jpg"), quality=90)
EOF

run() {  # run LOG args...: the command must succeed; its output goes to LOG
  local log=$1
  shift
  if ! "$BIN" "$@" >"$log" 2>&1; then
    fail "bitswitch $* exited non-zero:"
    tail -5 "$log"
    return 1
  fi
}

run "$TMP/train.log" train --model resnet18 --dataset imagefolder --data-dir "$TMP/imgs" --image-size 32 --bits 8,4 \
  --fp-epochs 1 --epochs 1 --batch 8 --threads 2 --workers 1 --log-interval 1000 --out "$TMP/run" || exit 1
run "$TMP/export.log" export --checkpoint "$TMP/run/checkpoint.pt" -o "$TMP/r18.safetensors" || exit 1

for bits in 8 4; do
  if run "$TMP/infer$bits.json" infer "$TMP/r18.safetensors" --bits "$bits" --dataset imagefolder \
    --data-dir "$TMP/imgs" --threads 2 --verify "$TMP/run/checkpoint.pt"; then
    "$PY" - "$TMP/infer$bits.json" "$bits" <<'EOF' || fail "infer --bits $bits: $(tr -d '\n' <"$TMP/infer$bits.json")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["dataset"] == "imagefolder" and r["width"] == "w" + sys.argv[2], r
assert r["images"] == 12, r                      # the val split, both classes
assert 0 <= r["accuracy"] <= 100 and r["images_per_s"] > 0, r
assert r["verify"]["top1_mismatches"] == 0, r    # runtime top-1 == integer-exact evaluation
assert r["verify"]["max_abs_logit_diff"] < 1e-3, r
EOF
  fi
done

# --profile: one entry per step of the plan, the conv steps with their rate.
if run "$TMP/profile.json" infer "$TMP/r18.safetensors" --bits 8 --dataset imagefolder --data-dir "$TMP/imgs" \
  --threads 1 --profile; then
  "$PY" - "$TMP/profile.json" <<'EOF' || fail "infer --profile: $(tr -d '\n' <"$TMP/profile.json")"
import json, sys
p = json.load(open(sys.argv[1]))["profile"]
assert len(p) > 20 and abs(sum(r["share"] for r in p) - 1) < 1e-6, p
assert p[0]["step"].startswith("input") and all(r["ms_per_image"] >= 0 for r in p), p
convs = [r for r in p if " int gemm " in r["step"]]
assert convs and all(r["gmac_per_s"] > 0 for r in convs), p
EOF
fi

if run "$TMP/predict.txt" predict "$TMP/r18.safetensors" "$TMP/imgs/val/ember/0.jpg" "$TMP/imgs/val/glacier/1.jpg" \
  --top 2 --threads 1; then
  # Per image: its path, then two ranked lines naming both classes (names from the artifact).
  [ "$(grep -c '^  *[12]\. ' "$TMP/predict.txt")" = 4 ] || fail "predict: expected 4 ranked lines: $(cat "$TMP/predict.txt")"
  [ "$(grep -cE '(ember|glacier) ' "$TMP/predict.txt")" = 4 ] || fail "predict: class names missing: $(cat "$TMP/predict.txt")"
  grep -q "ember/0.jpg" "$TMP/predict.txt" || fail "predict: image path not printed"
fi

if run "$TMP/inspect.txt" inspect "$TMP/r18.safetensors" --graph; then
  grep -q "^graph: .* nodes" "$TMP/inspect.txt" || fail "inspect --graph: no graph section"
  grep -qE " conv " "$TMP/inspect.txt" || fail "inspect --graph: no conv node listed"
fi

if [ $failed -ne 0 ]; then
  echo "cli_imagefolder: $failed check(s) failed"
  exit 1
fi
echo "cli_imagefolder: all checks passed"
