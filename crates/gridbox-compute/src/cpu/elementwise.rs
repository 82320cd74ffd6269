//! Elementwise ops: one IEEE operation (or one `math` function) per element, NaN results stored
//! as the canonical NaN.

use crate::math::{self, CANONICAL_NAN};
use crate::ops::{BinaryOp, OpError, UnaryOp};
use crate::tensor::{Tensor, TensorMeta};

use super::Workers;
use super::matmul::zeroed;
use super::parallel_rows;

fn canonical(x: f32) -> f32 {
    if x.is_nan() { CANONICAL_NAN } else { x }
}

fn f32_data<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], OpError> {
    t.as_f32().ok_or_else(|| OpError::UnsupportedDType(format!("{what} takes f32")))
}

/// One unary op on one element.
pub(crate) fn apply_unary(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Neg => canonical(-x),
        // relu(x) = x for x > 0, +0.0 for x <= 0 (also -0.0), NaN for NaN.
        UnaryOp::Relu => {
            if x > 0.0 {
                x
            } else if x.is_nan() {
                CANONICAL_NAN
            } else {
                0.0
            }
        }
        UnaryOp::Gelu => math::gelu(x),
        UnaryOp::Sigmoid => math::sigmoid(x),
        UnaryOp::Tanh => math::tanh(x),
        UnaryOp::Exp => math::exp(x),
        UnaryOp::Log => math::log(x),
        UnaryOp::Sqrt => canonical(x.sqrt()),
        UnaryOp::Silu => math::silu(x),
    }
}

/// One binary op on one pair.
pub(crate) fn apply_binary(op: BinaryOp, a: f32, b: f32) -> f32 {
    canonical(match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
    })
}

/// `op` on every element.
pub(crate) fn unary(op: UnaryOp, x: &Tensor, out: &TensorMeta, threads: Workers<'_>) -> Result<Tensor, OpError> {
    let data = f32_data(x, "elementwise ops")?;
    if out.shape != x.shape() {
        return Err(OpError::ShapeMismatch(format!("elementwise output {:?} for input {:?}", out.shape, x.shape())));
    }
    let mut result = zeroed(data.len())?;
    parallel_rows(&mut result, 1, threads, |first, chunk| {
        for (y, &v) in chunk.iter_mut().zip(&data[first..]) {
            *y = apply_unary(op, v);
        }
    });
    Tensor::f32(out.shape.clone(), result)
}

/// Strides of `shape` broadcast to `rank` dims: 0 where the dim is missing or 1.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let offset = out.len() - shape.len();
    let mut strides = vec![0; out.len()];
    let mut stride = 1;
    for (i, &dim) in shape.iter().enumerate().rev() {
        strides[offset + i] = if dim == 1 { 0 } else { stride };
        stride *= dim;
    }
    strides
}

