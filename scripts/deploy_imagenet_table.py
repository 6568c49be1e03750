#!/usr/bin/env python3
"""Markdown tables of the ImageNet-scale deployment benchmark (scripts/bench_deploy.sh --imagenet):
bitswitch's integer runtime at 8/4/2 bits, LibTorch FP32 and torch.ao eager INT8 side by side,
GMAC/s next to the measured int8 peak of the runtime's GEMM path (AVX-512 VNNI where the CPU has
it, else AVX2). Usage: deploy_imagenet_table.py OUT_DIR"""
import glob
import json
import subprocess
import sys
from datetime import datetime, timezone

out = sys.argv[1]


def best_rounds(pattern, rows_of, key):
    """Per-model, per-round files of bench_deploy.sh: each row's fastest round."""
    files = sorted(glob.glob(f"{out}/{pattern}"))
    if not files:
        sys.exit(f"deploy_imagenet_table: no {pattern} in {out} (run scripts/bench_deploy.sh --imagenet)")
    docs, best = [json.load(open(f)) for f in files], {}
    for d in docs:
        for r in rows_of(d):
            k = key(r)
            if k not in best or ("error" not in r and ("error" in best[k] or r["ms_per_batch"] < best[k]["ms_per_batch"])):
                best[k] = r
    return docs, best, len({f.rsplit("_r", 1)[1] for f in files})


_, th_best, _ = best_rounds("torch_*_r*.json", lambda d: d["speed"],
                            lambda r: (r["model"], r["variant"], r["threads"], r["batch"]))
th = {"speed": list(th_best.values())}
bs_docs, bs_best, rounds = best_rounds("bitswitch_*_r*.json",
                                        lambda d: [dict(r, model=m["model"]) for m in d["models"] for r in m["runs"]],
                                        lambda r: (r["model"], r["variant"], r["bits"], r["threads"], r["batch"]))
bs = {"models": []}
for d in bs_docs:
    for m in d["models"]:
        if not any(x["model"] == m["model"] for x in bs["models"]):
            bs["models"].append(dict(m, runs=[r for k, r in bs_best.items() if k[0] == m["model"]]))
# The peak microbenchmark runs once per round too: its best round (the highest rates).
peaks = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/int8_peak_r*.json"))]
if not peaks:
    sys.exit(f"deploy_imagenet_table: no int8_peak_r*.json in {out} (run scripts/bench_deploy.sh --imagenet)")
peak = {k: max(p[k] for p in peaks) for k in peaks[0] if isinstance(peaks[0][k], (int, float))}
order = ["resnet18", "resnet50", "mobilenetv2"]  # the script's order, then any other
bs["models"].sort(key=lambda m: (order.index(m["model"]) if m["model"] in order else len(order), m["model"]))
lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
model_name = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "?")
flags = next((l.split(":", 1)[1].split() for l in lscpu.splitlines() if l.startswith("Flags")), [])
simd = " ".join(f for f in flags if f.startswith(("avx2", "fma", "avx512f", "avx512_vnni", "avx512vbmi")))
vnni = "vnni_vpdpbusd_peak_gmac_per_s_per_core" in peak
load = open("/proc/loadavg").read().split()[:3]

print(f"## 0. ImageNet-scale integer runtime (3x224x224, 1000 classes)\n")
print(f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {model_name} ({simd}{'' if vnni else '; no AVX-512 VNNI'}), "
      f"2 cores; load average at the end of the run {' '.join(load)}. Each row is the median of its repetitions, "
      f"best of {rounds} rounds; within a round each model's bitswitch and torch rows run back to back. "
      f"Command: `scripts/bench_deploy.sh --imagenet`.\n")
avx2 = (f"the AVX2 sequence of the row GEMMs (u8/s8 widened to int16, vpmaddwd + vpaddd) "
        f"{peak['avx2_vpmaddwd_peak_gmac_per_s_per_core']:.1f} GMAC/s per core; the vpmaddubsw sequence (it saturates for "
        f"u8 x full-range s8; the runtime uses it only for 2- to 5-bit weight codes, where it is exact) "
        f"{peak['avx2_vpmaddubsw_peak_gmac_per_s_per_core']:.1f}; the AVX2 qgemm on a cache-resident 196x256x2304 shape "
        f"{peak['qgemm_avx2_196x256x2304_gmac_per_s']:.1f} GMAC/s")
