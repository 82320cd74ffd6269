//! Reductions in gridbox's fixed order, and the ops built on them (softmax, norms).
//!
//! The order (spec/determinism.md) maps onto a CUDA warp and onto 32 CPU accumulators alike:
//! lane `l` (0..32) folds elements `l, l+32, l+64, ...` in increasing order, then the lanes are
//! combined by a fixed tree: for `s` in 16, 8, 4, 2, 1, lane `l` takes `lane[l] OP lane[l+s]`
//! for `l < s`; the result is lane 0.

use crate::math::{self, CANONICAL_NAN};
use crate::ops::{OpError, ReduceOp, resolve_axis};
use crate::tensor::{Tensor, TensorMeta, checked_product};

use super::Workers;
use super::matmul::zeroed;
use super::parallel_rows;

/// Lanes in a reduction: a CUDA warp.
pub(crate) const LANES: usize = 32;

fn tree(mut lanes: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut s = LANES / 2;
    while s > 0 {
        for l in 0..s {
            lanes[l] = op(lanes[l], lanes[l + s]);
        }
        s /= 2;
    }
    lanes[0]
}

/// The sum of `xs` in gridbox's order, each lane starting from +0.0. An empty sum is +0.0.
pub fn sum_f32(xs: &[f32]) -> f32 {
    sum_map(xs, |x| x)
}

/// The sum of `f(x)` over `xs` in gridbox's order (each `f(x)` rounded before it is added).
fn sum_map(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane += f(x);
        }
    }
    for (lane, &x) in lanes.iter_mut().zip(chunks.remainder()) {
        *lane += f(x);
    }
    tree(lanes, |a, b| a + b)
}

/// `max(a, b)`: NaN if either is NaN; of +0.0 and -0.0, +0.0.
pub(crate) fn max2(a: f32, b: f32) -> f32 {
    if a.is_nan() || b.is_nan() {
        CANONICAL_NAN
    } else if a > b {
        a
    } else if b > a {
        b
    } else {
        // Equal: the same bits, or +0.0 and -0.0, where the sign bits' AND gives +0.0.
        f32::from_bits(a.to_bits() & b.to_bits())
    }
}

/// The maximum of `xs` in gridbox's order, each lane starting from -inf. An empty max is -inf.
pub fn max_f32(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    for (index, &x) in xs.iter().enumerate() {
        let lane = &mut lanes[index % LANES];
        *lane = max2(*lane, x);
    }
    tree(lanes, max2)
}

fn canonical(x: f32) -> f32 {
    if x.is_nan() { CANONICAL_NAN } else { x }
}

/// `op` over `axis`: the input is seen as `[outer, n, inner]`.
pub(crate) fn reduce(op: ReduceOp, x: &Tensor, axis: i64, out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    let data = x.as_f32().ok_or_else(|| OpError::UnsupportedDType("reductions take f32".into()))?;
    let shape = x.shape();
    let axis = resolve_axis(axis, shape.len())?;
    let n = shape[axis];
    let inner = checked_product(&shape[axis + 1..])?;
    let outer = checked_product(&shape[..axis])?;
    if Some(out.checked_len()?) != outer.checked_mul(inner) {
        return Err(OpError::ShapeMismatch(format!("reduction output {:?} for input {:?}", out.shape, shape)));
    }
    let mut result = zeroed(outer * inner)?;
    let mut column = Vec::with_capacity(if inner == 1 { 0 } else { n });
    for o in 0..outer {
        if workers.should_stop() {
            break;
        }
        for i in 0..inner {
            let values: &[f32] = if inner == 1 {
                &data[o * n..(o + 1) * n]
            } else {
                column.clear();
                column.extend((0..n).map(|k| data[(o * n + k) * inner + i]));
                &column
            };
            result[o * inner + i] = canonical(match op {
                ReduceOp::Sum => sum_f32(values),
                ReduceOp::Mean => sum_f32(values) / n as f32,
                ReduceOp::Max => max_f32(values),
            });
        }
    }
    Tensor::f32(out.shape.clone(), result)
}

