#!/usr/bin/env python3
"""Makes a small Llama-architecture model folder with deterministic random weights, in the
layout Hugging Face ships (config.json, model.safetensors, tokenizer.json), for tests and
benchmarks: real model weights cannot be downloaded here, and the job keeps its real loading code.

  make_model.py OUT [--layers N] [--hidden H] [--heads Q] [--kv-heads KV] [--intermediate I]
                    [--vocab V] [--dtype f32|f16|bf16] [--seed S] [--tie] [--no-tokenizer]

The tokenizer is a byte-level BPE trained by Hugging Face `tokenizers` on a fixed text (the
pre-tokenizer SmolLM ships: individual digits, then ByteLevel), with V tokens; --no-tokenizer
leaves it out (the job then uses its byte tokenizer) and keeps the vocabulary at V.
Needs numpy (and tokenizers unless --no-tokenizer).
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "A verifiable GPU marketplace hands jobs to idle providers, and verifiers check receipts.",
    "Numbers like 1234, 56.78 and 9,000 are split into single digits before merging.",
    "Tokens, tensors and traces: every op is defined bit for bit, on every backend.",
    "It's what they'll do: we've seen it, I'm sure, and you'd agree. Don't panic!",
    "Unicode too: café, naïve, Zürich, São Paulo, Ελληνικά, русский, 日本語, emoji 🙂.",
    "def main():\n    print('hello, world')\n    return 0\n",
    "Once upon a time, there was a little model that generated text one token at a time.",
]


def bf16_bytes(values):
    bits = values.astype(np.float32).view(np.uint32)
    # Round to nearest, ties to even (as torch does); NaN stays NaN.
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded.tobytes()


def write_safetensors(path, tensors, dtype):
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name, array in tensors:
        if dtype == "f32":
            data, tag = array.astype("<f4").tobytes(), "F32"
        elif dtype == "f16":
            data, tag = array.astype("<f2").tobytes(), "F16"
        else:
            data, tag = bf16_bytes(array), "BF16"
        header[name] = {"dtype": tag, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for data in blobs:
            f.write(data)
    os.replace(tmp, path)


def train_tokenizer(vocab):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--kv-heads", type=int, default=2)
    parser.add_argument("--intermediate", type=int, default=176)
    parser.add_argument("--vocab", type=int, default=384)
    parser.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tie", action="store_true")
    parser.add_argument("--no-tokenizer", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    vocab = args.vocab
    if not args.no_tokenizer:
        tokenizer = train_tokenizer(args.vocab)
        vocab = tokenizer.get_vocab_size()
        tokenizer.save(os.path.join(args.out, "tokenizer.json"))
    elif os.path.exists(os.path.join(args.out, "tokenizer.json")):
        os.remove(os.path.join(args.out, "tokenizer.json"))

    head_dim = args.hidden // args.heads
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args.hidden,
        "intermediate_size": args.intermediate,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads,
        "num_hidden_layers": args.layers,
        "vocab_size": vocab,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": args.tie,
        "max_position_embeddings": 2048,
        "bos_token_id": 0,
        "eos_token_id": 0,
        "torch_dtype": {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[args.dtype],
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    rng = np.random.default_rng(args.seed)

    def linear(out_features, in_features):
        return (rng.standard_normal((out_features, in_features)) / np.sqrt(in_features)).astype(np.float32)

    def norm(width):
        return (1.0 + 0.1 * rng.standard_normal(width)).astype(np.float32)

    tensors = [("model.embed_tokens.weight", rng.standard_normal((vocab, args.hidden)).astype(np.float32) * 0.5)]
    for layer in range(args.layers):
        p = f"model.layers.{layer}."
        tensors += [
            (p + "input_layernorm.weight", norm(args.hidden)),
            (p + "self_attn.q_proj.weight", linear(args.heads * head_dim, args.hidden)),
            (p + "self_attn.k_proj.weight", linear(args.kv_heads * head_dim, args.hidden)),
            (p + "self_attn.v_proj.weight", linear(args.kv_heads * head_dim, args.hidden)),
            (p + "self_attn.o_proj.weight", linear(args.hidden, args.heads * head_dim)),
            (p + "post_attention_layernorm.weight", norm(args.hidden)),
            (p + "mlp.gate_proj.weight", linear(args.intermediate, args.hidden)),
            (p + "mlp.up_proj.weight", linear(args.intermediate, args.hidden)),
            (p + "mlp.down_proj.weight", linear(args.hidden, args.intermediate)),
        ]
    tensors.append(("model.norm.weight", norm(args.hidden)))
    if not args.tie:
        tensors.append(("lm_head.weight", linear(vocab, args.hidden)))
    write_safetensors(os.path.join(args.out, "model.safetensors"), tensors, args.dtype)
    print(f"make_model: {args.out}: {args.layers} layers, hidden {args.hidden}, {args.heads}/{args.kv_heads} heads, vocab {vocab}, {args.dtype}", file=sys.stderr)


if __name__ == "__main__":
    main()
