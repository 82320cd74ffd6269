"""Writes spec/vectors/ops.txt: test vectors for every tensor op, computed by NumPy, an oracle
independent of gridbox's kernels.

    python3 -m pip install numpy && python3 spec/vectors/generate.py

`gridbox-compute` runs every case through its CPU kernels (`cpu::vectors` tests) and checks the
result against the oracle within the case's tolerance:
- `exact`: bit for bit (NaN matches NaN). Ops whose result is one IEEE operation per element
  (add sub mul div neg relu sqrt) or a copy (permute reshape slice concat gather).
- `ulps N`: each element within N units in the last place of the float64 result rounded to
  float32 (transcendentals: the bounds spec/determinism.md states).
- `rel X`: |got - want| <= X * max |want| over the case (matmul, conv2d, reductions, softmax,
  norms; the reference is float64): NumPy sums in its own order, so only the size of the
  difference is checked. NaN must meet NaN.

The first line holds the FNV-1a 64 hash of this file; the Rust test fails when it differs,
so vectors can't silently go stale.

Line format: `op|params|tolerance|input;input...|output` where each tensor is
`dtype:dims:hexbits,...` (dtype f32, i32, f16 or bf16; dims `2x3`, `-` for a scalar; 8 hex
digits an element, 4 for f16 and bf16), params are comma-separated integers.
"""
import pathlib

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
RNG = np.random.default_rng(20261124)


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class Bf16:
    """A bf16 tensor, held as its bit patterns (NumPy has no bfloat16)."""

    def __init__(self, bits):
        self.bits = np.asarray(bits, dtype=np.uint16)


def enc(array):
    if isinstance(array, Bf16):
        dtype, array, digits = "bf16", array.bits, 4
    else:
        array = np.asarray(array)
        dtype = {np.dtype(np.float32): "f32", np.dtype(np.float16): "f16"}.get(array.dtype, "i32")
        digits = 4 if dtype == "f16" else 8
    dims = "x".join(str(d) for d in array.shape) if array.ndim else "-"
    if digits == 4:
        bits = array.reshape(-1).view(np.uint16)
    else:
        bits = array.astype(np.float32 if dtype == "f32" else np.int32).reshape(-1).view(np.uint32)
    return f"{dtype}:{dims}:" + ",".join(f"{b:0{digits}x}" for b in bits)


def rand(*shape, scale=2.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def with_specials(x):
    flat = x.reshape(-1)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -3e38], dtype=np.float32)
    n = min(len(flat), len(specials))
    flat[:n] = specials[:n]
    return x


lines = []


def case(op, params, tolerance, inputs, output):
    lines.append("|".join([op, ",".join(str(p) for p in params), tolerance, ";".join(enc(i) for i in inputs), enc(output)]))


SIZES = [0, 1, 2, 7, 31, 32, 33, 97]

# Elementwise binary, exact: NumPy's float32 ops are the IEEE operations.
for op, fn in [("add", np.add), ("sub", np.subtract), ("mul", np.multiply), ("div", np.divide)]:
    for a_shape, b_shape in [((33,), (33,)), ((3, 1, 5), (4, 1)), ((1,), (7,)), ((0, 3), (3,)), ((2, 13), ())]:
        a, b = with_specials(rand(*a_shape)), rand(*b_shape) if b_shape else np.float32(RNG.standard_normal())
        with np.errstate(all="ignore"):
            case(op, [], "exact", [a, np.asarray(b, dtype=np.float32)], fn(a, b).astype(np.float32))

with np.errstate(all="ignore"):
    for n in SIZES:
        x = with_specials(rand(n))
        case("neg", [], "exact", [x], -x)
        case("relu", [], "exact", [x], np.where(x > 0, x, np.where(np.isnan(x), x, np.float32(0))))
        case("sqrt", [], "exact", [x], np.sqrt(x))
        x64 = x.astype(np.float64)
        case("exp", [], "ulps 1", [x], np.exp(x64).astype(np.float32))
        case("log", [], "ulps 1", [x], np.log(x64).astype(np.float32))
        case("tanh", [], "ulps 2", [x], np.tanh(x64).astype(np.float32))
        sig = np.where(x64 >= 0, 1 / (1 + np.exp(-x64)), np.exp(x64) / (1 + np.exp(x64)))
        case("sigmoid", [], "ulps 2", [x], sig.astype(np.float32))
        k2, k1 = np.float64(np.float32(2 * np.sqrt(2 / np.pi))), np.float64(np.float32(0.044715))
        w = k2 * (x64 + k1 * x64 ** 3)
        gelu = np.where(np.isneginf(x64), -0.0, x64 * np.where(w >= 0, 1 / (1 + np.exp(-w)), np.exp(w) / (1 + np.exp(w))))
        gelu = np.where(np.isposinf(x64), x64, gelu)
        case("gelu", [], "ulps 3", [x], gelu.astype(np.float32))
        silu = np.where(np.isneginf(x64), -0.0, x64 * sig)
        case("silu", [], "ulps 3", [x], silu.astype(np.float32))

