//! Matmul speed: gridbox's CPU kernel beside the `matrixmultiply` crate's sgemm and NumPy's
//! BLAS (OpenBLAS in the PyPI wheels), at 1 thread and at N threads, same run, interleaved.
//!
//! Run with `cargo bench -p gridbox-compute --bench matmul`. Optional arguments after `--`:
//! the size (default 1024), the repetitions (default 7) and the thread count of the
//! multi-thread figure (default 2). Prints the median of each, the ratios, and checks that the
//! result equals the spec's scalar loop bit for bit and is the same at both thread counts.
//!
//! NumPy runs in two `python3` processes started once (`OPENBLAS_NUM_THREADS` 1 and N, which
//! OpenBLAS reads at start), each timing one `matmul(a, b, out=c)` per request on its stdin, so
//! its rounds interleave with gridbox's; without python3 and numpy its rows are left out.
#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
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

/// The NumPy side: a python3 process that times one matmul per line it reads.
struct Numpy {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The pause after each timed call (see its use).
const SETTLE: Duration = Duration::from_millis(150);

const NUMPY_LOOP: &str = "import sys, time, numpy as np
n = int(sys.argv[1])
rng = np.random.default_rng(1)
a = rng.random((n, n), dtype=np.float32) - 0.5
b = rng.random((n, n), dtype=np.float32) - 0.5
c = np.empty((n, n), dtype=np.float32)
np.matmul(a, b, out=c)
print('ready', flush=True)
for line in sys.stdin:
    t = time.perf_counter()
    np.matmul(a, b, out=c)
    print(time.perf_counter() - t, flush=True)
";

impl Numpy {
    fn start(size: usize, threads: usize) -> Option<Numpy> {
        let mut child = Command::new("python3")
            .args(["-c", NUMPY_LOOP, &size.to_string()])
            .env("OPENBLAS_NUM_THREADS", threads.to_string())
            .env("OMP_NUM_THREADS", threads.to_string())
            .env("MKL_NUM_THREADS", threads.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let mut stdout = BufReader::new(child.stdout.take()?);
        let mut line = String::new();
        stdout.read_line(&mut line).ok()?;
        (line.trim() == "ready").then_some(Numpy { child, stdin, stdout })
    }

    fn time(&mut self) -> Duration {
        writeln!(self.stdin, "go").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        Duration::from_secs_f64(line.trim().parse().unwrap())
    }
}

impl Drop for Numpy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which BLAS NumPy uses, as `numpy.show_config()` names it.
fn numpy_blas() -> String {
    let script = "import numpy as np; c = np.show_config(mode='dicts'); b = c['Build Dependencies']['blas']; print(b.get('name'), b.get('version'))";
    Command::new("python3").args(["-c", script]).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
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
    let numpy = (m == n && n == k).then(|| (Numpy::start(size, 1), Numpy::start(size, threads)));
    let (mut np1, mut npt) = numpy.unwrap_or((None, None));
    let have_numpy = np1.is_some() && npt.is_some();
    let mut times = vec![Vec::new(); 5];
    for round in 0..=reps {
        let mut one = |i: usize, f: &mut dyn FnMut() -> Option<Duration>| {
            let start = Instant::now();
            let own = f();
            if round > 0 {
                times[i].push(own.unwrap_or_else(|| start.elapsed()));
            }
            // Idle threads spin a while before they sleep (OpenBLAS's for about 2^28 cycles, 70
            // ms here): let them settle, so that no figure pays for the one before it.
            std::thread::sleep(SETTLE);
        };
        one(0, &mut || {
            drop(black_box(cpu::matmul(&a, &b, &out, 1).unwrap()));
            None
        });
        one(1, &mut || {
            sgemm(black_box(&mut buf));
            None
        });
        one(2, &mut || {
            drop(black_box(cpu::matmul(&a, &b, &out, threads).unwrap()));
            None
        });
        if let (Some(p1), Some(pt)) = (np1.as_mut(), npt.as_mut()) {
            // NumPy times itself, in its own process.
            one(3, &mut || Some(p1.time()));
            one(4, &mut || Some(pt.time()));
        }
    }
    let times: Vec<Duration> = times.into_iter().map(|t| if t.is_empty() { Duration::ZERO } else { median(t) }).collect();
    let (ours, theirs, ours_mt, np_1, np_t) = (times[0], times[1], times[2], times[3], times[4]);
    drop((np1, npt));

    println!("matmul {m}x{k} x {k}x{n} f32, median of {reps} interleaved rounds");
    println!("  gridbox  1 thread : {:>9.2} ms  {:>7.1} GFLOP/s", ours.as_secs_f64() * 1e3, gflops(ours));
    println!("  matrixmultiply    : {:>9.2} ms  {:>7.1} GFLOP/s", theirs.as_secs_f64() * 1e3, gflops(theirs));
    println!("  speed ratio gridbox / matrixmultiply (1 thread): {:.3}x", theirs.as_secs_f64() / ours.as_secs_f64());
    println!(
        "  gridbox {threads} threads: {:>9.2} ms  {:>7.1} GFLOP/s  ({:.2}x its 1 thread)",
        ours_mt.as_secs_f64() * 1e3,
        gflops(ours_mt),
        ours.as_secs_f64() / ours_mt.as_secs_f64()
    );
    if have_numpy {
        println!("  numpy ({})", numpy_blas());
        println!("  numpy    1 thread : {:>9.2} ms  {:>7.1} GFLOP/s", np_1.as_secs_f64() * 1e3, gflops(np_1));
        println!("  numpy   {threads} threads: {:>9.2} ms  {:>7.1} GFLOP/s", np_t.as_secs_f64() * 1e3, gflops(np_t));
        println!("  speed ratio gridbox / numpy, 1 thread : {:.3}x", np_1.as_secs_f64() / ours.as_secs_f64());
        println!("  speed ratio gridbox / numpy, {threads} threads: {:.3}x", np_t.as_secs_f64() / ours_mt.as_secs_f64());
    } else {
        println!("  numpy: not measured (square sizes only, and python3 with numpy must be on PATH)");
    }

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
