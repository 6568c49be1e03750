#!/usr/bin/env python3
"""The one-way dependency graph of src/bitswitch, checked on every #include line.

Each folder may include itself and the folders below it (the transitive closure of DIRECT);
an #include that points up or sideways fails with the file, the line and the arrow. The integer
runtime (deploy/, all but export.*) must stay LibTorch-free: no file it includes, directly or
through other bitswitch headers, may include <torch/...>, <ATen/...> or <c10/...>.
Usage: layering.py SRC_DIR (the repository's src/). Exit status: the number of violations.
"""
import os
import re
import sys

# Folder -> folders it builds on directly (README "Layout"; CMakeLists.txt links the same way).
DIRECT = {
    "util": [],
    "format": ["util"],
    "data": ["util"],
    "quant": ["util"],
    "nn": ["quant"],
    "models": ["nn", "format"],
    "eval": ["models", "data"],
    "train": ["eval", "models", "data"],
    "mixed": ["train"],
    "deploy": ["mixed", "train", "models", "format"],  # LibTorch only in export.*, see below
    "cli": ["deploy", "mixed", "train"],
}
TORCH = re.compile(r'#\s*include\s*<(torch|ATen|c10)/')
LOCAL = re.compile(r'#\s*include\s*"bitswitch/([^/"]+)/([^"]+)"')


def closure(folder, seen=None):
    seen = set() if seen is None else seen
    for d in DIRECT[folder]:
        if d not in seen:
            seen.add(d)
            closure(d, seen)
    return seen


def main(src):
    root = os.path.join(src, "bitswitch")
    includes = {}  # "folder/file" -> [(line number, "folder/file")]
    torch_direct = set()
    for folder in sorted(os.listdir(root)):
        path = os.path.join(root, folder)
        if not os.path.isdir(path):
            continue
        for dirpath, _, files in os.walk(path):
            for f in sorted(files):
                if not f.endswith((".h", ".cpp")):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, f), root)
                inc = []
                with open(os.path.join(dirpath, f), encoding="utf-8") as fh:
                    for n, line in enumerate(fh, 1):
                        m = LOCAL.search(line)
                        if m:
                            inc.append((n, m.group(1) + "/" + m.group(2)))
                        if TORCH.search(line):
                            torch_direct.add(rel)
                includes[rel] = inc
    bad = 0
    for rel, inc in sorted(includes.items()):
        folder = rel.split("/")[0]
        if folder not in DIRECT:
            print(f"layering: src/bitswitch/{rel}: folder '{folder}' is not in the layer graph (tests/layering.py)")
            bad += 1
            continue
        allowed = closure(folder) | {folder}
        for n, target in inc:
            to = target.split("/")[0]
            if to not in allowed:
                print(f"layering: src/bitswitch/{rel}:{n}: includes {target}: arrow {folder} -> {to} points the wrong way "
                      f"({folder} may use {', '.join(sorted(allowed - {folder})) or 'nothing'})")
                bad += 1

    def uses_torch(rel, path=()):
        if rel in torch_direct:
            return list(path) + [rel]
        for _, target in includes.get(rel, []):
            if target not in path and target != rel:
                chain = uses_torch(target, path + (rel,))
                if chain:
                    return chain
        return None

    for rel in sorted(includes):
        if rel.startswith("deploy/") and not os.path.basename(rel).startswith("export."):
            chain = uses_torch(rel)
            if chain:
                print(f"layering: src/bitswitch/{rel}: the integer runtime must not need LibTorch, but "
                      f"{' -> '.join(chain)} includes a LibTorch header")
                bad += 1
    n_inc = sum(len(v) for v in includes.values())
    print(f"layering: {len(includes)} files, {n_inc} bitswitch includes, {bad} violation(s)")
    return min(bad, 100)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "src")))
