//! The CPU reference kernels. Every op's result is defined bit for bit in spec/determinism.md;
//! every other backend must reproduce these bits. `threads` only changes speed: work is split
//! by output elements or rows, never inside a reduction.

mod conv;
mod elementwise;
mod layout;
mod matmul;
mod reduce;
mod simd;
#[cfg(test)]
mod vectors;

pub use conv::conv2d;
pub use matmul::matmul;
pub use reduce::{max_f32, sum_f32};

use crate::ops::{OpCall, OpError};
use crate::tensor::{Tensor, TensorMeta};

/// Below this many output elements a kernel runs on one thread: starting threads costs more.
pub(crate) const MIN_PARALLEL_ELEMENTS: usize = 1 << 16;

/// Runs a decoded op on the CPU. `out` is what `call.infer` gave for these inputs; kernels check
/// what they rely on again, so an inconsistent call is an error, never a panic.
pub fn execute(call: &OpCall, inputs: &[&Tensor], out: &TensorMeta, threads: usize) -> Result<Tensor, OpError> {
    let threads = threads.max(1);
    let input = |index: usize| inputs.get(index).copied().ok_or_else(|| OpError::InvalidParameter(format!("missing input {index}")));
    match call {
        OpCall::Matmul => matmul(input(0)?, input(1)?, out, threads),
        OpCall::Binary(op) => elementwise::binary(*op, input(0)?, input(1)?, out, threads),
        OpCall::Unary(op) => elementwise::unary(*op, input(0)?, out, threads),
        OpCall::Softmax => reduce::softmax(input(0)?, out, threads),
        OpCall::LayerNorm { eps } => reduce::layer_norm(input(0)?, input(1)?, Some(input(2)?), *eps, out, threads),
        OpCall::RmsNorm { eps } => reduce::layer_norm(input(0)?, input(1)?, None, *eps, out, threads),
        OpCall::Reduce { op, axis, .. } => reduce::reduce(*op, input(0)?, *axis, out),
        OpCall::Permute { perm } => layout::permute(input(0)?, perm, out),
        OpCall::Reshape { .. } => layout::reshape(input(0)?, out),
        OpCall::Slice { axis, start, .. } => layout::slice(input(0)?, *axis, *start, out),
        OpCall::Concat { axis } => layout::concat(inputs, *axis, out),
        OpCall::Gather => layout::gather(input(0)?, input(1)?, out),
        OpCall::Conv2d { stride_h, stride_w, pad_h, pad_w } => {
            conv2d(input(0)?, input(1)?, inputs.get(2).copied(), *stride_h, *stride_w, *pad_h, *pad_w, out, threads)
        }
    }
}

/// Splits `out` into `threads` contiguous runs of whole `unit`-sized rows and calls `work(first
/// row, rows)` on each, in parallel when there is enough work.
pub(crate) fn parallel_rows(out: &mut [f32], unit: usize, threads: usize, work: impl Fn(usize, &mut [f32]) + Sync) {
    let rows = out.len().checked_div(unit).unwrap_or(0);
    if threads <= 1 || out.len() < MIN_PARALLEL_ELEMENTS || rows < 2 {
        work(0, out);
        return;
    }
    let per_thread = rows.div_ceil(threads.min(rows));
    std::thread::scope(|scope| {
        for (index, chunk) in out.chunks_mut(per_thread * unit).enumerate() {
            let work = &work;
            scope.spawn(move || work(index * per_thread, chunk));
        }
    });
}
