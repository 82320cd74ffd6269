//! Ops as the host sees them: decoded parameters, shape inference and fuel prices. Everything
//! here is checked before any output is allocated.

use gridbox_abi::{DType, ErrorCode, Op};

use crate::tensor::{TensorMeta, checked_product};

/// Why an op call was refused. Each maps to an ABI [`ErrorCode`] the job can handle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// Shapes do not fit the op.
    #[error("shape mismatch: {0}")]
    ShapeMismatch(String),
    /// The op does not take this dtype.
    #[error("unsupported dtype: {0}")]
    UnsupportedDType(String),
    /// A parameter is out of range.
    #[error("invalid parameter: {0}")]
    InvalidParameter(String),
}

impl OpError {
    /// The ABI code the job sees.
    pub fn code(&self) -> ErrorCode {
        match self {
            OpError::ShapeMismatch(_) => ErrorCode::ShapeMismatch,
            OpError::UnsupportedDType(_) => ErrorCode::UnsupportedDType,
            OpError::InvalidParameter(_) => ErrorCode::InvalidParameter,
        }
    }
}

/// Elementwise ops of two inputs, with broadcasting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// Elementwise ops of one input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum UnaryOp {
    Neg,
    Relu,
    Gelu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
}

/// Reductions over one axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
}

/// An op with its parameters decoded and range-checked against nothing but themselves; shapes
/// are checked by [`OpCall::infer`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum OpCall {
    /// Batched matrix product.
    Matmul,
    /// Broadcast elementwise.
    Binary(BinaryOp),
    /// Elementwise.
    Unary(UnaryOp),
    /// Softmax over the last axis.
    Softmax,
    /// Layer norm over the last axis.
    LayerNorm {
        /// Added to the variance.
        eps: f32,
    },
    /// RMS norm over the last axis.
    RmsNorm {
        /// Added to the mean square.
        eps: f32,
    },
    /// Reduction over `axis` (negative counts from the end).
    Reduce {
        /// Which reduction.
        op: ReduceOp,
        /// The axis.
        axis: i64,
        /// Keep the reduced axis as size 1.
        keepdims: bool,
    },
    /// Axis permutation.
    Permute {
        /// `output axis i = input axis perm[i]`.
        perm: Vec<i64>,
    },
    /// New dims, same elements.
    Reshape {
        /// The new dims.
        shape: Vec<i64>,
    },
    /// `[start, end)` on one axis.
    Slice {
        /// The axis (negative counts from the end).
        axis: i64,
        /// First index kept.
        start: i64,
        /// One past the last index kept.
        end: i64,
    },
    /// Concatenation along an axis.
    Concat {
        /// The axis (negative counts from the end).
        axis: i64,
    },
    /// Rows of a table picked by i32 indices.
    Gather,
    /// NCHW x OIHW convolution.
    Conv2d {
        /// Vertical stride, >= 1.
        stride_h: usize,
        /// Horizontal stride, >= 1.
        stride_w: usize,
        /// Zero padding top and bottom.
        pad_h: usize,
        /// Zero padding left and right.
        pad_w: usize,
    },
}

/// Fuel every bridge call pays before its work: the fixed cost of crossing the boundary.
pub const CALL_BASE_FUEL: u64 = 100;

