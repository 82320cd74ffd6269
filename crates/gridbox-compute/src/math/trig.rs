//! gridbox's own sine and cosine of an f32 (for `rope`), in a fixed order of f32 operations and
//! exact integer arithmetic, so every backend rounds identically (spec/determinism.md).
//!
//! The argument is reduced exactly: `x * 2/pi` is formed in 128-bit integer arithmetic from a
//! 96-bit window of the bits of 2/pi (Payne and Hanek), so even the largest f32 keeps every
//! bit of its remainder; the remainder times pi/2 is carried as a pair of f32s into the Taylor
//! polynomials of sin and cos on [-pi/4, pi/4].

use super::CANONICAL_NAN;

/// 2/pi to 352 bits after one zero word: word `k >= 1` holds bits `32(k-1)+1 ..= 32k` of the
/// fraction (bit `j` weighs `2^-j`), so bit `j` is bit `j + 31` of the table counted from the top.
const TWO_OVER_PI: [u32; 12] = [
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

/// Below this, `|x| <= pi/4` needs no reduction (`0x3F490FDB` is pi/4 rounded up).
const PI_OVER_4: u32 = 0x3F49_0FDB;
/// Below 2^-12, `sin x` rounds to `x` and `cos x` to 1.
const TINY: u32 = 0x3980_0000;
/// `pi/2 * 2^-62` as a pair of f32s: the reduced argument is an integer multiple of 2^-62
/// quarter turns.
const PIO2_HI: f32 = f32::from_bits(0x20C9_0FDB);
const PIO2_LO: f32 = f32::from_bits(0x943B_BD2E);

/// Taylor coefficients of `(sin r - r) / r^3` in `z = r^2`: -1/3!, 1/5!, ..., 1/13!, lowest first.
const SIN_POLY: [f32; 6] = [
    f32::from_bits(0xBE2A_AAAB),
    f32::from_bits(0x3C08_8889),
    f32::from_bits(0xB950_0D01),
    f32::from_bits(0x3638_EF1D),
    f32::from_bits(0xB2D7_322B),
    f32::from_bits(0x2F30_9231),
];
/// Taylor coefficients of `(cos r - 1 + r^2/2) / r^4` in `z = r^2`: 1/4!, -1/6!, ..., -1/14!.
const COS_POLY: [f32; 6] = [
    f32::from_bits(0x3D2A_AAAB),
    f32::from_bits(0xBAB6_0B61),
    f32::from_bits(0x37D0_0D01),
    f32::from_bits(0xB493_F27E),
    f32::from_bits(0x310F_76C7),
    f32::from_bits(0xAD49_CBA5),
];

/// `|x| * 2/pi = q + f` (mod 4) with `q` an integer and `|f| <= 1/2`, for finite `|x| >= pi/4`:
/// `(q mod 4, f * 2^62 rounded toward zero)`, in exact integer arithmetic.
fn quarter_turns(x: f32) -> (u32, i64) {
    let bits = x.to_bits() & 0x7FFF_FFFF;
    // |x| = m * 2^e with m an integer of 24 bits (|x| >= pi/4 is normal).
    let e = (bits >> 23) as i32 - 150;
    let m = u128::from((bits & 0x007F_FFFF) | 0x0080_0000);
    // Bits of 2/pi from j = e - 1: those before weigh m * 2^(e-j) >= 4 and vanish mod 4.
    let start = (e + 30) as usize; // bit e - 1, counted from the top of the table (e >= -24)
    let (word, shift) = (start / 32, start % 32);
    let four = TWO_OVER_PI[word..word + 4].iter().fold(0u128, |acc, &w| acc << 32 | u128::from(w));
    let window = (four << shift) >> 32; // 96 bits: bits e-1 ..= e+94 of 2/pi
    // |x| * 2/pi = m * window * 2^-94 (+ less than 2^-70 from the bits left out).
    let product = m * window;
    let quadrant = (product >> 94) as u32 & 3;
    // The top 62 bits of the fraction, rounded to the nearest quadrant.
    let fraction = ((product >> 32) & ((1 << 62) - 1)) as i64;
    if fraction >= 1 << 61 { ((quadrant + 1) & 3, fraction - (1 << 62)) } else { (quadrant, fraction) }
}

/// `x = (q + f) * pi/2` with `q` an integer mod 4 and `|f| <= 1/2`: `(q mod 4, r_hi, r_lo)`
/// with `r_hi + r_lo` = `f * pi/2` to about 2^-48 relative. `x` is finite and `|x| >= pi/4`.
fn reduce(x: f32) -> (u32, f32, f32) {
    let (quadrant, fraction) = quarter_turns(x);
    // fraction = hi + lo exactly in integers (|fraction| < 2^61, so `hi as i64` is exact).
    let hi = fraction as f32;
    let lo = (fraction - hi as i64) as f32;
    // (hi + lo) * (PIO2_HI + PIO2_LO), as a normalised pair.
    let p = hi * PIO2_HI;
    let err = hi.mul_add(PIO2_HI, -p) + (hi * PIO2_LO + lo * PIO2_HI);
    let r_hi = p + err;
    let r_lo = err - (r_hi - p);
    if x < 0.0 { ((4 - quadrant) & 3, -r_hi, -r_lo) } else { (quadrant, r_hi, r_lo) }
}

/// `sin(r_hi + r_lo)` for `|r| <= pi/4` (slightly more is fine).
fn sin_kernel(r: f32, r_lo: f32) -> f32 {
    let z = r * r;
    let mut s = SIN_POLY[5];
    for &c in SIN_POLY[..5].iter().rev() {
        s = s.mul_add(z, c);
    }
    // sin r = r + r^3 S(z) + r_lo cos r, with cos r ~ 1 in the small correction.
    r + r.mul_add(z * s, r_lo)
}

/// `cos(r_hi + r_lo)` for `|r| <= pi/4`: `w = 1 - z/2` rounded, its rounding error recovered
/// exactly, then the rest added.
fn cos_kernel(r: f32, r_lo: f32) -> f32 {
    let z = r * r;
    let mut c = COS_POLY[5];
    for &k in COS_POLY[..5].iter().rev() {
        c = c.mul_add(z, k);
    }
    let hz = 0.5 * z;
    let w = 1.0 - hz;
    w + (((1.0 - w) - hz) + (z * (z * c) - r * r_lo))
}

/// `(sin x, cos x)`.
pub fn sincos(x: f32) -> (f32, f32) {
    if !x.is_finite() {
        return (CANONICAL_NAN, CANONICAL_NAN);
    }
    let a = x.to_bits() & 0x7FFF_FFFF;
    if a < TINY {
        return (x, 1.0);
    }
    let (quadrant, r, r_lo) = if a < PI_OVER_4 { (0, x, 0.0) } else { reduce(x) };
    let (s, c) = (sin_kernel(r, r_lo), cos_kernel(r, r_lo));
    match quadrant {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

/// Sine: [`sincos`]'s first.
pub fn sin(x: f32) -> f32 {
    sincos(x).0
}

/// Cosine: [`sincos`]'s second.
pub fn cos(x: f32) -> f32 {
    sincos(x).1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants are what their comments say: 2/pi's bits (against the series' value in
    /// f64 at the top), pi/2 * 2^-62 as a pair, and the Taylor coefficients rounded to f32.
    #[test]
    fn constants_are_what_they_say() {
        let top = f64::from(TWO_OVER_PI[1]) * 2f64.powi(-32) + f64::from(TWO_OVER_PI[2]) * 2f64.powi(-64);
        assert_eq!(top, 2.0 / core::f64::consts::PI);
        let pio2 = core::f64::consts::FRAC_PI_2 * 2f64.powi(-62);
        assert_eq!(PIO2_HI, pio2 as f32);
        assert_eq!(PIO2_LO, (pio2 - f64::from(PIO2_HI)) as f32);
        let factorial = |n: u32| (1..=n).map(f64::from).product::<f64>();
        for (k, c) in SIN_POLY.iter().enumerate() {
            let n = 2 * k as u32 + 3;
            let sign = if k % 2 == 0 { -1.0 } else { 1.0 };
            assert_eq!(*c, (sign / factorial(n)) as f32, "sin 1/{n}!");
        }
        for (k, c) in COS_POLY.iter().enumerate() {
            let n = 2 * k as u32 + 4;
            let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
            assert_eq!(*c, (sign / factorial(n)) as f32, "cos 1/{n}!");
        }
        assert_eq!(f32::from_bits(PI_OVER_4), core::f32::consts::FRAC_PI_4);
        assert_eq!(TWO_OVER_PI, crate::math::reference::TWO_OVER_PI);
    }

    /// kernels.cu has no 128-bit integers: it forms the same product in 32-bit limbs of u64s.
    /// That arithmetic, written here as it is there, gives the same quarter turns.
    #[test]
    fn the_32_bit_limb_reduction_of_the_cuda_kernel_is_the_same() {
        fn limbs(x: f32) -> (u32, i64) {
            let bits = x.to_bits() & 0x7FFF_FFFF;
            let e = (bits >> 23) as i32 - 150;
            let m = u64::from((bits & 0x007F_FFFF) | 0x0080_0000);
            let start = (e + 30) as usize;
            let (word, shift) = (start / 32, start % 32);
            let w: Vec<u64> = (0..3).map(|k| ((u64::from(TWO_OVER_PI[word + k]) << 32 | u64::from(TWO_OVER_PI[word + k + 1])) << shift) >> 32).collect();
            let t = m * w[2];
            let t = m * w[1] + (t >> 32);
            let low32 = t & 0xFFFF_FFFF;
            let t = m * w[0] + (t >> 32);
            let l1 = t & 0xFFFF_FFFF;
            let quadrant = (l1 >> 30) as u32 & 3;
            let fraction = (((l1 & 0x3FFF_FFFF) << 32) | low32) as i64;
            if fraction >= 1 << 61 { ((quadrant + 1) & 3, fraction - (1 << 62)) } else { (quadrant, fraction) }
        }
        for bits in (PI_OVER_4..0x7F80_0000).step_by(4099).chain([PI_OVER_4, 0x7F7F_FFFF, 0x4B80_0000, 0x5AFE_EAAB]) {
            let x = f32::from_bits(bits);
            assert_eq!(limbs(x), quarter_turns(x), "{x:e}");
        }
    }

    #[test]
    fn special_values_and_symmetry() {
        for x in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            assert_eq!((sin(x).to_bits(), cos(x).to_bits()), (0x7FC0_0000, 0x7FC0_0000));
        }
        assert_eq!(sin(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(cos(-0.0), 1.0);
        for bits in (0..0x7F80_0000u32).step_by(999_983) {
            let x = f32::from_bits(bits);
            assert_eq!(sin(-x).to_bits(), (-sin(x)).to_bits(), "sin is odd at {x:e}");
            assert_eq!(cos(-x).to_bits(), cos(x).to_bits(), "cos is even at {x:e}");
        }
        assert_eq!(sin(f32::MAX), (f64::from(f32::MAX)).sin() as f32);
    }
}
