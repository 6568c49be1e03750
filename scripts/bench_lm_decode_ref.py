#!/usr/bin/env python3
"""Reference decoders for the LM decoding benchmark (issue 13; run by scripts/bench_lm_decode.sh).

The same Llama-shaped model with random FP32 weights (numpy, seeded), decoded the way the
integer decoder is measured: a prompt of P tokens in one batch (prefill tokens/s), then D tokens
one at a time with a KV cache and greedy choice (decode tokens/s), best of R repetitions, at 1
and 2 threads.

  torch-fp32   PyTorch eager (python3-torch), a plain Llama forward with a KV cache, FP32.
  torch-int8   the same model after torch.ao.quantization.quantize_dynamic(nn.Linear, qint8):
               INT8 weights, activations quantized per call (the head too).
  llama.cpp    llama-cpp-python (llama.cpp built from source by pip) on a GGUF file of the same
               weights written by the `gguf` package in F32 and converted by llama.cpp's own
               quantizer (llama_model_quantize) to Q8_0, Q4_0 and Q2_K.

Prints one JSON object per line. Benchmark only: nothing of the product imports this.
"""
import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np


def make_weights(a, seed):
    rng = np.random.default_rng(seed)
    hd = a.dim // a.heads

    def mat(rows, cols):
        return (rng.random((rows, cols), dtype=np.float32) * 2 - 1) / np.float32(np.sqrt(cols))

    w = {"embed": rng.random((a.vocab, a.dim), dtype=np.float32) * 2 - 1, "layers": []}
    for _ in range(a.layers):
        w["layers"].append({
            "q": mat(a.heads * hd, a.dim), "k": mat(a.kv_heads * hd, a.dim), "v": mat(a.kv_heads * hd, a.dim),
            "o": mat(a.dim, a.heads * hd), "gate": mat(a.mlp, a.dim), "up": mat(a.mlp, a.dim),
            "down": mat(a.dim, a.mlp),
        })
    w["head"] = mat(a.vocab, a.dim)
    return w


def prompt_tokens(a):
    return [int((i * 7919 + 13) % a.vocab) for i in range(a.prompt)]


# ---------------- PyTorch ----------------

def torch_model(a, w):
    import torch
    import torch.nn as nn

    hd = a.dim // a.heads

    class RMSNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(a.dim))

        def forward(self, x):
            return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))

    def linear(m):
        l = nn.Linear(m.shape[1], m.shape[0], bias=False)
        l.weight.data.copy_(torch.from_numpy(m))
        return l

    inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.outer(torch.arange(a.context, dtype=torch.float32), inv)
    emb = torch.cat([ang, ang], -1)
    cos_t, sin_t = emb.cos(), emb.sin()

    def rope(x, pos):  # x [heads, T, hd]
        c, s = cos_t[pos], sin_t[pos]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * c + torch.cat([-x2, x1], -1) * s

    class Block(nn.Module):
        def __init__(self, lw):
            super().__init__()
            self.n1, self.n2 = RMSNorm(), RMSNorm()
            self.q, self.k, self.v, self.o = linear(lw["q"]), linear(lw["k"]), linear(lw["v"]), linear(lw["o"])
            self.gate, self.up, self.down = linear(lw["gate"]), linear(lw["up"]), linear(lw["down"])

        def forward(self, x, pos, cache):
            t = x.shape[0]
            h = self.n1(x)
            q = self.q(h).view(t, a.heads, hd).transpose(0, 1)
            k = self.k(h).view(t, a.kv_heads, hd).transpose(0, 1)
            v = self.v(h).view(t, a.kv_heads, hd).transpose(0, 1)
            q, k = rope(q, pos), rope(k, pos)
            if cache:
                k = torch.cat([cache[0], k], 1)
                v = torch.cat([cache[1], v], 1)
            cache[:] = [k, v]
            rep = a.heads // a.kv_heads
            kk, vv = k.repeat_interleave(rep, 0), v.repeat_interleave(rep, 0)
            s = torch.matmul(q, kk.transpose(-2, -1)) / (hd ** 0.5)
            n = kk.shape[1]
            mask = torch.full((t, n), float("-inf")).triu(n - t + 1)
            o = torch.matmul(torch.softmax(s + mask, -1), vv).transpose(0, 1).reshape(t, a.dim)
            x = x + self.o(o)
            h = self.n2(x)
            return x + self.down(torch.nn.functional.silu(self.gate(h)) * self.up(h))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(a.vocab, a.dim)
            self.embed.weight.data.copy_(torch.from_numpy(w["embed"]))
            self.blocks = nn.ModuleList([Block(lw) for lw in w["layers"]])
            self.norm = RMSNorm()
            self.head = linear(w["head"])

        def forward(self, tokens, start, caches):
            pos = torch.arange(start, start + tokens.shape[0])
            x = self.embed(tokens)
            for b, c in zip(self.blocks, caches):
                x = b(x, pos, c)
            return self.head(self.norm(x[-1:]))

    return Model().eval()


