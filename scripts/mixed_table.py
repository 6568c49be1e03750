#!/usr/bin/env python3
"""Writes the mixed-precision benchmark table (docs/mixed.md) from the files of
scripts/bench_mixed.sh. Usage: mixed_table.py OUT_DIR DOC.md TARGET..."""
import json, os, statistics, sys

out, doc, targets = sys.argv[1], sys.argv[2], [float(t) for t in sys.argv[3:]]


def load(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def fmt_t(t):
    return f"{t:g}"


def ilp(run, obj, t):
    p = load(f"{out}/{run}/at-{fmt_t(t)}-{obj}.json")
    if not p:
        return None, None
    c = p["candidates"][p["chosen"]]
    rnd = [x["accuracy"] for x in p["candidates"] if x["kind"] == "random"]
    return c, rnd


def uniform(run):
    p = load(f"{out}/{run}/pareto-reference.json") or {}
    return {int(c["avg_bits"]): c["accuracy"] for c in p.get("candidates", []) if c["kind"] == "uniform"}


rows = []
traces = load(f"{out}/traces.json") or {}
for t in targets:
    uni = uniform("hasb-hessian")
    for label, run, obj in [("HASB (Hessian roulette) + ILP, reference objective", "hasb-hessian", "reference"),
                            ("HASB (Hessian roulette) + ILP, HAWQ objective", "hasb-hessian", "hawq"),
                            ("SuperNet with uniform roulette + ILP, reference", "hasb-uniform", "reference"),
                            ("no HASB (starting checkpoint) + ILP, reference", "start", "reference")]:
        c, rnd = ilp(run, obj, t)
        if c is None:
            rows.append(f"| {fmt_t(t)} | {label} | (missing) | | |")
            continue
        rows.append(f"| {fmt_t(t)} | {label} | {c['avg_bits']:.2f} | {c['accuracy']:.2f} | {c['bytes'] / 1024:.1f} KiB |")
        if run == "hasb-hessian" and obj == "reference" and rnd:
            rows.append(f"| {fmt_t(t)} | random per-layer configs, same average, HASB model ({len(rnd)}): mean / min / max | "
                        f"{c['avg_bits']:.2f} | {statistics.mean(rnd):.2f} / {min(rnd):.2f} / {max(rnd):.2f} | |")
    for b in sorted(uni, reverse=True):
        if abs(b - t) <= 1:
            rows.append(f"| {fmt_t(t)} | uniform w{b} (HASB model) | {b} | {uni[b]:.2f} | |")

import datetime
table = [f"`scripts/bench_mixed.sh` into `{out}`, {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC, "
         f"{os.cpu_count()} CPUs ({os.uname().machine}).\n"]
table.append(f"Traces: {traces.get('images', '?')} images, {traces.get('probes', '?')} probes at "
             f"{traces.get('bits', '?')} bits. Top-1 test accuracy (%), no retraining after the search.\n")
table.append("| target avg bits | configuration | avg bits | top-1 (%) | weight bytes |\n|---|---|---|---|---|")
table += rows
text = "\n".join(table) + "\n"
# docs/mixed.md: replace the part between the results markers; another file: write the table.
begin, end = "<!-- results -->\n", "<!-- /results -->"
old = open(doc).read() if os.path.exists(doc) else ""
if begin in old and end in old:
    text = old[:old.index(begin) + len(begin)] + text + old[old.index(end):]
with open(doc, "w") as f:
    f.write(text)
print(f"wrote {doc}")
