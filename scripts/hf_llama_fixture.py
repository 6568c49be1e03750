#!/usr/bin/python3
"""Test fixture for the Hugging Face Llama import (tests/test_lm_import.cpp).

Usage: scripts/hf_llama_fixture.py DIR

Writes two tiny random Llama checkpoints in the HF layout (model.safetensors + config.json):
DIR/untied (grouped-query attention, separate lm_head) and DIR/tied (tie_word_embeddings), each
with DIR/<name>/reference.safetensors holding input tokens and the reference logits.

The reference is Hugging Face transformers' own LlamaForCausalLM when it can be imported (run
this with a venv that has it: scripts/hf_llama_fixture.sh makes one), else a forward written
here from the formulas with plain torch. With transformers, both are computed and must agree,
so the formula forward is itself checked. The reference used is stored in the metadata.
"""
import json
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_torchvision import save_safetensors  # noqa: E402

CONFIGS = {
    "untied": dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                   rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False),
    "tied": dict(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
                 rms_norm_eps=1e-6, rope_theta=500.0, tie_word_embeddings=True),
}


def random_state(cfg, gen):
    """HF-named FP tensors with non-trivial values (norm weights too)."""
    d, m, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    hd = d // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    r = lambda *s: torch.randn(*s, generator=gen) * 0.3
    norm = lambda: 0.5 + torch.rand(d, generator=gen)
    sd = {"model.embed_tokens.weight": r(v, d)}
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        sd[p + "input_layernorm.weight"] = norm()
        sd[p + "self_attn.q_proj.weight"] = r(d, d)
        sd[p + "self_attn.k_proj.weight"] = r(kv, d)
        sd[p + "self_attn.v_proj.weight"] = r(kv, d)
        sd[p + "self_attn.o_proj.weight"] = r(d, d)
        sd[p + "post_attention_layernorm.weight"] = norm()
        sd[p + "mlp.gate_proj.weight"] = r(m, d)
        sd[p + "mlp.up_proj.weight"] = r(m, d)
        sd[p + "mlp.down_proj.weight"] = r(d, m)
    sd["model.norm.weight"] = norm()
    if not cfg["tie_word_embeddings"]:
        sd["lm_head.weight"] = r(v, d)
    return sd


def formula_forward(cfg, sd, tokens):
    """Llama forward from the formulas (RMSNorm, rotate-half RoPE, GQA causal attention, SwiGLU)."""
    d, h, kvh = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, eps, t = d // h, cfg["rms_norm_eps"], tokens.shape[1]

    def rms(x, w):
        return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))

    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.outer(torch.arange(t).float(), inv)
    cos, sin = torch.cat([ang, ang], -1).cos(), torch.cat([ang, ang], -1).sin()

    def rope(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        return x * cos + torch.cat([-x2, x1], -1) * sin

    x = sd["model.embed_tokens.weight"][tokens]
    b = x.shape[0]
    mask = torch.full((t, t), float("-inf")).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        y = rms(x, sd[p + "input_layernorm.weight"])
        q = (y @ sd[p + "self_attn.q_proj.weight"].T).view(b, t, h, hd).transpose(1, 2)
        k = (y @ sd[p + "self_attn.k_proj.weight"].T).view(b, t, kvh, hd).transpose(1, 2)
        v = (y @ sd[p + "self_attn.v_proj.weight"].T).view(b, t, kvh, hd).transpose(1, 2)
        q, k = rope(q), rope(k)
        k, v = k.repeat_interleave(h // kvh, 1), v.repeat_interleave(h // kvh, 1)
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd) + mask, -1) @ v
        x = x + a.transpose(1, 2).reshape(b, t, d) @ sd[p + "self_attn.o_proj.weight"].T
        y = rms(x, sd[p + "post_attention_layernorm.weight"])
        g = torch.nn.functional.silu(y @ sd[p + "mlp.gate_proj.weight"].T) * (y @ sd[p + "mlp.up_proj.weight"].T)
        x = x + g @ sd[p + "mlp.down_proj.weight"].T
    x = rms(x, sd["model.norm.weight"])
    head = sd["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else sd["lm_head.weight"]
    return x @ head.T


def hf_forward(cfg, sd, tokens):
    from transformers import LlamaConfig, LlamaForCausalLM
    model = LlamaForCausalLM(LlamaConfig(**cfg, attention_bias=False)).eval()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    allowed = {"lm_head.weight"} if cfg["tie_word_embeddings"] else set()
    assert set(missing) <= allowed and not [u for u in unexpected if "inv_freq" not in u], (missing, unexpected)
    with torch.no_grad():
        return model(tokens).logits, model


def main():
    out = sys.argv[1]
    for name, cfg in CONFIGS.items():
        gen = torch.Generator().manual_seed(12 + len(name))
        sd = random_state(cfg, gen)
        tokens = torch.randint(0, cfg["vocab_size"], (2, cfg["max_position_embeddings"]), generator=gen)
        ours = formula_forward(cfg, sd, tokens)
        reference = "formulas (python3-torch)"
        try:
            logits, model = hf_forward(cfg, sd, tokens)
            import transformers
            reference = f"transformers {transformers.__version__} LlamaForCausalLM"
            err = (logits - ours).abs().max().item()
            assert err < 1e-4 * max(1.0, logits.abs().max().item()), f"{name}: formulas differ from HF by {err}"
        except ImportError:
            logits, model = ours, None
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        if model is not None:
            model.save_pretrained(d, safe_serialization=True)  # HF's own file and config.json
        else:
            save_safetensors(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
            with open(os.path.join(d, "config.json"), "w") as f:
                json.dump(dict(cfg, architectures=["LlamaForCausalLM"], model_type="llama"), f, indent=2)
        save_safetensors(os.path.join(d, "reference.safetensors"),
                         {"tokens": tokens, "logits": logits}, {"reference": reference})
        print(f"{d}: reference {reference}, logits {tuple(logits.shape)}")


if __name__ == "__main__":
    main()