impl OpCall {
    /// Decodes the parameters of `op`.
    pub fn decode(op: Op, params: &[i64], n_inputs: usize) -> Result<OpCall, OpError> {
        if let Some(expected) = op.input_count()
            && expected != n_inputs
        {
            return Err(OpError::InvalidParameter(format!("{} takes {expected} inputs, got {n_inputs}", op.name())));
        }
        if let Some(expected) = op.param_count()
            && expected != params.len()
        {
            return Err(OpError::InvalidParameter(format!("{} takes {expected} parameters, got {}", op.name(), params.len())));
        }
        let eps = |raw: i64| {
            let eps = f32::from_bits(raw as u32);
            if eps.is_finite() && eps >= 0.0 { Ok(eps) } else { Err(OpError::InvalidParameter(format!("epsilon {eps} must be finite and >= 0"))) }
        };
        let flag = |raw: i64| match raw {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(OpError::InvalidParameter(format!("keepdims must be 0 or 1, got {other}"))),
        };
        let reduce = |op| Ok(OpCall::Reduce { op, axis: params[0], keepdims: flag(params[1])? });
        Ok(match op {
            Op::Matmul => OpCall::Matmul,
            Op::Add => OpCall::Binary(BinaryOp::Add),
            Op::Sub => OpCall::Binary(BinaryOp::Sub),
            Op::Mul => OpCall::Binary(BinaryOp::Mul),
            Op::Div => OpCall::Binary(BinaryOp::Div),
            Op::Neg => OpCall::Unary(UnaryOp::Neg),
            Op::Relu => OpCall::Unary(UnaryOp::Relu),
            Op::Gelu => OpCall::Unary(UnaryOp::Gelu),
            Op::Sigmoid => OpCall::Unary(UnaryOp::Sigmoid),
            Op::Tanh => OpCall::Unary(UnaryOp::Tanh),
            Op::Exp => OpCall::Unary(UnaryOp::Exp),
            Op::Log => OpCall::Unary(UnaryOp::Log),
            Op::Sqrt => OpCall::Unary(UnaryOp::Sqrt),
            Op::Softmax => OpCall::Softmax,
            Op::LayerNorm => OpCall::LayerNorm { eps: eps(params[0])? },
            Op::RmsNorm => OpCall::RmsNorm { eps: eps(params[0])? },
            Op::Sum => reduce(ReduceOp::Sum)?,
            Op::Mean => reduce(ReduceOp::Mean)?,
            Op::Max => reduce(ReduceOp::Max)?,
            Op::Permute => OpCall::Permute { perm: params.to_vec() },
            Op::Reshape => OpCall::Reshape { shape: params.to_vec() },
            Op::Slice => OpCall::Slice { axis: params[0], start: params[1], end: params[2] },
            Op::Concat => {
                if n_inputs == 0 {
                    return Err(OpError::InvalidParameter("concat takes at least one input".into()));
                }
                OpCall::Concat { axis: params[0] }
            }
            Op::Gather => OpCall::Gather,
            Op::Conv2d => {
                if !(2..=3).contains(&n_inputs) {
                    return Err(OpError::InvalidParameter(format!("conv2d takes 2 or 3 inputs, got {n_inputs}")));
                }
                let positive = |raw: i64, what: &str, min: i64| {
                    if raw < min || raw > u32::MAX as i64 {
                        Err(OpError::InvalidParameter(format!("conv2d {what} {raw} must be in {min}..=2^32-1")))
                    } else {
                        Ok(raw as usize)
                    }
                };
                OpCall::Conv2d {
                    stride_h: positive(params[0], "stride_h", 1)?,
                    stride_w: positive(params[1], "stride_w", 1)?,
                    pad_h: positive(params[2], "pad_h", 0)?,
                    pad_w: positive(params[3], "pad_w", 0)?,
                }
            }
            _ => return Err(OpError::InvalidParameter(format!("op {} is not supported by this host", op.name()))),
        })
    }

    /// The output's dtype and shape, checking every input. Nothing is allocated.
    pub fn infer(&self, inputs: &[TensorMeta]) -> Result<TensorMeta, OpError> {
        let out = self.infer_unchecked(inputs)?;
        out.checked_bytes()?;
        Ok(out)
    }

