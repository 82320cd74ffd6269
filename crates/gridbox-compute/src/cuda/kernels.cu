// gridbox's CUDA kernels. Every kernel reproduces the CPU reference (host-gpu-bridge/src/cpu,
// src/math.rs) bit for bit, following spec/determinism.md. Compiled by NVRTC with
// --fmad=false (no contraction of a*b+c), --ftz=false, --prec-div=true, --prec-sqrt=true and
// no fast math: every `*`, `+`, `/` and sqrtf below is one IEEE operation, and fmaf is the only
// fused multiply-add. Each expression mirrors the Rust one operation for operation.

#define CANONICAL_NAN __int_as_float(0x7fc00000)
#define FULL_MASK 0xffffffffu
#define MAX_RANK 8

extern "C" {

struct Shape {
    int rank;
    unsigned long long dims[MAX_RANK];
    unsigned long long strides_a[MAX_RANK];
    unsigned long long strides_b[MAX_RANK];
};

__device__ __forceinline__ float canon(float x) { return isnan(x) ? CANONICAL_NAN : x; }

// ---- math.rs, line for line -------------------------------------------------------------

__device__ __forceinline__ float pow2i(int n) { return __int_as_float((n + 127) << 23); }

__device__ __forceinline__ float exp_tail(float r) {
    float p = __int_as_float(0x39500D01);
    p = fmaf(p, r, __int_as_float(0x3AB60B61));
    p = fmaf(p, r, __int_as_float(0x3C088889));
    p = fmaf(p, r, __int_as_float(0x3D2AAAAB));
    p = fmaf(p, r, __int_as_float(0x3E2AAAAB));
    p = fmaf(p, r, 0.5f);
    return (r * r) * p;
}

#define ROUND_MAGIC 12582912.0f
#define LOG2_E __int_as_float(0x3FB8AA3B)
#define LN2_HI __int_as_float(0x3F317200)
#define LN2_LO __int_as_float(0x35BFBE8E)

__device__ float gb_exp(float x) {
    if (isnan(x)) return CANONICAL_NAN;
    if (x > __int_as_float(0x42B17218)) return __int_as_float(0x7f800000);
    if (x < __int_as_float(0xC2CFF1B5)) return 0.0f;
    float n = fmaf(x, LOG2_E, ROUND_MAGIC) - ROUND_MAGIC;
    float r = fmaf(-n, LN2_LO, fmaf(-n, LN2_HI, x));
    float p = 1.0f + (r + exp_tail(r));
    int k = (int)n;
    if (k > 127) return p * pow2i(127) * 2.0f;
    if (k < -125) return (p * pow2i(k + 64)) * pow2i(-64);
    return p * pow2i(k);
}

__device__ float gb_expm1(float y) {
    float n = fmaf(y, LOG2_E, ROUND_MAGIC) - ROUND_MAGIC;
    float r = fmaf(-n, LN2_LO, fmaf(-n, LN2_HI, y));
    float u = r + exp_tail(r);
    float scale = pow2i((int)n);
    return fmaf(scale, u, scale - 1.0f);
}

__device__ float gb_log(float x) {
    if (isnan(x) || x < 0.0f) return CANONICAL_NAN;
    if (x == 0.0f) return __int_as_float(0xff800000);
    if (isinf(x)) return x;
    unsigned int bits = __float_as_uint(x);
    int e = -127;
    if (bits < 0x00800000u) {
        bits = __float_as_uint(x * pow2i(25));
        e -= 25;
    }
    e += (int)((bits >> 23) & 0xffu);
    float m = __uint_as_float((bits & 0x007fffffu) | 0x3f800000u);
    if (m > 2.0f * __int_as_float(0x3F3504F3)) {
        m *= 0.5f;
        e += 1;
    }
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float z = s * s;
    float r = z * (__int_as_float(0x3F2AAAAB) + z * (__int_as_float(0x3ECCCCCD) + z * (__int_as_float(0x3E924925) + z * __int_as_float(0x3E638E39))));
    float h = 0.5f * f * f;
    float ef = (float)e;
    return ef * LN2_HI - ((h - (s * (h + r) + ef * LN2_LO)) - f);
}

__device__ float gb_tanh(float x) {
    if (isnan(x)) return CANONICAL_NAN;
    float a = fabsf(x);
    float y;
    if (a > 9.0f) {
        y = 1.0f;
    } else {
        float t = gb_expm1(2.0f * a);
        y = t / (t + 2.0f);
    }
    return copysignf(y, x);
}

__device__ float gb_sigmoid(float x) {
    if (isnan(x)) return CANONICAL_NAN;
    if (x >= 0.0f) return 1.0f / (1.0f + gb_exp(-x));
    float e = gb_exp(x);
    return e / (1.0f + e);
}

__device__ __forceinline__ void two_prod(float a, float b, float* hi, float* lo) {
    *hi = a * b;
    *lo = fmaf(a, b, -*hi);
}

__device__ float gb_gelu(float x) {
    if (isnan(x)) return CANONICAL_NAN;
    if (x >= 10.0f) return x;
    if (x <= -20.0f) return -0.0f;
    const float K2 = __int_as_float(0x3FCC422A);
    const float K1 = 0.044715f;
    float x2, e2, x3, e3, t, et, w, ew;
    two_prod(x, x, &x2, &e2);
    two_prod(x2, x, &x3, &e3);
    e3 = e3 + e2 * x;
    two_prod(K1, x3, &t, &et);
    et = et + K1 * e3;
    float sum = x + t;
    float bv = sum - x;
    float es = ((x - (sum - bv)) + (t - bv)) + et;
    two_prod(K2, sum, &w, &ew);
    ew = ew + K2 * es;
    float s;
    if (w >= 0.0f) {
        float e = gb_exp(-w);
        s = 1.0f / (1.0f + fmaf(e, -ew, e));
    } else {
        float e = gb_exp(w);
        e = fmaf(e, ew, e);
        s = e / (1.0f + e);
    }
    return x * s;
}

__device__ float gb_silu(float x) {
    if (isnan(x)) return CANONICAL_NAN;
    if (x == __int_as_float(0xff800000)) return -0.0f;
    return x * gb_sigmoid(x);
}

// ---- math/trig.rs: sin and cos, argument reduced exactly in 128-bit integers ------------------

__device__ const unsigned int TWO_OVER_PI[12] = {0x00000000u, 0xA2F9836Eu, 0x4E441529u, 0xFC2757D1u, 0xF534DDC0u, 0xDB629599u,
                                                 0x3C439041u, 0xFE5163ABu, 0xDEBBC561u, 0xB7246E3Au, 0x424DD2E0u, 0x06492EEAu};

__device__ void gb_reduce(float x, unsigned int* quadrant_out, float* r_hi, float* r_lo) {
    unsigned int bits = __float_as_uint(x) & 0x7FFFFFFFu;
    int e = (int)(bits >> 23) - 150;
    unsigned long long m = (bits & 0x007FFFFFu) | 0x00800000u;
    int start = e + 30;
    int word = start / 32, shift = start % 32;
    // The 96-bit window of 2/pi from bit e - 1, as three 32-bit words (most significant first),
    // times m: the same integer as trig.rs's 128-bit product, in 32-bit limbs.
    unsigned long long w[3];
    for (int k = 0; k < 3; k++) {
        unsigned long long pair = ((unsigned long long)TWO_OVER_PI[word + k] << 32) | TWO_OVER_PI[word + k + 1];
        w[k] = (pair << shift) >> 32;
    }
    unsigned long long t = m * w[2];                     // product bits 0..31 (dropped) and a carry
    t = m * w[1] + (t >> 32);
    unsigned long long low32 = t & 0xFFFFFFFFull;        // bits 32..63
    t = m * w[0] + (t >> 32);
    unsigned long long l1 = t & 0xFFFFFFFFull;           // bits 64..95
    // product bits: l1 = 64..95, low32 = 32..63.
    unsigned int quadrant = (unsigned int)(l1 >> 30) & 3u;
    long long fraction = (long long)(((l1 & 0x3FFFFFFFull) << 32) | low32);
    if (fraction >= (1ll << 61)) {
        fraction -= (1ll << 62);
        quadrant += 1;
    }
    float hi = __ll2float_rn(fraction);
    float lo = __ll2float_rn(fraction - (long long)hi);
    const float PIO2_HI = __int_as_float(0x20C90FDB), PIO2_LO = __int_as_float(0x943BBD2E);
    float p = hi * PIO2_HI;
    float err = fmaf(hi, PIO2_HI, -p) + (hi * PIO2_LO + lo * PIO2_HI);
    float rh = p + err;
    float rl = err - (rh - p);
    if (x < 0.0f) {
        *quadrant_out = (4u - (quadrant & 3u)) & 3u;
        *r_hi = -rh;
        *r_lo = -rl;
    } else {
        *quadrant_out = quadrant & 3u;
        *r_hi = rh;
        *r_lo = rl;
    }
}

__device__ __forceinline__ float gb_sin_kernel(float r, float r_lo) {
    float z = r * r;
    float s = __int_as_float(0x2F309231);
    s = fmaf(s, z, __int_as_float(0xB2D7322B));
    s = fmaf(s, z, __int_as_float(0x3638EF1D));
    s = fmaf(s, z, __int_as_float(0xB9500D01));
    s = fmaf(s, z, __int_as_float(0x3C088889));
    s = fmaf(s, z, __int_as_float(0xBE2AAAAB));
    return r + fmaf(r, z * s, r_lo);
}

__device__ __forceinline__ float gb_cos_kernel(float r, float r_lo) {
    float z = r * r;
    float c = __int_as_float(0xAD49CBA5);
    c = fmaf(c, z, __int_as_float(0x310F76C7));
    c = fmaf(c, z, __int_as_float(0xB493F27E));
    c = fmaf(c, z, __int_as_float(0x37D00D01));
    c = fmaf(c, z, __int_as_float(0xBAB60B61));
    c = fmaf(c, z, __int_as_float(0x3D2AAAAB));
    float hz = 0.5f * z;
    float w = 1.0f - hz;
    return w + (((1.0f - w) - hz) + (z * (z * c) - r * r_lo));
}

__device__ void gb_sincos(float x, float* sin_out, float* cos_out) {
    if (!isfinite(x)) {
        *sin_out = CANONICAL_NAN;
        *cos_out = CANONICAL_NAN;
        return;
    }
    unsigned int a = __float_as_uint(x) & 0x7FFFFFFFu;
    if (a < 0x39800000u) {
        *sin_out = x;
        *cos_out = 1.0f;
        return;
    }
    unsigned int quadrant = 0;
    float r = x, r_lo = 0.0f;
    if (a >= 0x3F490FDBu) gb_reduce(x, &quadrant, &r, &r_lo);
    float s = gb_sin_kernel(r, r_lo), c = gb_cos_kernel(r, r_lo);
    switch (quadrant) {
        case 0: *sin_out = s; *cos_out = c; break;
        case 1: *sin_out = c; *cos_out = -s; break;
        case 2: *sin_out = -s; *cos_out = -c; break;
        default: *sin_out = -c; *cos_out = s; break;
    }
}

// ---- elementwise ----------------------------------------------------------------------------

// Unary op codes: the order of UnaryOp in ops.rs.
__device__ float apply_unary(int op, float x) {
    switch (op) {
        case 0: return canon(-x);
        case 1: return x > 0.0f ? x : (isnan(x) ? CANONICAL_NAN : 0.0f);
        case 2: return gb_gelu(x);
        case 3: return gb_sigmoid(x);
        case 4: return gb_tanh(x);
        case 5: return gb_exp(x);
        case 6: return gb_log(x);
        case 7: return canon(sqrtf(x));
        default: return gb_silu(x);
    }
}

__global__ void unary_f32(float* out, const float* x, unsigned long long n, int op) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x) {
        out[i] = apply_unary(op, x[i]);
    }
}

