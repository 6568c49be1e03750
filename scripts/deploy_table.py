#!/usr/bin/env python3
"""Formats the outputs of scripts/bench_deploy.sh as docs/deploy-bench.md (stdout).
Usage: deploy_table.py OUT_DIR CHECKPOINT"""
import datetime, glob, json, os, platform, sys

out, ckpt = sys.argv[1], sys.argv[2]
bs = json.load(open(os.path.join(out, "bitswitch.json")))
tv = json.load(open(os.path.join(out, "torch.json")))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print("# Deployment benchmarks\n")
print(f"Produced by `scripts/bench_deploy.sh {ckpt}` on {datetime.date.today()}: {os.cpu_count()} cores ({cpu}), "
      f"{platform.system()} {platform.release()}; LibTorch 1.13.1 and PyTorch {tv['torch_version']} (Debian). "
      "Medians of repeated rounds; the variants of one table alternate within each round.\n")

print("## 1. Bytes on disk\n")
print("| file | bytes | vs FP32 checkpoint |\n|---|---|---|")
b = bs["bytes"]
base = b.get("fp32_model_checkpoint", b["fp32_checkpoint"])
names = {"fp32_model_checkpoint": "FP32 model checkpoint (fp32.pt)",
         "fp32_checkpoint": "multi-precision training checkpoint (checkpoint.pt, with optimizer state)",
         "int8_master": "INT8 master artifact (every width's scales and BNs)"}
for k, v in b.items():
    label = names.get(k, f"switched {k} artifact (packed codes)")
    print(f"| {label} | {v:,} | {v / base:.3f} |")

print("\n## 2. Switching time (INT8 codes -> l-bit packed codes, in memory)\n")
print("| model | weights | threads | width | ms |\n|---|---|---|---|---|")
for r in bs["switch"]:
    print(f"| {r['model']} | {r['weights']:,} | {r['threads']} | {r['width']} | {r['ms']:.2f} |")

print("\n## 3. Inference speed, ResNet-20 on 28x28 inputs\n")
print("bitswitch rows: `bench_deploy` (integer runtime `intB`, LibTorch FP32 of the same checkpoint). "
      "PyTorch rows: `bench_deploy_torch.py` (same architecture, eager FP32 and torch.ao static INT8 "
      "with the onednn engine), run right after in the same script.\n")
rows = [dict(r, source="bitswitch") for r in bs["speed"]] + [dict(r, source="pytorch") for r in tv["speed"]]
for threads in (1, 2):
    for batch in (1, 64):
        sel = [r for r in rows if r["threads"] == threads and r["batch"] == batch]
        ao = next((r for r in sel if r["variant"] == "torch_ao_int8_onednn"), None)
        print(f"threads {threads}, batch {batch}\n")
        print("| variant | ms per batch | images/s | vs torch.ao INT8 |\n|---|---|---|---|")
        for r in sorted(sel, key=lambda r: r["ms_per_batch"]):
            rel = f"{ao['ms_per_batch'] / r['ms_per_batch']:.2f}x" if ao else ""
            print(f"| {r['variant']} | {r['ms_per_batch']:.3f} | {r['images_per_s']:.0f} | {rel} |")
        print()

print("## 4. Train-deploy equivalence on the whole test set\n")
print("`bitswitch infer MASTER --bits B --verify CHECKPOINT`: the integer runtime against the LibTorch "
      "model's integer-exact evaluation (what `bitswitch eval` and training report).\n")
print("| width | runtime accuracy | images | top-1 mismatches | max abs logit difference |\n|---|---|---|---|---|")
for f in sorted(glob.glob(os.path.join(out, "infer_w*.json")), key=lambda p: -int(p.split("_w")[-1][:-5])):
    r = json.load(open(f))
    v = r["verify"]
    print(f"| {r['width']} | {r['accuracy']:.2f} | {r['images']} | {v['top1_mismatches']} | {v['max_abs_logit_diff']:.2e} |")
