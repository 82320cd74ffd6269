//! 2-D convolution, NCHW input x OIHW weight (+ bias `[O]`) -> `[N, O, Hout, Wout]`.
//!
//! The result is defined element by element (spec/determinism.md): for output `(n, o, y, x)`,
//! `acc = +0.0`, then for `c` in `0..C`, `ky` in `0..KH`, `kx` in `0..KW` (this nesting,
//! ascending), with `iy = y * stride_h + ky - pad_h` and `ix = x * stride_w + kx - pad_w`: if
//! `(iy, ix)` is inside the input, `acc = fma(input[n, c, iy, ix], weight[o, c, ky, kx], acc)`;
//! taps that land in the padding are skipped, not multiplied by zero (which would turn an
//! infinite or NaN weight into NaN). Then `out = acc + bias[o]` (one rounded add) or `out = acc`,
//! and a NaN result is stored as `0x7FC0_0000`.
//!
//! It runs as a matrix product (`super::gemm`, the exact matmul's blocking, threads and
//! microkernels): per image, `weight [O, C*KH*KW] x im2col [C*KH*KW, positions]`, K in the
//! spec's `(c, ky, kx)` order, each chain accumulated in that order with the same fma. The
//! im2col matrix is packed block by block straight from the image (`im2col.rs`); a padded tap
//! is a cleared bit in its packed row's lane mask, and the masked microkernel leaves that lane's
//! chain as it is, exactly as the spec skips it.

use gridbox_abi::DType;

use crate::cpu::gemm::{Cols, Kernel, Product};
use crate::cpu::matmul::{canonicalize_nans, zeroed};
use crate::ops::OpError;
use crate::tensor::{Tensor, TensorMeta, checked_product};

use super::{Workers, pool};

mod direct;
mod im2col;
#[cfg(target_arch = "x86_64")]
mod x86;

use im2col::Im2col;

/// Below this many multiply-adds per image, a batch of images is split by whole images (each
/// on one thread) rather than each image across the threads (the unit tests take both paths).
const BATCH_SPLIT_FMAS: u128 = if cfg!(test) { 100 } else { 1 << 22 };
/// Up to this many output channels, conv2d runs the direct loops (`direct.rs`), which are
/// faster there than a product whose tiles would be mostly empty rows.
const DIRECT_MAX_CHANNELS: usize = 4;
/// Below this many multiply-adds, the direct loops run on one thread.
const DIRECT_MIN_FMAS_PER_THREAD: u128 = if cfg!(test) { 1 } else { 1 << 18 };

/// 2-D convolution of `x: [N, C, H, W]` with `w: [O, C, KH, KW]` and an optional `bias: [O]`,
/// zero padding `pad_h` rows above and below and `pad_w` columns left and right.
///
/// `out` is what [`crate::OpCall::infer`] returned; it is checked again, and an inconsistent one
/// is an [`OpError::ShapeMismatch`], never a panic. Taps in the padding are skipped (see the
/// module docs for the exact order), so the bits are the same for every `threads` and on every
/// machine.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    stride_h: usize,
    stride_w: usize,
    pad_h: usize,
    pad_w: usize,
    out: &TensorMeta,
    threads: usize,
) -> Result<Tensor, OpError> {
    conv2d_with(Kernel::detect(), x, w, bias, [stride_h, stride_w, pad_h, pad_w], out, Workers::threads(threads))
}

/// [`conv2d`] for [`super::execute`], stopping between blocks when told to.
pub(crate) fn conv2d_in(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, params: [usize; 4], out: &TensorMeta, workers: Workers<'_>) -> Result<Tensor, OpError> {
    conv2d_with(Kernel::detect(), x, w, bias, params, out, workers)
}

/// Sizes of one convolution, all checked.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    h: usize,
    w: usize,
    kh: usize,
    kw: usize,
    stride_h: usize,
    stride_w: usize,
    pad_h: usize,
    pad_w: usize,
    hout: usize,
    wout: usize,
}