// Binary op codes: the order of BinaryOp in ops.rs. `shape` holds the output dims and each
// input's strides (0 where it broadcasts).
__global__ void binary_f32(float* out, const float* a, const float* b, unsigned long long n, int op, Shape shape) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long rest = i, ia = 0, ib = 0;
        for (int d = shape.rank - 1; d >= 0; d--) {
            unsigned long long index = rest % shape.dims[d];
            rest /= shape.dims[d];
            ia += index * shape.strides_a[d];
            ib += index * shape.strides_b[d];
        }
        float x = a[ia], y = b[ib], r;
        switch (op) {
            case 0: r = x + y; break;
            case 1: r = x - y; break;
            case 2: r = x * y; break;
            default: r = x / y; break;
        }
        out[i] = canon(r);
    }
}

// ---- rope (cpu/rope.rs): one thread per (row, pair) ------------------------------------------

__device__ float rope_frequency(unsigned long long i, unsigned long long d, float theta) {
    float two_i = (float)(2 * i), df = (float)d;
    float e = two_i / df;
    float eq = fmaf(-e, df, two_i) / df;
    float l = gb_log(theta);
    float c = fmaf(theta, gb_exp(-l), -1.0f);
    float w = e * l;
    float ew = fmaf(e, l, -w) + (e * c + eq * l);
    float v = gb_exp(-w);
    return fmaf(v, -ew, v);
}

