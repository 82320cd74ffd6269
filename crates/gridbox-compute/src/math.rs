//! gridbox's own transcendental functions on `f32`, built only from IEEE `+`, `-`, `*`, `/`,
//! fused multiply-add (`f32::mul_add`, correctly rounded) and bit operations, in a fixed order.
//! Every backend evaluates exactly these steps, so they round identically everywhere; the
//! platform libm, which differs between machines and from CUDA's, is never used.
//!
//! spec/determinism.md states each function step by step and its measured maximum error
//! against the correctly rounded result; the tests below measure it.

/// The canonical NaN every NaN result is stored as.
pub const CANONICAL_NAN: f32 = f32::from_bits(0x7FC0_0000);

/// 1.5 * 2^23: adding and subtracting it rounds a float of magnitude below 2^22 to the nearest
/// integer, ties to even, in the current rounding mode (round to nearest).
const ROUND_MAGIC: f32 = 12_582_912.0;
const LOG2_E: f32 = f32::from_bits(0x3FB8_AA3B); // 1.44269502
/// ln 2 split so that `n * LN2_HI` is exact for |n| < 2^12.
const LN2_HI: f32 = f32::from_bits(0x3F31_7200); // 0.693145751953125
const LN2_LO: f32 = f32::from_bits(0x35BF_BE8E); // 1.42860677e-6
/// Above this, e^x overflows f32.
const EXP_OVERFLOW: f32 = f32::from_bits(0x42B1_7218); // 88.7228394
/// Below this, e^x rounds to +0.
const EXP_UNDERFLOW: f32 = f32::from_bits(0xC2CF_F1B5); // -103.972084

/// `2^n` as an f32 for `n` in -126..=127.
fn pow2(n: i32) -> f32 {
    f32::from_bits(((n + 127) as u32) << 23)
}

/// Taylor coefficients 1/k! for k = 2..=7, highest first (Horner order).
const EXP_POLY: [f32; 6] = [
    f32::from_bits(0x3950_0D01), // 1/5040
    f32::from_bits(0x3AB6_0B61), // 1/720
    f32::from_bits(0x3C08_8889), // 1/120
    f32::from_bits(0x3D2A_AAAB), // 1/24
    f32::from_bits(0x3E2A_AAAB), // 1/6
    0.5,
];

/// `e^r - 1 - r` for |r| <= 0.35, as `r^2 * P(r)` with `P` the Taylor polynomial above.
fn exp_tail(r: f32) -> f32 {
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    (r * r) * p
}

/// `e^x`.
///
/// `n = fma(x, log2 e, M) - M` (the nearest integer to x / ln 2), `r = fma(-n, LN2_LO,
/// fma(-n, LN2_HI, x))`, `e^r = 1 + (r + r^2 P(r))`, then scaled by `2^n` in one or two exact
/// steps (two when the result is subnormal).
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return CANONICAL_NAN;
    }
    if x > EXP_OVERFLOW {
        return f32::INFINITY;
    }
    if x < EXP_UNDERFLOW {
        return 0.0;
    }
    let n = x.mul_add(LOG2_E, ROUND_MAGIC) - ROUND_MAGIC;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let p = 1.0 + (r + exp_tail(r));
    let n = n as i32;
    if n > 127 {
        p * pow2(127) * 2.0
    } else if n < -125 {
        // Scale in two steps so the first stays normal; the second rounds once into the
        // subnormal range.
        (p * pow2(n + 64)) * pow2(-64)
    } else {
        p * pow2(n)
    }
}

/// `e^y - 1` for |y| <= 18 (what [`tanh`] needs), accurate near 0: with `n` and `r` reduced as
/// in [`exp`], `u = r + r^2 P(r)` is `e^r - 1`, and `e^y - 1 = 2^n u + (2^n - 1)` (one
/// rounding: `2^n u` and `2^n - 1` are exact).
fn expm1(y: f32) -> f32 {
    let n = y.mul_add(LOG2_E, ROUND_MAGIC) - ROUND_MAGIC;
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, y));
    let u = r + exp_tail(r);
    let scale = pow2(n as i32);
    scale.mul_add(u, scale - 1.0)
}

/// sqrt(2) / 2 rounded down: the split point between the two halves of log's reduction.
const SQRT_HALF: f32 = f32::from_bits(0x3F35_04F3); // 0.707106769

/// `2/3, 2/5, 2/7, 2/9`: the series `R(z)` of `log(1+f) = 2s + s R(s^2)`, lowest first.
const LOG_POLY: [f32; 4] = [f32::from_bits(0x3F2A_AAAB), f32::from_bits(0x3ECC_CCCD), f32::from_bits(0x3E92_4925), f32::from_bits(0x3E63_8E39)];