/// The index of the largest of `xs` (not empty): scanning up from index 0, a later element takes
/// over when it is NaN and the best so far is not, or when both are numbers and it is greater.
/// So ties (+0.0 and -0.0 among them) go to the lowest index and the first NaN wins.
pub(crate) fn argmax_row(xs: &[f32]) -> usize {
    let mut best = 0;
    for (index, &v) in xs.iter().enumerate().skip(1) {
        let b = xs[best];
        if b.is_nan() {
            break;
        }
        if v.is_nan() || v > b {
            best = index;
        }
    }
    best
}

/// Argmax over the last axis: `[..., D]` f32 to `[...]` i32.
pub(crate) fn argmax(x: &Tensor, out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    let data = x.as_f32().ok_or_else(|| OpError::UnsupportedDType("argmax takes f32".into()))?;
    let row = x.shape().last().copied().filter(|&d| d > 0).ok_or_else(|| OpError::ShapeMismatch("argmax needs a last axis of 1 or more".into()))?;
    let rows = data.len() / row;
    if out.checked_len()? != rows || out.dtype != gridbox_abi::DType::I32 {
        return Err(OpError::ShapeMismatch(format!("argmax output {:?} for input {:?}", out.shape, x.shape())));
    }
    let mut result = Vec::with_capacity(rows);
    // About 64 Ki elements between checks of whether to stop (whole rows).
    let per_check = (super::MIN_PARALLEL_ELEMENTS / row).max(1);
    for (index, xs) in data.chunks_exact(row).enumerate() {
        if index % per_check == 0 && workers.should_stop() {
            break;
        }
        // The index is below 2^31: `OpCall::infer` refuses longer rows.
        result.push(argmax_row(xs) as i32);
    }
    result.resize(rows, 0);
    Tensor::i32(out.shape.clone(), result)
}

fn rows_of<'a>(x: &'a Tensor, out: &TensorMeta, what: &str) -> Result<(&'a [f32], usize), OpError> {
    let data = x.as_f32().ok_or_else(|| OpError::UnsupportedDType(format!("{what} takes f32")))?;
    if out.shape != x.shape() {
        return Err(OpError::ShapeMismatch(format!("{what} output {:?} for input {:?}", out.shape, x.shape())));
    }
    let row = x.shape().last().copied().ok_or_else(|| OpError::ShapeMismatch(format!("{what} needs rank >= 1")))?;
    Ok((data, row))
}

/// Softmax over the last axis: `m = max(row)`, `e_i = exp(x_i - m)`, `y_i = e_i / sum(e)`.
pub(crate) fn softmax(x: &Tensor, out: &TensorMeta, threads: Workers<'_>) -> Result<Tensor, OpError> {
    let (data, row) = rows_of(x, out, "softmax")?;
    let mut result = zeroed(data.len())?;
    parallel_rows(&mut result, row, threads, |first, chunk| {
        for (r, y) in chunk.chunks_mut(row.max(1)).enumerate() {
            let start = (first + r) * row;
            let xs = &data[start..start + row];
            let m = max_f32(xs);
            for (e, &v) in y.iter_mut().zip(xs) {
                *e = math::exp(v - m);
            }
            let s = sum_f32(y);
            for e in y.iter_mut() {
                *e = canonical(*e / s);
            }
        }
    });
    Tensor::f32(out.shape.clone(), result)
}

