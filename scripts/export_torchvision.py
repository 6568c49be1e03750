#!/usr/bin/python3
"""Write a torchvision model's FP32 state dict as safetensors, for `bitswitch train --pretrained`.

Usage:
  scripts/export_torchvision.py resnet18 resnet18.safetensors              # torchvision's weights
  scripts/export_torchvision.py resnet50 r50.safetensors --state-dict my.pth  # your own state dict
  scripts/export_torchvision.py --fixture DIR   # test fixture (random seeded ResNet-18, see below)
  scripts/export_torchvision.py resnet18 runs/x/fp32.safetensors --load  # check a bitswitch file
                                     # loads into torchvision (strict), e.g. its FP32 phase output

Models: resnet18, resnet50, mobilenetv2 (torchvision's mobilenet_v2). The names stay
torchvision's (`layer1.0.conv1.weight`, `features.1.conv.0.0.weight`, `classifier.1.bias`);
bitswitch maps them to its own modules (src/bitswitch/models/pretrained.h). Floating tensors
are written as F32, `num_batches_tracked` as I64.

The safetensors format is written here by hand, so only python3-torch and
python3-torchvision are needed: an 8-byte little-endian header length, a JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}, then the raw
little-endian bytes of every tensor, back to back.
"""
import argparse
import json
import os
import struct
import sys

import torch
import torchvision

MODELS = {"resnet18": "resnet18", "resnet50": "resnet50", "mobilenetv2": "mobilenet_v2"}
DTYPES = {torch.float32: "F32", torch.int64: "I64"}


def save_safetensors(path, tensors, metadata=None):
    """tensors: {name: torch.Tensor}; floating tensors become F32, integer ones I64."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        t = t.to(torch.float32) if t.is_floating_point() else t.to(torch.int64)
        data = t.numpy().tobytes()  # numpy writes native (little-endian on x86/arm) order
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def read_safetensors(path):
    """The inverse of save_safetensors: {name: torch.Tensor}, metadata (F32 and I64 only)."""
    import numpy as np
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    types = {"F32": np.float32, "I64": np.int64}
    out = {}
    for name, h in header.items():
        begin, end = h["data_offsets"]
        raw = np.frombuffer(data[8 + n + begin:8 + n + end], dtype=types[h["dtype"]])
        out[name] = torch.from_numpy(raw.reshape(h["shape"]).copy())
    return out, meta


def build(name, num_classes=1000):
    return getattr(torchvision.models, MODELS[name])(weights=None, num_classes=num_classes)


def write_fixture(out_dir):
    """A seeded, randomly initialised ResNet-18 with non-trivial BN statistics, its weights,
    an input and the logits torchvision computes in eval mode; plus the names and shapes of
    every state-dict tensor of the three models (for the name-mapping test)."""
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(1234)
    model = build("resnet18").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(int(torch.randint(1, 1000, ()).item()))
        x = torch.randn(2, 3, 224, 224)
        logits = model(x)
    save_safetensors(os.path.join(out_dir, "resnet18.safetensors"), model.state_dict(),
                     {"source": "torchvision " + torchvision.__version__, "model": "resnet18"})
    save_safetensors(os.path.join(out_dir, "io.safetensors"), {"input": x, "logits": logits})
    names = {}
    for name in MODELS:
        m = build(name)
        names[name] = {"state_dict": {k: list(v.shape) for k, v in m.state_dict().items()},
                       "parameters": sum(p.numel() for p in m.parameters())}
    with open(os.path.join(out_dir, "names.json"), "w") as f:
        json.dump(names, f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", choices=sorted(MODELS))
    ap.add_argument("out", nargs="?", help="output .safetensors file")
    ap.add_argument("--state-dict", help="a .pth state dict to export instead of torchvision's weights")
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--fixture", metavar="DIR", help="write the test fixture into DIR and exit")
    ap.add_argument("--load", action="store_true",
                    help="instead of writing OUT, load it into torchvision's MODEL (strict) and report")
    a = ap.parse_args()
    if a.fixture:
        write_fixture(a.fixture)
        return 0
    if not a.model or not a.out:
        ap.error("MODEL and OUT are required (or --fixture DIR)")
    if a.load:
        sd, meta = read_safetensors(a.out)
        classes = sd["fc.bias" if "fc.bias" in sd else "classifier.1.bias"].shape[0]
        model = build(a.model, classes)
        model.load_state_dict(sd, strict=True)
        print(f"{a.out}: {len(sd)} tensors load into torchvision {a.model} ({classes} classes); metadata {meta}",
              file=sys.stderr)
        return 0
    if a.state_dict:
        model = build(a.model, a.num_classes)
        model.load_state_dict(torch.load(a.state_dict, map_location="cpu"))
    else:  # torchvision's ImageNet weights (downloaded by torchvision on first use)
        model = getattr(torchvision.models, MODELS[a.model])(weights="DEFAULT")
    save_safetensors(a.out, model.state_dict(), {"source": "torchvision " + torchvision.__version__, "model": a.model})
    print(f"wrote {a.out}: {len(model.state_dict())} tensors", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