    fn infer_unchecked(&self, inputs: &[TensorMeta]) -> Result<TensorMeta, OpError> {
        let first = inputs.first().ok_or_else(|| OpError::InvalidParameter("no inputs".into()))?;
        match self {
            OpCall::Matmul => {
                let (a, b) = (&inputs[0], &inputs[1]);
                all_f32(inputs, "matmul")?;
                if a.shape.len() < 2 || b.shape.len() < 2 {
                    return Err(OpError::ShapeMismatch(format!("matmul needs rank >= 2, got {:?} and {:?}", a.shape, b.shape)));
                }
                let (ar, br) = (a.shape.len(), b.shape.len());
                let (m, k) = (a.shape[ar - 2], a.shape[ar - 1]);
                let (k2, n) = (b.shape[br - 2], b.shape[br - 1]);
                if k != k2 {
                    return Err(OpError::ShapeMismatch(format!("matmul inner dims differ: {:?} x {:?}", a.shape, b.shape)));
                }
                let mut shape = broadcast_shapes(&a.shape[..ar - 2], &b.shape[..br - 2])?;
                shape.extend([m, n]);
                Ok(TensorMeta::new(DType::F32, shape))
            }
            OpCall::Binary(_) => {
                all_f32(inputs, "elementwise ops")?;
                Ok(TensorMeta::new(DType::F32, broadcast_shapes(&inputs[0].shape, &inputs[1].shape)?))
            }
            OpCall::Unary(_) => {
                all_f32(inputs, "elementwise ops")?;
                Ok(first.clone())
            }
            OpCall::Softmax => {
                all_f32(inputs, "softmax")?;
                if first.shape.is_empty() {
                    return Err(OpError::ShapeMismatch("softmax needs rank >= 1".into()));
                }
                Ok(first.clone())
            }
            OpCall::LayerNorm { .. } | OpCall::RmsNorm { .. } => {
                all_f32(inputs, "norms")?;
                let last = *first.shape.last().ok_or_else(|| OpError::ShapeMismatch("norms need rank >= 1".into()))?;
                for param in &inputs[1..] {
                    if param.shape != [last] {
                        return Err(OpError::ShapeMismatch(format!("norm parameters must be [{last}], got {:?}", param.shape)));
                    }
                }
                Ok(first.clone())
            }
            OpCall::Reduce { axis, keepdims, .. } => {
                all_f32(inputs, "reductions")?;
                let axis = resolve_axis(*axis, first.shape.len())?;
                let mut shape = first.shape.clone();
                if *keepdims {
                    shape[axis] = 1;
                } else {
                    shape.remove(axis);
                }
                Ok(TensorMeta::new(DType::F32, shape))
            }
            OpCall::Permute { perm } => {
                let rank = first.shape.len();
                let mut seen = vec![false; rank];
                if perm.len() != rank {
                    return Err(OpError::InvalidParameter(format!("permute of rank {rank} needs {rank} axes, got {}", perm.len())));
                }
                let mut shape = Vec::with_capacity(rank);
                for &p in perm {
                    let axis = usize::try_from(p).ok().filter(|&a| a < rank && !seen[a]);
                    let axis = axis.ok_or_else(|| OpError::InvalidParameter(format!("{perm:?} is not a permutation of 0..{rank}")))?;
                    seen[axis] = true;
                    shape.push(first.shape[axis]);
                }
                Ok(TensorMeta::new(first.dtype, shape))
            }
            OpCall::Reshape { shape } => {
                if shape.len() > gridbox_abi::MAX_RANK {
                    return Err(OpError::InvalidParameter(format!("rank {} is above {}", shape.len(), gridbox_abi::MAX_RANK)));
                }
                let dims: Vec<usize> = shape
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| OpError::InvalidParameter(format!("dimension {d} is negative"))))
                    .collect::<Result<_, _>>()?;
                if checked_product(&dims)? != first.checked_len()? {
                    return Err(OpError::ShapeMismatch(format!("cannot reshape {:?} to {dims:?}", first.shape)));
                }
                Ok(TensorMeta::new(first.dtype, dims))
            }
            OpCall::Slice { axis, start, end } => {
                let axis = resolve_axis(*axis, first.shape.len())?;
                let dim = first.shape[axis] as i64;
                if !(0 <= *start && start <= end && *end <= dim) {
                    return Err(OpError::InvalidParameter(format!("slice [{start}, {end}) is outside 0..={dim} on axis {axis}")));
                }
                let mut shape = first.shape.clone();
                shape[axis] = (end - start) as usize;
                Ok(TensorMeta::new(first.dtype, shape))
            }
            OpCall::Concat { axis } => {
                let axis = resolve_axis(*axis, first.shape.len())?;
                let mut shape = first.shape.clone();
                shape[axis] = 0;
                for input in inputs {
                    if input.dtype != first.dtype {
                        return Err(OpError::UnsupportedDType("concat inputs must share one dtype".into()));
                    }
                    let same =
                        input.shape.len() == first.shape.len() && input.shape.iter().zip(&first.shape).enumerate().all(|(i, (a, b))| i == axis || a == b);
                    if !same {
                        return Err(OpError::ShapeMismatch(format!("concat on axis {axis}: {:?} vs {:?}", first.shape, input.shape)));
                    }
                    shape[axis] = shape[axis].checked_add(input.shape[axis]).ok_or_else(|| OpError::ShapeMismatch("concat result too large".into()))?;
                }
                Ok(TensorMeta::new(first.dtype, shape))
            }
            OpCall::Gather => {
                let (table, indices) = (&inputs[0], &inputs[1]);
                if indices.dtype != DType::I32 {
                    return Err(OpError::UnsupportedDType("gather indices must be i32".into()));
                }
                if table.shape.is_empty() {
                    return Err(OpError::ShapeMismatch("gather needs a table of rank >= 1".into()));
                }
                let mut shape = indices.shape.clone();
                shape.extend_from_slice(&table.shape[1..]);
                if shape.len() > gridbox_abi::MAX_RANK {
                    return Err(OpError::ShapeMismatch(format!("gather result rank {} is above {}", shape.len(), gridbox_abi::MAX_RANK)));
                }
                Ok(TensorMeta::new(table.dtype, shape))
            }
            OpCall::Conv2d { stride_h, stride_w, pad_h, pad_w } => {
                all_f32(inputs, "conv2d")?;
                let (x, w) = (&inputs[0], &inputs[1]);
                let [n, c, h, wd] = dims4(&x.shape, "input")?;
                let [o, c2, kh, kw] = dims4(&w.shape, "weight")?;
                if c != c2 {
                    return Err(OpError::ShapeMismatch(format!("conv2d channels differ: input {:?}, weight {:?}", x.shape, w.shape)));
                }
                if let Some(bias) = inputs.get(2)
                    && bias.shape != [o]
                {
                    return Err(OpError::ShapeMismatch(format!("conv2d bias must be [{o}], got {:?}", bias.shape)));
                }
                let out_dim = |size: usize, pad: usize, kernel: usize, stride: usize| -> Result<usize, OpError> {
                    let padded = pad.checked_mul(2).and_then(|p| p.checked_add(size));
                    match padded {
                        Some(padded) if padded >= kernel && kernel > 0 => Ok((padded - kernel) / stride + 1),
                        _ => Err(OpError::ShapeMismatch(format!("conv2d kernel {kernel} does not fit input {size} with padding {pad}"))),
                    }
                };
                let shape = vec![n, o, out_dim(h, *pad_h, kh, *stride_h)?, out_dim(wd, *pad_w, kw, *stride_w)?];
                Ok(TensorMeta::new(DType::F32, shape))
            }
        }
    }

    /// Fuel this call costs, by a formula of its shapes alone (spec/abi.md), so a job's price is
    /// the same on every backend. Saturates rather than overflowing.
    pub fn fuel(&self, inputs: &[TensorMeta], output: &TensorMeta) -> u64 {
        let len = |meta: &TensorMeta| checked_product(&meta.shape).unwrap_or(usize::MAX) as u64;
        let out = len(output);
        let input_total = inputs.iter().map(len).fold(0u64, u64::saturating_add);
        let work = match self {
            OpCall::Matmul => {
                let k = inputs[0].shape.last().copied().unwrap_or(0) as u64;
                out.saturating_mul(k.max(1))
            }
            OpCall::Binary(_) | OpCall::Unary(UnaryOp::Neg | UnaryOp::Relu | UnaryOp::Sqrt) => out,
            OpCall::Unary(_) => out.saturating_mul(8),
            OpCall::Softmax => out.saturating_mul(10),
            OpCall::LayerNorm { .. } | OpCall::RmsNorm { .. } => out.saturating_mul(4),
            OpCall::Reduce { .. } => input_total,
            OpCall::Permute { .. } | OpCall::Reshape { .. } | OpCall::Slice { .. } | OpCall::Concat { .. } | OpCall::Gather => out,
            OpCall::Conv2d { .. } => {
                let per_output = inputs[1].shape[1..].iter().fold(1u64, |acc, &d| acc.saturating_mul(d as u64));
                out.saturating_mul(per_output.max(1))
            }
        };
        // Never less than one unit per output element: every op writes all of its output.
        CALL_BASE_FUEL.saturating_add(work.max(out))
    }
}

