#!/usr/bin/env python3
"""Formats bench_quant's JSON and bench_train_step's tables as docs/benchmarks.md (stdout).
Usage: bench_table.py BENCH_QUANT_JSON STEP_TABLE..."""
import datetime, json, os, platform, sys

data = json.load(open(sys.argv[1]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print("# Benchmarks\n")
print(f"Produced by `scripts/bench_speed.sh` on {datetime.date.today()}: {os.cpu_count()} cores ({cpu}), "
      f"{platform.system()} {platform.release()}, LibTorch 1.13.1 (Debian). Medians of 3 repetitions.\n")
print("## 1. Fused quantizer kernels vs the composed-ATen reference\n")
print("Forward + backward of one tensor; activations `[128,16,28,28]` (ResNet-20's first stage at "
      "batch 128, 4 bits), weights `[64,64,3,3]`. Bandwidth counts the minimal traffic "
      "(forward reads x and writes y, backward reads x and dy and writes dx: 20 bytes per element; "
      "memcpy: read + write).\n")
rows = {}
for b in data["benchmarks"]:
    if b.get("aggregate_name") != "median":
        continue
    rows[b["run_name"]] = b
print("| kernel | threads | time (us) | GB/s | speed-up vs reference |")
print("|---|---|---|---|---|")
for name, b in sorted(rows.items()):
    base, _, arg = name.partition("/real_time")[0].rpartition("/") if name.count("/") > 1 else (name.split("/real_time")[0], "", "")
    parts = name.split("/")
    threads = parts[2] if len(parts) > 3 else "-"
    speed = ""
    if "/fused/" in name:
        ref = rows.get(name.replace("/fused/", "/reference/"))
        if ref:
            speed = f"{ref['real_time'] / b['real_time']:.1f}x"
    label = parts[0] if parts[1].startswith("real_time") else f"{parts[0]}/{parts[1]}"
    print(f"| {label} | {threads} | {b['real_time']:.0f} | "
          f"{b['bytes_per_second'] / 1e9:.1f} | {speed} |")
print("\nThe memcpy buffer (6.4 MB) can stay in the L3 cache; memcpy runs on one "
      "thread. The fused kernels split a tensor over LibTorch's threads in chunks of 16,384 elements "
      "(at::parallel_for; the scale-gradient partial sums are per chunk, so results do not depend on the "
      "thread count).")
print("\n## 2. Joint-training step vs plain FP32 training\n")
print("One joint iteration = four forward/backward/optimizer passes (widths 8, 6, 4, 2); the baseline is "
      "four FP32 steps of the same model on the same batches. Rounds alternate between variants. "
      "Both use `tune_allocator_for_training()`, as the `bitswitch` command does, and clear gradients "
      "to undefined before each pass (`train::clear_grads`), as the trainer does, so that a width's "
      "pass steps only the parameters it used (the shared weights, its activation scales and its BNs). "
      "The overhead is the quantizers' share of a joint iteration.\n")
for table in sys.argv[2:]:
    print(table + "\n")