def bench_torch(a, w, out):
    import torch

    fp32 = torch_model(a, w)
    int8 = torch.ao.quantization.quantize_dynamic(torch_model(a, w), {torch.nn.Linear}, dtype=torch.qint8)
    toks = torch.tensor(prompt_tokens(a))
    for name, model in (("torch-fp32", fp32), ("torch-int8", int8)):
        for th in a.threads:
            torch.set_num_threads(th)
            best_p, best_d = 1e30, 1e30
            with torch.no_grad():
                for _ in range(a.reps):
                    caches = [[] for _ in range(a.layers)]
                    t0 = time.perf_counter()
                    logits = model(toks, 0, caches)
                    t1 = time.perf_counter()
                    nxt = int(logits.argmax())
                    for i in range(a.decode):
                        logits = model(torch.tensor([nxt]), a.prompt + i, caches)
                        nxt = int(logits.argmax())
                    t2 = time.perf_counter()
                    best_p, best_d = min(best_p, t1 - t0), min(best_d, t2 - t1)
            out({"label": a.label, "engine": name, "threads": th, "prefill_tok_s": a.prompt / best_p,
                 "decode_tok_s": a.decode / best_d, "torch": torch.__version__})


# ---------------- llama.cpp ----------------

def write_gguf(a, w, path):
    import gguf

    hd = a.dim // a.heads
    wr = gguf.GGUFWriter(path, "llama")
    wr.add_context_length(a.context)
    wr.add_embedding_length(a.dim)
    wr.add_block_count(a.layers)
    wr.add_feed_forward_length(a.mlp)
    wr.add_head_count(a.heads)
    wr.add_head_count_kv(a.kv_heads)
    wr.add_rope_dimension_count(hd)
    wr.add_rope_freq_base(10000.0)
    wr.add_layer_norm_rms_eps(1e-5)
    wr.add_vocab_size(a.vocab)
    wr.add_file_type(0)  # all F32
    # No tokenizer: the benchmark feeds token ids.
    wr.add_tokenizer_model("none")
    # llama.cpp's own convert script permutes q and k for its rotary arrangement; with random
    # weights the permutation changes values, not speed.
    wr.add_tensor("token_embd.weight", w["embed"])
    for i, lw in enumerate(w["layers"]):
        wr.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(a.dim, np.float32))
        wr.add_tensor(f"blk.{i}.attn_q.weight", lw["q"])
        wr.add_tensor(f"blk.{i}.attn_k.weight", lw["k"])
        wr.add_tensor(f"blk.{i}.attn_v.weight", lw["v"])
        wr.add_tensor(f"blk.{i}.attn_output.weight", lw["o"])
        wr.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(a.dim, np.float32))
        wr.add_tensor(f"blk.{i}.ffn_gate.weight", lw["gate"])
        wr.add_tensor(f"blk.{i}.ffn_up.weight", lw["up"])
        wr.add_tensor(f"blk.{i}.ffn_down.weight", lw["down"])
    wr.add_tensor("output_norm.weight", np.ones(a.dim, np.float32))
    wr.add_tensor("output.weight", w["head"])
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def bench_llamacpp(a, w, out):
    import llama_cpp as lc

    os.makedirs(a.workdir, exist_ok=True)
    f32 = os.path.join(a.workdir, f"{a.label}-f32.gguf")
    if not os.path.exists(f32):
        write_gguf(a, w, f32 + ".tmp")
        os.replace(f32 + ".tmp", f32)
    lc.llama_backend_init()
    formats = {"Q8_0": lc.LLAMA_FTYPE_MOSTLY_Q8_0, "Q4_0": lc.LLAMA_FTYPE_MOSTLY_Q4_0, "Q2_K": lc.LLAMA_FTYPE_MOSTLY_Q2_K}
    toks = prompt_tokens(a)
    for fmt, ftype in formats.items():
        path = os.path.join(a.workdir, f"{a.label}-{fmt}.gguf")
        if not os.path.exists(path):
            p = lc.llama_model_quantize_default_params()
            p.ftype = ftype
            p.nthread = 2
            rc = lc.llama_model_quantize(f32.encode(), (path + ".tmp").encode(), ctypes.byref(p))
            if rc != 0:
                out({"label": a.label, "engine": f"llama.cpp {fmt}", "error": f"llama_model_quantize returned {rc}"})
                continue
            os.replace(path + ".tmp", path)
        mp = lc.llama_model_default_params()
        model = lc.llama_model_load_from_file(path.encode(), mp)
        if not model:
            out({"label": a.label, "engine": f"llama.cpp {fmt}", "error": "llama_model_load_from_file failed"})
            continue
        vocab_n = a.vocab
        for th in a.threads:
            cp = lc.llama_context_default_params()
            cp.n_ctx = a.context
            cp.n_batch = max(a.prompt, 1)
            cp.n_ubatch = max(a.prompt, 1)
            cp.n_threads = th
            cp.n_threads_batch = th
            ctx = lc.llama_init_from_model(model, cp)
            best_p, best_d = 1e30, 1e30
            for _ in range(a.reps):
                lc.llama_memory_clear(lc.llama_get_memory(ctx), True)
                arr = (lc.llama_token * len(toks))(*toks)
                t0 = time.perf_counter()
                rc = lc.llama_decode(ctx, lc.llama_batch_get_one(arr, len(toks)))
                t1 = time.perf_counter()
                assert rc == 0, f"llama_decode returned {rc}"
                logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(vocab_n,))
                nxt = int(logits.argmax())
                for _ in range(a.decode):
                    one = (lc.llama_token * 1)(nxt)
                    rc = lc.llama_decode(ctx, lc.llama_batch_get_one(one, 1))
                    assert rc == 0, f"llama_decode returned {rc}"
                    logits = np.ctypeslib.as_array(lc.llama_get_logits_ith(ctx, -1), shape=(vocab_n,))
                    nxt = int(logits.argmax())
                t2 = time.perf_counter()
                best_p, best_d = min(best_p, t1 - t0), min(best_d, t2 - t1)
            lc.llama_free(ctx)
            out({"label": a.label, "engine": f"llama.cpp {fmt}", "threads": th, "prefill_tok_s": a.prompt / best_p,
                 "decode_tok_s": a.decode / best_d, "file_bytes": os.path.getsize(path),
                 "llama_cpp_python": getattr(lc, "__version__", "?")})
        lc.llama_model_free(model)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", choices=["torch", "llama.cpp"], required=True)
    ap.add_argument("--label", default="model")
    for k, d in (("vocab", 2048), ("dim", 128), ("layers", 4), ("heads", 4), ("kv-heads", 2), ("mlp", 384),
                 ("context", 128), ("prompt", 32), ("decode", 64), ("reps", 3)):
        ap.add_argument("--" + k, type=int, default=d)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--workdir", default="/tmp/bench_lm_decode")
    a = ap.parse_args()
    a.threads = [int(t) for t in a.threads.split(",")]
    w = make_weights(a, 1)

    def out(d):
        print(json.dumps(d), flush=True)

    try:
        (bench_torch if a.engine == "torch" else bench_llamacpp)(a, w, out)
    except Exception as e:  # recorded in the table, not hidden
        out({"label": a.label, "engine": a.engine, "error": f"{type(e).__name__}: {e}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
