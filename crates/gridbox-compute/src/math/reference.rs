//! Correctly rounded f32 references for the functions of math.rs, and the ulp distance the accuracy claims are stated in.
//! Only for measuring: math's unit tests use it, and so does `examples/accuracy_sweep.rs` (through `#[path]`), which sweeps
//! every f32 to produce the bounds in spec/determinism.md.
//!
//! Each reference is first evaluated in f64, accurate to about 2^-42 relative even for gelu (where `w` is up to ~600, so
//! its rounding is amplified by that much through `e^w`). An f32 result's ulp is at least 2^-24 of its magnitude, so the
//! f64 value decides the rounding unless it lies within ~2^-18 ulp(f32) of a midpoint between two f32s. Anything within
//! `TIE_BAND` = 2^-10 ulp of a midpoint is recomputed in double-double (within ~2^-96 relative), and that decides; if even
//! the double-double value is too close to call, the reference panics rather than guess.

use std::sync::atomic::{AtomicU64, Ordering};

/// How close (in ulp of the f32 result) the f64 value may come to a rounding midpoint before double-double takes over:
/// far wider than the f64 error, and rare enough (~0.2% of inputs) to cost nothing.
const TIE_BAND: f64 = 1.0 / 1024.0;

/// Inputs recomputed in double-double, and among them those where the f64 value alone would have rounded wrongly.
static REFINED: AtomicU64 = AtomicU64::new(0);
static F64_WRONG: AtomicU64 = AtomicU64::new(0);

/// `(recomputed in double-double, of which f64 alone rounded wrongly)`, counted over every call in this process.
pub(crate) fn refinements() -> (u64, u64) {
    (REFINED.load(Ordering::Relaxed), F64_WRONG.load(Ordering::Relaxed))
}

/// Distance in units in the last place: how many f32s lie between `a` and `b` in value order, counting across zero (−0
/// and +0 are 0 apart, the infinities one beyond ±MAX). Two NaNs are 0 apart.
pub(crate) fn ulps(a: f32, b: f32) -> u64 {
    if a.is_nan() && b.is_nan() {
        return 0;
    }
    let key = |x: f32| {
        let bits = x.to_bits() as i64;
        if bits < 0x8000_0000 { bits } else { 0x8000_0000 - bits }
    };
    (key(a) - key(b)).unsigned_abs()
}

/// e^x, correctly rounded to f32.
pub(crate) fn exp(x: f32) -> f32 {
    let x = f64::from(x);
    rounded(x.exp(), || relative(exp_dd(Dd::from(x))))
}

/// ln x, correctly rounded to f32 (NaN below 0).
pub(crate) fn log(x: f32) -> f32 {
    let x = f64::from(x);
    rounded(x.ln(), || relative(log_dd(x)))
}

/// tanh x, correctly rounded to f32.
pub(crate) fn tanh(x: f32) -> f32 {
    let x = f64::from(x);
    rounded(x.tanh(), || relative(tanh_dd(x)))
}

/// 1 / (1 + e^-x), correctly rounded to f32.
pub(crate) fn sigmoid(x: f32) -> f32 {
    let x = f64::from(x);
    rounded(sigmoid64(x), || relative(sigmoid_dd(Dd::from(x))))
}

/// x / (1 + e^-x) (SiLU), correctly rounded to f32.
pub(crate) fn silu(x: f32) -> f32 {
    let x = f64::from(x);
    if x == f64::NEG_INFINITY {
        // x * sigmoid(x) is -inf * 0 in f64; the limit is -0.
        return -0.0;
    }
    rounded(x * sigmoid64(x), || {
        if x.abs() < 2f64.powi(-64) {
            // silu x = x/2 + x^2/4 - x^4/48 + ...: at a subnormal odd x, x/2 is an f32 midpoint exactly and only x^2/4
            // (exact in f64) decides, far below double-double's relative error; the series' error is O(x^4).
            let q = (x * x) / 4.0;
            (Dd { hi: x / 2.0, lo: q }, q * 2f64.powi(-100))
        } else {
            relative(Dd::from(x).mul(sigmoid_dd(Dd::from(x))))
        }
    })
}

/// sin x, correctly rounded to f32 (NaN for infinities).
pub(crate) fn sin(x: f32) -> f32 {
    rounded(f64::from(x).sin(), || relative(sincos_dd(x).0))
}

