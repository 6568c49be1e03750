#!/usr/bin/env python3
"""The baselines of bitswitch's integer runtime at ImageNet scale: PyTorch eager FP32 and
torch.ao eager static INT8 of torchvision's quantizable ResNet-18, ResNet-50 and MobileNetV2
(torchvision.models.quantization: fuse_model, the engine's default qconfig, calibration on random
images, convert), at 3x224x224, batch 1 and 16, 1 and 2 threads. Engines: onednn for the ResNets,
qnnpack for MobileNetV2 (Debian's torch 1.13 has no fbgemm, and onednn fails on MobileNetV2).
Prints JSON with median milliseconds per batch. Weights are random: speed does not depend on them.
Run by scripts/bench_deploy.sh --imagenet with Debian's /usr/bin/python3 (python3-torch,
python3-torchvision). Usage: bench_deploy_torch_imagenet.py [--quick] [--models a,b]"""
import json
import sys
import time

import torch
import torch.ao.quantization as tq
from torchvision.models import quantization as qm

BUILDERS = {"resnet18": qm.resnet18, "resnet50": qm.resnet50, "mobilenetv2": qm.mobilenet_v2}
ENGINE = {"resnet18": "onednn", "resnet50": "onednn", "mobilenetv2": "qnnpack"}


def int8(name):
    engine = ENGINE[name]
    torch.backends.quantized.engine = engine
    m = BUILDERS[name](weights=None, quantize=False).eval()
    m.fuse_model()
    m.qconfig = tq.get_default_qconfig(engine)
    tq.prepare(m, inplace=True)
    with torch.no_grad():
        for _ in range(2):
            m(torch.randn(4, 3, 224, 224))
    tq.convert(m, inplace=True)
    return m, engine


def bench(fn, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)[len(times) // 2]


def main():
    quick = "--quick" in sys.argv
    names = list(BUILDERS)
    if "--models" in sys.argv:
        names = sys.argv[sys.argv.index("--models") + 1].split(",")
    out = []
    for name in names:
        fp32 = BUILDERS[name](weights=None, quantize=False).eval()
        q, engine = int8(name)
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for batch in (1, 16):
                x = torch.randn(batch, 3, 224, 224)
                reps = (3 if quick else 7) if batch == 1 else (1 if quick else 3)
                with torch.no_grad():
                    for variant, m in (("pytorch_fp32", fp32), ("torch_ao_int8_" + engine, q)):
                        torch.backends.quantized.engine = engine
                        try:
                            ms = bench(lambda: m(x), reps)
                        except Exception as e:  # reported, not hidden
                            out.append({"model": name, "variant": variant, "threads": threads, "batch": batch,
                                        "error": str(e)[:200]})
                            continue
                        out.append({"model": name, "variant": variant, "threads": threads, "batch": batch,
                                    "ms_per_batch": ms, "images_per_s": 1000.0 * batch / ms})
                        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"torch_version": torch.__version__, "speed": out}, indent=2))


if __name__ == "__main__":
    main()
