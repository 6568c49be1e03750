#!/usr/bin/env bash
# Screenshot check of a `bitswitch report` page: renders it in headless Chromium (installed from
# Debian if missing; not part of setup.sh because it is large) and checks that the PNG is a real
# rendering: the expected size, enough colors, and enough non-white pixels (the charts).
# Usage: scripts/check_report.sh REPORT.html [SCREENSHOT.png]
set -euo pipefail
html=${1:?usage: scripts/check_report.sh REPORT.html [SCREENSHOT.png]}
png=${2:-${html%.html}.png}
[ -f "$html" ] || { echo "check_report: '$html' does not exist" >&2; exit 1; }
if ! command -v chromium >/dev/null; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "[check_report] installing chromium (Debian package)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
W=1100
H=3000
rm -f "$png"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-extensions \
  --window-size=$W,$H --screenshot="$png" "file://$(realpath "$html")" >/dev/null 2>&1 || true
[ -s "$png" ] || { echo "check_report: chromium wrote no screenshot '$png'" >&2; exit 1; }
python3 - "$png" "$W" "$H" <<'PY'
import struct, sys, zlib
path, want_w, want_h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = open(path, "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, ihdr = 8, b"", None
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR": ihdr = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT": idat += body
    pos += 12 + n
w, h, depth, ctype = ihdr[0], ihdr[1], ihdr[2], ihdr[3]
assert depth == 8 and ctype in (2, 6), f"unexpected PNG format (depth {depth}, color type {ctype})"
bpp = 3 if ctype == 2 else 4
raw, stride = zlib.decompress(idat), w * bpp
prev, colors, ink = bytearray(stride), set(), 0
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):  # PNG filters: none, sub, up, average, Paeth
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp * 2):  # every other pixel is enough
        px = bytes(line[x:x + 3])
        colors.add(px)
        ink += px != b"\xff\xff\xff"
    prev = line
frac = ink / (w * h / 2)
print(f"[check_report] {path}: {w}x{h}, {len(colors)} colors, {100 * frac:.1f}% non-white pixels")
assert (w, h) == (want_w, want_h), f"size {w}x{h}, expected {want_w}x{want_h}"
assert len(colors) >= 16, "too few colors: the charts did not render"
assert frac > 0.02, "almost blank page"
print("[check_report] OK")
PY