/// `op` on NumPy-broadcast pairs.
pub(crate) fn binary(op: BinaryOp, a: &Tensor, b: &Tensor, out: &TensorMeta, threads: Workers<'_>) -> Result<Tensor, OpError> {
    let (a_data, b_data) = (f32_data(a, "elementwise ops")?, f32_data(b, "elementwise ops")?);
    let expected = crate::ops::broadcast_shapes(a.shape(), b.shape())?;
    if expected != out.shape {
        return Err(OpError::ShapeMismatch(format!("elementwise output {:?}, expected {expected:?}", out.shape)));
    }
    let len = out.checked_len()?;
    let mut result = zeroed(len)?;
    if len == 0 {
        return Tensor::f32(out.shape.clone(), result);
    }
    if a.shape() == b.shape() {
        parallel_rows(&mut result, 1, threads, |first, chunk| {
            for ((y, &x), &z) in chunk.iter_mut().zip(&a_data[first..]).zip(&b_data[first..]) {
                *y = apply_binary(op, x, z);
            }
        });
        return Tensor::f32(out.shape.clone(), result);
    }
    // General case: rows along the last output dim, with each input stepping by 0 or 1.
    let rank = out.shape.len();
    let (sa, sb) = (broadcast_strides(a.shape(), &out.shape), broadcast_strides(b.shape(), &out.shape));
    let inner = out.shape[rank - 1];
    let (step_a, step_b) = (sa[rank - 1], sb[rank - 1]);
    parallel_rows(&mut result, inner, threads, |first_row, chunk| {
        for (row_index, row) in chunk.chunks_mut(inner).enumerate() {
            // Offsets of this row's first element in a and b.
            let mut rest = first_row + row_index;
            let (mut offset_a, mut offset_b) = (0, 0);
            for d in (0..rank - 1).rev() {
                let index = rest % out.shape[d];
                rest /= out.shape[d];
                offset_a += index * sa[d];
                offset_b += index * sb[d];
            }
            for (j, y) in row.iter_mut().enumerate() {
                let x = a_data.get(offset_a + j * step_a).copied().unwrap_or(f32::NAN);
                let z = b_data.get(offset_b + j * step_b).copied().unwrap_or(f32::NAN);
                *y = apply_binary(op, x, z);
            }
        }
    });
    Tensor::f32(out.shape.clone(), result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::OpCall;

    fn run(call: OpCall, inputs: &[&Tensor], threads: usize) -> Tensor {
        let metas: Vec<_> = inputs.iter().map(|t| t.meta()).collect();
        let out = call.infer(&metas).unwrap();
        super::super::execute(&call, inputs, &out, threads).unwrap()
    }

    #[test]
    fn broadcasting_matches_a_naive_loop_at_edge_sizes() {
        for (sa, sb) in
            [(vec![3, 1, 5], vec![4, 1]), (vec![1], vec![33]), (vec![2, 0, 3], vec![3]), (vec![], vec![7, 2]), (vec![97], vec![97]), (vec![65, 1], vec![1, 31])]
        {
            let a_len: usize = sa.iter().product();
            let b_len: usize = sb.iter().product();
            let a = Tensor::f32(sa.clone(), (0..a_len).map(|i| i as f32 * 0.5 - 3.0).collect()).unwrap();
            let b = Tensor::f32(sb.clone(), (0..b_len).map(|i| 1.0 + i as f32 * 0.25).collect()).unwrap();
            let out = run(OpCall::Binary(BinaryOp::Div), &[&a, &b], 1);
            let shape = out.shape().to_vec();
            let (st_a, st_b) = (broadcast_strides(&sa, &shape), broadcast_strides(&sb, &shape));
            for (flat, &got) in out.as_f32().unwrap().iter().enumerate() {
                let (mut rest, mut ia, mut ib) = (flat, 0, 0);
                for d in (0..shape.len()).rev() {
                    let index = rest % shape[d];
                    rest /= shape[d];
                    ia += index * st_a[d];
                    ib += index * st_b[d];
                }
                let want = a.as_f32().unwrap()[ia] / b.as_f32().unwrap()[ib];
                assert_eq!(got.to_bits(), want.to_bits(), "{sa:?} / {sb:?} at {flat}");
            }
        }
    }

    #[test]
    fn special_values_and_threads() {
        let values: Vec<f32> = (0..200_000).map(|i| f32::from_bits((i as u32).wrapping_mul(2_654_435_761))).collect();
        let x = Tensor::f32(vec![values.len()], values).unwrap();
        for op in [UnaryOp::Neg, UnaryOp::Relu, UnaryOp::Gelu, UnaryOp::Sigmoid, UnaryOp::Tanh, UnaryOp::Exp, UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Silu] {
            let one = run(OpCall::Unary(op), &[&x], 1);
            let three = run(OpCall::Unary(op), &[&x], 3);
            assert_eq!(one.to_le_bytes(), three.to_le_bytes(), "{op:?}");
            assert!(one.as_f32().unwrap().iter().filter(|v| v.is_nan()).all(|v| v.to_bits() == 0x7FC0_0000), "{op:?}");
        }
        assert_eq!(apply_unary(UnaryOp::Relu, -0.0).to_bits(), 0);
        assert_eq!(apply_unary(UnaryOp::Neg, 0.0).to_bits(), 0x8000_0000);
        assert_eq!(apply_binary(BinaryOp::Mul, f32::INFINITY, 0.0).to_bits(), 0x7FC0_0000);
    }
}