/// cos x, correctly rounded to f32 (NaN for infinities).
pub(crate) fn cos(x: f32) -> f32 {
    rounded(f64::from(x).cos(), || relative(sincos_dd(x).1))
}

/// 2/pi to 352 bits after one zero word (word `k >= 1` holds bits `32(k-1)+1 ..= 32k`), from mpmath; math::trig's tests
/// check that its own table is the same.
pub(crate) const TWO_OVER_PI: [u32; 12] = [
    0x0000_0000,
    0xA2F9_836E,
    0x4E44_1529,
    0xFC27_57D1,
    0xF534_DDC0,
    0xDB62_9599,
    0x3C43_9041,
    0xFE51_63AB,
    0xDEBB_C561,
    0xB724_6E3A,
    0x424D_D2E0,
    0x0649_2EEA,
];

/// pi/2 to 106 bits.
const PIO2: Dd = Dd { hi: core::f64::consts::FRAC_PI_2, lo: 6.123_233_995_736_766e-17 };

/// `x = (q + f) pi/2`, `|f| <= 1/2`: `(q mod 4, f pi/2)` in double-double. `|x| * 2/pi` is formed exactly in integers
/// from 160 bits of 2/pi (the bits left out weigh less than 2^-134 quarter turns; f keeps 126 bits), so even where
/// `f` is ~2^-32 (f32 inputs closest to a multiple of pi/2) it is good to ~2^-94 relative.
fn reduce_dd(x: f32) -> (u32, Dd) {
    let a = x.abs();
    if a < core::f32::consts::FRAC_PI_4 {
        return (0, Dd::from(f64::from(x)));
    }
    let bits = a.to_bits();
    let e = (bits >> 23) as i32 - 150;
    let m = u64::from((bits & 0x007F_FFFF) | 0x0080_0000);
    let start = (e + 30) as usize;
    let (word, shift) = (start / 32, start % 32);
    // 160 bits of 2/pi from bit e - 1, as five limbs, most significant first.
    let limb = |k: usize| {
        let hi = u64::from(TWO_OVER_PI[word + k]) << 32 | u64::from(TWO_OVER_PI[word + k + 1]);
        (hi << shift >> 32) as u32
    };
    let window: Vec<u64> = (0..5).map(|k| u64::from(limb(k))).collect();
    // m * window, six limbs (most significant first).
    let mut product = [0u64; 6];
    let mut carry = 0u64;
    for k in (0..5).rev() {
        let t = m * window[k] + carry;
        product[k + 1] = t & 0xFFFF_FFFF;
        carry = t >> 32;
    }
    product[0] = carry;
    // |x| * 2/pi = product * 2^-158: bits 32..159 of the product, the quarter turns mod 4 on top.
    let v = product[1..5].iter().fold(0u128, |acc, &l| acc << 32 | u128::from(l));
    let mut quadrant = (v >> 126) as u32;
    let mut fraction = (v & ((1 << 126) - 1)) as i128;
    if fraction >= 1 << 125 {
        fraction -= 1 << 126;
        quadrant += 1;
    }
    let hi = fraction as f64;
    let lo = (fraction - hi as i128) as f64;
    let r = fast_two_sum(hi, lo).mul(PIO2).scale(-126);
    if x < 0.0 { ((4 - (quadrant & 3)) & 3, r.neg()) } else { (quadrant & 3, r) }
}

/// `(sin x, cos x)` in double-double, by their Taylor series after [`reduce_dd`].
fn sincos_dd(x: f32) -> (Dd, Dd) {
    let (quadrant, r) = reduce_dd(x);
    let r2 = r.mul(r);
    // sum (-1)^k r^(2k+n) / (2k+n)!: n = 1 for sin (first term r), 0 for cos (first term 1).
    let series = |first: Dd, mut n: f64| {
        let (mut term, mut sum) = (first, first);
        loop {
            term = term.mul(r2).div(Dd::from((n + 1.0) * (n + 2.0))).neg();
            n += 2.0;
            sum = sum.add(term);
            if term.hi.abs() <= sum.hi.abs() * 2f64.powi(-110) || term.hi == 0.0 {
                return sum;
            }
        }
    };
    let (s, c) = (series(r, 1.0), series(Dd::from(1.0), 0.0));
    match quadrant {
        0 => (s, c),
        1 => (c, s.neg()),
        2 => (s.neg(), c.neg()),
        _ => (c.neg(), s),
    }
}