// x is [rows, D] with rows = leading * T; row r is at position offset + r % T.
__global__ void rope_f32(float* out, const float* x, unsigned long long rows, unsigned long long t_len, unsigned long long d,
                         unsigned int offset, float theta) {
    unsigned long long half = d / 2, n = rows * half;
    for (unsigned long long k = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; k < n; k += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long row = k / half, i = k % half;
        unsigned int position = offset + (unsigned int)(row % t_len);
        float s, c;
        gb_sincos((float)position * rope_frequency(i, d, theta), &s, &c);
        const float* xs = x + row * d;
        float x1 = xs[i], x2 = xs[i + half];
        out[row * d + i] = canon(x1 * c - x2 * s);
        out[row * d + i + half] = canon(x2 * c + x1 * s);
    }
}

// ---- reductions: one warp per output, the 32-lane order -------------------------------------

__device__ __forceinline__ float max2(float a, float b) {
    if (isnan(a) || isnan(b)) return CANONICAL_NAN;
    if (a > b) return a;
    if (b > a) return b;
    return __uint_as_float(__float_as_uint(a) & __float_as_uint(b));
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int s = 16; s > 0; s >>= 1) v = v + __shfl_down_sync(FULL_MASK, v, s);
    return __shfl_sync(FULL_MASK, v, 0);
}

