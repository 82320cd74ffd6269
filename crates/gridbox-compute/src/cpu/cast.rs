//! `cast`: half-precision weights (f16, bf16) to f32. Every f16 and bf16 value is exactly an
//! f32 (both formats' significands and exponent ranges fit inside binary32's), so the
//! conversion is exact; NaNs become the canonical NaN like every NaN an op stores.

use gridbox_abi::DType;

use crate::math::CANONICAL_NAN;
use crate::ops::OpError;
use crate::tensor::{Tensor, TensorData, TensorMeta};

use super::Workers;

/// Elements converted between checks of whether to stop.
const CHECK_EVERY: usize = 1 << 16;

/// 2^-24, the value of f16's smallest subnormal.
const F16_TINY: f32 = f32::from_bits(0x3380_0000);

/// The f32 with the value of the f16 `bits`: `±0`, subnormals `m * 2^-24`, normals (exponent
/// rebiased from 15 to 127, significand shifted up 13 bits), `±inf`; NaN gives the canonical NaN.
pub fn f16_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits & 0x8000) << 16;
    let exponent = u32::from(bits >> 10) & 0x1F;
    let mantissa = u32::from(bits & 0x3FF);
    match (exponent, mantissa) {
        (0x1F, 0) => f32::from_bits(sign | 0x7F80_0000),
        (0x1F, _) => CANONICAL_NAN,
        // Zero and subnormals: m * 2^-24, exact (m < 2^10 converts exactly, the scaling by a
        // power of two stays normal), then the sign.
        (0, _) => f32::from_bits(sign | (mantissa as f32 * F16_TINY).to_bits()),
        _ => f32::from_bits(sign | ((exponent + 112) << 23) | (mantissa << 13)),
    }
}

/// The f32 with the value of the bf16 `bits` (the high half of its bit pattern); NaN gives the
/// canonical NaN.
pub fn bf16_to_f32(bits: u16) -> f32 {
    if bits & 0x7FFF > 0x7F80 { CANONICAL_NAN } else { f32::from_bits(u32::from(bits) << 16) }
}

/// `x` (f16 or bf16) converted to `out`'s dtype (f32).
pub(crate) fn cast(x: &Tensor, out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    if out.dtype != DType::F32 || out.shape != x.shape() {
        return Err(OpError::ShapeMismatch(format!("cast output {} {:?} for input {:?}", out.dtype.name(), out.shape, x.shape())));
    }
    let (bits, convert): (&[u16], fn(u16) -> f32) = match x.data() {
        TensorData::F16(v) => (v, f16_to_f32),
        TensorData::Bf16(v) => (v, bf16_to_f32),
        _ => return Err(OpError::UnsupportedDType(format!("cast converts f16 and bf16, not {}", x.dtype().name()))),
    };
    let mut result = Vec::with_capacity(bits.len());
    for part in bits.chunks(CHECK_EVERY) {
        if workers.should_stop() {
            break;
        }
        result.extend(part.iter().map(|&b| convert(b)));
    }
    result.resize(bits.len(), 0.0);
    Tensor::f32(out.shape.clone(), result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every f16 and bf16 bit pattern against an independent reading of the formats: the value
    /// `(-1)^s * m * 2^(e - bias - fraction bits)` computed in f64 (exact), then narrowed to f32,
    /// which must not round.
    #[test]
    fn every_half_value_converts_exactly() {
        for bits in 0..=u16::MAX {
            let sign = if bits & 0x8000 != 0 { -1.0 } else { 1.0 };
            // f16: 5 exponent bits (bias 15), 10 fraction bits.
            let (e, m) = (i32::from((bits >> 10) & 0x1F), f64::from(bits & 0x3FF));
            let want = match e {
                0x1F if m == 0.0 => sign * f64::INFINITY,
                0x1F => f64::NAN,
                0 => sign * m * 2f64.powi(-24),
                _ => sign * (1024.0 + m) * 2f64.powi(e - 25),
            };
            let got = f16_to_f32(bits);
            if want.is_nan() {
                assert_eq!(got.to_bits(), CANONICAL_NAN.to_bits(), "f16 {bits:04x}");
            } else {
                assert_eq!(f64::from(got), want, "f16 {bits:04x}");
                assert_eq!(got.is_sign_negative(), sign < 0.0, "f16 {bits:04x}: the sign of zero");
            }
            // bf16: 8 exponent bits (bias 127), 7 fraction bits.
            let (e, m) = (i32::from((bits >> 7) & 0xFF), f64::from(bits & 0x7F));
            let want = match e {
                0xFF if m == 0.0 => sign * f64::INFINITY,
                0xFF => f64::NAN,
                0 => sign * m * 2f64.powi(-133),
                _ => sign * (128.0 + m) * 2f64.powi(e - 134),
            };
            let got = bf16_to_f32(bits);
            if want.is_nan() {
                assert_eq!(got.to_bits(), CANONICAL_NAN.to_bits(), "bf16 {bits:04x}");
            } else {
                assert_eq!(f64::from(got), want, "bf16 {bits:04x}");
                assert_eq!(got.is_sign_negative(), sign < 0.0, "bf16 {bits:04x}: the sign of zero");
            }
        }
    }

    #[test]
    fn cast_converts_whole_tensors_and_refuses_other_dtypes() {
        let x = Tensor::f16(vec![2, 2], vec![0x3C00, 0x8001, 0x7C00, 0x7E01]).unwrap();
        let out = TensorMeta::new(DType::F32, vec![2, 2]);
        let y = cast(&x, &out, Workers::threads(1)).unwrap();
        assert_eq!(y.as_f32().unwrap()[..3], [1.0, -(2f32.powi(-24)), f32::INFINITY]);
        assert_eq!(y.as_f32().unwrap()[3].to_bits(), 0x7FC0_0000);
        let b = Tensor::bf16(vec![3], vec![0x3F80, 0xFF80, 0x0001]).unwrap();
        let y = cast(&b, &TensorMeta::new(DType::F32, vec![3]), Workers::threads(1)).unwrap();
        assert_eq!(y.as_f32().unwrap(), [1.0, f32::NEG_INFINITY, f32::from_bits(0x0001_0000)]);
        let f = Tensor::f32(vec![1], vec![1.0]).unwrap();
        assert!(cast(&f, &TensorMeta::new(DType::F32, vec![1]), Workers::threads(1)).is_err());
    }
}
