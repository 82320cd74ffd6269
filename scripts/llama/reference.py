#!/usr/bin/env python3
"""An independent float64 reference for the Llama job (examples/llama): the Hugging Face Llama
architecture written out in NumPy (RMSNorm, rotate-half RoPE, grouped-query attention with a KV
cache, SwiGLU MLP, tied or untied head), reading the same folder the job reads.

  reference.py MODEL_DIR --prompt TEXT [--tokens N]

Tokenizes the prompt with Hugging Face `tokenizers` (or one token per byte when the folder has
no tokenizer.json), generates N tokens greedily, and prints JSON:
{"prompt_ids": [...], "tokens": [...], "logits": [[vocab floats] per generated token]}.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = data[begin:end]
        if entry["dtype"] == "F32":
            array = np.frombuffer(raw, dtype="<f4")
        elif entry["dtype"] == "F16":
            array = np.frombuffer(raw, dtype="<f2")
        elif entry["dtype"] == "BF16":
            array = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise SystemExit(f"reference: dtype {entry['dtype']} of {name} is not supported")
        tensors[name] = array.astype(np.float64).reshape(entry["shape"])
    return tensors


class Model:
    def __init__(self, folder):
        with open(os.path.join(folder, "config.json")) as f:
            c = json.load(f)
        self.hidden = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads") or self.heads
        self.head_dim = c.get("head_dim") or self.hidden // self.heads
        self.layers = c["num_hidden_layers"]
        self.eps = c.get("rms_norm_eps", 1e-6)
        self.theta = c.get("rope_theta", 10000.0)
        self.w = read_safetensors(os.path.join(folder, "model.safetensors"))
        self.head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        if c.get("tie_word_embeddings"):
            self.head = self.w["model.embed_tokens.weight"]
        self.cache = [([], []) for _ in range(self.layers)]
        self.position = 0

    def rms_norm(self, x, weight):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * weight

    def rope(self, x, start):
        # x: [heads, t, d]; pairs (i, i + d/2).
        half = self.head_dim // 2
        inv_freq = 1.0 / (self.theta ** (np.arange(half, dtype=np.float64) * 2 / self.head_dim))
        positions = np.arange(start, start + x.shape[1], dtype=np.float64)
        angles = np.outer(positions, inv_freq)
        cos, sin = np.cos(angles), np.sin(angles)
        x1, x2 = x[..., :half], x[..., half:]
        return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)

    def forward(self, ids):
        t = len(ids)
        start = self.position
        x = self.w["model.embed_tokens.weight"][ids]
        group = self.heads // self.kv_heads
        for layer in range(self.layers):
            p = f"model.layers.{layer}."
            h = self.rms_norm(x, self.w[p + "input_layernorm.weight"])
            q = (h @ self.w[p + "self_attn.q_proj.weight"].T).reshape(t, self.heads, self.head_dim).transpose(1, 0, 2)
            k = (h @ self.w[p + "self_attn.k_proj.weight"].T).reshape(t, self.kv_heads, self.head_dim).transpose(1, 0, 2)
            v = (h @ self.w[p + "self_attn.v_proj.weight"].T).reshape(t, self.kv_heads, self.head_dim).transpose(1, 0, 2)
            q, k = self.rope(q, start), self.rope(k, start)
            keys, values = self.cache[layer]
            keys = k if len(keys) == 0 else np.concatenate([keys, k], axis=1)
            values = v if len(values) == 0 else np.concatenate([values, v], axis=1)
            self.cache[layer] = (keys, values)
            total = keys.shape[1]
            keys_q = np.repeat(keys, group, axis=0)
            values_q = np.repeat(values, group, axis=0)
            scores = q @ keys_q.transpose(0, 2, 1) / np.sqrt(self.head_dim)
            visible = np.arange(total)[None, :] <= (start + np.arange(t))[:, None]
            scores = np.where(visible[None], scores, -np.inf)
            scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
            scores /= scores.sum(axis=-1, keepdims=True)
            attended = (scores @ values_q).transpose(1, 0, 2).reshape(t, self.heads * self.head_dim)
            x = x + attended @ self.w[p + "self_attn.o_proj.weight"].T
            h = self.rms_norm(x, self.w[p + "post_attention_layernorm.weight"])
            gate = h @ self.w[p + "mlp.gate_proj.weight"].T
            up = h @ self.w[p + "mlp.up_proj.weight"].T
            x = x + (gate / (1.0 + np.exp(-gate)) * up) @ self.w[p + "mlp.down_proj.weight"].T
        self.position += t
        return self.rms_norm(x[-1], self.w["model.norm.weight"]) @ self.head.T


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--tokens", type=int, default=8)
    args = parser.parse_args()
    tokenizer_path = os.path.join(args.model, "tokenizer.json")
    if os.path.exists(tokenizer_path):
        from tokenizers import Tokenizer

        ids = Tokenizer.from_file(tokenizer_path).encode(args.prompt, add_special_tokens=False).ids
    else:
        ids = list(args.prompt.encode())
    model = Model(args.model)
    logits = model.forward(ids)
    tokens, rows = [], []
    for step in range(args.tokens):
        rows.append(logits.tolist())
        token = int(np.argmax(logits))
        tokens.append(token)
        if step + 1 < args.tokens:
            logits = model.forward([token])
    json.dump({"prompt_ids": ids, "tokens": tokens, "logits": rows}, sys.stdout)


if __name__ == "__main__":
    main()