__device__ __forceinline__ float warp_max(float v) {
    for (int s = 16; s > 0; s >>= 1) v = max2(v, __shfl_down_sync(FULL_MASK, v, s));
    return __shfl_sync(FULL_MASK, v, 0);
}

// op: 0 sum, 1 mean, 2 max. The input is [outer, n, inner]; output [outer, inner].
__global__ void reduce_f32(float* out, const float* x, unsigned long long outer, unsigned long long n, unsigned long long inner, int op) {
    unsigned long long warp = (blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (warp >= outer * inner) return;
    unsigned long long o = warp / inner, i = warp % inner;
    float acc = op == 2 ? __int_as_float(0xff800000) : 0.0f;
    for (unsigned long long k = lane; k < n; k += 32) {
        float v = x[(o * n + k) * inner + i];
        acc = op == 2 ? max2(acc, v) : acc + v;
    }
    float r = op == 2 ? warp_max(acc) : warp_sum(acc);
    if (op == 1) r = r / (float)n;
    if (lane == 0) out[warp] = canon(r);
}

// Softmax over rows of length n; one warp per row.
__global__ void softmax_f32(float* out, const float* x, unsigned long long rows, unsigned long long n) {
    unsigned long long row = (blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* xs = x + row * n;
    float* ys = out + row * n;
    float m = __int_as_float(0xff800000);
    for (unsigned long long k = lane; k < n; k += 32) m = max2(m, xs[k]);
    m = warp_max(m);
    float s = 0.0f;
    for (unsigned long long k = lane; k < n; k += 32) {
        float e = gb_exp(xs[k] - m);
        ys[k] = e;
        s = s + e;
    }
    s = warp_sum(s);
    for (unsigned long long k = lane; k < n; k += 32) ys[k] = canon(ys[k] / s);
}

// Whether (a, ia) beats (b, ib) in argmax's order: NaN above every number, numbers by value
// (+0.0 and -0.0 equal), ties to the lower index. It is a total order on distinct indices, so
// any reduction order finds the element the CPU's scan from index 0 finds.
__device__ __forceinline__ bool argmax_beats(float a, unsigned long long ia, float b, unsigned long long ib) {
    bool an = isnan(a), bn = isnan(b);
    if (an != bn) return an;
    if (!an && a != b) return a > b;
    return ia < ib;
}

// Argmax over rows of length n (n >= 1); one warp per row.
__global__ void argmax_f32(int* out, const float* x, unsigned long long rows, unsigned long long n) {
    unsigned long long row = (blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* xs = x + row * n;
    float best = CANONICAL_NAN;
    unsigned long long at = ~0ull;
    for (unsigned long long k = lane; k < n; k += 32) {
        if (at == ~0ull || argmax_beats(xs[k], k, best, at)) {
            best = xs[k];
            at = k;
        }
    }
    for (int s = 16; s > 0; s >>= 1) {
        float other = __shfl_down_sync(FULL_MASK, best, s);
        unsigned long long other_at = __shfl_down_sync(FULL_MASK, at, s);
        if (other_at != ~0ull && (at == ~0ull || argmax_beats(other, other_at, best, at))) {
            best = other;
            at = other_at;
        }
    }
    if (lane == 0) out[row] = (int)at;
}

// Layer norm (beta != null) or RMS norm (beta == null) over rows of length n.
__global__ void norm_f32(float* out, const float* x, const float* gamma, const float* beta, unsigned long long rows, unsigned long long n, float eps) {
    unsigned long long row = (blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const float* xs = x + row * n;
    float* ys = out + row * n;
    float nf = (float)n;
    if (beta != 0) {
        float s = 0.0f;
        for (unsigned long long k = lane; k < n; k += 32) s = s + xs[k];
        float mean = warp_sum(s) / nf;
        float v = 0.0f;
        for (unsigned long long k = lane; k < n; k += 32) v = v + (xs[k] - mean) * (xs[k] - mean);
        float var = warp_sum(v) / nf;
        float inv = 1.0f / sqrtf(var + eps);
        for (unsigned long long k = lane; k < n; k += 32) ys[k] = canon(((xs[k] - mean) * inv) * gamma[k] + beta[k]);
    } else {
        float s = 0.0f;
        for (unsigned long long k = lane; k < n; k += 32) s = s + xs[k] * xs[k];
        float ms = warp_sum(s) / nf;
        float inv = 1.0f / sqrtf(ms + eps);
        for (unsigned long long k = lane; k < n; k += 32) ys[k] = canon((xs[k] * inv) * gamma[k]);
    }
}

// ---- attention (cpu/attention.rs): one warp per query row (h, t) ------------------------------

// The score of key s for the query row at `q`: the fma chain over d in order, times scale, or
// -inf past the causal limit.
__device__ __forceinline__ float attention_score(const float* q, const float* keys, unsigned long long s, unsigned long long d,
                                                 unsigned long long last, float scale) {
    if (s > last) return __int_as_float(0xff800000);
    const float* key = keys + s * d;
    float acc = 0.0f;
    for (unsigned long long j = 0; j < d; j++) acc = fmaf(q[j], key[j], acc);
    return canon(acc) * scale;
}

#define ATTENTION_COLS 4

// Lane l folds scores l, l+32, ... (the reduction order) for the max and the sum; the output
// chain over s runs in order in every lane, the probabilities of 32 keys at a time computed by
// their lanes and passed round by shuffles. Each lane owns columns lane + 32 r of a block of
// 128 columns; the probabilities are computed again for each further block.
__global__ void attention_f32(float* out, const float* q, const float* k, const float* v, unsigned long long hq, unsigned long long t_len,
                              unsigned long long s_len, unsigned long long d, unsigned long long group, unsigned long long offset, float scale) {
    unsigned long long row = (blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x) / 32;
    int lane = threadIdx.x % 32;
    if (row >= hq * t_len) return;
    unsigned long long h = row / t_len, t = row % t_len, g = h / group;
    const float* query = q + row * d;
    const float* keys = k + g * s_len * d;
    const float* values = v + g * s_len * d;
    unsigned long long last = offset + t < offset ? ~0ull : offset + t;
    float m = __int_as_float(0xff800000);
    for (unsigned long long s = lane; s < s_len; s += 32) m = max2(m, attention_score(query, keys, s, d, last, scale));
    m = warp_max(m);
    float total = 0.0f;
    for (unsigned long long s = lane; s < s_len; s += 32) total = total + gb_exp(attention_score(query, keys, s, d, last, scale) - m);
    total = warp_sum(total);
    for (unsigned long long d0 = 0; d0 < d; d0 += 32 * ATTENTION_COLS) {
        float acc[ATTENTION_COLS];
        for (int r = 0; r < ATTENTION_COLS; r++) acc[r] = 0.0f;
        for (unsigned long long c = 0; c < s_len; c += 32) {
            unsigned long long s = c + lane;
            float p = s < s_len ? canon(gb_exp(attention_score(query, keys, s, d, last, scale) - m) / total) : 0.0f;
            unsigned long long count = s_len - c < 32 ? s_len - c : 32;
            for (unsigned long long j = 0; j < count; j++) {
                float pj = __shfl_sync(FULL_MASK, p, (int)j);
                for (int r = 0; r < ATTENTION_COLS; r++) {
                    unsigned long long col = d0 + lane + 32 * r;
                    if (col < d) acc[r] = fmaf(pj, values[(c + j) * d + col], acc[r]);
                }
            }
        }
        for (int r = 0; r < ATTENTION_COLS; r++) {
            unsigned long long col = d0 + lane + 32 * r;
            if (col < d) out[row * d + col] = canon(acc[r]);
        }
    }
}

// ---- layout (32-bit words: f32 and i32 alike; 16-bit words: f16 and bf16) -----------------

}  // extern "C": the templates below have C++ linkage; the kernels that call them do not.

// out[i] = x[offset(i)] where offset decodes i over `shape.dims` with `shape.strides_a`.
template <typename T>
__device__ __forceinline__ void permute_words(T* out, const T* x, unsigned long long n, const Shape& shape) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long rest = i, at = 0;
        for (int d = shape.rank - 1; d >= 0; d--) {
            at += (rest % shape.dims[d]) * shape.strides_a[d];
            rest /= shape.dims[d];
        }
        out[i] = x[at];
    }
}

// For o < outer, r < block: dst[o * dst_stride + dst_offset + r] = src[o * src_stride + src_offset + r].
template <typename T>
__device__ __forceinline__ void copy_blocks_words(T* dst, const T* src, unsigned long long outer, unsigned long long block,
                                                  unsigned long long dst_stride, unsigned long long dst_offset, unsigned long long src_stride,
                                                  unsigned long long src_offset) {
    unsigned long long n = outer * block;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long o = i / block, r = i % block;
        dst[o * dst_stride + dst_offset + r] = src[o * src_stride + src_offset + r];
    }
}

