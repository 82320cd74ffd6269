//! x86-64 microkernels: AVX2 + FMA (6 x 16 tile, twelve `ymm` accumulators) and AVX-512F
//! (14 x 32 tile, twenty-eight `zmm` accumulators).
//!
//! Per step k each loads one row of the packed B panel, broadcasts each A value of the step
//! and does `acc = fma(a[i], b[k, j..j+lanes], acc)`: per output element that is exactly the
//! scalar chain of the spec, many lanes at a time.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256, __m512, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};

pub(super) use crate::cpu::simd::{Avx2Fma, Avx512};

impl Avx2Fma {
    /// See `Tile`: continues the chains of the tile `c[i * ldc + j]`.
    #[inline]
    pub(super) fn tile(self, a: &[[f32; 6]], b: &[[f32; 16]], c: &mut [f32], ldc: usize, first: bool) {
        // The tile's last element is at 5 * ldc + 15: slicing here (a panic on a broken
        // caller, never an out-of-bounds access) lets the kernel take plain row slices.
        let c = &mut c[..5 * ldc + 16];
        // SAFETY: `self` exists only when `detect` found AVX2 and FMA on this CPU, which is all
        // `tile_6x16` needs beyond its arguments' own (checked) bounds.
        unsafe { tile_6x16(a, b, c, ldc, first) }
    }
}

impl Avx512 {
    /// See `Tile`: continues the chains of the tile `c[i * ldc + j]`.
    #[inline]
    pub(super) fn tile(self, a: &[[f32; 14]], b: &[[f32; 32]], c: &mut [f32], ldc: usize, first: bool) {
        let c = &mut c[..13 * ldc + 32];
        // SAFETY: `self` exists only when `detect` found AVX-512F, AVX2 and FMA on this CPU, which is all
        // `tile_14x32` needs beyond its arguments' own (checked) bounds.
        unsafe { tile_14x32(a, b, c, ldc, first) }
    }
}

#[target_feature(enable = "avx2,fma")]
fn tile_6x16(a: &[[f32; 6]], b: &[[f32; 16]], c: &mut [f32], ldc: usize, first: bool) {
    let mut acc: [[__m256; 2]; 6] = [[_mm256_setzero_ps(); 2]; 6];
    if !first {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let row: &[f32; 16] = row_of(c, i * ldc);
            // SAFETY: `row` is 16 f32s; each load reads 8 of them, at 0 and 8.
            unsafe { *acc_i = [_mm256_loadu_ps(row.as_ptr()), _mm256_loadu_ps(row.as_ptr().add(8))] };
        }
    }
    for (ak, bk) in a.iter().zip(b) {
        // SAFETY: `bk` is a `[f32; 16]`; the loads read elements 0..8 and 8..16.
        let (b0, b1) = unsafe { (_mm256_loadu_ps(bk.as_ptr()), _mm256_loadu_ps(bk.as_ptr().add(8))) };
        for (acc_i, &ai) in acc.iter_mut().zip(ak) {
            let ai = _mm256_set1_ps(ai);
            acc_i[0] = _mm256_fmadd_ps(ai, b0, acc_i[0]);
            acc_i[1] = _mm256_fmadd_ps(ai, b1, acc_i[1]);
        }
    }
    for (i, acc_i) in acc.iter().enumerate() {
        let row: &mut [f32; 16] = row_of_mut(c, i * ldc);
        // SAFETY: `row` is 16 writable f32s; each store writes 8 of them, at 0 and 8.
        unsafe {
            _mm256_storeu_ps(row.as_mut_ptr(), acc_i[0]);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), acc_i[1]);
        }
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn tile_14x32(a: &[[f32; 14]], b: &[[f32; 32]], c: &mut [f32], ldc: usize, first: bool) {
    let mut acc: [[__m512; 2]; 14] = [[_mm512_setzero_ps(); 2]; 14];
    if !first {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let row: &[f32; 32] = row_of(c, i * ldc);
            // SAFETY: `row` is 32 f32s; each load reads 16 of them, at 0 and 16.
            unsafe { *acc_i = [_mm512_loadu_ps(row.as_ptr()), _mm512_loadu_ps(row.as_ptr().add(16))] };
        }
    }
    for (ak, bk) in a.iter().zip(b) {
        // SAFETY: `bk` is a `[f32; 32]`; the loads read elements 0..16 and 16..32.
        let (b0, b1) = unsafe { (_mm512_loadu_ps(bk.as_ptr()), _mm512_loadu_ps(bk.as_ptr().add(16))) };
        for (acc_i, &ai) in acc.iter_mut().zip(ak) {
            let ai = _mm512_set1_ps(ai);
            acc_i[0] = _mm512_fmadd_ps(ai, b0, acc_i[0]);
            acc_i[1] = _mm512_fmadd_ps(ai, b1, acc_i[1]);
        }
    }
    for (i, acc_i) in acc.iter().enumerate() {
        let row: &mut [f32; 32] = row_of_mut(c, i * ldc);
        // SAFETY: `row` is 32 writable f32s; each store writes 16 of them, at 0 and 16.
        unsafe {
            _mm512_storeu_ps(row.as_mut_ptr(), acc_i[0]);
            _mm512_storeu_ps(row.as_mut_ptr().add(16), acc_i[1]);
        }
    }
}

/// The `N` elements of `c` from `at` (bounds-checked).
#[inline(always)]
fn row_of<const N: usize>(c: &[f32], at: usize) -> &[f32; N] {
    &c[at..at + N].as_chunks::<N>().0[0]
}

/// The `N` elements of `c` from `at`, writable (bounds-checked).
#[inline(always)]
fn row_of_mut<const N: usize>(c: &mut [f32], at: usize) -> &mut [f32; N] {
    &mut c[at..at + N].as_chunks_mut::<N>().0[0]
}
