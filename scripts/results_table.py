#!/usr/bin/env python3
"""Writes the accuracy table of one or more bitswitch runs as Markdown (stdout).
Usage: results_table.py CONFIG RUN_DIR [RUN_DIR ...]"""
import json, os, platform, subprocess, sys, datetime

config, runs = sys.argv[1], sys.argv[2:]
cpu = "unknown CPU"
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
print("# Accuracy: ResNet-20 on Fashion-MNIST, one-shot joint training\n")
print(f"Produced by `scripts/bench_accuracy.sh` (config `{config}`) on {datetime.date.today()}, "
      f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}.\n")
print("Test accuracy (%) on the 10,000 Fashion-MNIST test images; differences against the FP32 model "
      "the joint phase started from.\n")
rows = []
widths = None
for run in runs:
    s = json.load(open(os.path.join(run, "summary.json")))
    c = json.load(open(os.path.join(run, "config.json")))
    acc = s["accuracy"]
    if widths is None:
        widths = [f"w{b}" for b in s["bits"]]
    name = f"{os.path.basename(run)} (alrs={str(c['alrs']).lower()}, kd={str(c['kd']).lower()}, seed {c['seed']})"
    cells = [f"{acc['fp32']:.2f}"] + [f"{acc[w]:.2f} ({acc[w] - acc['fp32']:+.2f})" for w in widths]
    rows.append(f"| {name} | " + " | ".join(cells) + f" | {s['seconds'] / 60:.1f} |")
print("| run | fp32 | " + " | ".join(widths) + " | training minutes |")
print("|---" * (len(widths) + 3) + "|")
print("\n".join(rows))