// Rows of a table picked by indices already checked on the host.
template <typename T>
__device__ __forceinline__ void gather_words(T* out, const T* table, const int* ids, unsigned long long count, unsigned long long row) {
    unsigned long long n = count * row;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x) {
        unsigned long long q = i / row, r = i % row;
        out[i] = table[(unsigned long long)ids[q] * row + r];
    }
}

extern "C" {

__global__ void permute_u32(unsigned int* out, const unsigned int* x, unsigned long long n, Shape shape) { permute_words(out, x, n, shape); }
__global__ void permute_u16(unsigned short* out, const unsigned short* x, unsigned long long n, Shape shape) { permute_words(out, x, n, shape); }

__global__ void copy_blocks_u32(unsigned int* dst, const unsigned int* src, unsigned long long outer, unsigned long long block,
                                unsigned long long dst_stride, unsigned long long dst_offset, unsigned long long src_stride, unsigned long long src_offset) {
    copy_blocks_words(dst, src, outer, block, dst_stride, dst_offset, src_stride, src_offset);
}
__global__ void copy_blocks_u16(unsigned short* dst, const unsigned short* src, unsigned long long outer, unsigned long long block,
                                unsigned long long dst_stride, unsigned long long dst_offset, unsigned long long src_stride, unsigned long long src_offset) {
    copy_blocks_words(dst, src, outer, block, dst_stride, dst_offset, src_stride, src_offset);
}

__global__ void gather_u32(unsigned int* out, const unsigned int* table, const int* ids, unsigned long long count, unsigned long long row) {
    gather_words(out, table, ids, count, row);
}
__global__ void gather_u16(unsigned short* out, const unsigned short* table, const int* ids, unsigned long long count, unsigned long long row) {
    gather_words(out, table, ids, count, row);
}

// ---- cast: f16 (kind 0) or bf16 (kind 1) bit patterns to f32, exactly (cpu/cast.rs) ----------

__device__ __forceinline__ float f16_to_f32(unsigned int h) {
    unsigned int sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    if (e == 0x1Fu) return m == 0 ? __uint_as_float(sign | 0x7F800000u) : CANONICAL_NAN;
    if (e == 0) return __uint_as_float(sign | __float_as_uint((float)m * __uint_as_float(0x33800000u)));
    return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}

__device__ __forceinline__ float bf16_to_f32(unsigned int b) {
    return (b & 0x7FFFu) > 0x7F80u ? CANONICAL_NAN : __uint_as_float(b << 16);
}

__global__ void cast_half_f32(float* out, const unsigned short* x, unsigned long long n, int kind) {
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < n; i += (unsigned long long)gridDim.x * blockDim.x) {
        out[i] = kind == 0 ? f16_to_f32(x[i]) : bf16_to_f32(x[i]);
    }
}

