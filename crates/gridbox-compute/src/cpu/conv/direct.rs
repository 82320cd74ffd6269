//! conv2d as the spec's loops, for layers with very few output channels: a product's tile is 6
//! or 14 rows (output channels) tall, so with one or two most of it would be wasted, and each
//! packed im2col element would serve too few rows to repay its packing.
//!
//! The loops run tap-outer: for each tap `(c, ky, kx)` the weight is applied to every output
//! pixel whose input position is inside, a contiguous run per output row. Each output element
//! still sees its taps in the spec's order, padded taps skipped, and the inner loop vectorises.

use super::Geometry;
use crate::cpu::Workers;
use crate::cpu::gemm::Kernel;

/// The output positions `lo..hi` (of `count`) whose input position `pos * stride + tap - pad`
/// is inside `0..size`.
fn inside(tap: usize, stride: usize, pad: usize, size: usize, count: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(tap).div_ceil(stride);
    let hi = size.saturating_add(pad).saturating_sub(tap).div_ceil(stride).min(count);
    (lo.min(hi), hi)
}

/// One output plane `out: [Hout, Wout]` (zeroed) of image `x: [C, H, W]` and filter
/// `w: [C, KH, KW]`, compiled for AVX2 and FMA where `kernel` says the CPU has them (so
/// `mul_add` is one instruction, not a call).
pub(super) fn run_plane(kernel: Kernel, geo: &Geometry, x: &[f32], w: &[f32], out: &mut [f32], workers: Workers<'_>) {
    #[cfg(target_arch = "x86_64")]
    if kernel != Kernel::Portable
        && let Some(token) = crate::cpu::simd::Avx2Fma::detect()
    {
        return token.plane(geo, x, w, out, workers);
    }
    let _ = kernel;
    plane(geo, x, w, out, workers);
}

/// [`run_plane`]'s loops, inlined into each compilation of them.
#[inline(always)]
pub(super) fn plane(geo: &Geometry, x: &[f32], w: &[f32], out: &mut [f32], workers: Workers<'_>) {
    let Geometry { h, w: width, kh, kw, stride_h, stride_w, pad_h, pad_w, hout, wout } = *geo;
    if h == 0 || width == 0 {
        return; // every tap lands in the padding
    }
    for (xc, wc) in x.chunks_exact(h * width).zip(w.chunks_exact(kh * kw)) {
        if workers.should_stop() {
            return;
        }
        for (ky, wrow) in wc.chunks_exact(kw).enumerate() {
            let (y0, y1) = inside(ky, stride_h, pad_h, h, hout);
            for (kx, &weight) in wrow.iter().enumerate() {
                let (x0, x1) = inside(kx, stride_w, pad_w, width, wout);
                if x0 == x1 {
                    continue;
                }
                for y in y0..y1 {
                    let iy = y * stride_h + ky - pad_h;
                    let row = &xc[iy * width..(iy + 1) * width];
                    let acc = &mut out[y * wout + x0..y * wout + x1];
                    let ix0 = x0 * stride_w + kx - pad_w;
                    if stride_w == 1 {
                        for (a, &v) in acc.iter_mut().zip(&row[ix0..ix0 + (x1 - x0)]) {
                            *a = v.mul_add(weight, *a);
                        }
                    } else {
                        for (a, &v) in acc.iter_mut().zip(row[ix0..].iter().step_by(stride_w)) {
                            *a = v.mul_add(weight, *a);
                        }
                    }
                }
            }
        }
    }
}