/// Layer norm (with `beta`) or RMS norm (without) over the last axis:
/// layer: `mean = sum(x)/n`, `d_i = x_i - mean`, `var = sum(d_i * d_i)/n`,
/// `r = 1 / sqrt(var + eps)`, `y_i = (d_i * r) * gamma_i + beta_i`;
/// rms: `ms = sum(x_i * x_i)/n`, `r = 1 / sqrt(ms + eps)`, `y_i = (x_i * r) * gamma_i`.
/// Every operation rounds on its own; no fma.
pub(crate) fn layer_norm(x: &Tensor, gamma: &Tensor, beta: Option<&Tensor>, eps: f32, out: &TensorMeta, threads: Workers<'_>) -> Result<Tensor, OpError> {
    let (data, row) = rows_of(x, out, "norms")?;
    let gamma = gamma.as_f32().filter(|g| g.len() == row).ok_or_else(|| OpError::ShapeMismatch("gamma must be [last dim] f32".into()))?;
    let beta = match beta {
        Some(beta) => Some(beta.as_f32().filter(|b| b.len() == row).ok_or_else(|| OpError::ShapeMismatch("beta must be [last dim] f32".into()))?),
        None => None,
    };
    let n = row as f32;
    let mut result = zeroed(data.len())?;
    parallel_rows(&mut result, row, threads, |first, chunk| {
        for (r, y) in chunk.chunks_mut(row.max(1)).enumerate() {
            let start = (first + r) * row;
            let xs = &data[start..start + row];
            match beta {
                Some(beta) => {
                    let mean = sum_f32(xs) / n;
                    let var = sum_map(xs, |v| (v - mean) * (v - mean)) / n;
                    let inv = 1.0 / (var + eps).sqrt();
                    for (i, out) in y.iter_mut().enumerate() {
                        *out = canonical(((xs[i] - mean) * inv) * gamma[i] + beta[i]);
                    }
                }
                None => {
                    let ms = sum_map(xs, |v| v * v) / n;
                    let inv = 1.0 / (ms + eps).sqrt();
                    for (i, out) in y.iter_mut().enumerate() {
                        *out = canonical((xs[i] * inv) * gamma[i]);
                    }
                }
            }
        }
    });
    Tensor::f32(out.shape.clone(), result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::OpCall;

    /// The spec's order, written as literally as possible.
    fn spec_sum(xs: &[f32]) -> f32 {
        let mut lanes = [0.0f32; 32];
        for (i, &x) in xs.iter().enumerate() {
            lanes[i % 32] += x;
        }
        for s in [16, 8, 4, 2, 1] {
            for l in 0..s {
                lanes[l] += lanes[l + s];
            }
        }
        lanes[0]
    }

    fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919 % 1000) as f32 - 500.0) * 0.001_37).collect()
    }

    #[test]
    fn sum_follows_the_spec_order_at_edge_sizes() {
        for n in [0, 1, 2, 31, 32, 33, 63, 64, 65, 97, 1000, 1023, 4099] {
            let xs = values(n);
            assert_eq!(sum_f32(&xs).to_bits(), spec_sum(&xs).to_bits(), "n = {n}");
        }
        assert_eq!(sum_f32(&[]).to_bits(), 0);
        assert_eq!(max_f32(&[]), f32::NEG_INFINITY);
        assert_eq!(max_f32(&[-0.0, 0.0]).to_bits(), 0);
        assert_eq!(max_f32(&[1.0, f32::NAN, 2.0]).to_bits(), 0x7FC0_0000);
        assert_eq!(sum_f32(&[f32::INFINITY, f32::NEG_INFINITY]).to_bits() & 0x7FC0_0000, 0x7FC0_0000);
    }

    fn run(call: OpCall, inputs: &[&Tensor], threads: usize) -> Tensor {
        let metas: Vec<_> = inputs.iter().map(|t| t.meta()).collect();
        let out = call.infer(&metas).unwrap();
        super::super::execute(&call, inputs, &out, threads).unwrap()
    }

    #[test]
    fn reductions_over_every_axis() {
        let x = Tensor::f32(vec![3, 33, 5], values(3 * 33 * 5)).unwrap();
        for axis in [0, 1, 2, -1] {
            for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
                let out = run(OpCall::Reduce { op, axis, keepdims: axis == 1 }, &[&x], 1);
                let a = resolve_axis(axis, 3).unwrap();
                let shape = x.shape();
                let inner: usize = shape[a + 1..].iter().product();
                let n = shape[a];
                for (flat, &got) in out.as_f32().unwrap().iter().enumerate() {
                    let (o, i) = (flat / inner, flat % inner);
                    let column: Vec<f32> = (0..n).map(|k| x.as_f32().unwrap()[(o * n + k) * inner + i]).collect();
                    let want = match op {
                        ReduceOp::Sum => spec_sum(&column),
                        ReduceOp::Mean => spec_sum(&column) / n as f32,
                        ReduceOp::Max => column.iter().copied().fold(f32::NEG_INFINITY, f32::max),
                    };
                    assert_eq!(got.to_bits(), want.to_bits(), "{op:?} axis {axis}");
                }
            }
        }
    }

    #[test]
    fn argmax_takes_the_lowest_index_of_ties_and_the_first_nan() {
        let nan = f32::NAN;
        for (row, want) in [
            (vec![1.0], 0),
            (vec![1.0, 3.0, 3.0, 2.0], 1),
            (vec![-0.0, 0.0], 0),
            (vec![0.0, -0.0], 0),
            (vec![f32::NEG_INFINITY, f32::NEG_INFINITY], 0),
            (vec![f32::NEG_INFINITY, -f32::MAX], 1),
            (vec![1.0, nan, f32::INFINITY, -nan], 1),
            (vec![f32::INFINITY, 2.0, -nan], 2),
            (vec![f32::from_bits(1), 0.0, f32::from_bits(2)], 2),
        ] {
            assert_eq!(argmax_row(&row), want, "{row:?}");
        }
        // Rows around the reduction width, against the spec's scan written out, in one call.
        let mut xs = values(3 * 97);
        xs[5] = nan;
        xs[100] = xs[150];
        let x = Tensor::f32(vec![3, 97], xs.clone()).unwrap();
        let got = run(OpCall::Argmax, &[&x], 2);
        assert_eq!(got.shape(), [3]);
        let want: Vec<i32> = xs.chunks(97).map(|r| argmax_row(r) as i32).collect();
        assert_eq!(got.as_i32().unwrap(), want);
        assert_eq!(want[0], 5);
        assert!(OpCall::Argmax.infer(&[Tensor::f32(vec![2, 0], vec![]).unwrap().meta()]).is_err());
        assert!(OpCall::Argmax.infer(&[Tensor::f32(vec![], vec![1.0]).unwrap().meta()]).is_err());
    }

    #[test]
    fn softmax_and_norms_are_thread_independent_and_sane() {
        for row in [1, 31, 32, 33, 97, 1000] {
            let rows = 300;
            let x = Tensor::f32(vec![rows, row], values(rows * row)).unwrap();
            let gamma = Tensor::f32(vec![row], values(row)).unwrap();
            let beta = Tensor::f32(vec![row], values(row).iter().map(|v| v * 2.0).collect()).unwrap();
            for (call, inputs) in
                [(OpCall::Softmax, vec![&x]), (OpCall::LayerNorm { eps: 1e-5 }, vec![&x, &gamma, &beta]), (OpCall::RmsNorm { eps: 1e-6 }, vec![&x, &gamma])]
            {
                let one = run(call.clone(), &inputs, 1);
                let three = run(call.clone(), &inputs, 3);
                assert_eq!(one.to_le_bytes(), three.to_le_bytes(), "{call:?} row {row}");
            }
            let soft = run(OpCall::Softmax, &[&x], 1);
            for r in soft.as_f32().unwrap().chunks(row) {
                let total: f64 = r.iter().map(|&v| v as f64).sum();
                assert!((total - 1.0).abs() < 1e-5, "row sums to {total}");
            }
        }
        let x = Tensor::f32(vec![1, 3], vec![f32::NEG_INFINITY, 0.0, f32::NEG_INFINITY]).unwrap();
        assert_eq!(run(OpCall::Softmax, &[&x], 1).as_f32().unwrap(), &[0.0, 1.0, 0.0]);
    }
}
