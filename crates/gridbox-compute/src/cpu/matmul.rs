//! Batched matrix product, `[..., M, K] x [..., K, N] -> [..., M, N]`.
//!
//! The result is defined element by element (spec/determinism.md): `acc = +0.0`, then for
//! `k` in `0..K` ascending `acc = fma(a[i, k], b[k, j], acc)` with one rounding per step, then
//! a NaN result is stored as the canonical NaN `0x7FC0_0000`. Nothing here may change that
//! order: K is never split across threads, and when it is blocked for the cache the running
//! accumulators are parked in the output tile between blocks (an `f32` store and reload is
//! exact) and the chain goes on from them.
//!
//! The blocking, the microkernels and the threads are `super::gemm`'s; here are the shapes,
//! the batches and how B packs itself.

use gridbox_abi::DType;

use crate::ops::{OpError, broadcast_shapes};
use crate::tensor::{Tensor, TensorMeta, checked_product};

use super::gemm::{Cols, Kernel, Product, RightSide};
use super::{Workers, pool};

mod skinny;
#[cfg(target_arch = "x86_64")]
mod x86;

/// Below this many multiply-adds per matrix, a batch of matrices is split by whole matrices
/// (each on one thread) rather than each matrix across the threads (the unit tests take both
/// paths).
const BATCH_SPLIT_FMAS: u128 = if cfg!(test) { 100 } else { 1 << 22 };

/// The canonical NaN every NaN result is stored as (quiet, positive, no payload).
pub(crate) const CANONICAL_NAN: f32 = f32::from_bits(0x7FC0_0000);

/// Replaces every NaN in `values` by [`CANONICAL_NAN`]: hardware disagrees on the sign and
/// payload of a NaN it makes (x86 gives `0xFFC0_0000` for `inf * 0`, aarch64 `0x7FC0_0000`, CUDA
/// `0x7FFF_FFFF`) and on which operand's payload survives, so only the fact of NaN is kept.
pub(crate) fn canonicalize_nans(values: &mut [f32]) {
    for v in values {
        if v.is_nan() {
            *v = CANONICAL_NAN;
        }
    }
}

/// Batched matrix product: `[..., M, K] x [..., K, N] -> [..., M, N]`, the batch dims
/// broadcast NumPy-style.
///
/// `out` is what [`crate::OpCall::infer`] returned for these inputs; it is checked again, and an
/// inconsistent one is a [`OpError::ShapeMismatch`], never a panic. Every output element is the
/// chain `acc = +0.0; for k in 0..K: acc = fma(a[i,k], b[k,j], acc)` (NaN results stored as
/// `0x7FC0_0000`), so the bits are the same for every `threads` and on every machine.
pub fn matmul(a: &Tensor, b: &Tensor, out: &TensorMeta, threads: usize) -> Result<Tensor, OpError> {
    matmul_with(Kernel::detect(), a, b, out, Workers::threads(threads))
}

/// [`matmul`] for [`super::execute`], stopping between blocks when told to.
pub(crate) fn matmul_in(a: &Tensor, b: &Tensor, out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    matmul_with(Kernel::detect(), a, b, out, workers)
}

