//! conv2d speed beside matmul speed, one thread, same run, interleaved: 3x3 layers (stride 1,
//! padding 1, batch 1) with 64, 128 and 256 channels in and out, against the exact matmul at
//! 1024^3. The goal (issue 15) is conv2d at 60% or more of the matmul's GFLOP/s.
//!
//! Run with `cargo bench -p gridbox-compute --bench conv`. Optional arguments after `--`: the
//! repetitions (default 7). Each layer's result is also checked bit for bit against the spec's
//! scalar loop.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use gridbox_abi::Op;
use gridbox_compute::{OpCall, Tensor, TensorMeta, cpu};

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

/// The spec's loop for one image, stride 1, padding `pad`: taps in `(c, ky, kx)` order, padded
/// ones skipped, then the bias (none here), NaN canonical.
fn reference(x: &[f32], w: &[f32], [c, h, wd, o, k, pad]: [usize; 6]) -> Vec<f32> {
    let (hout, wout) = (h + 2 * pad - k + 1, wd + 2 * pad - k + 1);
    let mut out = Vec::with_capacity(o * hout * wout);
    for oi in 0..o {
        for y in 0..hout {
            for xo in 0..wout {
                let mut acc = 0.0f32;
                for ci in 0..c {
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = ((y + ky) as isize - pad as isize, (xo + kx) as isize - pad as isize);
                            if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                continue;
                            }
                            acc = x[(ci * h + iy as usize) * wd + ix as usize].mul_add(w[((oi * c + ci) * k + ky) * k + kx], acc);
                        }
                    }
                }
                out.push(if acc.is_nan() { f32::from_bits(0x7FC0_0000) } else { acc });
            }
        }
    }
    out
}

struct Layer {
    channels: usize,
    side: usize,
    x: Tensor,
    w: Tensor,
    out: TensorMeta,
}

impl Layer {
    fn new(channels: usize, side: usize) -> Layer {
        let x = Tensor::f32(vec![1, channels, side, side], values(channels * side * side, channels as u64)).unwrap();
        let w = Tensor::f32(vec![channels, channels, 3, 3], values(channels * channels * 9, 7 + channels as u64)).unwrap();
        let call = OpCall::decode(Op::Conv2d, &[1, 1, 1, 1], 2).unwrap();
        let out = call.infer(&[x.meta(), w.meta()]).unwrap();
        Layer { channels, side, x, w, out }
    }

    fn run(&self) -> Tensor {
        cpu::conv2d(&self.x, &self.w, None, 1, 1, 1, 1, &self.out, 1).unwrap()
    }

    fn flops(&self) -> f64 {
        2.0 * (self.channels * self.side * self.side) as f64 * (self.channels * 9) as f64
    }
}

fn main() {
    let reps = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(7);
    let size = 1024;
    let a = Tensor::f32(vec![size, size], values(size * size, 1)).unwrap();
    let b = Tensor::f32(vec![size, size], values(size * size, 2)).unwrap();
    let mm_out = OpCall::Matmul.infer(&[a.meta(), b.meta()]).unwrap();
    let layers = [Layer::new(64, 56), Layer::new(128, 28), Layer::new(256, 28), Layer::new(256, 14)];

    let mut mm_times = Vec::new();
    let mut conv_times = vec![Vec::new(); layers.len()];
    for round in 0..=reps {
        let start = Instant::now();
        drop(black_box(cpu::matmul(&a, &b, &mm_out, 1).unwrap()));
        let mm = start.elapsed();
        if round > 0 {
            mm_times.push(mm);
        }
        for (layer, times) in layers.iter().zip(&mut conv_times) {
            let start = Instant::now();
            drop(black_box(layer.run()));
            if round > 0 {
                times.push(start.elapsed());
            }
        }
    }
    let mm = median(mm_times);
    let mm_gflops = 2.0 * (size * size * size) as f64 / mm.as_secs_f64() / 1e9;
    println!("conv2d 3x3, stride 1, padding 1, batch 1, one thread, median of {reps} interleaved rounds");
    println!("  matmul {size}^3 (1 thread)      : {:>8.2} ms  {mm_gflops:>7.1} GFLOP/s", mm.as_secs_f64() * 1e3);
    let mut all_same = true;
    for (layer, times) in layers.iter().zip(conv_times) {
        let t = median(times);
        let gflops = layer.flops() / t.as_secs_f64() / 1e9;
        let (c, s) = (layer.channels, layer.side);
        let got: Vec<u32> = layer.run().as_f32().unwrap().iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = reference(layer.x.as_f32().unwrap(), layer.w.as_f32().unwrap(), [c, s, s, c, 3, 1]).iter().map(|v| v.to_bits()).collect();
        all_same &= got == want;
        println!(
            "  conv {c:>3} -> {c:>3} ch, {s:>2}x{s:<2}     : {:>8.2} ms  {gflops:>7.1} GFLOP/s  = {:.2}x matmul  (== spec loop: {})",
            t.as_secs_f64() * 1e3,
            gflops / mm_gflops,
            got == want
        );
    }
    assert!(all_same, "conv2d differs from the spec's loop");
}