if vnni:
    pk = peak["vnni_vpdpbusd_peak_gmac_per_s_per_core"]
    print(f"This CPU's int8 peak (`bench/bench_int8_peak.cpp`, register-only loops): AVX-512 VNNI vpdpbusd, the only "
          f"multiply of the runtime's panel GEMM, **{pk:.1f} GMAC/s per core** ({2 * pk:.1f} on 2 cores); the panel GEMM "
          f"on a cache-resident 196x256x2304 shape {peak['qgemm_vnni_panels_196x256x2304_gmac_per_s']:.1f} GMAC/s. "
          f"For reference, {avx2}. The % column is against the VNNI peak.\n")
else:
    pk = peak["avx2_vpmaddwd_peak_gmac_per_s_per_core"]
    print(f"This CPU's int8 peak (`bench/bench_int8_peak.cpp`, register-only loops), {avx2}. The % column is against "
          f"the vpmaddwd peak, **{pk:.1f} GMAC/s per core**.\n")
tv = {}
for r in th["speed"]:
    tv[(r["model"], r["variant"], r["threads"], r["batch"])] = r
for m in bs["models"]:
    name, macs = m["model"], m["macs_per_image"]
    print(f"### {name} ({macs / 1e9:.2f} GMAC per image, runtime GEMM path {m.get('isa', '?')})\n")
    print("| variant | threads | batch | ms/batch | images/s | GMAC/s | % of int8 peak (threads x per-core) |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for r in m["runs"]:
        label = ("LibTorch FP32" if r["variant"] == "libtorch_fp32"
                 else "bitswitch int w8, all-integer (8-bit first/last, quantized image)" if r["variant"] == "bitswitch_int_all8"
                 else f"bitswitch int w{r['bits']}")
        rows.append((r["threads"], r["batch"], label, r["ms_per_batch"], r["images_per_s"], r["gmac_per_s"]))
    for (mm, variant, t, b), r in tv.items():
        if mm != name:
            continue
        if "error" in r:
            rows.append((t, b, variant + " (failed: " + r["error"][:60] + ")", float("nan"), float("nan"), float("nan")))
        else:
            rows.append((t, b, variant, r["ms_per_batch"], r["images_per_s"], macs * b / r["ms_per_batch"] / 1e6))
    for t, b, label, ms, ips, g in sorted(rows, key=lambda x: (x[0], x[1], x[2])):
        pct = 100 * g / (pk * t) if g == g else float("nan")
        print(f"| {label} | {t} | {b} | {ms:.1f} | {ips:.1f} | {g:.1f} | {pct:.0f}% |")
    wb = m["weight_bytes"]
    print("\nResident weight bytes of the runtime: " + ", ".join(f"w{b}: {int(v):,}" for b, v in sorted(wb.items(), reverse=True))
          + (f"; all-integer w8: {int(m['weight_bytes_all8']):,}" if "weight_bytes_all8" in m else "") + "\n")
    # Ratios against the torch.ao engine of this model.
    eng = "torch_ao_int8_qnnpack" if name == "mobilenetv2" else "torch_ao_int8_onednn"
    for variant, what in (("bitswitch_int", "w8"), ("bitswitch_int_all8", "all-integer w8")):
        for t in (1, 2):
            for b in (1, 16):
                ours = next((r for r in m["runs"] if r["variant"] == variant and r["bits"] == 8 and r["threads"] == t and r["batch"] == b), None)
                ref = tv.get((name, eng, t, b))
                if ours and ref and "error" not in ref:
                    print(f"- {what} vs {eng}, {t} thread(s), batch {b}: throughput {ref['ms_per_batch'] / ours['ms_per_batch']:.2f}x, "
                          f"latency {ours['ms_per_batch'] / ref['ms_per_batch']:.2f}x of theirs")
    print()