/// Natural logarithm.
///
/// `x = (1 + f) * 2^e` with `1 + f` in [sqrt(1/2), sqrt(2)) (`f` exact); `s = f / (2 + f)`,
/// `z = s * s`, `R = z (c1 + z (c2 + z (c3 + z c4)))`, `h = 0.5 * f * f`, then, as fdlibm does,
/// `log x = e LN2_HI - ((h - (s (h + R) + e LN2_LO)) - f)`, each operation rounded.
pub fn log(x: f32) -> f32 {
    if x.is_nan() || x < 0.0 {
        return CANONICAL_NAN;
    }
    if x == 0.0 {
        return f32::NEG_INFINITY;
    }
    if x == f32::INFINITY {
        return x;
    }
    let mut bits = x.to_bits();
    let mut e: i32 = -127;
    if bits < 0x0080_0000 {
        // Subnormal: scale into the normal range (exact).
        bits = (x * pow2(25)).to_bits();
        e -= 25;
    }
    e += ((bits >> 23) & 0xFF) as i32;
    let mut m = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    if m > 2.0 * SQRT_HALF {
        m *= 0.5;
        e += 1;
    }
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let r = z * (LOG_POLY[0] + z * (LOG_POLY[1] + z * (LOG_POLY[2] + z * LOG_POLY[3])));
    let h = 0.5 * f * f;
    let e = e as f32;
    e * LN2_HI - ((h - (s * (h + r) + e * LN2_LO)) - f)
}

/// Hyperbolic tangent: `t = expm1(2|x|)`, `tanh |x| = t / (t + 2)`, sign copied from `x`;
/// |x| > 9 gives ±1.
pub fn tanh(x: f32) -> f32 {
    if x.is_nan() {
        return CANONICAL_NAN;
    }
    let a = x.abs();
    let y = if a > 9.0 {
        1.0
    } else {
        let t = expm1(2.0 * a);
        t / (t + 2.0)
    };
    y.copysign(x)
}

/// Logistic sigmoid: `1 / (1 + e^-x)` for x >= 0, `e^x / (1 + e^x)` for x < 0 (no overflow,
/// no cancellation).
pub fn sigmoid(x: f32) -> f32 {
    if x.is_nan() {
        return CANONICAL_NAN;
    }
    if x >= 0.0 {
        1.0 / (1.0 + exp(-x))
    } else {
        let e = exp(x);
        e / (1.0 + e)
    }
}

/// 2 sqrt(2 / pi), the factor of `w = 2z` below.
const GELU_K2: f32 = f32::from_bits(0x3FCC_422A); // 1.59576917
const GELU_K1: f32 = 0.044715;

/// `a * b` as an unevaluated pair `hi + lo` (exact: `lo` is fma's rounding error).
fn two_prod(a: f32, b: f32) -> (f32, f32) {
    let hi = a * b;
    (hi, a.mul_add(b, -hi))
}

