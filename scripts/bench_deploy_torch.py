#!/usr/bin/env python3
"""What a user would pick instead of bitswitch's runtime: PyTorch eager FP32 inference and
PyTorch's own static INT8 quantization (eager torch.ao, the onednn engine) of the same
ResNet-20 (28x28 inputs, 1x1 projection shortcuts). Prints JSON with the median milliseconds per
batch for batch 1 and 64 at 1 and 2 threads. Run by scripts/bench_deploy.sh with Debian's
/usr/bin/python3 (python3-torch). Weights are random: speed does not depend on them."""
import json
import sys
import time

import torch
import torch.ao.quantization as tq
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.add = nn.quantized.FloatFunctional()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = self.down(x) if self.down is not None else x
        return self.relu2(self.add.add(y, s))


class ResNet20(nn.Module):
    def __init__(self, quant=False):
        super().__init__()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.stem = nn.Conv2d(1, 16, 3, 1, 1, bias=False)
        self.stem_bn = nn.BatchNorm2d(16)
        self.stem_relu = nn.ReLU()
        blocks, cin = [], 16
        for s, w in enumerate([16, 32, 64]):
            for b in range(3):
                blocks.append(Block(cin, w, 2 if s > 0 and b == 0 else 1))
                cin = w
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.quant(x)
        x = self.stem_relu(self.stem_bn(self.stem(x)))
        x = self.pool(self.blocks(x)).flatten(1)
        return self.dequant(self.fc(x))


def fuse(m):
    tq.fuse_modules(m, [["stem", "stem_bn", "stem_relu"]], inplace=True)
    for blk in m.blocks:
        tq.fuse_modules(blk, [["conv1", "bn1", "relu1"], ["conv2", "bn2"]], inplace=True)
        if blk.down is not None:
            tq.fuse_modules(blk.down, [["0", "1"]], inplace=True)


def int8_model():
    torch.backends.quantized.engine = "onednn"
    m = ResNet20().eval()
    fuse(m)
    m.qconfig = tq.get_default_qconfig("onednn")
    tq.prepare(m, inplace=True)
    with torch.no_grad():
        for _ in range(8):
            m(torch.randn(32, 1, 28, 28))
    tq.convert(m, inplace=True)
    return m


def bench(fn, iters, reps):
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        times.append((time.perf_counter() - t0) * 1000 / iters)
    return sorted(times)[len(times) // 2]


def main():
    quick = "--quick" in sys.argv
    reps = 3 if quick else 9
    fp32 = ResNet20().eval()
    q = int8_model()
    out = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        for batch in (1, 64):
            x = torch.randn(batch, 1, 28, 28)
            iters = (50 if quick else 300) if batch == 1 else (3 if quick else 20)
            with torch.no_grad():
                for name, m in (("pytorch_fp32", fp32), ("torch_ao_int8_onednn", q)):
                    ms = bench(lambda: m(x), iters, reps)
                    out.append({"variant": name, "threads": threads, "batch": batch, "ms_per_batch": ms,
                                "images_per_s": 1000.0 * batch / ms})
    print(json.dumps({"torch_version": torch.__version__, "speed": out}, indent=2))


if __name__ == "__main__":
    main()