# matmul with batch broadcasting, against float64.
for a_shape, b_shape in [((1, 1), (1, 1)), ((7, 13), (13, 5)), ((33, 31), (31, 2)), ((2, 1, 3, 4), (5, 4, 7)), ((0, 3), (3, 4)), ((3, 0), (0, 4)), ((4, 97), (97, 3))]:
    a, b = rand(*a_shape), rand(*b_shape)
    case("matmul", [], "rel 1e-6", [a, b], (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32))

# Reductions over each axis.
for shape in [(97,), (3, 33, 5), (2, 0, 4), (1, 64)]:
    x = rand(*shape)
    for axis in range(-1, len(shape)):
        for keep in (0, 1):
            x64 = x.astype(np.float64)
            case("sum", [axis, keep], "rel 1e-6", [x], x64.sum(axis=axis, keepdims=bool(keep)).astype(np.float32))
            case("mean", [axis, keep], "rel 1e-6", [x], (x64.mean(axis=axis, keepdims=bool(keep)) if x.size else x64.sum(axis=axis, keepdims=bool(keep)) / max(shape[axis], 1) * np.nan).astype(np.float32))
            if shape[axis] > 0:
                case("max", [axis, keep], "exact", [x], x.max(axis=axis, keepdims=bool(keep)))

# argmax over the last axis: NumPy's argmax also takes the first of ties and the first NaN, and
# compares -0.0 and +0.0 equal. Few distinct values, so ties are common.
for shape in [(1,), (5, 33), (2, 3, 97), (0, 4)]:
    x = np.round(rand(*shape)).astype(np.float32)
    if x.size:
        flat = x.reshape(-1)
        flat[::11] = -0.0
        flat[3::29] = np.inf
        flat[7::31] = np.nan
    case("argmax", [], "exact", [x], np.argmax(x, axis=-1).astype(np.int32) if x.size else np.zeros(shape[:-1], dtype=np.int32))

# rope over [..., T, D], pairs (i, i + D/2), against float64 (frequencies theta^(-2i/D), angles
# (offset + t) * freq and their sin and cos all in float64). gridbox rounds the angle to f32
# first, so the tolerance allows the angle's rounding at these positions (below 50).
def rope(x, offset, theta):
    t_len, d = x.shape[-2], x.shape[-1]
    half = d // 2
    freq = np.float64(theta) ** (-(2 * np.arange(half)) / d)
    angle = (offset + np.arange(t_len))[:, None] * freq[None, :]
    c, s = np.cos(angle), np.sin(angle)
    x64 = x.astype(np.float64)
    x1, x2 = x64[..., :half], x64[..., half:]
    return np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(np.float32)


for shape, offset, theta in [((1, 2), 0, 10000.0), ((3, 7, 64), 5, 10000.0), ((2, 9, 32), 17, 500000.0), ((4, 1, 96), 40, 2.5), ((0, 3, 8), 0, 10000.0)]:
    x = rand(*shape)
    theta32 = np.float32(theta)
    case("rope", [offset, int(theta32.view(np.uint32))], "rel 2e-5", [x], rope(x, offset, float(theta32)))

# attention: causal, grouped-query heads, against float64 (scores, softmax and the weighted sum).
def attention(q, k, v, offset, scale):
    hq, t_len, _ = q.shape
    hkv, s_len, _ = k.shape
    g = np.arange(hq) // (hq // hkv)
    q64, k64, v64 = (a.astype(np.float64) for a in (q, k, v))
    scores = np.einsum("htd,hsd->hts", q64, k64[g]) * np.float64(scale)
    masked = np.arange(s_len)[None, :] > offset + np.arange(t_len)[:, None]
    scores = np.where(masked[None], -np.inf, scores)
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    p = e / e.sum(axis=-1, keepdims=True)
    return np.einsum("hts,hsd->htd", p, v64[g]).astype(np.float32)


for hq, hkv, t_len, s_len, d, offset in [(1, 1, 1, 1, 1, 0), (9, 3, 4, 4, 64, 0), (4, 2, 1, 33, 16, 32), (2, 1, 5, 12, 8, 3), (3, 3, 0, 2, 4, 0)]:
    q, k, v = rand(hq, t_len, d), rand(hkv, s_len, d), rand(hkv, s_len, d)
    scale = np.float32(1 / np.sqrt(d))
    case("attention", [offset, int(scale.view(np.uint32))], "rel 1e-5", [q, k, v], attention(q, k, v, offset, float(scale)))

# Softmax and norms over the last axis.
for shape in [(1,), (5, 33), (2, 3, 97)]:
    x = rand(*shape)
    x64 = x.astype(np.float64)
    e = np.exp(x64 - x64.max(axis=-1, keepdims=True))
    case("softmax", [], "rel 1e-6", [x], (e / e.sum(axis=-1, keepdims=True)).astype(np.float32))
    d = shape[-1]
    gamma, beta = rand(d), rand(d)
    eps = np.float32(1e-5)
    mean = x64.mean(axis=-1, keepdims=True)
    var = ((x64 - mean) ** 2).mean(axis=-1, keepdims=True)
    ln = (x64 - mean) / np.sqrt(var + eps) * gamma + beta
    case("layer_norm", [int(eps.view(np.uint32))], "rel 1e-5", [x, gamma, beta], ln.astype(np.float32))
    rms = x64 / np.sqrt((x64 ** 2).mean(axis=-1, keepdims=True) + eps) * gamma
    case("rms_norm", [int(eps.view(np.uint32))], "rel 1e-5", [x, gamma], rms.astype(np.float32))

