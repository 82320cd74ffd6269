//! x86-64 microkernels: AVX2 + FMA (6 x 16 tile, twelve `ymm` accumulators) and AVX-512F
//! (14 x 32 tile, twenty-eight `zmm` accumulators), each plain and masked.
//!
//! Per step k each loads one row of the packed B panel, broadcasts each A value of the step
//! and does `acc = fma(a[i], b[k, j..j+lanes], acc)`: per output element that is exactly the
//! scalar chain of the spec, many lanes at a time. The masked kernels skip the step in the
//! lanes whose mask bit is clear (conv2d's padded taps): AVX-512 with a write-masked fma, which
//! leaves those lanes' accumulators untouched at no cost; AVX2 by computing the fma and keeping
//! the old accumulator in those lanes with a blend.
#![allow(unsafe_code)]

use std::arch::x86_64::{
    __m256, __m512, _mm256_and_si256, _mm256_blendv_ps, _mm256_castsi256_ps, _mm256_cmpeq_epi32, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_epi32,
    _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_storeu_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask3_fmadd_ps, _mm512_set1_ps,
    _mm512_setzero_ps, _mm512_storeu_ps,
};

use super::TileOut;
pub(super) use crate::cpu::simd::{Avx2Fma, Avx512};

impl Avx2Fma {
    /// See `Micro::tile`.
    #[inline]
    pub(super) fn tile(self, a: &[[f32; 6]], b: &[[f32; 16]], c: TileOut<'_, 16>, first: bool) {
        // SAFETY: `self` exists only when `detect` found AVX2 and FMA on this CPU, which is all
        // `tile_6x16` needs; its memory accesses go through checked slices and `TileOut` rows.
        unsafe { tile_6x16::<false>(a, b, &[], c, first) }
    }

    /// See `Micro::tile_masked`.
    #[inline]
    pub(super) fn tile_masked(self, a: &[[f32; 6]], b: &[[f32; 16]], masks: &[u32], c: TileOut<'_, 16>, first: bool) {
        assert_eq!(masks.len(), b.len(), "one mask per packed row");
        // SAFETY: as in `tile`.
        unsafe { tile_6x16::<true>(a, b, masks, c, first) }
    }
}

impl Avx512 {
    /// See `Micro::tile`.
    #[inline]
    pub(super) fn tile(self, a: &[[f32; 14]], b: &[[f32; 32]], c: TileOut<'_, 32>, first: bool) {
        // SAFETY: `self` exists only when `detect` found AVX-512F, AVX2 and FMA on this CPU,
        // which is all `tile_14x32` needs; its memory accesses go through checked slices and
        // `TileOut` rows.
        unsafe { tile_14x32::<false>(a, b, &[], c, first) }
    }

    /// See `Micro::tile_masked`.
    #[inline]
    pub(super) fn tile_masked(self, a: &[[f32; 14]], b: &[[f32; 32]], masks: &[u32], c: TileOut<'_, 32>, first: bool) {
        assert_eq!(masks.len(), b.len(), "one mask per packed row");
        // SAFETY: as in `tile`.
        unsafe { tile_14x32::<true>(a, b, masks, c, first) }
    }
}