// ---- conv2d: one thread per output, taps in (c, ky, kx) order, padding skipped --------------

__global__ void conv2d_f32(float* out, const float* x, const float* w, const float* bias,
                           int n, int c, int h, int wd, int o, int kh, int kw, int ho, int wo,
                           int sh, int sw, int ph, int pw) {
    unsigned long long total = (unsigned long long)n * o * ho * wo;
    for (unsigned long long i = blockIdx.x * (unsigned long long)blockDim.x + threadIdx.x; i < total; i += (unsigned long long)gridDim.x * blockDim.x) {
        int ox = (int)(i % wo);
        int oy = (int)((i / wo) % ho);
        int oc = (int)((i / ((unsigned long long)wo * ho)) % o);
        int on = (int)(i / ((unsigned long long)wo * ho * o));
        float acc = 0.0f;
        for (int ci = 0; ci < c; ci++) {
            for (int ky = 0; ky < kh; ky++) {
                long long iy = (long long)oy * sh + ky - ph;
                if (iy < 0 || iy >= h) continue;
                for (int kx = 0; kx < kw; kx++) {
                    long long ix = (long long)ox * sw + kx - pw;
                    if (ix < 0 || ix >= wd) continue;
                    acc = fmaf(x[(((unsigned long long)on * c + ci) * h + iy) * wd + ix], w[(((unsigned long long)oc * c + ci) * kh + ky) * kw + kx], acc);
                }
            }
        }
        out[i] = canon(bias != 0 ? acc + bias[oc] : acc);
    }
}