/// Fuel for moving `bytes` across the boundary (create, read): one per element.
pub fn transfer_fuel(bytes: usize) -> u64 {
    CALL_BASE_FUEL.saturating_add(bytes as u64 / 4)
}

fn all_f32(inputs: &[TensorMeta], what: &str) -> Result<(), OpError> {
    match inputs.iter().find(|m| m.dtype != DType::F32) {
        Some(bad) => Err(OpError::UnsupportedDType(format!("{what} take f32, got {}", bad.dtype.name()))),
        None => Ok(()),
    }
}

fn dims4(shape: &[usize], what: &str) -> Result<[usize; 4], OpError> {
    <[usize; 4]>::try_from(shape).map_err(|_| OpError::ShapeMismatch(format!("conv2d {what} must have rank 4, got {shape:?}")))
}

/// Resolves a possibly negative axis against `rank`.
pub fn resolve_axis(axis: i64, rank: usize) -> Result<usize, OpError> {
    let resolved = if axis < 0 { axis.checked_add(rank as i64) } else { Some(axis) };
    resolved
        .and_then(|a| usize::try_from(a).ok())
        .filter(|&a| a < rank)
        .ok_or_else(|| OpError::InvalidParameter(format!("axis {axis} is out of range for rank {rank}")))
}

/// NumPy broadcasting of two shapes: trailing dims aligned, each pair equal or one of them 1.
pub fn broadcast_shapes(a: &[usize], b: &[usize]) -> Result<Vec<usize>, OpError> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i < rank - a.len() { 1 } else { a[i - (rank - a.len())] };
        let db = if i < rank - b.len() { 1 } else { b[i - (rank - b.len())] };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return Err(OpError::ShapeMismatch(format!("shapes {a:?} and {b:?} do not broadcast"))),
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(shape: &[usize]) -> TensorMeta {
        TensorMeta::new(DType::F32, shape.to_vec())
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes(&[2, 1, 3], &[4, 1]).unwrap(), [2, 4, 3]);
        assert_eq!(broadcast_shapes(&[], &[5]).unwrap(), [5]);
        assert_eq!(broadcast_shapes(&[0, 3], &[1, 3]).unwrap(), [0, 3]);
        assert!(broadcast_shapes(&[2, 3], &[3, 2]).is_err());
    }

    #[test]
    fn matmul_shapes_broadcast_batch_dims() {
        let out = OpCall::Matmul.infer(&[f32s(&[2, 1, 3, 4]), f32s(&[5, 4, 7])]).unwrap();
        assert_eq!(out.shape, [2, 5, 3, 7]);
        assert_eq!(OpCall::Matmul.infer(&[f32s(&[3, 4]), f32s(&[5, 7])]).unwrap_err().code(), ErrorCode::ShapeMismatch);
    }

    #[test]
    fn overflowing_shapes_are_refused_not_allocated() {
        let huge = usize::MAX / 2;
        let err = OpCall::Matmul.infer(&[f32s(&[huge, 4]), f32s(&[4, huge])]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ShapeMismatch);
        let err = OpCall::Reshape { shape: vec![i64::MAX, i64::MAX] }.infer(&[f32s(&[4])]).unwrap_err();
        assert_eq!(err.code(), ErrorCode::ShapeMismatch);
    }

    #[test]
    fn parameters_are_checked() {
        assert!(OpCall::decode(Op::Sum, &[0], 1).is_err());
        assert!(OpCall::decode(Op::Sum, &[0, 2], 1).is_err());
        assert!(OpCall::decode(Op::Add, &[], 3).is_err());
        assert!(OpCall::decode(Op::Concat, &[0], 0).is_err());
        assert!(OpCall::decode(Op::Conv2d, &[0, 1, 0, 0], 2).is_err());
        assert!(OpCall::decode(Op::LayerNorm, &[f32::NAN.to_bits() as i64], 3).is_err());
        let reduce = OpCall::decode(Op::Max, &[-1, 1], 1).unwrap();
        assert_eq!(reduce.infer(&[f32s(&[2, 3])]).unwrap().shape, [2, 1]);
        assert!(OpCall::Permute { perm: vec![0, 0] }.infer(&[f32s(&[2, 2])]).is_err());
        assert!(OpCall::Slice { axis: 0, start: 2, end: 1 }.infer(&[f32s(&[4])]).is_err());
        assert!(resolve_axis(i64::MIN, 3).is_err());
    }

    #[test]
    fn conv2d_output_size() {
        let call = OpCall::decode(Op::Conv2d, &[2, 2, 1, 1], 2).unwrap();
        let out = call.infer(&[f32s(&[1, 3, 7, 7]), f32s(&[8, 3, 3, 3])]).unwrap();
        assert_eq!(out.shape, [1, 8, 4, 4]);
        assert!(call.infer(&[f32s(&[1, 3, 1, 1]), f32s(&[8, 3, 5, 5])]).is_err());
    }
}
