//! The exact CUDA matmul (each element's k-chain in order, fmaf, no tensor cores) against
//! cuBLAS SGEMM with TF32 off, side by side in one run, plus a bit-for-bit check against the CPU
//! reference.
//!
//! `cargo bench -p gridbox-compute --bench cuda_matmul [-- SIZE ROUNDS]` (default 4096, 20).
//! Goal: >= 0.7x cuBLAS at 4096^3 on an H100. Without a GPU it says so and exits 0.

#![allow(unsafe_code)] // One cuBLAS call, the baseline being measured.
#![allow(clippy::panic)] // A bench that cannot measure stops.

use std::time::Instant;

use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, sys::cublasOperation_t};
use gridbox_compute::backend::contract::{GpuDevice, GpuJob};
use gridbox_compute::cuda::CudaDevice;
use gridbox_compute::{OpCall, Tensor, cpu};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (size, rounds) = (args.first().copied().unwrap_or(4096), args.get(1).copied().unwrap_or(20));
    let device = match CudaDevice::open(0) {
        Ok(device) => device,
        Err(why) => {
            println!("SKIPPED cuda_matmul: no CUDA device ({why})");
            return;
        }
    };
    println!("{} : matmul {size}^3 f32, median of {rounds}", device.description());
    let job = device.new_job().expect("job");
    let mut seed = 0x1234_5678u32;
    let mut values = |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                (seed % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    };
    let a = Tensor::f32(vec![size, size], values(size * size)).expect("a");
    let b = Tensor::f32(vec![size, size], values(size * size)).expect("b");
    let out = OpCall::Matmul.infer(&[a.meta(), b.meta()]).expect("shape");
    let (da, db) = (job.upload(&a).expect("upload"), job.upload(&b).expect("upload"));

    let time = |f: &mut dyn FnMut()| -> Vec<f64> {
        f();
        job.synchronize().expect("sync");
        (0..rounds)
            .map(|_| {
                let start = Instant::now();
                f();
                job.synchronize().expect("sync");
                start.elapsed().as_secs_f64() * 1e3
            })
            .collect()
    };
    let mut ours = time(&mut || {
        std::hint::black_box(job.execute(&OpCall::Matmul, &[&da, &db], &out).is_ok());
    });

    let blas = CudaBlas::new(job.stream().clone()).expect("cublas");
    let stream = job.stream();
    let (fa, fb) = (stream.clone_htod(a.as_f32().expect("f32")).expect("a"), stream.clone_htod(b.as_f32().expect("f32")).expect("b"));
    let mut fc = stream.alloc_zeros::<f32>(size * size).expect("c");
    let n = size as i32;
    // Row-major C = A B is column-major C^T = B^T A^T: pass B first. The default math mode
    // keeps full FP32 (no TF32).
    let config = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_N,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: n,
        n,
        k: n,
        alpha: 1.0f32,
        lda: n,
        ldb: n,
        beta: 0.0f32,
        ldc: n,
    };
    let mut theirs = time(&mut || {
        // SAFETY: the three buffers hold size*size f32 each, matching the config.
        unsafe { blas.gemm(config, &fb, &fa, &mut fc) }.expect("sgemm");
    });

    let median = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.total_cmp(y));
        v[v.len() / 2]
    };
    let (ours, theirs) = (median(&mut ours), median(&mut theirs));
    let flops = 2.0 * (size as f64).powi(3);
    println!("  gridbox exact matmul : {ours:8.3} ms  {:7.2} TFLOP/s", flops / ours / 1e9);
    println!("  cuBLAS SGEMM (FP32)  : {theirs:8.3} ms  {:7.2} TFLOP/s", flops / theirs / 1e9);
    println!("  speed ratio gridbox / cuBLAS: {:.3}x  (goal >= 0.7x)", theirs / ours);

    let Ok(result) = job.execute(&OpCall::Matmul, &[&da, &db], &out) else { panic!("the CUDA matmul failed") };
    let got = job.download(&result).expect("download");
    let start = Instant::now();
    let want = cpu::execute(&OpCall::Matmul, &[&a, &b], &out, std::thread::available_parallelism().map_or(1, |n| n.get())).expect("cpu");
    let cpu_ms = start.elapsed().as_secs_f64() * 1e3;
    let same = got.to_le_bytes() == want.to_le_bytes();
    println!("  CUDA == CPU reference ({cpu_ms:.0} ms on the CPU), bit for bit: {same}");
    if !same {
        std::process::exit(1);
    }
}