// ---- matmul: C[b] = A[b] B[b], each element's k-chain in order in registers -----------------
//
// 128 x 128 output tile per block of 256 threads, each thread an 8 x 8 register tile (rows
// ty*4 + {0..3} and 64 + ty*4 + {0..3}, columns likewise, so that a quarter-warp's shared-memory
// reads of B are 128 contiguous bytes). K in steps of 16 staged through double-buffered shared
// memory; the next step's tiles are fetched into registers while this step computes.
//
// Each accumulator runs acc = fmaf(a[k], b[k], acc) for k = 0, 1, ..., K-1 and nothing else:
// the tail of K is cut exactly (no fma with padding, which would turn a -0.0 accumulator into
// +0.0), and out-of-range rows and columns are computed from zeros but never stored.
//
// VEC (k and n multiples of 4, so every row of A and B starts 16-byte aligned) moves global
// memory in float4s; otherwise every element is loaded on its own. Results are the same.

#define BM 128
#define BN 128
#define BK 16

}  // extern "C": the template below has C++ linkage; the kernels that call it do not.

template <bool VEC>
__device__ __forceinline__ void matmul_tile(float* out, const float* a, const float* b,
                                            const unsigned long long* offsets, int m, int n, int k) {
    __shared__ __align__(16) float as[2][BK][BM];
    __shared__ __align__(16) float bs[2][BK][BN];
    const unsigned long long batch = blockIdx.z;
    const float* A = a + offsets[3 * batch];
    const float* B = b + offsets[3 * batch + 1];
    float* C = out + offsets[3 * batch + 2];
    const int row0 = blockIdx.y * BM, col0 = blockIdx.x * BN;
    const int tid = threadIdx.x;
    const int ty = tid / 16, tx = tid % 16;
    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; i++)
#pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j] = 0.0f;

    // A tile: 128 rows x 16 k = 512 float4, 2 per thread (rows a_row and a_row + 64).
    // B tile: 16 k x 128 columns = 512 float4, 2 per thread (k rows b_row and b_row + 8).
    const int a_row = tid / 4, a_k = (tid % 4) * 4;
    const int b_row = tid / 32, b_col = (tid % 32) * 4;
    float4 a_reg[2], b_reg[2];
    auto fetch = [&](int k0) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int r = row0 + a_row + 64 * h, kk = k0 + a_k;
            if (VEC) {
                a_reg[h] = (r < m && kk < k) ? *reinterpret_cast<const float4*>(A + (unsigned long long)r * k + kk)
                                             : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            } else {
                const float* p = A + (unsigned long long)r * k;
                a_reg[h].x = (r < m && kk < k) ? p[kk] : 0.0f;
                a_reg[h].y = (r < m && kk + 1 < k) ? p[kk + 1] : 0.0f;
                a_reg[h].z = (r < m && kk + 2 < k) ? p[kk + 2] : 0.0f;
                a_reg[h].w = (r < m && kk + 3 < k) ? p[kk + 3] : 0.0f;
            }
        }
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int kk = k0 + b_row + 8 * h, c = col0 + b_col;
            if (VEC) {
                b_reg[h] = (kk < k && c < n) ? *reinterpret_cast<const float4*>(B + (unsigned long long)kk * n + c)
                                             : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            } else {
                const float* p = B + (unsigned long long)kk * n;
                b_reg[h].x = (kk < k && c < n) ? p[c] : 0.0f;
                b_reg[h].y = (kk < k && c + 1 < n) ? p[c + 1] : 0.0f;
                b_reg[h].z = (kk < k && c + 2 < n) ? p[c + 2] : 0.0f;
                b_reg[h].w = (kk < k && c + 3 < n) ? p[c + 3] : 0.0f;
            }
        }
    };
    auto stash = [&](int s) {
#pragma unroll
        for (int h = 0; h < 2; h++) {
            as[s][a_k + 0][a_row + 64 * h] = a_reg[h].x;
            as[s][a_k + 1][a_row + 64 * h] = a_reg[h].y;
            as[s][a_k + 2][a_row + 64 * h] = a_reg[h].z;
            as[s][a_k + 3][a_row + 64 * h] = a_reg[h].w;
            *reinterpret_cast<float4*>(&bs[s][b_row + 8 * h][b_col]) = b_reg[h];
        }
    };
    auto step = [&](int s, int kk) {
        const float4 a0 = *reinterpret_cast<const float4*>(&as[s][kk][ty * 4]);
        const float4 a1 = *reinterpret_cast<const float4*>(&as[s][kk][64 + ty * 4]);
        const float4 b0 = *reinterpret_cast<const float4*>(&bs[s][kk][tx * 4]);
        const float4 b1 = *reinterpret_cast<const float4*>(&bs[s][kk][64 + tx * 4]);
        const float af[8] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
        const float bf[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
        for (int i = 0; i < 8; i++)
#pragma unroll
            for (int j = 0; j < 8; j++) acc[i][j] = fmaf(af[i], bf[j], acc[i][j]);
    };

    fetch(0);
    stash(0);
    __syncthreads();
    int stage = 0;
    for (int k0 = 0; k0 < k; k0 += BK) {
        const bool more = k0 + BK < k;
        if (more) fetch(k0 + BK);
        if (k0 + BK <= k) {
#pragma unroll
            for (int kk = 0; kk < BK; kk++) step(stage, kk);
        } else {
            for (int kk = 0; kk < k - k0; kk++) step(stage, kk);
        }
        if (more) stash(stage ^ 1);
        __syncthreads();
        stage ^= 1;
    }
#pragma unroll
    for (int i = 0; i < 8; i++) {
        const int r = row0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
        if (r >= m) continue;
#pragma unroll
        for (int half = 0; half < 2; half++) {
            const int c = col0 + half * 64 + tx * 4;
            float* p = C + (unsigned long long)r * n + c;
            const float v0 = canon(acc[i][half * 4]), v1 = canon(acc[i][half * 4 + 1]);
            const float v2 = canon(acc[i][half * 4 + 2]), v3 = canon(acc[i][half * 4 + 3]);
            if (VEC && c < n) {
                *reinterpret_cast<float4*>(p) = make_float4(v0, v1, v2, v3);
            } else {
                if (c < n) p[0] = v0;
                if (c + 1 < n) p[1] = v1;
                if (c + 2 < n) p[2] = v2;
                if (c + 3 < n) p[3] = v3;
            }
        }
    }
}

extern "C" {

__global__ void __launch_bounds__(256, 2) matmul_f32(float* out, const float* a, const float* b,
                                                     const unsigned long long* offsets, int m, int n, int k) {
    matmul_tile<false>(out, a, b, offsets, m, n, k);
}

__global__ void __launch_bounds__(256, 2) matmul_f32_vec4(float* out, const float* a, const float* b,
                                                          const unsigned long long* offsets, int m, int n, int k) {
    matmul_tile<true>(out, a, b, offsets, m, n, k);
}

}  // extern "C"