/// [`matmul`] with a chosen microkernel (tests run every kernel the machine has).
fn matmul_with(kernel: Kernel, a: &Tensor, b: &Tensor, out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    let plan = Plan::new(a, b, out)?;
    let (Some(a_data), Some(b_data)) = (a.as_f32(), b.as_f32()) else {
        return Err(OpError::UnsupportedDType("matmul takes f32".into()));
    };
    let mut data = zeroed(plan.out_len)?;
    // Empty output, or K = 0: every element is the empty chain, +0.0.
    if plan.out_len != 0 && plan.k != 0 {
        let (m, n, k) = (plan.m, plan.n, plan.k);
        let batch = |t: usize, c: &mut [f32], workers: Workers<'_>| {
            let (ia, ib) = plan.batch_sources(t);
            let (a, b) = (&a_data[ia * m * k..(ia + 1) * m * k], &b_data[ib * k * n..(ib + 1) * k * n]);
            if m <= skinny::MAX_ROWS {
                return skinny::product(kernel, [m, n, k], a, b, c, workers);
            }
            let rhs = MatrixB { b, n };
            let finish = |_: usize, row: &mut [f32]| canonicalize_nans(row);
            let product = Product { m, n, k, a, rhs: &rhs, cols: Cols::Identity, finish: &finish };
            kernel.product(&product, c, workers);
        };
        let fmas = m as u128 * n as u128 * k as u128;
        let batches = plan.out_len / (m * n);
        if workers.threads > 1 && batches > 1 && fmas < BATCH_SPLIT_FMAS {
            // Many small matrices: whole matrices to each thread, each on one thread.
            let one = Workers { threads: 1, ..workers };
            let items: Vec<&mut [f32]> = data.chunks_mut(m * n).collect();
            pool::for_each(workers.threads, items, |t, c| {
                if !workers.should_stop() {
                    batch(t, c, one);
                }
            });
        } else {
            for (t, c) in data.chunks_mut(m * n).enumerate() {
                if workers.should_stop() {
                    break;
                }
                batch(t, c, workers);
            }
        }
    }
    Tensor::f32(out.shape.clone(), data)
}

/// `len` zeros, or an error (not an abort) when they do not fit in memory.
pub(crate) fn zeroed(len: usize) -> Result<Vec<f32>, OpError> {
    let mut data = Vec::new();
    data.try_reserve_exact(len).map_err(|_| OpError::ShapeMismatch(format!("an output of {len} elements does not fit in memory")))?;
    data.resize(len, 0.0);
    Ok(data)
}

/// A plain row-major `K x N` matrix as the right side of a product.
struct MatrixB<'a> {
    b: &'a [f32],
    n: usize,
}

impl<const NR: usize> RightSide<NR> for MatrixB<'_> {
    const MASKED: bool = false;

    fn pack(&self, pc: usize, kc: usize, j0: usize, panels: &mut [[f32; NR]], _masks: &mut [u32], full: &mut [bool]) {
        full.fill(true);
        // Compiled for the widest vectors the CPU has where it has them: a panel row is a 64-
        // or 128-byte copy, which baseline x86-64 does 16 bytes at a time.
        #[cfg(target_arch = "x86_64")]
        if let Some(token) = crate::cpu::simd::Avx512::detect() {
            return token.pack_b(self, pc, kc, j0, panels);
        }
        self.pack_rows(pc, kc, j0, panels);
    }
}

impl MatrixB<'_> {
    /// [`RightSide::pack`]'s copies, inlined into each compilation of them.
    #[inline(always)]
    fn pack_rows<const NR: usize>(&self, pc: usize, kc: usize, j0: usize, panels: &mut [[f32; NR]]) {
        let n = self.n;
        let end = (j0 + NR * (panels.len() / kc.max(1))).min(n);
        // Row by row of B (contiguous reads), each row's pieces into their panels.
        for kk in 0..kc {
            let src = &self.b[(pc + kk) * n + j0..(pc + kk) * n + end];
            // Whole panels as fixed-size copies (vector moves, not a memmove call each).
            let (whole, rest) = src.as_chunks::<NR>();
            for (p, cols) in whole.iter().enumerate() {
                panels[p * kc + kk] = *cols;
            }
            if !rest.is_empty() {
                let slot = &mut panels[whole.len() * kc + kk];
                slot[..rest.len()].copy_from_slice(rest);
                slot[rest.len()..].fill(0.0);
            }
        }
    }
}

/// A checked matmul: sizes, the output's length and how batches map to inputs.
#[derive(Debug)]
struct Plan {
    m: usize,
    n: usize,
    k: usize,
    out_len: usize,
    /// Output batch dims.
    batch_dims: Vec<usize>,
    /// Per output batch dim, the step (in matrices) in A; 0 where A broadcasts.
    a_steps: Vec<usize>,
    /// The same for B.
    b_steps: Vec<usize>,
}