/// GELU, tanh form: `0.5 x (1 + tanh(sqrt(2/pi) (x + k1 x^3)))`, evaluated as the identical
/// `x * sigmoid(w)` with `w = k2 (x + k1 x^3)`, `k2 = 2 sqrt(2/pi)`. `w` is carried as a pair
/// `w_hi + w_lo` (fma error terms, spelled out in spec/determinism.md) because for negative x
/// the result is `x e^w` and any rounding of `w` becomes a relative error of the result.
pub fn gelu(x: f32) -> f32 {
    if x.is_nan() {
        return CANONICAL_NAN;
    }
    // Beyond these, sigmoid(w) rounds to exactly 1 or to 0 (and x^3 may overflow).
    if x >= 10.0 {
        return x;
    }
    if x <= -20.0 {
        return -0.0;
    }
    let (x2, e2) = two_prod(x, x);
    let (x3, e3) = two_prod(x2, x);
    let e3 = e3 + e2 * x;
    let (t, et) = two_prod(GELU_K1, x3);
    let et = et + GELU_K1 * e3;
    let sum = x + t;
    let bv = sum - x;
    let es = ((x - (sum - bv)) + (t - bv)) + et;
    let (w, ew) = two_prod(GELU_K2, sum);
    let ew = ew + GELU_K2 * es;
    let s = if w >= 0.0 {
        let e = exp(-w);
        1.0 / (1.0 + e.mul_add(-ew, e))
    } else {
        let e = exp(w);
        let e = e.mul_add(ew, e);
        e / (1.0 + e)
    };
    x * s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place, counting across zero (−0 and +0 are 0 apart).
    fn ulps(a: f32, b: f32) -> u64 {
        if a.is_nan() && b.is_nan() {
            return 0;
        }
        let key = |x: f32| {
            let bits = x.to_bits() as i64;
            if bits < 0x8000_0000 { bits } else { 0x8000_0000 - bits }
        };
        (key(a) - key(b)).unsigned_abs()
    }

    /// Inputs: 3 million bit patterns spread over all of f32, plus the special values.
    fn inputs() -> impl Iterator<Item = f32> {
        let step = u32::MAX / 3_000_000;
        let specials = [0.0, -0.0, 1.0, -1.0, f32::MIN_POSITIVE, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-45];
        (0..3_000_000u32).map(move |i| f32::from_bits(i.wrapping_mul(step).wrapping_add(i % 7))).chain(specials)
    }

    /// The maximum ulp error of `ours` against the f64 oracle rounded to f32, over `inputs()`
    /// restricted to `domain`.
    fn max_ulps(ours: fn(f32) -> f32, oracle: fn(f64) -> f64, domain: impl Fn(f32) -> bool) -> (u64, f32) {
        let mut worst = (0, 0.0);
        for x in inputs().filter(|x| domain(*x)) {
            let want = oracle(x as f64) as f32;
            let got = ours(x);
            let error = ulps(got, want);
            if error > worst.0 {
                worst = (error, x);
            }
        }
        worst
    }

    fn sigmoid64(x: f64) -> f64 {
        if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { x.exp() / (1.0 + x.exp()) }
    }

    /// gelu with the same f32 constants, evaluated in f64.
    fn gelu64(x: f64) -> f64 {
        let w = GELU_K2 as f64 * (x + GELU_K1 as f64 * x * x * x);
        x * sigmoid64(w)
    }

    #[test]
    fn exp_is_within_its_stated_bound() {
        let (worst, at) = max_ulps(exp, f64::exp, |_| true);
        assert!(worst <= 1, "exp: {worst} ulp at {at:e}");
    }

    #[test]
    fn log_is_within_its_stated_bound() {
        let (worst, at) = max_ulps(log, f64::ln, |_| true);
        assert!(worst <= 1, "log: {worst} ulp at {at:e}");
    }

    #[test]
    fn tanh_is_within_its_stated_bound() {
        let (worst, at) = max_ulps(tanh, f64::tanh, |_| true);
        assert!(worst <= 2, "tanh: {worst} ulp at {at:e}");
    }

    #[test]
    fn sigmoid_is_within_its_stated_bound() {
        let (worst, at) = max_ulps(sigmoid, sigmoid64, |_| true);
        assert!(worst <= 2, "sigmoid: {worst} ulp at {at:e}");
    }

    #[test]
    fn gelu_is_within_its_stated_bound() {
        // For x >= -3 gelu is well conditioned: a few ulp.
        let (worst, at) = max_ulps(gelu, gelu64, |x| x >= -3.0 && x.is_finite());
        assert!(worst <= 4, "gelu on [-3, inf): {worst} ulp at {at:e}");
        let (worst, at) = max_ulps(gelu, gelu64, |x| (-9.5..-3.0).contains(&x));
        assert!(worst <= 4, "gelu on [-9.5, -3): {worst} ulp at {at:e}");
        // Below -9.5, e^w is subnormal or nearly so and carries fewer bits: a few more ulp.
        let (worst, at) = max_ulps(gelu, gelu64, |x| x < -9.5 && x.is_finite());
        assert!(worst <= 16, "gelu below -9.5: {worst} ulp at {at:e}");
    }

    #[test]
    fn special_values() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-0.0), 1.0);
        assert_eq!(log(1.0), 0.0);
        assert_eq!(log(0.0), f32::NEG_INFINITY);
        assert_eq!(log(-0.0), f32::NEG_INFINITY);
        assert_eq!(log(-1.0).to_bits(), CANONICAL_NAN.to_bits());
        assert_eq!(tanh(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
        assert_eq!(gelu(f32::NEG_INFINITY).to_bits(), (-0.0f32).to_bits());
        for f in [exp, log, tanh, sigmoid, gelu] {
            assert_eq!(f(f32::NAN).to_bits(), CANONICAL_NAN.to_bits());
            assert_eq!(f(-f32::NAN).to_bits(), CANONICAL_NAN.to_bits());
        }
    }
}
