//! The CPU reference kernels. Every op's result is defined bit for bit in spec/determinism.md;
//! every other backend must reproduce these bits. `threads` only changes speed: work is split
//! by output elements or rows, never inside a reduction.

mod attention;
mod cast;
mod conv;
mod elementwise;
mod gemm;
mod layout;
mod matmul;
mod pool;
#[cfg(test)]
mod pool_review_tests;
mod reduce;
mod rope;
mod simd;
#[cfg(test)]
mod vectors;

pub use cast::{bf16_to_f32, f16_to_f32};
pub use conv::conv2d;
pub use matmul::matmul;
pub use reduce::{max_f32, sum_f32};

use crate::ops::{OpCall, OpError};
use crate::stop::Stop;
use crate::tensor::{Tensor, TensorData, TensorMeta};

/// Below this many output elements a kernel runs on one thread: starting threads costs more.
pub(crate) const MIN_PARALLEL_ELEMENTS: usize = 1 << 16;

/// How a kernel may work: on how many threads, and when it must stop early.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Workers<'a> {
    /// Threads a kernel may use (at least 1); results never depend on it.
    pub(crate) threads: usize,
    stop: Option<&'a Stop>,
}

impl Workers<'_> {
    /// `threads` threads that never stop early.
    pub(crate) fn threads(threads: usize) -> Self {
        Workers { threads: threads.max(1), stop: None }
    }

    /// Whether the kernel must stop now (see [`Stop`]); its output is then thrown away.
    #[inline]
    pub(crate) fn should_stop(&self) -> bool {
        self.stop.is_some_and(Stop::should_stop)
    }
}

/// Runs a decoded op on the CPU. `out` is what `call.infer` gave for these inputs; kernels check
/// what they rely on again, so an inconsistent call is an error, never a panic.
pub fn execute(call: &OpCall, inputs: &[&Tensor], out: &TensorMeta, threads: usize) -> Result<Tensor, OpError> {
    run(call, inputs, out, Workers::threads(threads))
}

/// [`execute`], returning early once `stop` says so. The caller checks [`Stop::reason`]: when
/// it is set, the result is incomplete and must be thrown away.
pub fn execute_until(call: &OpCall, inputs: &[&Tensor], out: &TensorMeta, threads: usize, stop: &Stop) -> Result<Tensor, OpError> {
    run(call, inputs, out, Workers { threads: threads.max(1), stop: Some(stop) })
}

fn run(call: &OpCall, inputs: &[&Tensor], out: &TensorMeta, threads: Workers<'_>) -> Result<Tensor, OpError> {
    // An empty output is the same whatever the op, and some kernels loop over the leading
    // dims of their inputs, which an empty tensor may make astronomically large at no cost in
    // memory: skip them (spec/abi.md, "Shapes"). Gather checks its indices first.
    if out.checked_len()? == 0 && !matches!(call, OpCall::Gather) {
        return Tensor::new(out.shape.clone(), TensorData::empty(out.dtype));
    }
    let input = |index: usize| inputs.get(index).copied().ok_or_else(|| OpError::InvalidParameter(format!("missing input {index}")));
    match call {
        OpCall::Matmul => matmul::matmul_in(input(0)?, input(1)?, out, threads),
        OpCall::Binary(op) => elementwise::binary(*op, input(0)?, input(1)?, out, threads),
        OpCall::Unary(op) => elementwise::unary(*op, input(0)?, out, threads),
        OpCall::Softmax => reduce::softmax(input(0)?, out, threads),
        OpCall::LayerNorm { eps } => reduce::layer_norm(input(0)?, input(1)?, Some(input(2)?), *eps, out, threads),
        OpCall::RmsNorm { eps } => reduce::layer_norm(input(0)?, input(1)?, None, *eps, out, threads),
        OpCall::Reduce { op, axis, .. } => reduce::reduce(*op, input(0)?, *axis, out, threads),
        OpCall::Argmax => reduce::argmax(input(0)?, out, threads),
        OpCall::Cast { .. } => cast::cast(input(0)?, out, threads),
        OpCall::Rope { offset, theta } => rope::rope(input(0)?, *offset, *theta, out, threads),
        OpCall::Attention { offset, scale } => attention::attention(input(0)?, input(1)?, input(2)?, *offset, *scale, out, threads),
        OpCall::Permute { perm } => layout::permute(input(0)?, perm, out, threads),
        OpCall::Reshape { .. } => layout::reshape(input(0)?, out),
        OpCall::Slice { axis, start, .. } => layout::slice(input(0)?, *axis, *start, out, threads),
        OpCall::Concat { axis } => layout::concat(inputs, *axis, out, threads),
        OpCall::Gather => layout::gather(input(0)?, input(1)?, out, threads),
        OpCall::Conv2d { stride_h, stride_w, pad_h, pad_w } => {
            conv::conv2d_in(input(0)?, input(1)?, inputs.get(2).copied(), [*stride_h, *stride_w, *pad_h, *pad_w], out, threads)
        }
    }
}

/// Cuts `out` into pieces of whole `unit`-sized rows (about [`MIN_PARALLEL_ELEMENTS`] elements
/// each) and calls `work(first row, rows)` on each, on up to `workers.threads` threads of the
/// kernels' pool when there is enough work, checking before each piece whether to stop.
pub(crate) fn parallel_rows(out: &mut [f32], unit: usize, workers: Workers<'_>, work: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = out.len().checked_div(unit).unwrap_or(0);
    let piece = (MIN_PARALLEL_ELEMENTS / unit.max(1)).max(1);
    let threads = if out.len() < MIN_PARALLEL_ELEMENTS || rows < 2 { 1 } else { workers.threads };
    let pieces: Vec<&mut [f32]> = out.chunks_mut(piece * unit.max(1)).collect();
    pool::for_each(threads, pieces, |index, part| {
        if !workers.should_stop() {
            work(index * piece, part);
        }
    });
}
