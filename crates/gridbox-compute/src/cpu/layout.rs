//! Ops that move elements without arithmetic: permute, reshape, slice, concat, gather. Exact by
//! construction, for every dtype (the 2-byte f16 and bf16 too: weights are sliced as stored).

use crate::ops::{OpError, resolve_axis};
use crate::tensor::{Tensor, TensorData, TensorMeta, checked_product};

use super::Workers;

/// Elements copied between checks of whether to stop.
const CHECK_EVERY: usize = 1 << 16;

/// `$body` (an expression of the elements `$v`, a slice of whichever type the dtype stores) as
/// data of the same dtype: one generic copy routine serves every dtype.
macro_rules! map_data {
    ($t:expr, |$v:ident| $body:expr) => {
        match $t.data() {
            TensorData::F32($v) => TensorData::F32($body),
            TensorData::I32($v) => TensorData::I32($body),
            TensorData::F16($v) => TensorData::F16($body),
            TensorData::Bf16($v) => TensorData::Bf16($body),
        }
    };
}

/// No elements, of `t`'s dtype: what an op stopped partway returns (and its caller throws away).
fn stopped(t: &Tensor) -> Result<Tensor, OpError> {
    Tensor::new(vec![0], TensorData::empty(t.dtype()))
}

fn check_len(out: &TensorMeta, len: usize) -> Result<(), OpError> {
    if out.checked_len()? != len {
        return Err(OpError::ShapeMismatch(format!("output {:?} does not hold {len} elements", out.shape)));
    }
    Ok(())
}

