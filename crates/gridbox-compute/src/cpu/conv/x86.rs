//! The im2col packing loops compiled with AVX-512 or AVX2 enabled (detected at run time), so
//! that a packed row is copied with full-width vectors, and the direct loops with AVX2 and FMA,
//! so that `mul_add` is one instruction. The loops are safe code; only calling a
//! `#[target_feature]` function is unsafe.
#![allow(unsafe_code)]

use super::Geometry;
use super::im2col::Im2col;
use crate::cpu::Workers;
use crate::cpu::simd::{Avx2Fma, Avx512};

/// The widest vectors this CPU has, as a proof token.
#[derive(Debug, Clone, Copy)]
pub(super) enum Simd {
    Avx512(Avx512),
    Avx2Fma(Avx2Fma),
}

impl Simd {
    pub(super) fn detect() -> Option<Simd> {
        Avx512::detect().map(Simd::Avx512).or_else(|| Avx2Fma::detect().map(Simd::Avx2Fma))
    }
}

/// The arguments of `RightSide::pack`.
macro_rules! pack_with {
    ($token:ty, $name:ident, $features:literal) => {
        impl $token {
            #[allow(clippy::too_many_arguments)]
            pub(super) fn pack<const NR: usize>(
                self,
                im: &Im2col<'_>,
                pc: usize,
                kc: usize,
                j0: usize,
                panels: &mut [[f32; NR]],
                masks: &mut [u32],
                full: &mut [bool],
            ) {
                // SAFETY: the token exists only when `detect` found these features on this CPU,
                // the one requirement of calling a `#[target_feature]` function; its body is
                // safe code.
                unsafe { $name(im, pc, kc, j0, panels, masks, full) }
            }
        }

        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        fn $name<const NR: usize>(im: &Im2col<'_>, pc: usize, kc: usize, j0: usize, panels: &mut [[f32; NR]], masks: &mut [u32], full: &mut [bool]) {
            im.pack_rows(pc, kc, j0, panels, masks, full)
        }
    };
}

pack_with!(Avx512, pack_avx512, "avx512f,avx2,fma");
pack_with!(Avx2Fma, pack_avx2, "avx2,fma");

impl Avx2Fma {
    /// The direct loops (`direct::plane`) compiled with AVX2 and FMA.
    pub(super) fn plane(self, geo: &Geometry, x: &[f32], w: &[f32], out: &mut [f32], workers: Workers<'_>) {
        // SAFETY: the token exists only when `detect` found AVX2 and FMA on this CPU, the one
        // requirement of calling a `#[target_feature]` function; its body is safe code.
        unsafe { plane_fma(geo, x, w, out, workers) }
    }
}

#[target_feature(enable = "avx2,fma")]
fn plane_fma(geo: &Geometry, x: &[f32], w: &[f32], out: &mut [f32], workers: Workers<'_>) {
    super::direct::plane(geo, x, w, out, workers)
}