fn conv2d_with(
    kernel: Kernel,
    x: &Tensor,
    w: &Tensor,
    bias: Option<&Tensor>,
    [stride_h, stride_w, pad_h, pad_w]: [usize; 4],
    out: &TensorMeta,
    workers: Workers<'_>,
) -> Result<Tensor, OpError> {
    let dtypes = [Some(("input", x.dtype())), Some(("weight", w.dtype())), bias.map(|b| ("bias", b.dtype())), Some(("output", out.dtype))];
    for (what, dtype) in dtypes.into_iter().flatten() {
        if dtype != DType::F32 {
            return Err(OpError::UnsupportedDType(format!("conv2d takes f32, {what} is {}", dtype.name())));
        }
    }
    if stride_h == 0 || stride_w == 0 {
        return Err(OpError::InvalidParameter(format!("conv2d strides must be >= 1, got {stride_h} x {stride_w}")));
    }
    let mismatch =
        || OpError::ShapeMismatch(format!("conv2d of {:?} with {:?} (bias {:?}) cannot give {:?}", x.shape(), w.shape(), bias.map(Tensor::shape), out.shape));
    let (&[n, c, h, wd], &[o, c2, kh, kw]) = (x.shape(), w.shape()) else {
        return Err(mismatch());
    };
    if c != c2 || bias.is_some_and(|b| b.shape() != [o]) {
        return Err(mismatch());
    }
    let hout = out_dim(h, pad_h, kh, stride_h).ok_or_else(mismatch)?;
    let wout = out_dim(wd, pad_w, kw, stride_w).ok_or_else(mismatch)?;
    if out.shape != [n, o, hout, wout] {
        return Err(mismatch());
    }
    let len = checked_product(&out.shape)?;
    let geo = Geometry { h, w: wd, kh, kw, stride_h, stride_w, pad_h, pad_w, hout, wout };
    let (Some(xd), Some(wdata)) = (x.as_f32(), w.as_f32()) else {
        return Err(OpError::UnsupportedDType("conv2d takes f32".into()));
    };
    let bias = match bias {
        Some(b) => Some(b.as_f32().ok_or_else(|| OpError::UnsupportedDType("conv2d bias must be f32".into()))?),
        None => None,
    };
    let mut data = zeroed(len)?;
    if len != 0 {
        // len != 0: n, o, hout, wout >= 1, so these products are at most a tensor's length.
        let (plane, taps) = (hout * wout, c * kh * kw);
        let finish = |filt: usize, row: &mut [f32]| {
            if let Some(b) = bias {
                let add = b[filt];
                row.iter_mut().for_each(|v| *v += add);
            }
            canonicalize_nans(row);
        };
        if taps == 0 {
            // No channels: every chain is empty, +0.0 (+ bias).
            for (i, out_plane) in data.chunks_mut(plane).enumerate() {
                finish(i % o, out_plane);
            }
        } else if o <= DIRECT_MAX_CHANNELS {
            let fmas = len as u128 * taps as u128;
            let threads = workers.threads.min(usize::try_from(fmas / DIRECT_MIN_FMAS_PER_THREAD).unwrap_or(usize::MAX).max(1));
            let planes: Vec<&mut [f32]> = data.chunks_mut(plane).collect();
            pool::for_each(threads, planes, |i, out_plane| {
                if workers.should_stop() {
                    return;
                }
                let (img, filt) = (i / o, i % o);
                let xs = &xd[img * c * h * wd..(img + 1) * c * h * wd];
                direct::run_plane(kernel, &geo, xs, &wdata[filt * taps..(filt + 1) * taps], out_plane, workers);
                finish(filt, out_plane);
            });
        } else {
            let image = |img: usize, out_image: &mut [f32], workers: Workers<'_>| {
                let rhs = Im2col::new(&xd[img * c * h * wd..(img + 1) * c * h * wd], geo, kernel.lanes());
                let cols = if rhs.pitch() == wout { Cols::Identity } else { Cols::Grid { pitch: rhs.pitch(), width: wout } };
                let product = Product { m: o, n: rhs.columns(), k: taps, a: wdata, rhs: &rhs, cols, finish: &finish };
                kernel.product(&product, out_image, workers);
            };
            let fmas = (o * plane) as u128 * taps as u128;
            if workers.threads > 1 && n > 1 && fmas < BATCH_SPLIT_FMAS {
                // Many small images: whole images to each thread, each on one thread.
                let one = Workers { threads: 1, ..workers };
                let items: Vec<&mut [f32]> = data.chunks_mut(o * plane).collect();
                pool::for_each(workers.threads, items, |img, out_image| {
                    if !workers.should_stop() {
                        image(img, out_image, one);
                    }
                });
            } else {
                for (img, out_image) in data.chunks_mut(o * plane).enumerate() {
                    if workers.should_stop() {
                        break;
                    }
                    image(img, out_image, workers);
                }
            }
        }
    }
    Tensor::f32(out.shape.clone(), data)
}

