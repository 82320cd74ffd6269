//! gridbox's own transcendental functions on `f32`, built only from IEEE `+`, `-`, `*`, `/`,
//! fused multiply-add (`f32::mul_add`, correctly rounded) and bit operations, in a fixed order.
//! Every backend evaluates exactly these steps, so they round identically everywhere; the
//! platform libm, which differs between machines and from CUDA's, is never used.
//!
//! spec/determinism.md states each function step by step and its maximum error against the
//! correctly rounded result, measured over every f32 by examples/accuracy_sweep.rs; the tests
//! below check it on samples, dense sweeps of each function's worst region, and the inputs where
//! each maximum is reached.

mod trig;

pub use trig::{cos, sin, sincos};

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

/// SiLU (swish), `x * sigmoid(x)`: the product of `x` and [`sigmoid`], rounded once. `-inf`
/// gives `-0` (the limit; the product would be `-inf * 0`, NaN).
pub fn silu(x: f32) -> f32 {
    if x.is_nan() {
        return CANONICAL_NAN;
    }
    if x == f32::NEG_INFINITY {
        return -0.0;
    }
    x * sigmoid(x)
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

/// Correctly rounded references (shared with examples/accuracy_sweep.rs, which includes the file by path).
#[cfg(test)]
pub(crate) mod reference;

#[cfg(test)]
mod tests {
    use super::reference::{self, ulps};
    use super::*;

    /// 3 million bit patterns spread over all of f32, plus the special values: a coarse look at the whole domain. Being
    /// spread over bit patterns it rarely lands where errors concentrate (gelu's 4 ulp are 211 inputs of 2^32), so each
    /// function's worst region also gets a dense sweep below; examples/accuracy_sweep.rs sweeps every f32.
    fn spread() -> impl Iterator<Item = f32> {
        let step = u32::MAX / 3_000_000;
        let specials = [0.0, -0.0, 1.0, -1.0, f32::MIN_POSITIVE, f32::MAX, f32::MIN, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-45];
        (0..3_000_000u32).map(move |i| f32::from_bits(i.wrapping_mul(step).wrapping_add(i % 7))).chain(specials)
    }

    /// Every `step`-th f32 from `from` up to `to` in value order (across zero if need be).
    fn every(step: usize, from: f32, to: f32) -> impl Iterator<Item = f32> {
        // Bit patterns as a signed key that increases with the value (as `ulps` counts).
        let key = |x: f32| if x.is_sign_negative() { -i64::from(x.to_bits() & 0x7FFF_FFFF) } else { i64::from(x.to_bits()) };
        let value = |k: i64| if k < 0 { f32::from_bits((-k) as u32 | 0x8000_0000) } else { f32::from_bits(k as u32) };
        (key(from)..=key(to)).step_by(step).map(value)
    }

    /// The maximum ulp error of `ours` against the correctly rounded `reference` over `xs`, and the first input there.
    fn max_ulps(ours: fn(f32) -> f32, reference: fn(f32) -> f32, xs: impl Iterator<Item = f32>) -> (u64, f32) {
        let mut worst = (0, 0.0);
        for x in xs {
            let error = ulps(ours(x), reference(x));
            if error > worst.0 {
                worst = (error, x);
            }
        }
        worst
    }

    /// Asserts the bound spec/determinism.md states for `name` on `xs`.
    fn assert_within(name: &str, bound: u64, ours: fn(f32) -> f32, reference: fn(f32) -> f32, xs: impl Iterator<Item = f32>) {
        let (worst, at) = max_ulps(ours, reference, xs);
        assert!(worst <= bound, "{name}: {worst} ulp at {at:e} (0x{:08X}), above the stated {bound}", at.to_bits());
    }

    /// Asserts that `f(x)` is `ulp` from the correctly rounded value: the inputs where each stated bound is reached
    /// (found by examples/accuracy_sweep.rs), so the bounds are the maxima, not loose guesses.
    fn assert_error_at(f: fn(f32) -> f32, reference: fn(f32) -> f32, bits: u32, ulp: u64) {
        let x = f32::from_bits(bits);
        assert_eq!(ulps(f(x), reference(x)), ulp, "at {x:e} (0x{bits:08X}): ours 0x{:08X}, correct 0x{:08X}", f(x).to_bits(), reference(x).to_bits());
    }

    #[test]
    fn exp_is_within_its_stated_bound() {
        assert_within("exp", 1, exp, reference::exp, spread());
        // The 1-ulp inputs lie in [-98.9, 88.8]; a dense look at the end scaled in two steps (subnormal results).
        assert_within("exp near underflow", 1, exp, reference::exp, every(3, -104.0, -86.0));
        assert_error_at(exp, reference::exp, 0x3380_0000, 1);
    }

    #[test]
    fn log_is_within_its_stated_bound() {
        assert_within("log", 1, log, reference::log, spread());
        assert_within("log near 1", 1, log, reference::log, every(3, 0.5, 2.0));
        assert_error_at(log, reference::log, 0x0000_028C, 1);
    }

    #[test]
    fn tanh_is_within_its_stated_bound() {
        assert_within("tanh", 2, tanh, reference::tanh, spread());
        // The 2-ulp inputs all lie in [-0.2554, 0.2554].
        assert_within("tanh on [0.0625, 0.26]", 2, tanh, reference::tanh, every(7, 0.0625, 0.26));
        assert_error_at(tanh, reference::tanh, 0x38F3_98C3, 2);
    }

    #[test]
    fn sigmoid_is_within_its_stated_bound() {
        assert_within("sigmoid", 2, sigmoid, reference::sigmoid, spread());
        // The 2-ulp inputs all lie in [-15.7, -1.09].
        assert_within("sigmoid on [-16, -1]", 2, sigmoid, reference::sigmoid, every(29, -16.0, -1.0));
        assert_error_at(sigmoid, reference::sigmoid, 0xBF8C_A543, 2);
    }

    #[test]
    fn gelu_is_within_its_stated_bound() {
        assert_within("gelu on [-9.5, inf)", 4, gelu, reference::gelu, spread().filter(|&x| x >= -9.5));
        assert_within("gelu below -9.5", 11, gelu, reference::gelu, spread().filter(|&x| x < -9.5));
    }

    #[test]
    fn sin_and_cos_are_within_their_stated_bounds() {
        assert_within("sin", 1, sin, reference::sin, spread());
        assert_within("cos", 1, cos, reference::cos, spread());
        // Near pi/4 (where the reduction starts), near multiples of pi/2 far out, and huge arguments.
        for (from, to) in [(0.5, 1.0), (1.5, 1.6), (1e4, 1.0001e4), (1e30, 1.0001e30)] {
            assert_within("sin", 1, sin, reference::sin, every(97, from, to));
            assert_within("cos", 1, cos, reference::cos, every(97, from, to));
        }
        assert_error_at(sin, reference::sin, 0x3A12_85FF, 1);
        assert_error_at(cos, reference::cos, 0x39DD_B3D7, 1);
    }

    #[test]
    fn silu_is_within_its_stated_bound() {
        assert_within("silu on [-87, inf)", 3, silu, reference::silu, spread().filter(|&x| x >= -87.0));
        assert_within("silu below -87", 52, silu, reference::silu, spread().filter(|&x| x < -87.0));
        // The 3-ulp inputs all lie in [-15.55, -1.867]; the 52-ulp ones in [-103.99, -102.87] (subnormal results).
        assert_within("silu on [-16, -1.8]", 3, silu, reference::silu, every(29, -16.0, -1.8));
        assert_within("silu on [-104, -102]", 52, silu, reference::silu, every(3, -104.0, -102.0));
        assert_error_at(silu, reference::silu, 0xBFEE_FC28, 3);
        assert_error_at(silu, reference::silu, 0xC2CD_BE95, 52);
        assert_eq!(silu(f32::NEG_INFINITY).to_bits(), (-0.0f32).to_bits());
        assert_eq!(silu(f32::INFINITY), f32::INFINITY);
        assert_eq!(silu(-0.0).to_bits(), (-0.0f32).to_bits());
    }

    /// gelu's errors concentrate: all 211 inputs at 4 ulp lie in [-3.8875, -1.8213], with results in the upper part of
    /// their binade (significand above 1.64, where an ulp is smallest relative to the result); all 39 at 11 ulp lie in
    /// [-10.14, -10.07], where e^w is subnormal. The 3M spread missed both (issue 11): dense sweeps of each, and the
    /// worst inputs themselves.
    #[test]
    fn gelu_is_within_its_stated_bound_where_errors_concentrate() {
        // Every third input there (3.2 million) meets 68 of the 211; below -9.5, every input whose result is not -0
        // (they end at -10.77: 1.4 million).
        assert_within("gelu on [-3.9, -1.8]", 4, gelu, reference::gelu, every(3, -3.9, -1.8));
        assert_within("gelu on [-10.8, -9.5)", 11, gelu, reference::gelu, every(1, -10.8, -9.500001));
        // Issue 11's example: ours 0xB8F94891, correctly rounded 0xB8F94895.
        assert_eq!(gelu(f32::from_bits(0xC078_CB35)).to_bits(), 0xB8F9_4891);
        assert_eq!(reference::gelu(f32::from_bits(0xC078_CB35)).to_bits(), 0xB8F9_4895);
        for bits in [0xC078_CB35, 0xBFE9_2074] {
            assert_error_at(gelu, reference::gelu, bits, 4);
        }
        assert_error_at(gelu, reference::gelu, 0xC121_24E1, 11);
    }

    /// The reference follows the spec's constants, which are math.rs's, and settles near-ties in double-double: at
    /// x = 3 * 2^-23, sigmoid = 1/2 + 3 * 2^-25 - 2^-69.8 lies just below the midpoint of 0x3F000001 and 0x3F000002,
    /// closer than f64 can resolve (f64 alone would land on the midpoint and round to even, the wrong way).
    #[test]
    fn reference_is_the_spec_and_settles_near_ties() {
        assert_eq!((reference::GELU_K1.to_bits(), reference::GELU_K2.to_bits()), (GELU_K1.to_bits(), GELU_K2.to_bits()));
        let before = reference::refinements().0;
        assert_eq!(reference::sigmoid(3.0 * 2f32.powi(-23)).to_bits(), 0x3F00_0001);
        assert!(reference::refinements().0 > before, "the near-tie was not recomputed in double-double");
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
        for f in [exp, log, tanh, sigmoid, gelu, silu] {
            assert_eq!(f(f32::NAN).to_bits(), CANONICAL_NAN.to_bits());
            assert_eq!(f(-f32::NAN).to_bits(), CANONICAL_NAN.to_bits());
        }
    }
}
