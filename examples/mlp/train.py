"""Trains the MLP that examples/mlp runs, and writes its weights and a held-out batch.

    python3 examples/mlp/train.py        # needs numpy; rewrites data/*.safetensors

Three interleaved spirals in 2-D, a 2-32-32-3 ReLU MLP, full-batch gradient descent with
momentum, fixed seeds: the output files are the same on every run. The safetensors files are
written by hand (8-byte little-endian header length, JSON header, raw little-endian data), so
no safetensors package is needed.
"""
import json
import pathlib
import struct

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent


def spirals(n_per_class, rng):
    xs, ys = [], []
    for label in range(3):
        t = np.linspace(0.15, 1.0, n_per_class)
        angle = t * 5.0 + label * 2 * np.pi / 3 + rng.normal(0, 0.5, n_per_class)
        xs.append(np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1))
        ys.append(np.full(n_per_class, label))
    x = np.concatenate(xs).astype(np.float32)
    y = np.concatenate(ys).astype(np.int32)
    order = rng.permutation(len(y))
    return x[order], y[order]


def forward(params, x):
    h1 = np.maximum(x @ params["w1"] + params["b1"], 0)
    h2 = np.maximum(h1 @ params["w2"] + params["b2"], 0)
    return h1, h2, h2 @ params["w3"] + params["b3"]


def train(x, y, rng, steps=6000, lr=0.1, momentum=0.9):
    sizes = [(2, 32), (32, 32), (32, 3)]
    params = {}
    for i, (fan_in, fan_out) in enumerate(sizes, 1):
        params[f"w{i}"] = rng.normal(0, np.sqrt(2 / fan_in), (fan_in, fan_out))
        params[f"b{i}"] = np.zeros(fan_out)
    velocity = {k: np.zeros_like(v) for k, v in params.items()}
    onehot = np.eye(3)[y]
    for _ in range(steps):
        h1, h2, logits = forward(params, x)
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        d3 = (p - onehot) / len(y)
        grads = {"w3": h2.T @ d3, "b3": d3.sum(0)}
        d2 = (d3 @ params["w3"].T) * (h2 > 0)
        grads.update({"w2": h1.T @ d2, "b2": d2.sum(0)})
        d1 = (d2 @ params["w2"].T) * (h1 > 0)
        grads.update({"w1": x.T @ d1, "b1": d1.sum(0)})
        for k in params:
            velocity[k] = momentum * velocity[k] - lr * grads[k]
            params[k] += velocity[k]
    return {k: v.astype(np.float32) for k, v in params.items()}


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        dtype = {np.dtype(np.float32): "F32", np.dtype(np.int32): "I32"}[array.dtype]
        data = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    rng = np.random.default_rng(20261124)
    x_train, y_train = spirals(400, rng)
    x_test, y_test = spirals(86, rng)
    params = train(x_train.astype(np.float64), y_train, rng)
    accuracy = lambda x, y: float((forward(params, x)[2].argmax(1) == y).mean())
    print(f"train accuracy {accuracy(x_train, y_train):.4f}, held-out accuracy {accuracy(x_test, y_test):.4f}")
    (HERE / "data").mkdir(exist_ok=True)
    write_safetensors(HERE / "data" / "weights.safetensors", params)
    write_safetensors(HERE / "data" / "points.safetensors", {"x": x_test, "y": y_test})


if __name__ == "__main__":
    main()