/// `(size + 2 pad - kernel) / stride + 1`, as [`crate::OpCall::infer`] computes it; `None`
/// when the kernel is empty or does not fit.
fn out_dim(size: usize, pad: usize, kernel: usize, stride: usize) -> Option<usize> {
    let padded = pad.checked_mul(2)?.checked_add(size)?;
    (kernel > 0 && padded >= kernel).then(|| (padded - kernel) / stride + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OpCall;
    use crate::cpu::matmul::CANONICAL_NAN;
    use gridbox_abi::Op;

    /// The spec, literally.
    fn reference(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, params: [usize; 4], out: &TensorMeta) -> Vec<f32> {
        let [sh, sw, ph, pw] = params;
        let (&[_, c, h, wd], &[_, _, kh, kw], &[n, o, hout, wout]) = (x.shape(), w.shape(), out.shape.as_slice()) else { panic!("bad ranks") };
        let (xd, wdata) = (x.as_f32().unwrap(), w.as_f32().unwrap());
        let mut res = Vec::new();
        for ni in 0..n {
            for oi in 0..o {
                for y in 0..hout {
                    for xo in 0..wout {
                        let mut acc = 0.0f32;
                        for ci in 0..c {
                            for ky in 0..kh {
                                for kx in 0..kw {
                                    let iy = (y * sh + ky) as i64 - ph as i64;
                                    let ix = (xo * sw + kx) as i64 - pw as i64;
                                    if iy < 0 || ix < 0 || iy >= h as i64 || ix >= wd as i64 {
                                        continue;
                                    }
                                    let xv = xd[((ni * c + ci) * h + iy as usize) * wd + ix as usize];
                                    let wv = wdata[((oi * c + ci) * kh + ky) * kw + kx];
                                    acc = xv.mul_add(wv, acc);
                                }
                            }
                        }
                        if let Some(b) = bias {
                            acc += b.as_f32().unwrap()[oi];
                        }
                        res.push(if acc.is_nan() { CANONICAL_NAN } else { acc });
                    }
                }
            }
        }
        res
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                let mant = (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                mant * 2f32.powi(((s >> 8) % 12) as i32 - 6)
            })
            .collect()
    }

    fn tensor(shape: &[usize], seed: u64) -> Tensor {
        Tensor::f32(shape.to_vec(), values(shape.iter().product(), seed)).unwrap()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Every flavour and thread count against the reference, bit for bit.
    fn check(x: &Tensor, w: &Tensor, bias: Option<&Tensor>, params: [usize; 4]) {
        let call = OpCall::decode(Op::Conv2d, &params.map(|p| p as i64), 2 + bias.is_some() as usize).unwrap();
        let mut metas = vec![x.meta(), w.meta()];
        metas.extend(bias.map(Tensor::meta));
        let out = call.infer(&metas).unwrap();
        let want = bits(&reference(x, w, bias, params, &out));
        for kernel in Kernel::available() {
            for threads in [1, 2, 3, 8] {
                let got = conv2d_with(kernel, x, w, bias, params, &out, Workers::threads(threads)).unwrap();
                assert_eq!(got.shape(), out.shape.as_slice());
                assert!(
                    bits(got.as_f32().unwrap()) == want,
                    "{kernel:?} threads {threads}: {:?} * {:?} {params:?} differs from the reference",
                    x.shape(),
                    w.shape()
                );
            }
        }
    }

    #[test]
    fn shapes_strides_and_padding_match_the_reference() {
        let mut seed = 1;
        for (xs, ws) in [
            ([1, 1, 1, 1], [1, 1, 1, 1]),
            ([2, 3, 7, 6], [4, 3, 3, 3]),
            ([1, 2, 5, 5], [1, 2, 5, 5]), // kernel == input
            ([2, 4, 6, 9], [3, 4, 1, 1]), // 1x1
            ([1, 1, 8, 3], [2, 1, 2, 3]),
            ([2, 2, 9, 11], [3, 2, 4, 2]),
            ([1, 3, 17, 19], [2, 3, 5, 3]),
        ] {
            for params in [[1, 1, 0, 0], [1, 1, 1, 1], [2, 2, 0, 0], [2, 3, 1, 2], [3, 2, 2, 0], [1, 2, 3, 3], [3, 3, 5, 4]] {
                let [_, _, ph, pw] = params;
                if xs[2] + 2 * ph < ws[2] || xs[3] + 2 * pw < ws[3] {
                    continue;
                }
                seed += 3;
                let x = tensor(&xs, seed);
                let w = tensor(&ws, seed + 1);
                let b = tensor(&[ws[0]], seed + 2);
                check(&x, &w, None, params);
                check(&x, &w, Some(&b), params);
            }
        }
    }

    /// A seeded sweep: channels 1..=17, output channels 1..=33 (one to three row tiles of every
    /// kernel, so both of `gemm`'s packing paths), kernels 1..=5 (K up to 425, past `KC`),
    /// strides 1..=3, padding 0..=3, images 0..=13 on a side (column maps of both kinds), one or
    /// two images, with and without bias, an eighth of the values NaN, infinite, signed zero,
    /// subnormal or huge; every kernel at 1, 2, 3 and 8 threads against the spec's loop.
    #[test]
    fn random_geometries_and_special_values_match_the_reference() {
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, f32::MIN_POSITIVE / 3.0, -1e-40, f32::MAX, -1e-30];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = |below: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as usize % below
        };
        let mut cases = 0;
        while cases < 120 {
            let (c, o, kh, kw) = (1 + next(17), 1 + next(33), 1 + next(5), 1 + next(5));
            let (h, w, sh, sw, ph, pw) = (next(14), next(14), 1 + next(3), 1 + next(3), next(4), next(4));
            if h + 2 * ph < kh || w + 2 * pw < kw {
                continue;
            }
            cases += 1;
            let n = 1 + next(2);
            let mut spice = |t: Tensor| {
                let v = t.as_f32().unwrap().iter().map(|&v| if next(8) == 0 { specials[next(specials.len())] } else { v }).collect();
                Tensor::f32(t.shape().to_vec(), v).unwrap()
            };
            let x = spice(tensor(&[n, c, h, w], cases));
            let wt = spice(tensor(&[o, c, kh, kw], cases + 1000));
            let bias = spice(tensor(&[o], cases + 2000));
            let with_bias = next(2) == 0;
            check(&x, &wt, with_bias.then_some(&bias), [sh, sw, ph, pw]);
        }
    }

    #[test]
    fn columns_over_the_input_pitch_drop_the_extra_ones() {
        // Strides 1 and an output a little narrower than the input: the product runs over the
        // input's pitch (W = 17, Wout = 16 or 15) and drops the extra columns.
        for (kw, pw) in [(2, 0), (3, 0), (4, 1)] {
            let x = tensor(&[2, 3, 9, 17], kw as u64);
            let w = tensor(&[5, 3, 3, kw], 10 + kw as u64);
            let b = tensor(&[5], 20);
            check(&x, &w, Some(&b), [1, 1, 1, pw]);
        }
        // A wide kernel on a wide image: the output is 2 columns of 40, so the columns are the
        // output's own (no work on dropped columns).
        check(&tensor(&[1, 2, 3, 40], 30), &tensor(&[6, 2, 1, 39], 31), None, [1, 1, 0, 0]);
    }

    #[test]
    fn padded_taps_are_skipped_not_multiplied_by_zero() {
        // An infinite weight that only ever meets padding leaves the output finite; multiplying
        // the padding's zero by it would give NaN.
        let x = Tensor::f32(vec![1, 1, 1, 1], vec![2.0]).unwrap();
        let w = Tensor::f32(vec![1, 1, 1, 2], vec![f32::INFINITY, 3.0]).unwrap();
        // pad_w 1: output x=0 sees taps ix = -1 (padding, weight inf) and ix = 0 (weight 3).
        check(&x, &w, None, [1, 1, 0, 1]);
        let call = OpCall::decode(Op::Conv2d, &[1, 1, 0, 1], 2).unwrap();
        let out = call.infer(&[x.meta(), w.meta()]).unwrap();
        let got = conv2d(&x, &w, None, 1, 1, 0, 1, &out, 1).unwrap();
        assert_eq!(out.shape, [1, 1, 1, 2]);
        assert_eq!(got.as_f32().unwrap()[0], 6.0);
        assert_eq!(got.as_f32().unwrap()[1], f32::INFINITY);
        // A chain at -0.0 (a negative product below f32's range) stays -0.0 past a padded tap;
        // fma(0, 1, -0.0) would have made it +0.0.
        let x = Tensor::f32(vec![1, 1, 1, 1], vec![1e-30]).unwrap();
        let w = Tensor::f32(vec![1, 1, 1, 2], vec![-1e-30, 1.0]).unwrap();
        let got = conv2d(&x, &w, None, 1, 1, 0, 1, &out, 1).unwrap();
        assert_eq!(bits(got.as_f32().unwrap()), [1e-30f32.to_bits(), 0x8000_0000]);
        check(&x, &w, None, [1, 1, 0, 1]);
        let x = Tensor::f32(vec![1, 1, 1, 1], vec![2.0]).unwrap();
        // An output that sees only padding is +0.0 (+ bias).
        let w = Tensor::f32(vec![1, 1, 1, 1], vec![f32::NAN]).unwrap();
        let b = Tensor::f32(vec![1], vec![-0.0]).unwrap();
        let call = OpCall::decode(Op::Conv2d, &[1, 1, 1, 1], 3).unwrap();
        let out = call.infer(&[x.meta(), w.meta(), b.meta()]).unwrap();
        let got = conv2d(&x, &w, Some(&b), 1, 1, 1, 1, &out, 1).unwrap();
        let got = bits(got.as_f32().unwrap());
        assert_eq!(got, [0, 0, 0, 0, 0x7FC0_0000, 0, 0, 0, 0]);
        check(&x, &w, Some(&b), [1, 1, 1, 1]);
    }

    #[test]
    fn special_values_match_the_reference() {
        let specials = [0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MAX, f32::MIN_POSITIVE / 5.0];
        let spice = |t: Tensor, every: usize| {
            let v: Vec<f32> =
                t.as_f32().unwrap().iter().enumerate().map(|(i, &v)| if i % every == 0 { specials[(i / every) % specials.len()] } else { v }).collect();
            Tensor::f32(t.shape().to_vec(), v).unwrap()
        };
        let x = spice(tensor(&[2, 2, 6, 7], 11), 13);
        let w = spice(tensor(&[3, 2, 3, 3], 12), 7);
        let b = Tensor::f32(vec![3], vec![-0.0, f32::INFINITY, 1.5]).unwrap();
        for params in [[1, 1, 0, 0], [1, 1, 2, 2], [2, 3, 1, 1]] {
            check(&x, &w, None, params);
            check(&x, &w, Some(&b), params);
        }
    }

    #[test]
    fn hostile_shapes_are_errors_not_panics() {
        let x = tensor(&[1, 2, 5, 5], 1);
        let w = tensor(&[3, 2, 3, 3], 2);
        let meta = |shape: &[usize]| TensorMeta::new(DType::F32, shape.to_vec());
        let ok = meta(&[1, 3, 3, 3]);
        assert!(conv2d(&x, &w, None, 1, 1, 0, 0, &ok, 1).is_ok());
        for bad in [&[1, 3, 3, 4][..], &[1, 3, 3], &[], &[1, 2, 3, 3], &[2, 3, 3, 3]] {
            assert!(matches!(conv2d(&x, &w, None, 1, 1, 0, 0, &meta(bad), 2), Err(OpError::ShapeMismatch(_))), "{bad:?}");
        }
        assert!(matches!(conv2d(&x, &w, None, 0, 1, 0, 0, &ok, 1), Err(OpError::InvalidParameter(_))));
        assert!(matches!(conv2d(&x, &w, None, 1, 0, 0, 0, &ok, 1), Err(OpError::InvalidParameter(_))));
        let bad_bias = tensor(&[2], 3);
        assert!(conv2d(&x, &w, Some(&bad_bias), 1, 1, 0, 0, &ok, 1).is_err());
        let int_bias = Tensor::i32(vec![3], vec![0; 3]).unwrap();
        assert!(matches!(conv2d(&x, &w, Some(&int_bias), 1, 1, 0, 0, &ok, 1), Err(OpError::UnsupportedDType(_))));
        assert!(matches!(conv2d(&x, &w, None, 1, 1, 0, 0, &TensorMeta::new(DType::I32, vec![1, 3, 3, 3]), 1), Err(OpError::UnsupportedDType(_))));
        // Wrong ranks and channels.
        let x3 = tensor(&[2, 5, 5], 4);
        assert!(conv2d(&x3, &w, None, 1, 1, 0, 0, &ok, 1).is_err());
        let wc = tensor(&[3, 1, 3, 3], 5);
        assert!(conv2d(&x, &wc, None, 1, 1, 0, 0, &ok, 1).is_err());
        // Kernel larger than the padded input, or empty.
        let big = tensor(&[1, 2, 7, 7], 6);
        assert!(conv2d(&x, &big, None, 1, 1, 0, 0, &meta(&[1, 1, 0, 0]), 1).is_err());
        let empty = tensor(&[3, 2, 0, 3], 7);
        assert!(conv2d(&x, &empty, None, 1, 1, 0, 0, &meta(&[1, 3, 6, 3]), 1).is_err());
        // Huge padding and strides with nothing to compute; empty batch; zero channels.
        let none = tensor(&[0, 1, 1, 1], 8);
        let w1 = tensor(&[1, 1, 1, 1], 9);
        let p = u32::MAX as usize;
        let huge = 2 * p + 1;
        assert_eq!(conv2d(&none, &w1, None, 1, 1, p, p, &meta(&[0, 1, huge, huge]), 4).unwrap().len(), 0);
        let x1 = tensor(&[1, 1, 1, 1], 10);
        // An output too large to count or to allocate is an error.
        assert!(conv2d(&x1, &w1, None, 1, 1, p, p, &meta(&[1, 1, huge, huge]), 1).is_err());
        let wide = (1usize << 62) + 1;
        assert!(conv2d(&x1, &w1, None, 1, 1, 0, 1 << 61, &meta(&[1, 1, 1, wide]), 1).is_err());
        assert!(conv2d(&x1, &w1, None, 1, 1, 0, 1 << 61, &meta(&[1, 1, 1, wide + 1]), 1).is_err());
        let got = conv2d(&x1, &w1, None, p, p, 0, 0, &meta(&[1, 1, 1, 1]), 4).unwrap();
        assert_eq!(got.as_f32().unwrap(), &[x1.as_f32().unwrap()[0] * w1.as_f32().unwrap()[0]]);
        let got = conv2d(&x1, &w1, None, p, p, 3, 0, &meta(&[1, 1, 1, 1]), 4).unwrap();
        assert_eq!(bits(got.as_f32().unwrap()), [0]);
        let xc0 = tensor(&[2, 0, 3, 3], 11);
        let wc0 = tensor(&[2, 0, 2, 2], 12);
        let b = Tensor::f32(vec![2], vec![1.5, -0.0]).unwrap();
        let got = conv2d(&xc0, &wc0, Some(&b), 1, 1, 0, 0, &meta(&[2, 2, 2, 2]), 3).unwrap();
        let want: Vec<u32> = [1.5f32, 0.0].iter().flat_map(|v| [v.to_bits(); 4]).cycle().take(16).collect();
        assert_eq!(bits(got.as_f32().unwrap()), want);
        // An empty image with padding: every output sees only padding.
        let xh0 = tensor(&[1, 2, 0, 3], 13);
        let w2 = tensor(&[2, 2, 1, 2], 14);
        let got = conv2d(&xh0, &w2, Some(&b), 1, 1, 1, 0, &meta(&[1, 2, 2, 2]), 2).unwrap();
        assert_eq!(bits(got.as_f32().unwrap()), want[..8]);
        check(&xh0, &w2, Some(&b), [1, 1, 1, 0]);
        check(&tensor(&[1, 2, 3, 0], 15), &w2, None, [2, 1, 0, 1]);
    }
}