impl Plan {
    fn new(a: &Tensor, b: &Tensor, out: &TensorMeta) -> Result<Plan, OpError> {
        for (what, dtype) in [("a", a.dtype()), ("b", b.dtype()), ("output", out.dtype)] {
            if dtype != DType::F32 {
                return Err(OpError::UnsupportedDType(format!("matmul takes f32, {what} is {}", dtype.name())));
            }
        }
        let mismatch = || OpError::ShapeMismatch(format!("matmul of {:?} x {:?} cannot give {:?}", a.shape(), b.shape(), out.shape));
        let (a_shape, b_shape, o_shape) = (a.shape(), b.shape(), out.shape.as_slice());
        let (Some((&[m, k], a_batch)), Some((&[k2, n], b_batch)), Some((&[m2, n2], o_batch))) =
            (split_last2(a_shape), split_last2(b_shape), split_last2(o_shape))
        else {
            return Err(mismatch());
        };
        if k != k2 || m != m2 || n != n2 || broadcast_shapes(a_batch, b_batch)? != o_batch {
            return Err(mismatch());
        }
        let out_len = checked_product(o_shape)?;
        Ok(Plan {
            m,
            n,
            k,
            out_len,
            batch_dims: o_batch.to_vec(),
            a_steps: broadcast_steps(a_batch, o_batch.len()),
            b_steps: broadcast_steps(b_batch, o_batch.len()),
        })
    }

    /// Indices (in matrices) into A and B of output batch `t`.
    fn batch_sources(&self, mut t: usize) -> (usize, usize) {
        let (mut ia, mut ib) = (0, 0);
        for ((&dim, &sa), &sb) in self.batch_dims.iter().zip(&self.a_steps).zip(&self.b_steps).rev() {
            let idx = t % dim;
            t /= dim;
            ia += idx * sa;
            ib += idx * sb;
        }
        (ia, ib)
    }
}

/// `shape` without its last two dims, and those two.
fn split_last2(shape: &[usize]) -> Option<(&[usize; 2], &[usize])> {
    let split = shape.len().checked_sub(2)?;
    let (batch, last) = shape.split_at(split);
    Some((last.try_into().ok()?, batch))
}