/// gelu's constants as spec/determinism.md states them (the reference follows the spec, not math.rs).
pub(crate) const GELU_K2: f32 = f32::from_bits(0x3FCC_422A);
pub(crate) const GELU_K1: f32 = 0.044715;

/// `x * sigmoid(K2 (x + K1 x^3))` with gelu's f32 constants `K1`, `K2` taken as exact, correctly rounded to f32.
pub(crate) fn gelu(x: f32) -> f32 {
    let x = f64::from(x);
    if x.is_infinite() {
        // x * sigmoid(w) is inf * 0 at -inf in f64; the limit is -0 (and +inf at +inf).
        return if x > 0.0 { f32::INFINITY } else { -0.0 };
    }
    let (k1, k2) = (f64::from(GELU_K1), f64::from(GELU_K2));
    // x^3 and K1 x^3 are not exact in f64, but carry only 2^-52 relative error into w (no cancellation: both terms
    // of the sum have the sign of x).
    let w = k2 * (x + k1 * (x * x * x));
    rounded(x * sigmoid64(w), || {
        if x.abs() < 2f64.powi(-64) {
            // gelu x = x/2 + K2 x^2/4 + O(x^4). Below 2^-125, x/2 can be an f32 midpoint exactly (odd x): then only the
            // K2 x^2/4 decides, ~2^-150 of the result, far below double-double's relative error; so take the series,
            // whose only error is the rounding of K2 x^2 / 4 (x^2 is exact) and the O(x^2) relative truncation.
            let q = k2 * (x * x) / 4.0;
            (Dd { hi: x / 2.0, lo: q }, q.abs() * 2f64.powi(-50))
        } else {
            relative(gelu_dd(x, k1, k2))
        }
    })
}

fn sigmoid64(x: f64) -> f64 {
    if x >= 0.0 { 1.0 / (1.0 + (-x).exp()) } else { x.exp() / (1.0 + x.exp()) }
}

/// A double-double result with the error bound the generic double-double evaluations have: ~2^-96 of the result (gelu's
/// w, up to ~110 where results are nonzero, multiplies its 2^-103 relative error), rounded up to 2^-92.
fn relative(d: Dd) -> (Dd, f64) {
    (d, d.hi.abs() * 2f64.powi(-92))
}

