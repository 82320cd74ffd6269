//! Products with very few rows (one token against a weight matrix): B's rows are streamed in
//! order, each read once, instead of packed. Packing would read and write all of B to use each
//! element once or twice, and the microkernel's 6- or 14-row tiles would be mostly empty.
//!
//! Per output element the chain is the spec's: `acc = +0.0`, then for `k` ascending
//! `acc = fma(a[i, k], b[k, j], acc)`; only the order in which different elements advance
//! changes (all of a column block's chains take step `k` before any takes `k + 1`).

use crate::cpu::gemm::{Kernel, Rect, rects};
use crate::cpu::{Workers, pool};

use super::canonicalize_nans;

/// At most this many rows take this path.
pub(super) const MAX_ROWS: usize = 4;
/// Running sums per block (256 KiB, in L2): as wide a piece of each row of B as that allows,
/// so that B is read in long runs (a whole row, where it fits) the prefetcher can follow.
const BLOCK_SUMS: usize = 1 << 16;
/// Below this many multiply-adds per thread, waking another thread costs more than it saves.
/// A skinny product is bound by reading B, which a second thread on the same memory barely
/// speeds up, while each wake-up of the pool costs tens to hundreds of microseconds on a loaded
/// VM: with 2^18 the Llama job's 64 tokens (SmolLM shape, ~90 such products a token) took
/// 3.8-5.3 s at 2 threads against 2.8-3.0 s at 1; with 2^22 (16 MiB of B per thread, so only
/// the output head splits) 2.7-3.0 s.
const MIN_FMAS_PER_THREAD: u128 = if cfg!(test) { 1 } else { 1 << 22 };

/// `c = a x b` for row-major `a: m x k`, `b: k x n`, `c: m x n` (`m <= MAX_ROWS`, all > 0),
/// NaNs canonical, the columns cut into blocks that `workers.threads` take from a queue.
pub(super) fn product(kernel: Kernel, [m, n, k]: [usize; 3], a: &[f32], b: &[f32], c: &mut [f32], workers: Workers<'_>) {
    let fmas = m as u128 * n as u128 * k as u128;
    let threads = workers.threads.min(usize::try_from(fmas / MIN_FMAS_PER_THREAD).unwrap_or(usize::MAX).max(1));
    // One block per thread where the sums fit, each a whole number of 16-float vectors.
    let width = n.div_ceil(threads).next_multiple_of(16).min(BLOCK_SUMS / m);
    let bounds: Vec<usize> = (0..n).step_by(width).chain([n]).collect();
    let blocks: Vec<(Rect<'_>, usize)> = rects(c, n, &[0, m], &bounds).into_iter().zip(bounds).collect();
    pool::for_each(threads, blocks, |_, (mut rect, j0)| {
        if workers.should_stop() {
            return;
        }
        let w = rect.row(0).len();
        let mut acc = vec![0.0f32; m * w];
        run(kernel, a, b, [m, n, k], j0, &mut acc);
        for (i, sums) in acc.chunks_exact(w).enumerate() {
            let row = rect.row(i);
            row.copy_from_slice(sums);
            canonicalize_nans(row);
        }
    });
}

/// The block of columns `j0..j0 + acc.len() / m`, compiled for the widest vectors `kernel` says
/// the CPU has (so `mul_add` is one instruction, not a call).
fn run(kernel: Kernel, a: &[f32], b: &[f32], dims: [usize; 3], j0: usize, acc: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        Kernel::Avx512(token) => return token.skinny(a, b, dims, j0, acc),
        Kernel::Avx2Fma(token) => return token.skinny(a, b, dims, j0, acc),
        Kernel::Portable => {}
    }
    let _ = kernel;
    steps(a, b, dims, j0, acc);
}

/// [`run`]'s loops, inlined into each compilation of them.
#[inline(always)]
pub(super) fn steps(a: &[f32], b: &[f32], [m, n, k]: [usize; 3], j0: usize, acc: &mut [f32]) {
    let w = acc.len() / m;
    for kk in 0..k {
        let row = &b[kk * n + j0..kk * n + j0 + w];
        for (i, sums) in acc.chunks_exact_mut(w).enumerate() {
            let aik = a[i * k + kk];
            for (s, &bkj) in sums.iter_mut().zip(row) {
                *s = aik.mul_add(bkj, *s);
            }
        }
    }
}