/// Steps (in matrices) of an input's batch dims aligned to `rank` output batch dims, 0 where
/// the input broadcasts (missing dim or dim 1).
fn broadcast_steps(batch: &[usize], rank: usize) -> Vec<usize> {
    let mut steps = vec![0; rank];
    let mut step: usize = 1;
    for (i, &dim) in batch.iter().enumerate().rev() {
        let at = rank - batch.len() + i;
        steps[at] = if dim == 1 { 0 } else { step };
        // Saturates only when the input is empty (a 0 among M, K): then so is the output, and
        // the steps are never used.
        step = step.saturating_mul(dim);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OpCall;
    use crate::cpu::gemm::{KC, MC, NC};

    /// The spec, literally.
    fn reference(a: &Tensor, b: &Tensor, out: &TensorMeta) -> Vec<f32> {
        let plan = Plan::new(a, b, out).unwrap();
        let (ad, bd) = (a.as_f32().unwrap(), b.as_f32().unwrap());
        let (m, n, k) = (plan.m, plan.n, plan.k);
        let mut res = vec![0.0; plan.out_len];
        for (t, mat) in res.chunks_mut((m * n).max(1)).enumerate() {
            if m * n == 0 {
                break;
            }
            let (ia, ib) = plan.batch_sources(t);
            for i in 0..m {
                for j in 0..n {
                    let mut acc = 0.0f32;
                    for kk in 0..k {
                        acc = ad[(ia * m + i) * k + kk].mul_add(bd[(ib * k + kk) * n + j], acc);
                    }
                    mat[i * n + j] = if acc.is_nan() { CANONICAL_NAN } else { acc };
                }
            }
        }
        res
    }

    /// Deterministic values with varied exponents, so reassociation or double rounding shows.
    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let mant = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                let exp = ((s >> 8) % 16) as i32 - 8;
                mant * 2f32.powi(exp)
            })
            .collect()
    }

    fn tensor(shape: &[usize], seed: u64) -> Tensor {
        let len = shape.iter().product();
        Tensor::f32(shape.to_vec(), values(len, seed)).unwrap()
    }

    fn kernels() -> Vec<Kernel> {
        Kernel::available()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Every kernel and thread count against the reference, bit for bit.
    fn check(a: &Tensor, b: &Tensor) {
        let out = OpCall::Matmul.infer(&[a.meta(), b.meta()]).unwrap();
        let want = bits(&reference(a, b, &out));
        for kernel in kernels() {
            for threads in [1, 2, 3, 8] {
                let got = matmul_with(kernel, a, b, &out, Workers::threads(threads)).unwrap();
                assert_eq!(got.shape(), out.shape.as_slice());
                assert!(bits(got.as_f32().unwrap()) == want, "{kernel:?} threads {threads}: {:?} x {:?} differs from the reference", a.shape(), b.shape());
            }
        }
    }

    #[test]
    fn edge_sizes_match_the_reference() {
        let sizes = [0, 1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 33, 63, 65, 97, 129];
        let mut seed = 1;
        for &m in &sizes {
            for &n in &sizes {
                // Every (m, n) with a few depths; every depth with a few (m, n) below.
                for k in [0, 1, 7, 17] {
                    seed += 1;
                    if m * n * k > 40_000 {
                        continue;
                    }
                    check(&tensor(&[m, k], seed), &tensor(&[k, n], seed + 1000));
                }
            }
        }
        for &k in &sizes {
            for (m, n) in [(1, 1), (7, 17), (13, 33)] {
                seed += 1;
                check(&tensor(&[m, k], seed), &tensor(&[k, n], seed + 1000));
            }
        }
    }

    /// A seeded sweep of shapes (M to 70: the skinny path, one to six row tiles, both of
    /// `gemm`'s packing paths;
    /// N to 70; K to 600, past `KC` and the tests' packing cap) with an eighth of the values NaN,
    /// infinite, signed zero, subnormal or huge; every kernel at 1, 2, 3 and 8 threads.
    #[test]
    fn random_shapes_and_special_values_match_the_reference() {
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, f32::MIN_POSITIVE / 3.0, -1e-40, f32::MAX, -1e-30];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as usize % below
        };
        for case in 0..60 {
            // A third of the cases have at most 4 rows: the skinny path.
            let m = if next(3) == 0 { 1 + next(4) } else { 1 + next(70) };
            let (n, k) = (1 + next(70), 1 + next(600));
            let batch = if next(4) == 0 { vec![1 + next(3)] } else { vec![] };
            let mut spice = |shape: &[usize], seed: u64| {
                let t = tensor(shape, seed);
                let v = t.as_f32().unwrap().iter().map(|&v| if next(8) == 0 { specials[next(specials.len())] } else { v }).collect();
                Tensor::f32(shape.to_vec(), v).unwrap()
            };
            let a = spice(&[batch.clone(), vec![m, k]].concat(), case);
            let b = spice(&[batch, vec![k, n]].concat(), case + 1000);
            check(&a, &b);
        }
    }

    #[test]
    fn many_rows_share_packed_panels() {
        // Enough rows for several row units sharing one packed B at every thread count.
        check(&tensor(&[301, 45], 1), &tensor(&[45, 77], 2));
        check(&tensor(&[2, 150, 300], 3), &tensor(&[300, 33], 4));
    }

    #[test]
    fn deep_k_crosses_cache_blocks() {
        // K > KC: the chains are parked in the output between blocks and continued.
        for k in [KC - 1, KC, KC + 1, 2 * KC + 3] {
            check(&tensor(&[7, k], k as u64), &tensor(&[k, 19], 3 * k as u64));
        }
    }

    #[test]
    fn wide_and_tall_cross_cache_blocks() {
        check(&tensor(&[MC + 7, 3], 1), &tensor(&[3, 5], 2));
        check(&tensor(&[2, 3], 3), &tensor(&[3, NC + 17], 4));
    }

    #[test]
    fn batch_dims_broadcast() {
        check(&tensor(&[2, 1, 5, 7], 1), &tensor(&[3, 7, 9], 2));
        check(&tensor(&[4, 3, 8], 3), &tensor(&[8, 17], 4));
        check(&tensor(&[6, 5], 5), &tensor(&[2, 3, 5, 7], 6));
        check(&tensor(&[1, 3, 2, 4], 7), &tensor(&[2, 1, 4, 3], 8));
        check(&tensor(&[0, 3, 4], 9), &tensor(&[1, 4, 2], 10));
        check(&tensor(&[3, 33, 2], 11), &tensor(&[3, 2, 31], 12));
    }

    #[test]
    fn special_values_follow_fma() {
        let specials = [0.0, -0.0, 1.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE / 3.0, f32::MAX, 1e-30];
        let (m, n, k) = (9, 18, 10);
        let mut seed = 7u64;
        let pick = |len: usize, seed: &mut u64| -> Vec<f32> {
            values(len, *seed)
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    *seed += 1;
                    if (i as u64 + *seed).is_multiple_of(3) { specials[(i + *seed as usize) % specials.len()] } else { v }
                })
                .collect()
        };
        for _ in 0..4 {
            let a = Tensor::f32(vec![m, k], pick(m * k, &mut seed)).unwrap();
            let b = Tensor::f32(vec![k, n], pick(k * n, &mut seed)).unwrap();
            check(&a, &b);
        }
        // -0.0 products added to the +0.0 start give +0.0 ...
        let a = Tensor::f32(vec![1, 2], vec![-0.0, -0.0]).unwrap();
        let b = Tensor::f32(vec![2, 1], vec![1.0, 1.0]).unwrap();
        let out = OpCall::Matmul.infer(&[a.meta(), b.meta()]).unwrap();
        assert_eq!(matmul(&a, &b, &out, 1).unwrap().as_f32().unwrap()[0].to_bits(), 0);
        // ... but a negative product too small for f32 rounds to -0.0, and stays so.
        let a = Tensor::f32(vec![1, 2], vec![1e-30, 1e-30]).unwrap();
        let b = Tensor::f32(vec![2, 1], vec![-1e-30, -1e-30]).unwrap();
        assert_eq!(matmul(&a, &b, &out, 1).unwrap().as_f32().unwrap()[0].to_bits(), 0x8000_0000);
        // ... and inf * 0 is NaN, stored canonically.
        let a = Tensor::f32(vec![1, 1], vec![f32::INFINITY]).unwrap();
        let b = Tensor::f32(vec![1, 1], vec![0.0]).unwrap();
        let out = OpCall::Matmul.infer(&[a.meta(), b.meta()]).unwrap();
        assert_eq!(matmul(&a, &b, &out, 1).unwrap().as_f32().unwrap()[0].to_bits(), 0x7FC0_0000);
    }

    #[test]
    fn fma_is_fused() {
        // 1 + 2^-23 squared is 1 + 2^-22 + 2^-46; minus (1 + 2^-22) leaves 2^-46 only if fused.
        let x = 1.0 + f32::EPSILON;
        let a = Tensor::f32(vec![1, 2], vec![x, -1.0]).unwrap();
        let b = Tensor::f32(vec![2, 1], vec![x, 1.0 + 2.0 * f32::EPSILON]).unwrap();
        // Chain: acc = fma(x, x, 0) = round(1 + 2^-22 + 2^-46) = 1 + 2^-22; then
        // fma(-1, 1 + 2^-22, acc) = 0. Order matters: reversing it gives 2^-46.
        let out = OpCall::Matmul.infer(&[a.meta(), b.meta()]).unwrap();
        assert_eq!(matmul(&a, &b, &out, 1).unwrap().as_f32().unwrap(), &[0.0]);
        let a = Tensor::f32(vec![1, 2], vec![-1.0, x]).unwrap();
        let b = Tensor::f32(vec![2, 1], vec![1.0 + 2.0 * f32::EPSILON, x]).unwrap();
        let got = matmul(&a, &b, &out, 1).unwrap().as_f32().unwrap()[0];
        assert_eq!(got, 2f32.powi(-46));
    }

    #[test]
    fn hostile_shapes_are_errors_not_panics() {
        let a = tensor(&[2, 3], 1);
        let b = tensor(&[3, 4], 2);
        let meta = |shape: &[usize]| TensorMeta::new(DType::F32, shape.to_vec());
        for bad in [&[2, 5][..], &[3, 4], &[2], &[], &[1, 2, 4], &[2, 2, 4], &[0, 2, 4]] {
            let err = matmul(&a, &b, &meta(bad), 2).unwrap_err();
            assert!(matches!(err, OpError::ShapeMismatch(_)), "{bad:?}: {err:?}");
        }
        let err = matmul(&a, &b, &TensorMeta::new(DType::I32, vec![2, 4]), 1).unwrap_err();
        assert!(matches!(err, OpError::UnsupportedDType(_)));
        let ints = Tensor::i32(vec![2, 3], vec![0; 6]).unwrap();
        assert!(matches!(matmul(&ints, &b, &meta(&[2, 4]), 1), Err(OpError::UnsupportedDType(_))));
        // Rank 1 and mismatched inner dims.
        let v = Tensor::f32(vec![3], vec![1.0; 3]).unwrap();
        assert!(matmul(&v, &b, &meta(&[4]), 1).is_err());
        assert!(matmul(&b, &b, &meta(&[3, 4]), 1).is_err());
        // Batch dims that do not broadcast, or an output that claims other batch dims.
        let a3 = tensor(&[2, 2, 3], 3);
        let b3 = tensor(&[3, 3, 4], 4);
        assert!(matmul(&a3, &b3, &meta(&[3, 2, 4]), 1).is_err());
        assert!(matmul(&a3, &b, &meta(&[4, 2, 4]), 1).is_err());
        // Zero-size dims everywhere, any thread count.
        for threads in [0, 1, 7] {
            let z = tensor(&[0, 3], 5);
            assert_eq!(matmul(&z, &b, &meta(&[0, 4]), threads).unwrap().len(), 0);
            let a0 = tensor(&[2, 0], 6);
            let b0 = tensor(&[0, 4], 7);
            let got = matmul(&a0, &b0, &meta(&[2, 4]), threads).unwrap();
            assert!(got.as_f32().unwrap().iter().all(|v| v.to_bits() == 0));
            let bn = tensor(&[3, 0], 8);
            assert_eq!(matmul(&a, &bn, &meta(&[2, 0]), threads).unwrap().len(), 0);
            // Huge batch dims in an empty tensor.
            let (huge, big) = (1usize << 40, 1usize << 20);
            let empty = Tensor::f32(vec![huge, big, 0, 3], vec![]).unwrap();
            assert_eq!(matmul(&empty, &b, &meta(&[huge, big, 0, 4]), threads).unwrap().len(), 0);
            let empty_k = Tensor::f32(vec![huge, big, 2, 0], vec![]).unwrap();
            let bk = tensor(&[0, 4], 9);
            // Its output would not be empty: infer refuses it, and so does matmul.
            assert!(OpCall::Matmul.infer(&[empty_k.meta(), bk.meta()]).is_err());
            assert!(matmul(&empty_k, &bk, &meta(&[huge, big, 2, 4]), threads).is_err());
        }
    }
}
