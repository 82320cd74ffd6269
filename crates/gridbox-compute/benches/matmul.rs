//! Matmul speed: gridbox's CPU kernel beside the `matrixmultiply` crate's sgemm, same run.
//!
//! Run with `cargo bench -p gridbox-compute --bench matmul`. Optional arguments after `--`:
//! the size (default 1024), the repetitions (default 7) and the thread count of the
//! multi-thread figure (default 2). Prints the median of each, the ratio, and checks that the
//! result equals the spec's scalar loop bit for bit.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use gridbox_compute::{OpCall, Tensor, cpu};

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

/// Runs each of `fs` once per round, interleaved so that a noisy neighbour or a clock change
/// hits all of them alike, after one warm-up round; the median time of each.
fn time_interleaved(reps: usize, fs: &mut [&mut dyn FnMut()]) -> Vec<Duration> {
    fs.iter_mut().for_each(|f| f());
    let mut times = vec![Vec::with_capacity(reps); fs.len()];
    for _ in 0..reps {
        for (f, t) in fs.iter_mut().zip(&mut times) {
            let start = Instant::now();
            f();
            t.push(start.elapsed());
        }
    }
    times.into_iter().map(median).collect()
}

/// The spec's loop: `acc = +0.0; for k ascending: acc = fma(a[i,k], b[k,j], acc)`, run i-k-j so
/// it streams, which does not change any element's chain.
fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        for kk in 0..k {
            let aik = a[i * k + kk];
            for (cij, &bkj) in row.iter_mut().zip(&b[kk * n..(kk + 1) * n]) {
                *cij = aik.mul_add(bkj, *cij);
            }
        }
    }
    c
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let size = args.first().copied().unwrap_or(1024);
    let reps = args.get(1).copied().unwrap_or(7);
    let threads = args.get(2).copied().unwrap_or(2);
    let (m, n, k) = (size, size, size);
    let flops = 2.0 * (m * n * k) as f64;
    let gflops = |d: Duration| flops / d.as_secs_f64() / 1e9;

    let a = Tensor::f32(vec![m, k], values(m * k, 1)).unwrap();
    let b = Tensor::f32(vec![k, n], values(k * n, 2)).unwrap();
    let out = OpCall::Matmul.infer(&[a.meta(), b.meta()]).unwrap();

    let (ad, bd) = (a.as_f32().unwrap(), b.as_f32().unwrap());
    let ours_c = cpu::matmul(&a, &b, &out, 1).unwrap();
    let ours_mt_c = cpu::matmul(&a, &b, &out, threads).unwrap();
    // matrixmultiply writes into a buffer allocated once, outside the timing (ours allocates its
    // output every call, as the API demands): the comparison leans its way, not ours.
    let mut theirs_c = vec![0.0f32; m * n];
    let sgemm = |c: &mut [f32]| {
        // SAFETY: row-major m x k, k x n and m x n buffers of exactly those lengths.
        #[allow(unsafe_code)]
        unsafe {
            matrixmultiply::sgemm(m, k, n, 1.0, ad.as_ptr(), k as isize, 1, bd.as_ptr(), n as isize, 1, 0.0, c.as_mut_ptr(), n as isize, 1);
        }
    };
    sgemm(&mut theirs_c);
    let mut buf = vec![0.0f32; m * n];
    let times = time_interleaved(
        reps,
        &mut [&mut || drop(black_box(cpu::matmul(&a, &b, &out, 1).unwrap())), &mut || sgemm(black_box(&mut buf)), &mut || {
            drop(black_box(cpu::matmul(&a, &b, &out, threads).unwrap()))
        }],
    );
    let (ours, theirs, ours_mt) = (times[0], times[1], times[2]);

    println!("matmul {m}x{k} x {k}x{n} f32, median of {reps} interleaved rounds");
    println!("  gridbox  1 thread : {:>9.2} ms  {:>7.1} GFLOP/s", ours.as_secs_f64() * 1e3, gflops(ours));
    println!("  matrixmultiply    : {:>9.2} ms  {:>7.1} GFLOP/s", theirs.as_secs_f64() * 1e3, gflops(theirs));
    println!("  speed ratio gridbox / matrixmultiply (1 thread): {:.3}x", theirs.as_secs_f64() / ours.as_secs_f64());
    println!("  gridbox {threads} threads: {:>9.2} ms  {:>7.1} GFLOP/s", ours_mt.as_secs_f64() * 1e3, gflops(ours_mt));

    let ours_bits: Vec<u32> = ours_c.as_f32().unwrap().iter().map(|v| v.to_bits()).collect();
    let mt_same = ours_mt_c.as_f32().unwrap().iter().map(|v| v.to_bits()).eq(ours_bits.iter().copied());
    let start = Instant::now();
    let want = reference(m, n, k, a.as_f32().unwrap(), b.as_f32().unwrap());
    let ref_time = start.elapsed();
    let ref_same = want.iter().map(|v| v.to_bits()).eq(ours_bits.iter().copied());
    let max_diff = ours_c.as_f32().unwrap().iter().zip(&theirs_c).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    println!("  1 thread == {threads} threads, bit for bit: {mt_same}");
    println!("  == spec reference loop (f32::mul_add, {:.0} ms), bit for bit: {ref_same}", ref_time.as_secs_f64() * 1e3);
    println!("  max |gridbox - matrixmultiply| = {max_diff:e} (different summation order, expected small)");
    assert!(mt_same && ref_same, "results differ from the reference");
}
