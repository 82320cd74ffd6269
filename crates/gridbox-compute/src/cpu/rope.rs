//! `rope`: rotary position embedding in the Llama "rotate half" layout. For `x [..., T, D]`,
//! row `t` sits at position `p = offset + t`; element pairs `(i, i + D/2)` rotate by the angle
//! `p * freq_i`:
//!
//! ```text
//! y[i]       = x[i] * cos - x[i + D/2] * sin
//! y[i + D/2] = x[i + D/2] * cos + x[i] * sin
//! ```
//!
//! with `freq_i = theta^(-2i/D)` ([`frequency`]) and gridbox's own sin and cos, so every backend
//! gets the same bits (spec/determinism.md).

use crate::math::{self, CANONICAL_NAN};
use crate::ops::OpError;
use crate::tensor::{Tensor, TensorMeta};

use super::matmul::zeroed;
use super::{MIN_PARALLEL_ELEMENTS, Workers, parallel_rows};

fn canonical(x: f32) -> f32 {
    if x.is_nan() { CANONICAL_NAN } else { x }
}

/// `theta^(-2i/d)` = `e^-(q ln theta)`, `q = 2i/d`, with both factors carried as pairs: `q` as
/// `e = (2i as f32) / (d as f32)` and `eq = fma(-e, d, 2i) / d` (the division's error), `ln theta`
/// as `l = log(theta)` and `c = fma(theta, exp(-l), -1)` (`theta e^-l - 1 ~ ln theta - l`); then
/// `w = e * l`, `ew = fma(e, l, -w) + (e * c + eq * l)`, `v = exp(-w)`, and `v * (1 - ew)` as
/// `fma(v, -ew, v)`.
pub(crate) fn frequency(i: usize, d: usize, theta: f32) -> f32 {
    let (two_i, d) = ((2 * i) as f32, d as f32);
    let e = two_i / d;
    let eq = (-e).mul_add(d, two_i) / d;
    let l = math::log(theta);
    let c = theta.mul_add(math::exp(-l), -1.0);
    let w = e * l;
    let ew = e.mul_add(l, -w) + (e * c + eq * l);
    let v = math::exp(-w);
    v.mul_add(-ew, v)
}

/// The rotation of pair `i` at position `position`: `(sin, cos)` of `(position as f32) * freq`.
pub(crate) fn angle_sincos(position: u32, freq: f32) -> (f32, f32) {
    math::sincos(position as f32 * freq)
}

