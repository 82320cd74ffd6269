//! The skinny product's loops (`skinny::steps`) compiled with AVX-512 or AVX2 and FMA enabled
//! (detected at run time), so that `mul_add` is one vector instruction, and B's packing with
//! AVX-512, so that a panel row is one or two vector moves. The loops are safe code; only
//! calling a `#[target_feature]` function is unsafe.
#![allow(unsafe_code)]

use super::MatrixB;
use crate::cpu::simd::{Avx2Fma, Avx512};

impl Avx512 {
    /// `skinny::steps` with AVX-512F.
    pub(super) fn skinny(self, a: &[f32], b: &[f32], dims: [usize; 3], j0: usize, acc: &mut [f32]) {
        // SAFETY: the token exists only when `detect` found AVX-512F, AVX2 and FMA on this CPU,
        // the one requirement of calling a `#[target_feature]` function; its body is safe code.
        unsafe { skinny_avx512(a, b, dims, j0, acc) }
    }
}

impl Avx512 {
    /// `MatrixB::pack_rows` with AVX-512F.
    pub(super) fn pack_b<const NR: usize>(self, b: &MatrixB<'_>, pc: usize, kc: usize, j0: usize, panels: &mut [[f32; NR]]) {
        // SAFETY: as in `skinny`.
        unsafe { pack_b_avx512(b, pc, kc, j0, panels) }
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn pack_b_avx512<const NR: usize>(b: &MatrixB<'_>, pc: usize, kc: usize, j0: usize, panels: &mut [[f32; NR]]) {
    b.pack_rows(pc, kc, j0, panels)
}

impl Avx2Fma {
    /// `skinny::steps` with AVX2 and FMA.
    pub(super) fn skinny(self, a: &[f32], b: &[f32], dims: [usize; 3], j0: usize, acc: &mut [f32]) {
        // SAFETY: the token exists only when `detect` found AVX2 and FMA on this CPU, the one
        // requirement of calling a `#[target_feature]` function; its body is safe code.
        unsafe { skinny_avx2(a, b, dims, j0, acc) }
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn skinny_avx512(a: &[f32], b: &[f32], dims: [usize; 3], j0: usize, acc: &mut [f32]) {
    super::skinny::steps(a, b, dims, j0, acc)
}

#[target_feature(enable = "avx2,fma")]
fn skinny_avx2(a: &[f32], b: &[f32], dims: [usize; 3], j0: usize, acc: &mut [f32]) {
    super::skinny::steps(a, b, dims, j0, acc)
}