# Layout ops, exact.
x = rand(2, 3, 5)
case("permute", [2, 0, 1], "exact", [x], np.transpose(x, (2, 0, 1)))
case("permute", [0, 1, 2], "exact", [x], x)
case("reshape", [5, 6], "exact", [x], x.reshape(5, 6))
case("slice", [2, 1, 4], "exact", [x], x[:, :, 1:4])
case("slice", [-3, 0, 0], "exact", [x], x[0:0])
case("concat", [1], "exact", [x, x[:, :1]], np.concatenate([x, x[:, :1]], axis=1))
ints = RNG.integers(-5, 5, (4, 3)).astype(np.int32)
case("permute", [1, 0], "exact", [ints], ints.T.copy())
table = rand(11, 4)
ids = np.array([[10, 0, 3], [3, 3, 7]], dtype=np.int32)
case("gather", [], "exact", [table, ids], table[ids])

# cast: f16 and bf16 bit patterns to f32 (exact: each value is an f32; NaN matches NaN), every
# 61st pattern and the edges of each class (zeros, subnormals, the largest finite, infinities,
# NaNs); cpu::cast's tests take every pattern. NumPy converts f16 itself; a bf16 is the high half
# of an f32's bits.
edges = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x7C01, 0x7E00, 0xFFFF,
         0x007F, 0x0080, 0x7F7F, 0x7F80, 0xFF80, 0x7F81, 0x7FC0, 0x3C00, 0x3F80]
patterns = np.concatenate([np.arange(0, 1 << 16, 61), edges]).astype(np.uint32)
f16 = patterns.astype(np.uint16).view(np.float16)
case("cast", [0], "exact", [f16], f16.astype(np.float32))
case("cast", [0], "exact", [f16[:0].reshape(0, 3)], np.zeros((0, 3), dtype=np.float32))
case("cast", [0], "exact", [Bf16(patterns)], (patterns << 16).view(np.float32))

# Layout ops on 2-byte weights: elements moved as stored.
h = RNG.integers(0, 1 << 16, (3, 5, 7)).astype(np.uint16)
for wrap in (lambda b: b.view(np.float16), Bf16):
    case("permute", [2, 0, 1], "exact", [wrap(h)], wrap(np.ascontiguousarray(np.transpose(h, (2, 0, 1)))))
    case("slice", [2, 1, 4], "exact", [wrap(h)], wrap(np.ascontiguousarray(h[:, :, 1:4])))
    case("reshape", [7, 15], "exact", [wrap(h)], wrap(h.reshape(7, 15)))
    case("concat", [1], "exact", [wrap(h), wrap(h[:, :2])], wrap(np.concatenate([h, h[:, :2]], axis=1)))
    case("gather", [], "exact", [wrap(h), np.array([2, 0, 2], dtype=np.int32)], wrap(h[[2, 0, 2]]))

# conv2d, against a float64 loop.
def conv2d(x, w, bias, stride, pad):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    ho, wo = (h + 2 * pad[0] - kh) // stride[0] + 1, (wd + 2 * pad[1] - kw) // stride[1] + 1
    out = np.zeros((n, o, ho, wo))
    for y in range(ho):
        for xx in range(wo):
            patch = xp[:, :, y * stride[0]:y * stride[0] + kh, xx * stride[1]:xx * stride[1] + kw]
            out[:, :, y, xx] = np.tensordot(patch, w.astype(np.float64), axes=([1, 2, 3], [1, 2, 3]))
    if bias is not None:
        out += bias.astype(np.float64)[None, :, None, None]
    return out.astype(np.float32)

for (n, c, h, wd), (o, kh, kw), stride, pad, with_bias in [
    ((1, 1, 5, 5), (2, 3, 3), (1, 1), (0, 0), True),
    ((2, 3, 7, 6), (4, 3, 2), (2, 1), (1, 2), True),
    ((1, 2, 4, 4), (1, 4, 4), (1, 1), (0, 0), False),
    ((1, 1, 1, 1), (3, 1, 1), (3, 3), (2, 2), True),
]:
    x, w = rand(n, c, h, wd), rand(o, c, kh, kw)
    b = rand(o)
    inputs = [x, w, b] if with_bias else [x, w]
    case("conv2d", [stride[0], stride[1], pad[0], pad[1]], "rel 1e-6", inputs, conv2d(x, w, b if with_bias else None, stride, pad))

text = f"# generator fnv1a64 {fnv1a64((HERE / 'generate.py').read_bytes()):016x}\n" + "\n".join(lines) + "\n"
(HERE / "ops.txt").write_text(text)
print(f"wrote {len(lines)} cases, {len(text)} bytes")
