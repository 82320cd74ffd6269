//! Ops as the host sees them: decoded parameters, shape inference and fuel prices. Everything
//! here is checked before any output is allocated.

use gridbox_abi::{DType, ErrorCode, Op};

use crate::tensor::{TensorMeta, checked_product};

/// Why an op call was refused. Each maps to an ABI [`ErrorCode`] the job can handle, and
/// carries the detail the job reads through `last_error` (spec/abi.md): the shapes or parameters
/// that failed the check, written from the call's arguments alone (never from the backend, the
/// host or the time), so it is the same on every machine. The detail leaves out the op's name,
/// which the session puts in front.
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

    /// What failed, without the code's name: `shapes [64, 32] and [16, 4] do not fit: ...`.
    pub fn detail(&self) -> &str {
        match self {
            OpError::ShapeMismatch(detail) | OpError::UnsupportedDType(detail) | OpError::InvalidParameter(detail) => detail,
        }
    }

    /// A gather index outside the table's rows. Both backends find the first bad index in the
    /// same (row-major) order and describe it here, so the detail is the same on either.
    pub fn gather_index(position: usize, index: i32, table: &[usize]) -> OpError {
        let rows = table.first().copied().unwrap_or(0);
        OpError::InvalidParameter(format!("indices[{position}] (flat) is {index}, outside 0..{rows}, the rows of the table {table:?}"))
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
    Silu,
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
    /// Index of the largest element over the last axis, as i32.
    Argmax,
    /// Rotary position embedding over the last two axes `[..., T, D]`.
    Rope {
        /// The position of row 0 of the `T` axis.
        offset: u32,
        /// The base of the frequencies, finite and > 0.
        theta: f32,
    },
    /// Causal attention with grouped-query heads.
    Attention {
        /// The position of query row 0: query `t` sees keys `0..=offset + t`.
        offset: u64,
        /// The factor on every score (usually `1 / sqrt(D)`), finite.
        scale: f32,
    },
    /// Element type conversion (f16 and bf16 to f32).
    Cast {
        /// The dtype of the result.
        to: DType,
    },
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

/// The largest position `rope` takes (`offset + T <= ROPE_MAX_POSITION`): 2^24, up to which f32
/// holds every integer.
pub const ROPE_MAX_POSITION: u32 = 1 << 24;

/// Fuel every bridge call pays before its work: the fixed cost of crossing the boundary.
pub const CALL_BASE_FUEL: u64 = 100;

impl OpCall {
    /// Decodes the parameters of `op`.
    pub fn decode(op: Op, params: &[i64], n_inputs: usize) -> Result<OpCall, OpError> {
        if let Some(expected) = op.input_count()
            && expected != n_inputs
        {
            return Err(OpError::InvalidParameter(format!("takes {}, got {n_inputs}", count(expected, "input"))));
        }
        if let Some(expected) = op.param_count()
            && expected != params.len()
        {
            return Err(OpError::InvalidParameter(format!("takes {}, got {}", count(expected, "parameter"), params.len())));
        }
        let eps = |raw: i64| {
            let eps = f32::from_bits(raw as u32);
            if eps.is_finite() && eps >= 0.0 { Ok(eps) } else { Err(OpError::InvalidParameter(format!("epsilon {eps:?} must be finite and >= 0"))) }
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
            Op::Silu => OpCall::Unary(UnaryOp::Silu),
            Op::Argmax => OpCall::Argmax,
            Op::Attention => {
                let offset = u64::try_from(params[0]).map_err(|_| OpError::InvalidParameter(format!("the causal offset {} is negative", params[0])))?;
                let scale = f32::from_bits(params[1] as u32);
                if !scale.is_finite() {
                    return Err(OpError::InvalidParameter(format!("scale {scale:?} must be finite")));
                }
                OpCall::Attention { offset, scale }
            }
            Op::Rope => {
                let offset = u32::try_from(params[0]).ok().filter(|&p| p <= ROPE_MAX_POSITION);
                let offset =
                    offset.ok_or_else(|| OpError::InvalidParameter(format!("the position offset {} must be in 0..={ROPE_MAX_POSITION}", params[0])))?;
                let theta = f32::from_bits(params[1] as u32);
                if !(theta.is_finite() && theta > 0.0) {
                    return Err(OpError::InvalidParameter(format!("theta {theta:?} must be finite and > 0")));
                }
                OpCall::Rope { offset, theta }
            }
            Op::Cast => {
                let to = u32::try_from(params[0]).ok().and_then(DType::from_code);
                OpCall::Cast {
                    to: to.ok_or_else(|| OpError::InvalidParameter(format!("the target dtype code {} is not a dtype ({})", params[0], dtype_codes())))?,
                }
            }
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
                    return Err(OpError::InvalidParameter("takes at least one input, got none".into()));
                }
                OpCall::Concat { axis: params[0] }
            }
            Op::Gather => OpCall::Gather,
            Op::Conv2d => {
                if !(2..=3).contains(&n_inputs) {
                    return Err(OpError::InvalidParameter(format!("takes 2 or 3 inputs (x, weight, optional bias), got {n_inputs}")));
                }
                let positive = |raw: i64, what: &str, min: i64| {
                    if raw < min || raw > u32::MAX as i64 {
                        Err(OpError::InvalidParameter(format!("{what} {raw} must be in {min}..={}", u32::MAX)))
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
            _ => return Err(OpError::InvalidParameter("is not supported by this host".into())),
        })
    }

    /// The output's dtype and shape, checking every input. Nothing is allocated.
    pub fn infer(&self, inputs: &[TensorMeta]) -> Result<TensorMeta, OpError> {
        let out = self.infer_unchecked(inputs)?;
        out.checked_bytes().map_err(|_| OpError::ShapeMismatch(format!("the result {:?} has more bytes than fit in memory", out.shape)))?;
        Ok(out)
    }

    fn infer_unchecked(&self, inputs: &[TensorMeta]) -> Result<TensorMeta, OpError> {
        let first = inputs.first().ok_or_else(|| OpError::InvalidParameter("takes at least one input, got none".into()))?;
        match self {
            OpCall::Matmul => {
                let (a, b) = (&inputs[0], &inputs[1]);
                all_f32(inputs)?;
                let fit = |why: String| OpError::ShapeMismatch(format!("shapes {:?} and {:?} do not fit: {why}", a.shape, b.shape));
                if a.shape.len() < 2 || b.shape.len() < 2 {
                    return Err(fit("both need rank >= 2 ([..., M, K] and [..., K, N])".into()));
                }
                let (ar, br) = (a.shape.len(), b.shape.len());
                let (m, k) = (a.shape[ar - 2], a.shape[ar - 1]);
                let (k2, n) = (b.shape[br - 2], b.shape[br - 1]);
                if k != k2 {
                    return Err(fit(format!("the inner dims {k} and {k2} differ")));
                }
                let (batch_a, batch_b) = (&a.shape[..ar - 2], &b.shape[..br - 2]);
                let mut shape = broadcast_shapes(batch_a, batch_b).map_err(|_| fit(format!("the batch dims {batch_a:?} and {batch_b:?} do not broadcast")))?;
                shape.extend([m, n]);
                Ok(TensorMeta::new(DType::F32, shape))
            }
            OpCall::Binary(_) => {
                all_f32(inputs)?;
                Ok(TensorMeta::new(DType::F32, broadcast_shapes(&inputs[0].shape, &inputs[1].shape)?))
            }
            OpCall::Unary(_) => {
                all_f32(inputs)?;
                Ok(first.clone())
            }
            OpCall::Softmax => {
                all_f32(inputs)?;
                if first.shape.is_empty() {
                    return Err(OpError::ShapeMismatch("needs rank >= 1 (it works over the last axis), got a scalar".into()));
                }
                Ok(first.clone())
            }
            OpCall::LayerNorm { .. } | OpCall::RmsNorm { .. } => {
                all_f32(inputs)?;
                let last =
                    *first.shape.last().ok_or_else(|| OpError::ShapeMismatch("needs x of rank >= 1 (it works over the last axis), got a scalar".into()))?;
                for (param, name) in inputs[1..].iter().zip(["gamma", "beta"]) {
                    if param.shape != [last] {
                        return Err(OpError::ShapeMismatch(format!("{name} must be [{last}], the last dim of x {:?}, got {:?}", first.shape, param.shape)));
                    }
                }
                Ok(first.clone())
            }
            OpCall::Reduce { axis, keepdims, .. } => {
                all_f32(inputs)?;
                let axis = axis_of(*axis, &first.shape)?;
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
                    return Err(OpError::InvalidParameter(format!(
                        "takes one axis per dim: x {:?} has rank {rank}, got {} {perm:?}",
                        first.shape,
                        count(perm.len(), "axis")
                    )));
                }
                let mut shape = Vec::with_capacity(rank);
                for &p in perm {
                    let axis = usize::try_from(p).ok().filter(|&a| a < rank && !seen[a]);
                    let axis = axis.ok_or_else(|| OpError::InvalidParameter(format!("{perm:?} is not a permutation of 0..{rank} (x {:?})", first.shape)))?;
                    seen[axis] = true;
                    shape.push(first.shape[axis]);
                }
                Ok(TensorMeta::new(first.dtype, shape))
            }
            OpCall::Reshape { shape } => {
                if shape.len() > gridbox_abi::MAX_RANK {
                    return Err(OpError::InvalidParameter(format!("the new shape has rank {}, above the maximum of {}", shape.len(), gridbox_abi::MAX_RANK)));
                }
                let dims: Vec<usize> = shape
                    .iter()
                    .map(|&d| usize::try_from(d).map_err(|_| OpError::InvalidParameter(format!("dim {d} of the new shape {shape:?} is negative"))))
                    .collect::<Result<_, _>>()?;
                let (to, from) = (checked_product(&dims)?, first.checked_len()?);
                if to != from {
                    return Err(OpError::ShapeMismatch(format!("cannot reshape {:?} ({from} elements) to {dims:?} ({to} elements)", first.shape)));
                }
                Ok(TensorMeta::new(first.dtype, dims))
            }
            OpCall::Slice { axis, start, end } => {
                let axis = axis_of(*axis, &first.shape)?;
                let dim = first.shape[axis] as i64;
                if !(0 <= *start && start <= end && *end <= dim) {
                    return Err(OpError::InvalidParameter(format!("[{start}, {end}) on axis {axis} of {:?} is not a range within 0..={dim}", first.shape)));
                }
                let mut shape = first.shape.clone();
                shape[axis] = (end - start) as usize;
                Ok(TensorMeta::new(first.dtype, shape))
            }
            OpCall::Concat { axis } => {
                let axis = axis_of(*axis, &first.shape)?;
                let mut shape = first.shape.clone();
                shape[axis] = 0;
                for (index, input) in inputs.iter().enumerate() {
                    if input.dtype != first.dtype {
                        return Err(OpError::UnsupportedDType(format!(
                            "inputs must share one dtype: input 0 is {}, input {index} is {}",
                            first.dtype.name(),
                            input.dtype.name()
                        )));
                    }
                    let same =
                        input.shape.len() == first.shape.len() && input.shape.iter().zip(&first.shape).enumerate().all(|(i, (a, b))| i == axis || a == b);
                    if !same {
                        return Err(OpError::ShapeMismatch(format!(
                            "on axis {axis}, input {index} {:?} does not fit input 0 {:?}: the ranks and every other dim must match",
                            input.shape, first.shape
                        )));
                    }
                    shape[axis] = shape[axis]
                        .checked_add(input.shape[axis])
                        .ok_or_else(|| OpError::ShapeMismatch(format!("the result's axis {axis} is longer than fits in memory")))?;
                }
                Ok(TensorMeta::new(first.dtype, shape))
            }
            OpCall::Gather => {
                let (table, indices) = (&inputs[0], &inputs[1]);
                if indices.dtype != DType::I32 {
                    return Err(OpError::UnsupportedDType(format!(
                        "indices (input 1) must be {}, got {} {:?}",
                        DType::I32.name(),
                        indices.dtype.name(),
                        indices.shape
                    )));
                }
                if table.shape.is_empty() {
                    return Err(OpError::ShapeMismatch("the table (input 0) needs rank >= 1, got a scalar".into()));
                }
                let mut shape = indices.shape.clone();
                shape.extend_from_slice(&table.shape[1..]);
                if shape.len() > gridbox_abi::MAX_RANK {
                    return Err(OpError::ShapeMismatch(format!(
                        "the result (the indices' dims, then the table's after the first) would have rank {}, above {}: table {:?}, indices {:?}",
                        shape.len(),
                        gridbox_abi::MAX_RANK,
                        table.shape,
                        indices.shape
                    )));
                }
                Ok(TensorMeta::new(table.dtype, shape))
            }
            OpCall::Argmax => {
                all_f32(inputs)?;
                let (&last, outer) =
                    first.shape.split_last().ok_or_else(|| OpError::ShapeMismatch("needs rank >= 1 (it works over the last axis), got a scalar".into()))?;
                if last == 0 || last - 1 > i32::MAX as usize {
                    return Err(OpError::ShapeMismatch(format!(
                        "the last axis of x {:?} must hold 1..={} elements (an index is an i32), got {last}",
                        first.shape,
                        i32::MAX as u64 + 1
                    )));
                }
                Ok(TensorMeta::new(DType::I32, outer.to_vec()))
            }
            OpCall::Rope { offset, .. } => {
                all_f32(inputs)?;
                let rank = first.shape.len();
                if rank < 2 || !first.shape[rank - 1].is_multiple_of(2) {
                    return Err(OpError::ShapeMismatch(format!("x must be [..., T, D] with D even, got {:?}", first.shape)));
                }
                let t = first.shape[rank - 2];
                if t > (ROPE_MAX_POSITION - offset) as usize {
                    return Err(OpError::InvalidParameter(format!(
                        "positions {offset}..{offset}+{t} (x {:?}) pass {ROPE_MAX_POSITION}, beyond which f32 does not hold every integer",
                        first.shape
                    )));
                }
                Ok(first.clone())
            }
            OpCall::Attention { .. } => {
                all_f32(inputs)?;
                let (q, k, v) = (&inputs[0], &inputs[1], &inputs[2]);
                let fit = |why: &str| OpError::ShapeMismatch(format!("q {:?}, k {:?}, v {:?}: {why}", q.shape, k.shape, v.shape));
                let [hq, t, d] = dims3(&q.shape).ok_or_else(|| fit("q must be [Hq, T, D]"))?;
                let [hkv, s, dk] = dims3(&k.shape).ok_or_else(|| fit("k must be [Hkv, S, D]"))?;
                if v.shape != k.shape {
                    return Err(fit("v must have k's shape [Hkv, S, D]"));
                }
                if dk != d {
                    return Err(fit("q and k must have the same D"));
                }
                if hkv == 0 && hq > 0 || hkv > 0 && !hq.is_multiple_of(hkv) {
                    return Err(fit("Hq must be a multiple of Hkv"));
                }
                if s == 0 && hq > 0 && t > 0 {
                    return Err(fit("there must be at least one key (S >= 1)"));
                }
                Ok(TensorMeta::new(DType::F32, vec![hq, t, d]))
            }
            OpCall::Cast { to } => {
                if !matches!((first.dtype, to), (DType::F16 | DType::BF16, DType::F32)) {
                    return Err(OpError::UnsupportedDType(format!(
                        "converts f16 and bf16 to f32, not {} {:?} to {}",
                        first.dtype.name(),
                        first.shape,
                        to.name()
                    )));
                }
                Ok(TensorMeta::new(*to, first.shape.clone()))
            }
            OpCall::Conv2d { stride_h, stride_w, pad_h, pad_w } => {
                all_f32(inputs)?;
                let (x, w) = (&inputs[0], &inputs[1]);
                let [n, c, h, wd] = dims4(&x.shape, "x (input 0) must be [N, C, H, W]")?;
                let [o, c2, kh, kw] = dims4(&w.shape, "the weight (input 1) must be [O, C, KH, KW]")?;
                if c != c2 {
                    return Err(OpError::ShapeMismatch(format!("x {:?} has {c} channels, the weight {:?} takes {c2}", x.shape, w.shape)));
                }
                if let Some(bias) = inputs.get(2)
                    && bias.shape != [o]
                {
                    return Err(OpError::ShapeMismatch(format!("the bias must be [{o}], the weight {:?}'s output channels, got {:?}", w.shape, bias.shape)));
                }
                let out_dim = |what: &str, size: usize, pad: usize, kernel: usize, stride: usize| -> Result<usize, OpError> {
                    let padded = pad.checked_mul(2).and_then(|p| p.checked_add(size));
                    match padded {
                        Some(padded) if padded >= kernel && kernel > 0 => Ok((padded - kernel) / stride + 1),
                        _ => Err(OpError::ShapeMismatch(format!(
                            "the kernel's {what} {kernel} does not fit x's {what} {size} with padding {pad} (x {:?}, weight {:?})",
                            x.shape, w.shape
                        ))),
                    }
                };
                let shape = vec![n, o, out_dim("height", h, *pad_h, kh, *stride_h)?, out_dim("width", wd, *pad_w, kw, *stride_w)?];
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
            OpCall::Unary(_) | OpCall::Rope { .. } => out.saturating_mul(8),
            OpCall::Attention { .. } => {
                // Two products of Hq x T x S x D multiply-adds, and softmax over Hq x T x S scores.
                let (hq, t) = (inputs[0].shape[0] as u64, inputs[0].shape[1] as u64);
                let (s, d) = (inputs[1].shape[1] as u64, inputs[1].shape[2] as u64);
                let scores = hq.saturating_mul(t).saturating_mul(s);
                scores.saturating_mul(d).saturating_mul(2).saturating_add(scores.saturating_mul(10))
            }
            OpCall::Softmax => out.saturating_mul(10),
            OpCall::LayerNorm { .. } | OpCall::RmsNorm { .. } => out.saturating_mul(4),
            OpCall::Reduce { .. } | OpCall::Argmax => input_total,
            OpCall::Permute { .. } | OpCall::Reshape { .. } | OpCall::Slice { .. } | OpCall::Concat { .. } | OpCall::Gather | OpCall::Cast { .. } => out,
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

/// `1 input`, `2 inputs`, `1 axis`, `2 axes`.
fn count(n: usize, noun: &str) -> String {
    match (n, noun) {
        (1, _) => format!("1 {noun}"),
        (_, "axis") => format!("{n} axes"),
        _ => format!("{n} {noun}s"),
    }
}

/// Every dtype's name and code, for details: `f32 is 0, i32 is 1, f16 is 2, bf16 is 3`.
pub fn dtype_codes() -> String {
    DType::ALL.iter().map(|d| format!("{} is {}", d.name(), d.code())).collect::<Vec<_>>().join(", ")
}

/// Arithmetic ops take f32 only: the first input of another dtype is named.
fn all_f32(inputs: &[TensorMeta]) -> Result<(), OpError> {
    match inputs.iter().enumerate().find(|(_, m)| m.dtype != DType::F32) {
        Some((index, bad)) => {
            Err(OpError::UnsupportedDType(format!("takes {} only, but input {index} is {} {:?}", DType::F32.name(), bad.dtype.name(), bad.shape)))
        }
        None => Ok(()),
    }
}

fn dims3(shape: &[usize]) -> Option<[usize; 3]> {
    <[usize; 3]>::try_from(shape).ok()
}

fn dims4(shape: &[usize], what: &str) -> Result<[usize; 4], OpError> {
    <[usize; 4]>::try_from(shape).map_err(|_| OpError::ShapeMismatch(format!("{what} (rank 4), got {shape:?}")))
}

/// Resolves a possibly negative axis against `rank`.
pub fn resolve_axis(axis: i64, rank: usize) -> Result<usize, OpError> {
    let resolved = if axis < 0 { axis.checked_add(rank as i64) } else { Some(axis) };
    resolved
        .and_then(|a| usize::try_from(a).ok())
        .filter(|&a| a < rank)
        .ok_or_else(|| OpError::InvalidParameter(format!("axis {axis} is out of range for a rank-{rank} tensor")))
}

/// [`resolve_axis`] against a tensor's `shape`, whose detail names the shape and the axes it has.
fn axis_of(axis: i64, shape: &[usize]) -> Result<usize, OpError> {
    resolve_axis(axis, shape.len()).map_err(|error| match shape.len() {
        0 => OpError::InvalidParameter(format!("{}: a scalar has no axes", error.detail())),
        rank => OpError::InvalidParameter(format!("{} {shape:?}: its axes are -{rank}..={}", error.detail(), rank - 1)),
    })
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
            _ => {
                return Err(OpError::ShapeMismatch(format!(
                    "shapes {a:?} and {b:?} do not broadcast: on axis {i} of the result, {da} and {db} differ and neither is 1"
                )));
            }
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
