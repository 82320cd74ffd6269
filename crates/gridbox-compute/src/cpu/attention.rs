//! `attention`: causal attention with grouped-query heads, one op for what a decoder layer would
//! otherwise spell as matmul, scale, mask, softmax and matmul (spec/determinism.md). For query
//! head `h` (key/value head `g = h / (Hq / Hkv)`) and row `t` (position `offset + t`):
//!
//! ```text
//! score_s = s <= offset + t ? (sum_d q[h,t,d] k[g,s,d], an fma chain in d order) * scale : -inf
//! p = softmax(score)                  (the softmax op's steps)
//! out[h,t,d] = sum_s p_s v[g,s,d]     (an fma chain in s order, masked keys included)
//! ```
//!
//! Each step is the one the separate ops take, so the result is theirs bit for bit.

use crate::math::{self, CANONICAL_NAN};
use crate::ops::OpError;
use crate::tensor::{Tensor, TensorMeta};

use super::matmul::zeroed;
use super::reduce::{max_f32, sum_f32};
use super::{Workers, parallel_rows};

fn canonical(x: f32) -> f32 {
    if x.is_nan() { CANONICAL_NAN } else { x }
}

/// The attention of `q [Hq, T, D]` over `k`, `v` (`[Hkv, S, D]`); `out` is `[Hq, T, D]`.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor, offset: u64, scale: f32, out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    fn f32s(t: &Tensor) -> Result<&[f32], OpError> {
        t.as_f32().ok_or_else(|| OpError::UnsupportedDType("attention takes f32".into()))
    }
    let (qs, ks, vs) = (f32s(q)?, f32s(k)?, f32s(v)?);
    let shapes = (<[usize; 3]>::try_from(q.shape()), <[usize; 3]>::try_from(k.shape()));
    let (Ok([hq, t_len, d]), Ok([hkv, s_len, dk])) = shapes else {
        return Err(OpError::ShapeMismatch("attention takes q [Hq, T, D] and k, v [Hkv, S, D]".into()));
    };
    if dk != d || v.shape() != k.shape() || hkv == 0 || !hq.is_multiple_of(hkv) || out.shape != [hq, t_len, d] {
        return Err(OpError::ShapeMismatch(format!("attention output {:?} for q {:?}, k {:?}, v {:?}", out.shape, q.shape(), k.shape(), v.shape())));
    }
    let group = hq / hkv;
    let mut result = zeroed(qs.len())?;
    // One output row [D] per (h, t); D = 0 leaves nothing to compute.
    if d == 0 {
        return Tensor::f32(out.shape.clone(), result);
    }
    parallel_rows(&mut result, d, workers, |first, chunk| {
        let mut p = vec![0.0f32; s_len];
        for (r, y) in chunk.chunks_mut(d).enumerate() {
            // A row is 2 S D multiply-adds, which can be many: the stop is checked before each.
            if workers.should_stop() {
                return;
            }
            let row = first + r;
            let (h, t) = (row / t_len, row % t_len);
            let g = h / group;
            let query = &qs[row * d..(row + 1) * d];
            let keys = &ks[g * s_len * d..(g + 1) * s_len * d];
            let values = &vs[g * s_len * d..(g + 1) * s_len * d];
            let last = offset.saturating_add(t as u64);
            for (s, score) in p.iter_mut().enumerate() {
                *score = if s as u64 > last {
                    f32::NEG_INFINITY
                } else {
                    let key = &keys[s * d..(s + 1) * d];
                    let dot = query.iter().zip(key).fold(0.0f32, |acc, (&a, &b)| a.mul_add(b, acc));
                    canonical(dot) * scale
                };
            }
            // softmax, as the softmax op computes it.
            let m = max_f32(&p);
            for e in p.iter_mut() {
                *e = math::exp(*e - m);
            }
            let total = sum_f32(&p);
            for e in p.iter_mut() {
                *e = canonical(*e / total);
            }
            for (j, y) in y.iter_mut().enumerate() {
                let acc = p.iter().enumerate().fold(0.0f32, |acc, (s, &w)| w.mul_add(values[s * d + j], acc));
                *y = canonical(acc);
            }
        }
    });
    Tensor::f32(out.shape.clone(), result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{BinaryOp, OpCall};

    fn run(call: &OpCall, inputs: &[&Tensor]) -> Tensor {
        let metas: Vec<_> = inputs.iter().map(|t| t.meta()).collect();
        let out = call.infer(&metas).unwrap();
        super::super::execute(call, inputs, &out, 2).unwrap()
    }

    fn values(n: usize, salt: usize) -> Vec<f32> {
        (0..n).map(|i| (((i + salt) * 7919 % 1000) as f32 - 500.0) * 0.0031).collect()
    }

    /// The fused op gives the bits of the ops it stands for: q's heads grouped as
    /// `[Hkv, G*T, D]`, `matmul` with `k` transposed, `mul` by the scale, `add` of a 0 / -inf
    /// causal mask, `softmax`, `matmul` with `v`.
    #[test]
    fn is_the_composition_of_the_separate_ops_bit_for_bit() {
        for (hq, hkv, t_len, s_len, d, offset) in [(1, 1, 1, 1, 1, 0), (9, 3, 5, 12, 64, 7), (4, 2, 3, 3, 33, 0), (2, 1, 33, 40, 8, 7), (6, 6, 1, 65, 16, 64)] {
            let q = Tensor::f32(vec![hq, t_len, d], values(hq * t_len * d, 1)).unwrap();
            let k = Tensor::f32(vec![hkv, s_len, d], values(hkv * s_len * d, 2)).unwrap();
            let v = Tensor::f32(vec![hkv, s_len, d], values(hkv * s_len * d, 3)).unwrap();
            let scale = 1.0 / (d as f32).sqrt();
            let fused = run(&OpCall::Attention { offset, scale }, &[&q, &k, &v]);

            let group = hq / hkv;
            let grouped = run(&OpCall::Reshape { shape: vec![hkv as i64, (group * t_len) as i64, d as i64] }, &[&q]);
            let kt = run(&OpCall::Permute { perm: vec![0, 2, 1] }, &[&k]);
            let scores = run(&OpCall::Matmul, &[&grouped, &kt]);
            let scaled = run(&OpCall::Binary(BinaryOp::Mul), &[&scores, &Tensor::f32(vec![], vec![scale]).unwrap()]);
            let mask: Vec<f32> =
                (0..group * t_len * s_len).map(|i| if (i % s_len) as u64 > offset + ((i / s_len) % t_len) as u64 { f32::NEG_INFINITY } else { 0.0 }).collect();
            let masked = run(&OpCall::Binary(BinaryOp::Add), &[&scaled, &Tensor::f32(vec![group * t_len, s_len], mask).unwrap()]);
            let p = run(&OpCall::Softmax, &[&masked]);
            let composed = run(&OpCall::Matmul, &[&p, &v]);
            assert_eq!(fused.to_le_bytes(), composed.to_le_bytes(), "Hq {hq} Hkv {hkv} T {t_len} S {s_len} D {d} offset {offset}");
        }
    }

    #[test]
    fn refuses_shapes_that_do_not_fit_and_masks_every_later_key() {
        let f = |shape: &[usize]| Tensor::f32(shape.to_vec(), vec![1.0; shape.iter().product()]).unwrap().meta();
        let call = OpCall::Attention { offset: 0, scale: 1.0 };
        assert!(call.infer(&[f(&[3, 2, 4]), f(&[2, 5, 4]), f(&[2, 5, 4])]).is_err(), "3 heads over 2");
        assert!(call.infer(&[f(&[2, 2, 4]), f(&[2, 5, 3]), f(&[2, 5, 3])]).is_err(), "D differs");
        assert!(call.infer(&[f(&[2, 2, 4]), f(&[2, 5, 4]), f(&[2, 6, 4])]).is_err(), "v is not k's shape");
        assert!(call.infer(&[f(&[2, 2, 4]), f(&[2, 0, 4]), f(&[2, 0, 4])]).is_err(), "no keys");
        assert!(call.infer(&[f(&[2, 4]), f(&[2, 5, 4]), f(&[2, 5, 4])]).is_err(), "rank 2");
        // Row 0 (position 0) sees only key 0: its output is v's row 0 exactly.
        let q = Tensor::f32(vec![1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
        let k = Tensor::f32(vec![1, 3, 2], values(6, 4)).unwrap();
        let v = Tensor::f32(vec![1, 3, 2], vec![5.0, 6.0, 7.0, 8.0, 9.0, 10.0]).unwrap();
        let out = run(&call, &[&q, &k, &v]);
        assert_eq!(&out.as_f32().unwrap()[..2], &[5.0, 6.0]);
    }
}
