//! One op on the CPU reference from what a trace entry records: the op's name, its parameters
//! in the trace's encoding (i64 LE each) and its input tensors. What `gridbox check-op`
//! recomputes a provider's op with.

use gridbox_abi::{MAX_OP_INPUTS, MAX_OP_PARAMS, Op};

use crate::cpu;
use crate::ops::{OpCall, OpError};
use crate::tensor::Tensor;

/// An op that cannot be recomputed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReferenceError {
    /// The name is no op (`create` and `read` are calls, not ops).
    #[error("{0:?} is not an op")]
    UnknownOp(String),
    /// The parameters are not whole i64s, or too many.
    #[error("{op}: the parameters are {len} bytes: not a whole number of i64s (at most {MAX_OP_PARAMS})")]
    Params {
        /// The op.
        op: &'static str,
        /// Their length in bytes.
        len: usize,
    },
    /// More inputs than any op takes.
    #[error("{op}: {count} inputs, above the {MAX_OP_INPUTS} any op takes")]
    Inputs {
        /// The op.
        op: &'static str,
        /// How many were given.
        count: usize,
    },
    /// The result would be larger than the caller allows.
    #[error("{op}: the result would be {bytes} bytes, above the {max} allowed")]
    TooLarge {
        /// The op.
        op: &'static str,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The op refused its inputs or parameters, as it would have refused the job.
    #[error("{op}: {error}")]
    Op {
        /// The op.
        op: &'static str,
        /// Why.
        #[source]
        error: OpError,
    },
}

/// Runs op `name` with `params` (the trace's encoding) on `inputs` on the CPU reference, on
/// `threads` threads (the result does not depend on them). A result above `max_bytes` is
/// refused before it is allocated.
pub fn run_op(name: &str, params: &[u8], inputs: &[Tensor], max_bytes: u64, threads: usize) -> Result<Tensor, ReferenceError> {
    let op = Op::from_name(name).ok_or_else(|| ReferenceError::UnknownOp(name.into()))?;
    let op_name = op.name();
    if !params.len().is_multiple_of(8) || params.len() / 8 > MAX_OP_PARAMS {
        return Err(ReferenceError::Params { op: op_name, len: params.len() });
    }
    if inputs.len() > MAX_OP_INPUTS {
        return Err(ReferenceError::Inputs { op: op_name, count: inputs.len() });
    }
    let params: Vec<i64> = params.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect();
    let failed = |error| ReferenceError::Op { op: op_name, error };
    let call = OpCall::decode(op, &params, inputs.len()).map_err(failed)?;
    let metas: Vec<_> = inputs.iter().map(Tensor::meta).collect();
    let out = call.infer(&metas).map_err(failed)?;
    let bytes = out.checked_bytes().map_err(failed)? as u64;
    if bytes > max_bytes {
        return Err(ReferenceError::TooLarge { op: op_name, bytes, max: max_bytes });
    }
    let refs: Vec<&Tensor> = inputs.iter().collect();
    cpu::execute(&call, &refs, &out, threads).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recomputes_an_op_from_its_trace_encoding() {
        let x = Tensor::f32(vec![2, 3], vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0]).unwrap();
        let relu = run_op("relu", &[], std::slice::from_ref(&x), 1 << 20, 1).unwrap();
        assert_eq!(relu.as_f32().unwrap(), &[1.0, 0.0, 3.0, 0.0, 5.0, 0.0]);
        let params: Vec<u8> = [1i64, 0].iter().flat_map(|p| p.to_le_bytes()).collect();
        let sum = run_op("sum", &params, std::slice::from_ref(&x), 1 << 20, 2).unwrap();
        assert_eq!(sum.as_f32().unwrap(), &[2.0, -5.0]);
        assert!(matches!(run_op("create", &[], &[], 1 << 20, 1), Err(ReferenceError::UnknownOp(_))));
        assert!(matches!(run_op("sum", &[1, 2, 3], std::slice::from_ref(&x), 1 << 20, 1), Err(ReferenceError::Params { .. })));
        assert!(matches!(run_op("relu", &[], std::slice::from_ref(&x), 8, 1), Err(ReferenceError::TooLarge { bytes: 24, .. })));
        assert!(matches!(run_op("matmul", &[], &[x.clone(), x], 1 << 20, 1), Err(ReferenceError::Op { op: "matmul", .. })));
    }
}