/// Rotates `x` (`[..., T, D]`, D even) as the module says; `out` is `x`'s shape.
pub(crate) fn rope(x: &Tensor, offset: u32, theta: f32, out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    let data = x.as_f32().ok_or_else(|| OpError::UnsupportedDType("rope takes f32".into()))?;
    let shape = x.shape();
    let rank = shape.len();
    if rank < 2 || !shape[rank - 1].is_multiple_of(2) || out.shape != shape {
        return Err(OpError::ShapeMismatch(format!("rope output {:?} for input {shape:?}", out.shape)));
    }
    let (t_len, d) = (shape[rank - 2], shape[rank - 1]);
    let half = d / 2;
    if t_len.checked_add(offset as usize).is_none_or(|end| end > crate::ops::ROPE_MAX_POSITION as usize) {
        return Err(OpError::InvalidParameter(format!("rope positions {offset}..{offset}+{t_len} pass {}", crate::ops::ROPE_MAX_POSITION)));
    }
    // The (sin, cos) table, T x D/2: no larger than half the output, and the same for every
    // leading index.
    let freqs: Vec<f32> = (0..half).map(|i| frequency(i, d, theta)).collect();
    let mut table = Vec::with_capacity(t_len * half);
    for t in 0..t_len {
        if t % (MIN_PARALLEL_ELEMENTS / half.max(1)).max(1) == 0 && workers.should_stop() {
            return Tensor::f32(vec![0], Vec::new());
        }
        table.extend(freqs.iter().map(|&f| angle_sincos(offset + t as u32, f)));
    }
    let mut result = zeroed(data.len())?;
    parallel_rows(&mut result, d, workers, |first, chunk| {
        for (r, y) in chunk.chunks_mut(d.max(1)).enumerate() {
            let row = first + r;
            let xs = &data[row * d..(row + 1) * d];
            let angles = &table[(row % t_len) * half..(row % t_len + 1) * half];
            for (i, &(s, c)) in angles.iter().enumerate() {
                let (x1, x2) = (xs[i], xs[i + half]);
                y[i] = canonical(x1 * c - x2 * s);
                y[i + half] = canonical(x2 * c + x1 * s);
            }
        }
    });
    Tensor::f32(out.shape.clone(), result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::OpCall;

    fn run(call: &OpCall, x: &Tensor, threads: usize) -> Result<Tensor, OpError> {
        let out = call.infer(&[x.meta()])?;
        super::super::execute(call, &[x], &out, threads)
    }

    /// The frequencies against theta^(-2i/D) in f64, for the bases and head sizes models use:
    /// within the bound spec/determinism.md states.
    #[test]
    fn frequencies_are_within_their_stated_bound() {
        let mut worst = 0;
        for theta in [10_000.0f32, 500_000.0, 1_000_000.0, 100.0, 2.5] {
            for d in [2, 32, 64, 80, 96, 128, 256] {
                for i in 0..d / 2 {
                    let exact = (f64::from(theta)).powf(-((2 * i) as f64) / d as f64) as f32;
                    worst = worst.max(crate::math::reference::ulps(frequency(i, d, theta), exact));
                }
            }
        }
        assert!(worst <= 1, "{worst} ulp");
        assert_eq!(frequency(0, 64, 10_000.0), 1.0);
    }

    /// Row t of every leading index rotates by position offset + t; pairs are (i, i + D/2);
    /// specials stay specials and NaN is canonical; thread counts do not matter.
    #[test]
    fn rotates_pairs_by_position_as_the_spec_says() {
        let (t_len, d) = (5, 8);
        let values: Vec<f32> = (0..3 * t_len * d).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.031).collect();
        let mut values = values;
        values[3] = f32::NAN;
        values[9] = f32::INFINITY;
        values[17] = -0.0;
        values[30] = 1e-40;
        let x = Tensor::f32(vec![3, t_len, d], values.clone()).unwrap();
        let call = OpCall::Rope { offset: 7, theta: 10_000.0 };
        let y = run(&call, &x, 1).unwrap();
        assert_eq!(y.to_le_bytes(), run(&call, &x, 3).unwrap().to_le_bytes());
        let ys = y.as_f32().unwrap();
        for row in 0..3 * t_len {
            let position = 7 + (row % t_len) as u32;
            for i in 0..d / 2 {
                let (s, c) = math::sincos(position as f32 * frequency(i, d, 10_000.0));
                let (x1, x2) = (values[row * d + i], values[row * d + i + d / 2]);
                for (got, want) in [(ys[row * d + i], x1 * c - x2 * s), (ys[row * d + i + d / 2], x2 * c + x1 * s)] {
                    let want = canonical(want);
                    assert_eq!(got.to_bits(), want.to_bits(), "row {row} pair {i}");
                }
            }
        }
        // Position 0 is the identity rotation (cos 0 = 1, sin 0 = 0) for finite inputs.
        let x = Tensor::f32(vec![1, 4], vec![1.5, -2.0, 0.25, 3.0]).unwrap();
        assert_eq!(run(&OpCall::Rope { offset: 0, theta: 10_000.0 }, &x, 1).unwrap().as_f32().unwrap(), &[1.5, -2.0, 0.25, 3.0]);
        // Odd D, rank 1 and positions past 2^24 are refused before anything runs.
        assert!(run(&call, &Tensor::f32(vec![2, 3], vec![0.0; 6]).unwrap(), 1).is_err());
        assert!(run(&call, &Tensor::f32(vec![4], vec![0.0; 4]).unwrap(), 1).is_err());
        let late = OpCall::Rope { offset: crate::ops::ROPE_MAX_POSITION - 1, theta: 10_000.0 };
        assert!(run(&late, &Tensor::f32(vec![1, 2], vec![0.0; 2]).unwrap(), 1).is_ok());
        assert!(run(&late, &Tensor::f32(vec![2, 2], vec![0.0; 4]).unwrap(), 1).is_err());
    }
}