/// `value` (f64, within ~2^-42 relative of the exact result) rounded to f32, unless it lies within [`TIE_BAND`] of a
/// midpoint: then `exact()`, a double-double with a bound on its absolute error, decides.
fn rounded(value: f64, exact: impl FnOnce() -> (Dd, f64)) -> f32 {
    if value.is_nan() || tie_distance(value) >= TIE_BAND {
        return value as f32;
    }
    REFINED.fetch_add(1, Ordering::Relaxed);
    let (d, error) = exact();
    // Compare |d| with the midpoint: |d.hi| - mid is exact (Sterbenz: both lie within a factor 2 of each other).
    let (hi_abs, lo_abs) = if d.hi < 0.0 { (-d.hi, -d.lo) } else { (d.hi, d.lo) };
    let (lo, hi) = neighbours(hi_abs);
    let mid = 0.5 * (lo + hi);
    let off = (hi_abs - mid) + lo_abs;
    // Structured near-ties come closer than one might think (sigmoid(x) = 1/2 + x/4 - x^3/48 lies 2^-74.6 below a
    // midpoint at x = 2^-23), so the margin is no more than the error needs.
    assert!(off.abs() > error, "reference: {} + {} too close to the f32 midpoint {mid} to round", d.hi, d.lo);
    let magnitude = if off > 0.0 { hi } else { lo };
    let result = (magnitude as f32).copysign(d.hi as f32);
    if result != value as f32 {
        F64_WRONG.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// The f32s `lo <= a < hi` on either side of `a >= 0` (as f64; above f32::MAX, `hi` is 2^128, where rounding goes to
/// infinity).
fn neighbours(a: f64) -> (f64, f64) {
    let c = a as f32;
    let (lo, hi) = if f64::from(c) <= a { (c, c.next_up()) } else { (c.next_down(), c) };
    let hi = if hi.is_infinite() { 2f64.powi(128) } else { f64::from(hi) };
    (f64::from(lo), hi)
}

/// How far `value` lies from the nearest midpoint between two f32s, in units of their spacing (0 at a midpoint, 0.5 at
/// an f32).
fn tie_distance(value: f64) -> f64 {
    let a = value.abs();
    if a >= 2f64.powi(128) {
        return 0.5;
    }
    let (lo, hi) = neighbours(a);
    (a - 0.5 * (lo + hi)).abs() / (hi - lo)
}

/// An unevaluated sum `hi + lo` with `|lo| <= ulp(hi) / 2`: about 106 significant bits.
#[derive(Clone, Copy, Debug)]
struct Dd {
    hi: f64,
    lo: f64,
}

impl From<f64> for Dd {
    fn from(hi: f64) -> Self {
        Dd { hi, lo: 0.0 }
    }
}

/// `a + b` exactly, for `|a| >= |b|`.
fn fast_two_sum(a: f64, b: f64) -> Dd {
    let hi = a + b;
    Dd { hi, lo: b - (hi - a) }
}

/// `a + b` exactly.
fn two_sum(a: f64, b: f64) -> Dd {
    let hi = a + b;
    let bv = hi - a;
    Dd { hi, lo: (a - (hi - bv)) + (b - bv) }
}

/// `a * b` exactly (fma gives the product's rounding error).
fn two_prod(a: f64, b: f64) -> Dd {
    let hi = a * b;
    Dd { hi, lo: a.mul_add(b, -hi) }
}

impl Dd {
    fn add(self, o: Dd) -> Dd {
        let s = two_sum(self.hi, o.hi);
        let t = two_sum(self.lo, o.lo);
        let s = fast_two_sum(s.hi, s.lo + t.hi);
        fast_two_sum(s.hi, s.lo + t.lo)
    }

    fn neg(self) -> Dd {
        Dd { hi: -self.hi, lo: -self.lo }
    }

    fn sub(self, o: Dd) -> Dd {
        self.add(o.neg())
    }

    fn mul(self, o: Dd) -> Dd {
        let p = two_prod(self.hi, o.hi);
        fast_two_sum(p.hi, p.lo + (self.hi * o.lo + self.lo * o.hi))
    }

    fn div(self, o: Dd) -> Dd {
        // Long division: three quotient digits, each from the remainder so far.
        let q1 = self.hi / o.hi;
        let r = self.sub(o.mul(Dd::from(q1)));
        let q2 = r.hi / o.hi;
        let r = r.sub(o.mul(Dd::from(q2)));
        let q3 = r.hi / o.hi;
        fast_two_sum(q1, q2).add(Dd::from(q3))
    }

    /// `self * 2^k`, exact while the result stays normal.
    fn scale(self, k: i32) -> Dd {
        let k = k.clamp(-1022, 1023);
        let s = f64::from_bits(((k + 1023) as u64) << 52);
        Dd { hi: self.hi * s, lo: self.lo * s }
    }
}

/// ln 2 to 106 bits.
const LN2: Dd = Dd { hi: core::f64::consts::LN_2, lo: 2.319_046_813_846_299_6e-17 };

/// `sum r^n / n!` for `n >= first` (0 or 1), `|r| <= 0.35`, until the terms drop below 2^-110 of the sum.
fn taylor_exp(r: Dd, first: i32) -> Dd {
    let mut term = if first == 0 { Dd::from(1.0) } else { r };
    let mut sum = term;
    let mut n = first;
    loop {
        n += 1;
        term = term.mul(r).div(Dd::from(f64::from(n)));
        sum = sum.add(term);
        if term.hi.abs() <= sum.hi.abs() * 2f64.powi(-110) || term.hi == 0.0 {
            return sum;
        }
    }
}

/// e^a: `a = k ln 2 + r`, `|r| <= ln 2 / 2`, e^r by its Taylor series.
fn exp_dd(a: Dd) -> Dd {
    if a.hi < -1100.0 {
        return Dd::from(0.0);
    }
    let k = (a.hi / LN2.hi).round();
    // k ln2.hi exactly, then k ln2.lo: r is good to ~2^-106 absolute.
    let r = a.sub(two_prod(k, LN2.hi)).sub(two_prod(k, LN2.lo));
    taylor_exp(r, 0).scale(k as i32)
}

/// e^y - 1 for f64 `y`, accurate relative to the result also near 0.
fn expm1_dd(y: f64) -> Dd {
    if y.abs() <= 0.35 { taylor_exp(Dd::from(y), 1) } else { exp_dd(Dd::from(y)).sub(Dd::from(1.0)) }
}

/// ln x for `0 < x < inf`. Beside 1 (where ln x is small and an absolute error would be a large relative one), by the
/// series `ln x = 2 (s + s^3/3 + s^5/5 + ...)`, `s = (x - 1) / (x + 1)`; elsewhere by one Newton step from the f64
/// logarithm, `y = y0 + ln(x e^-y0)` with `x e^-y0 = 1 + d`, `|d| ~ 2^-52`, and `ln(1 + d) = d - d^2/2` to well below
/// 2^-106 absolute (and |ln x| > 1/17 there).
fn log_dd(x: f64) -> Dd {
    if (x - 1.0).abs() < 0.0625 {
        // x - 1 and x + 1 are exact (f32 x); |s| < 1/31, so 2^-106 needs 11 terms.
        let s = Dd::from(x - 1.0).div(Dd::from(x + 1.0));
        let s2 = s.mul(s);
        let (mut power, mut sum) = (s, s);
        for k in 1..=12 {
            power = power.mul(s2);
            sum = sum.add(power.div(Dd::from(f64::from(2 * k + 1))));
        }
        return sum.scale(1);
    }
    let y0 = x.ln();
    let d = exp_dd(Dd::from(-y0)).mul(Dd::from(x)).sub(Dd::from(1.0));
    Dd::from(y0).add(d.sub(d.mul(d).scale(-1)))
}

/// tanh x = t / (t + 2), `t = e^(2|x|) - 1`, sign of x.
fn tanh_dd(x: f64) -> Dd {
    let a = x.abs();
    if a > 20.0 {
        // 1 - tanh a < 2^-110: never near an f32 midpoint, so never asked for.
        return Dd::from(x.signum());
    }
    let t = expm1_dd(2.0 * a);
    let y = t.div(t.add(Dd::from(2.0)));
    if x < 0.0 { y.neg() } else { y }
}

/// 1 / (1 + e^-w), from whichever side keeps e^±w below 1.
fn sigmoid_dd(w: Dd) -> Dd {
    let one = Dd::from(1.0);
    if w.hi >= 0.0 {
        one.div(one.add(exp_dd(w.neg())))
    } else {
        let e = exp_dd(w);
        e.div(one.add(e))
    }
}

/// x sigmoid(k2 (x + k1 x^3)): `x * x` is exact (f32 `x`), the rest in double-double.
fn gelu_dd(x: f64, k1: f64, k2: f64) -> Dd {
    let x3 = two_prod(x * x, x);
    let w = Dd::from(k1).mul(x3).add(Dd::from(x)).mul(Dd::from(k2));
    Dd::from(x).mul(sigmoid_dd(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The double-double functions agree with f64's to f64 precision (gelu's f64 value: to 2^-42, its `w` being up to
    /// 600), so neither is grossly wrong.
    #[test]
    fn double_double_agrees_with_f64() {
        let near = |a: Dd, b: f64, bits: i32| (a.hi + a.lo - b).abs() <= b.abs() * 2f64.powi(-bits);
        let close = |a: Dd, b: f64| near(a, b, 50);
        for i in 0..2000 {
            let x = -100.0 + f64::from(i) * 0.1 + 0.0123;
            assert!(close(exp_dd(Dd::from(x)), x.exp()), "exp {x}");
            assert!(close(sigmoid_dd(Dd::from(x)), sigmoid64(x)), "sigmoid {x}");
            assert!(close(tanh_dd(x / 5.0), (x / 5.0).tanh()), "tanh {x}");
            let y = (x / 4.0).exp();
            assert!(close(log_dd(y), y.ln()), "log {y}");
            let k = (f64::from(GELU_K1), f64::from(GELU_K2));
            let g = f64::from((x / 5.0) as f32);
            assert!(near(gelu_dd(g, k.0, k.1), g * sigmoid64(k.1 * (g + k.0 * g * g * g)), 42), "gelu {g}");
            let t = (x * 1e3) as f32;
            let (s, c) = sincos_dd(t);
            let (s64, c64) = (f64::from(t).sin(), f64::from(t).cos());
            assert!((s.hi + s.lo - s64).abs() <= 2f64.powi(-52) && (c.hi + c.lo - c64).abs() <= 2f64.powi(-52), "sincos {t}");
        }
    }

    #[test]
    fn ulp_distance_counts_across_zero() {
        assert_eq!(ulps(0.0, -0.0), 0);
        assert_eq!(ulps(f32::from_bits(1), -f32::from_bits(1)), 2);
        assert_eq!(ulps(f32::MAX, f32::INFINITY), 1);
        assert_eq!(ulps(1.0, 1.0f32.next_up()), 1);
    }
}