#[target_feature(enable = "avx2,fma")]
fn tile_6x16<const MASKED: bool>(a: &[[f32; 6]], b: &[[f32; 16]], masks: &[u32], mut c: TileOut<'_, 16>, first: bool) {
    let mut acc: [[__m256; 2]; 6] = [[_mm256_setzero_ps(); 2]; 6];
    if !first {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let row = c.row(i);
            // SAFETY: `row` is 16 f32s; each load reads 8 of them, at 0 and 8.
            unsafe { *acc_i = [_mm256_loadu_ps(row.as_ptr()), _mm256_loadu_ps(row.as_ptr().add(8))] };
        }
    }
    let lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (step, (ak, bk)) in a.iter().zip(b).enumerate() {
        // SAFETY: `bk` is a `[f32; 16]`; the loads read elements 0..8 and 8..16.
        let (b0, b1) = unsafe { (_mm256_loadu_ps(bk.as_ptr()), _mm256_loadu_ps(bk.as_ptr().add(8))) };
        if MASKED {
            // Lane j of `keep` is all ones when bit j of the step's mask is set.
            let bits = masks[step] as i32;
            let keep0 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bits), lane_bits), lane_bits));
            let keep1 = _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bits >> 8), lane_bits), lane_bits));
            for (acc_i, &ai) in acc.iter_mut().zip(ak) {
                let ai = _mm256_set1_ps(ai);
                acc_i[0] = _mm256_blendv_ps(acc_i[0], _mm256_fmadd_ps(ai, b0, acc_i[0]), keep0);
                acc_i[1] = _mm256_blendv_ps(acc_i[1], _mm256_fmadd_ps(ai, b1, acc_i[1]), keep1);
            }
        } else {
            for (acc_i, &ai) in acc.iter_mut().zip(ak) {
                let ai = _mm256_set1_ps(ai);
                acc_i[0] = _mm256_fmadd_ps(ai, b0, acc_i[0]);
                acc_i[1] = _mm256_fmadd_ps(ai, b1, acc_i[1]);
            }
        }
    }
    for (i, acc_i) in acc.iter().enumerate() {
        let row = c.row(i);
        // SAFETY: `row` is 16 writable f32s; each store writes 8 of them, at 0 and 8.
        unsafe {
            _mm256_storeu_ps(row.as_mut_ptr(), acc_i[0]);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), acc_i[1]);
        }
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
fn tile_14x32<const MASKED: bool>(a: &[[f32; 14]], b: &[[f32; 32]], masks: &[u32], mut c: TileOut<'_, 32>, first: bool) {
    let mut acc: [[__m512; 2]; 14] = [[_mm512_setzero_ps(); 2]; 14];
    if !first {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let row = c.row(i);
            // SAFETY: `row` is 32 f32s; each load reads 16 of them, at 0 and 16.
            unsafe { *acc_i = [_mm512_loadu_ps(row.as_ptr()), _mm512_loadu_ps(row.as_ptr().add(16))] };
        }
    }
    for (step, (ak, bk)) in a.iter().zip(b).enumerate() {
        // SAFETY: `bk` is a `[f32; 32]`; the loads read elements 0..16 and 16..32.
        let (b0, b1) = unsafe { (_mm512_loadu_ps(bk.as_ptr()), _mm512_loadu_ps(bk.as_ptr().add(16))) };
        if MASKED {
            // Lanes whose bit is clear keep their accumulator: the tap is skipped there.
            let (k0, k1) = (masks[step] as u16, (masks[step] >> 16) as u16);
            for (acc_i, &ai) in acc.iter_mut().zip(ak) {
                let ai = _mm512_set1_ps(ai);
                acc_i[0] = _mm512_mask3_fmadd_ps(ai, b0, acc_i[0], k0);
                acc_i[1] = _mm512_mask3_fmadd_ps(ai, b1, acc_i[1], k1);
            }
        } else {
            for (acc_i, &ai) in acc.iter_mut().zip(ak) {
                let ai = _mm512_set1_ps(ai);
                acc_i[0] = _mm512_fmadd_ps(ai, b0, acc_i[0]);
                acc_i[1] = _mm512_fmadd_ps(ai, b1, acc_i[1]);
            }
        }
    }
    for (i, acc_i) in acc.iter().enumerate() {
        let row = c.row(i);
        // SAFETY: `row` is 32 writable f32s; each store writes 16 of them, at 0 and 16.
        unsafe {
            _mm512_storeu_ps(row.as_mut_ptr(), acc_i[0]);
            _mm512_storeu_ps(row.as_mut_ptr().add(16), acc_i[1]);
        }
    }
}