/// Output axis `i` is input axis `perm[i]`.
pub(crate) fn permute(x: &Tensor, perm: &[i64], out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    let shape = x.shape();
    let rank = shape.len();
    let perm: Vec<usize> = perm.iter().map(|&p| p as usize).collect();
    if perm.len() != rank || perm.iter().any(|&p| p >= rank) {
        return Err(OpError::InvalidParameter(format!("{perm:?} is not a permutation of 0..{rank}")));
    }
    check_len(out, x.len())?;
    let mut in_strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        in_strides[d] = in_strides[d + 1] * shape[d + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    fn gather<T: Copy>(src: &[T], out_shape: &[usize], strides: &[usize], workers: Workers<'_>) -> Vec<T> {
        // The output has as many elements as the input (checked above).
        let len = src.len();
        let mut result = Vec::with_capacity(len);
        let mut index = vec![0usize; out_shape.len()];
        let mut offset = 0usize;
        for done in 0..len {
            if done % CHECK_EVERY == 0 && workers.should_stop() {
                break;
            }
            result.push(src[offset]);
            for d in (0..out_shape.len()).rev() {
                index[d] += 1;
                offset += strides[d];
                if index[d] < out_shape[d] {
                    break;
                }
                offset -= strides[d] * out_shape[d];
                index[d] = 0;
            }
        }
        result
    }
    let data = map_data!(x, |v| gather(v, &out_shape, &strides, workers));
    if workers.should_stop() {
        // Incomplete: the caller throws it away. Keep the shape consistent with the data.
        return stopped(x);
    }
    Tensor::new(out_shape, data)
}

/// The same elements under `out`'s shape.
pub(crate) fn reshape(x: &Tensor, out: &TensorMeta) -> Result<Tensor, OpError> {
    check_len(out, x.len())?;
    Tensor::new(out.shape.clone(), x.data().clone())
}

/// Rows `[start, start + out.shape[axis])` of `axis`.
pub(crate) fn slice(x: &Tensor, axis: i64, start: i64, out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    let shape = x.shape();
    let axis = resolve_axis(axis, shape.len())?;
    let (inner, n) = (checked_product(&shape[axis + 1..])?, shape[axis]);
    let outer = checked_product(&shape[..axis])?;
    let taken = out.shape.get(axis).copied().unwrap_or(0);
    let start = usize::try_from(start).map_err(|_| OpError::InvalidParameter("negative slice start".into()))?;
    if start.checked_add(taken).is_none_or(|end| end > n) {
        return Err(OpError::InvalidParameter(format!("slice {start}+{taken} past {n}")));
    }
    check_len(out, checked_product(&[outer, taken, inner])?)?;
    fn cut<T: Copy>(src: &[T], outer: usize, n: usize, inner: usize, start: usize, taken: usize, workers: Workers<'_>) -> Vec<T> {
        let mut result = Vec::with_capacity(outer * taken * inner);
        for o in 0..outer {
            if result.len() % CHECK_EVERY < taken * inner && workers.should_stop() {
                break;
            }
            let from = (o * n + start) * inner;
            result.extend_from_slice(&src[from..from + taken * inner]);
        }
        result
    }
    let data = map_data!(x, |v| cut(v, outer, n, inner, start, taken, workers));
    if workers.should_stop() {
        return stopped(x);
    }
    Tensor::new(out.shape.clone(), data)
}

/// All inputs joined along `axis`, in order.
pub(crate) fn concat(inputs: &[&Tensor], axis: i64, out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    let first = inputs.first().ok_or_else(|| OpError::InvalidParameter("concat of nothing".into()))?;
    let axis = resolve_axis(axis, first.shape().len())?;
    let outer = checked_product(&first.shape()[..axis])?;
    let total: usize = inputs.iter().map(|t| t.len()).sum();
    check_len(out, total)?;
    let blocks = inputs.iter().map(|t| t.shape().get(axis..).map_or(Ok(0), checked_product)).collect::<Result<Vec<usize>, _>>()?;
    if workers.should_stop() {
        return stopped(first);
    }
    let mismatch = || OpError::UnsupportedDType("concat inputs must share one dtype".into());
    /// The inputs' elements as `$variant` slices, joined.
    macro_rules! joined {
        ($variant:ident) => {{
            let sources: Option<Vec<_>> = inputs.iter().map(|t| if let TensorData::$variant(v) = t.data() { Some(&v[..]) } else { None }).collect();
            TensorData::$variant(join(&sources.ok_or_else(mismatch)?, &blocks, outer, workers))
        }};
    }
    let data = match first.data() {
        TensorData::F32(_) => joined!(F32),
        TensorData::I32(_) => joined!(I32),
        TensorData::F16(_) => joined!(F16),
        TensorData::Bf16(_) => joined!(Bf16),
    };
    Tensor::new(out.shape.clone(), data)
}

fn join<T: Copy>(sources: &[&[T]], blocks: &[usize], outer: usize, workers: Workers<'_>) -> Vec<T> {
    let mut result = Vec::with_capacity(sources.iter().map(|s| s.len()).sum());
    let per_outer: usize = blocks.iter().sum();
    for o in 0..outer {
        if result.len() % CHECK_EVERY < per_outer && workers.should_stop() {
            break;
        }
        for (source, &block) in sources.iter().zip(blocks) {
            result.extend_from_slice(&source[o * block..(o + 1) * block]);
        }
    }
    result
}

/// Rows of `table` picked by `indices`; every index is checked before anything is copied.
pub(crate) fn gather(table: &Tensor, indices: &Tensor, out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    let ids = indices.as_i32().ok_or_else(|| OpError::UnsupportedDType("gather indices must be i32".into()))?;
    let rows = table.shape().first().copied().ok_or_else(|| OpError::ShapeMismatch("gather needs a table of rank >= 1".into()))?;
    let row = checked_product(&table.shape()[1..])?;
    if let Some((position, &bad)) = ids.iter().enumerate().find(|&(_, &i)| i < 0 || i as usize >= rows) {
        return Err(OpError::gather_index(position, bad, table.shape()));
    }
    check_len(out, checked_product(&[ids.len(), row])?)?;
    fn pick<T: Copy>(src: &[T], ids: &[i32], row: usize, workers: Workers<'_>) -> Vec<T> {
        let mut result = Vec::with_capacity(ids.len() * row);
        for &i in ids {
            if result.len() % CHECK_EVERY < row && workers.should_stop() {
                break;
            }
            let start = i as usize * row;
            result.extend_from_slice(&src[start..start + row]);
        }
        result
    }
    let data = map_data!(table, |v| pick(v, ids, row, workers));
    if workers.should_stop() {
        return stopped(table);
    }
    Tensor::new(out.shape.clone(), data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::OpCall;

    fn run(call: OpCall, inputs: &[&Tensor]) -> Result<Tensor, OpError> {
        let metas: Vec<_> = inputs.iter().map(|t| t.meta()).collect();
        let out = call.infer(&metas)?;
        super::super::execute(&call, inputs, &out, 1)
    }

    fn iota(shape: &[usize]) -> Tensor {
        Tensor::f32(shape.to_vec(), (0..shape.iter().product::<usize>()).map(|i| i as f32).collect()).unwrap()
    }

    #[test]
    fn permute_matches_index_arithmetic() {
        let x = iota(&[2, 3, 4]);
        let y = run(OpCall::Permute { perm: vec![2, 0, 1] }, &[&x]).unwrap();
        assert_eq!(y.shape(), [4, 2, 3]);
        let ys = y.as_f32().unwrap();
        for a in 0..4 {
            for b in 0..2 {
                for c in 0..3 {
                    assert_eq!(ys[(a * 2 + b) * 3 + c], ((b * 3 + c) * 4 + a) as f32);
                }
            }
        }
        let empty = iota(&[0, 5]);
        assert_eq!(run(OpCall::Permute { perm: vec![1, 0] }, &[&empty]).unwrap().shape(), [5, 0]);
    }

    #[test]
    fn slice_concat_gather_reshape() {
        let x = iota(&[3, 4]);
        let s = run(OpCall::Slice { axis: 1, start: 1, end: 3 }, &[&x]).unwrap();
        assert_eq!(s.as_f32().unwrap(), &[1.0, 2.0, 5.0, 6.0, 9.0, 10.0]);
        let c = run(OpCall::Concat { axis: -1 }, &[&x, &s]).unwrap();
        assert_eq!(c.shape(), [3, 6]);
        assert_eq!(&c.as_f32().unwrap()[..6], &[0.0, 1.0, 2.0, 3.0, 1.0, 2.0]);
        let ids = Tensor::i32(vec![2, 2], vec![2, 0, 0, 1]).unwrap();
        let g = run(OpCall::Gather, &[&x, &ids]).unwrap();
        assert_eq!(g.shape(), [2, 2, 4]);
        assert_eq!(&g.as_f32().unwrap()[..4], &[8.0, 9.0, 10.0, 11.0]);
        let bad = Tensor::i32(vec![1], vec![3]).unwrap();
        assert_eq!(run(OpCall::Gather, &[&x, &bad]).unwrap_err().code(), gridbox_abi::ErrorCode::InvalidParameter);
        let negative = Tensor::i32(vec![1], vec![-1]).unwrap();
        assert!(run(OpCall::Gather, &[&x, &negative]).is_err());
        let r = run(OpCall::Reshape { shape: vec![2, 6] }, &[&x]).unwrap();
        assert_eq!(r.as_f32(), x.as_f32());
        let ints = Tensor::i32(vec![2, 2], vec![1, 2, 3, 4]).unwrap();
        assert_eq!(run(OpCall::Permute { perm: vec![1, 0] }, &[&ints]).unwrap().as_i32().unwrap(), &[1, 3, 2, 4]);
    }

    /// f16 and bf16 weights are sliced, joined, transposed and looked up as stored, bit for bit,
    /// and keep their dtype.
    #[test]
    fn layout_ops_move_half_precision_elements_as_stored() {
        for half in [Tensor::f16 as fn(Vec<usize>, Vec<u16>) -> Result<Tensor, OpError>, Tensor::bf16] {
            let bits: Vec<u16> = (0..12u16).map(|i| 0x7C01u16.wrapping_add(i.wrapping_mul(0x1111))).collect();
            let x = half(vec![3, 4], bits.clone()).unwrap();
            let t = run(OpCall::Permute { perm: vec![1, 0] }, &[&x]).unwrap();
            assert_eq!((t.dtype(), &t.as_u16().unwrap()[..4]), (x.dtype(), &[bits[0], bits[4], bits[8], bits[1]][..]));
            let s = run(OpCall::Slice { axis: 1, start: 1, end: 3 }, &[&x]).unwrap();
            assert_eq!(s.as_u16().unwrap(), [bits[1], bits[2], bits[5], bits[6], bits[9], bits[10]]);
            let c = run(OpCall::Concat { axis: 0 }, &[&x, &x]).unwrap();
            assert_eq!((c.shape(), &c.as_u16().unwrap()[12..]), (&[6, 4][..], &bits[..]));
            let ids = Tensor::i32(vec![2], vec![2, 0]).unwrap();
            let g = run(OpCall::Gather, &[&x, &ids]).unwrap();
            assert_eq!(g.as_u16().unwrap(), [&bits[8..12], &bits[..4]].concat());
            let r = run(OpCall::Reshape { shape: vec![12] }, &[&x]).unwrap();
            assert_eq!((r.dtype(), r.as_u16().unwrap()), (x.dtype(), &bits[..]));
            let f = Tensor::f32(vec![3, 4], vec![0.0; 12]).unwrap();
            assert_eq!(run(OpCall::Concat { axis: 0 }, &[&x, &f]).unwrap_err().code(), gridbox_abi::ErrorCode::UnsupportedDType);
        }
    }
}
