//! The cross-backend suite: every op on CUDA against the CPU reference, bit for bit, over
//! edge sizes and special values. Without a GPU each test prints one line saying it was
//! skipped and checks nothing; kernel compilation needs only NVRTC, which CI installs.

use super::*;
use crate::cpu;
use gridbox_abi::Op;

/// The device, or a printed reason to skip.
fn device(test: &str) -> Option<Arc<CudaDevice>> {
    match CudaDevice::open(0) {
        Ok(device) => Some(device),
        Err(why) => {
            println!("SKIPPED {test}: no CUDA device ({why}); nothing was checked");
            None
        }
    }
}

#[test]
fn kernels_compile_with_nvrtc() {
    let required = std::env::var_os("GRIDBOX_REQUIRE_NVRTC").is_some();
    for arch in ["compute_80", "compute_90"] {
        match compile_kernels(arch) {
            Ok(_) => println!("kernels compiled for {arch}"),
            Err(CudaError::LibraryMissing(lib)) if !required => {
                println!("SKIPPED kernels_compile_with_nvrtc: {lib} is not installed; set GRIDBOX_REQUIRE_NVRTC=1 to make this a failure");
                return;
            }
            Err(e) => panic!("{arch}: {e}"),
        }
    }
}

/// A deterministic generator of awkward f32 values: mostly ordinary, some special.
struct Values(u64);

impl Values {
    fn next_u32(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 16) as u32
    }

    fn ordinary(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| (self.next_u32() % 20_000) as f32 / 1000.0 - 10.0).collect()
    }

    fn any_bits(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| f32::from_bits(self.next_u32())).collect()
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_le_bytes().chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Runs `call` on both backends and compares every bit.
fn same(job: &CudaJob, call: &OpCall, inputs: &[&Tensor], what: &str) {
    let metas: Vec<TensorMeta> = inputs.iter().map(|t| t.meta()).collect();
    let out = call.infer(&metas).unwrap_or_else(|e| panic!("{what}: {e}"));
    let want = cpu::execute(call, inputs, &out, 2);
    let device: Vec<DeviceTensor> = inputs.iter().map(|t| job.upload(t).unwrap()).collect();
    let refs: Vec<&DeviceTensor> = device.iter().collect();
    let got = job.execute(call, &refs, &out);
    match (want, got) {
        (Ok(want), Ok(got)) => {
            let got = job.download(&got).unwrap();
            let (w, g) = (bits(&want), bits(&got));
            if let Some(i) = (0..w.len()).find(|&i| w[i] != g[i]) {
                panic!("{what}: element {i} of {}: cpu {:08x} ({:e}), cuda {:08x} ({:e})", w.len(), w[i], f32::from_bits(w[i]), g[i], f32::from_bits(g[i]));
            }
        }
        // The same code and the same detail: a job's `last_error` must not tell backends apart.
        (Err(w), Err(ExecError::Op(g))) => assert_eq!(w, g, "{what}"),
        (w, g) => panic!("{what}: cpu {:?}, cuda {:?}", w.map(|_| ()), g.map(|_| ())),
    }
}

#[test]
fn elementwise_and_transcendentals_match_bit_for_bit() {
    let Some(device) = device("elementwise_and_transcendentals_match_bit_for_bit") else { return };
    let job = device.new_job().unwrap();
    let mut values = Values(1);
    let mut all = values.any_bits(1 << 20);
    all.extend([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, 1e-45, -1e-45, 88.7, -103.9, 9.0, -9.5, 10.0, -20.0]);
    all.extend(values.ordinary(1 << 16));
    let x = Tensor::f32(vec![all.len()], all).unwrap();
    for op in [UnaryOp::Neg, UnaryOp::Relu, UnaryOp::Gelu, UnaryOp::Sigmoid, UnaryOp::Tanh, UnaryOp::Exp, UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Silu] {
        same(&job, &OpCall::Unary(op), &[&x], &format!("{op:?}"));
    }
    for (sa, sb) in [(vec![0], vec![0]), (vec![1], vec![1]), (vec![97], vec![97]), (vec![3, 1, 33], vec![4, 1]), (vec![1], vec![65]), (vec![2, 31], vec![])] {
        let a = Tensor::f32(sa.clone(), values.any_bits(sa.iter().product())).unwrap();
        let b = Tensor::f32(sb.clone(), values.ordinary(sb.iter().product())).unwrap();
        for op in [BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div] {
            same(&job, &OpCall::Binary(op), &[&a, &b], &format!("{op:?} {sa:?} {sb:?}"));
        }
    }
}

#[test]
fn reductions_softmax_and_norms_match_bit_for_bit() {
    let Some(device) = device("reductions_softmax_and_norms_match_bit_for_bit") else { return };
    let job = device.new_job().unwrap();
    let mut values = Values(2);
    for shape in [vec![0, 5], vec![1], vec![31], vec![32], vec![33], vec![7, 1000], vec![3, 65, 5], vec![2, 4097]] {
        let x = Tensor::f32(shape.clone(), values.ordinary(shape.iter().product())).unwrap();
        for axis in -1..shape.len() as i64 {
            for op in [ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max] {
                same(&job, &OpCall::Reduce { op, axis, keepdims: false }, &[&x], &format!("{op:?} axis {axis} of {shape:?}"));
            }
        }
        let d = *shape.last().unwrap();
        let gamma = Tensor::f32(vec![d], values.ordinary(d)).unwrap();
        let beta = Tensor::f32(vec![d], values.ordinary(d)).unwrap();
        same(&job, &OpCall::Softmax, &[&x], &format!("softmax {shape:?}"));
        same(&job, &OpCall::LayerNorm { eps: 1e-5 }, &[&x, &gamma, &beta], &format!("layer_norm {shape:?}"));
        same(&job, &OpCall::RmsNorm { eps: 1e-6 }, &[&x, &gamma], &format!("rms_norm {shape:?}"));
    }
    let special = Tensor::f32(vec![2, 3], vec![f32::NEG_INFINITY, 0.0, f32::NAN, -0.0, 0.0, f32::INFINITY]).unwrap();
    same(&job, &OpCall::Softmax, &[&special], "softmax specials");
    same(&job, &OpCall::Argmax, &[&special], "argmax specials");
    for shape in [vec![0, 5], vec![1, 1], vec![3, 31], vec![4, 32], vec![2, 33], vec![5, 1000], vec![2, 3, 4097]] {
        let len = shape.iter().product();
        // Few distinct values, so ties are common; NaN, infinities and -0 among them.
        let mut xs: Vec<f32> = values.ordinary(len).iter().map(|v| (v * 0.3).round()).collect();
        for (i, v) in xs.iter_mut().enumerate() {
            match (i * 7919) % 61 {
                0 => *v = f32::NAN,
                1 => *v = f32::INFINITY,
                2 => *v = -0.0,
                _ => {}
            }
        }
        let x = Tensor::f32(shape.clone(), xs).unwrap();
        same(&job, &OpCall::Argmax, &[&x], &format!("argmax {shape:?}"));
    }
    same(&job, &OpCall::Reduce { op: ReduceOp::Max, axis: 1, keepdims: true }, &[&special], "max specials");
}

#[test]
fn matmul_and_conv2d_match_bit_for_bit_at_edge_sizes() {
    let Some(device) = device("matmul_and_conv2d_match_bit_for_bit_at_edge_sizes") else { return };
    let job = device.new_job().unwrap();
    let mut values = Values(3);
    for &m in &[0usize, 1, 7, 127, 128, 129, 257] {
        for &k in &[0usize, 1, 8, 9, 20, 255, 260] {
            for &n in &[1usize, 4, 33, 128, 130, 132] {
                let mut a = values.ordinary(m * k);
                a.iter_mut().step_by(7).for_each(|v| *v = -0.0);
                let a = Tensor::f32(vec![m, k], a).unwrap();
                let b = Tensor::f32(vec![k, n], values.ordinary(k * n)).unwrap();
                same(&job, &OpCall::Matmul, &[&a, &b], &format!("matmul {m}x{k}x{n}"));
            }
        }
    }
    let a = Tensor::f32(vec![2, 1, 5, 7], values.any_bits(70)).unwrap();
    let b = Tensor::f32(vec![3, 7, 9], values.ordinary(189)).unwrap();
    same(&job, &OpCall::Matmul, &[&a, &b], "batched matmul with special values");
    for (x_shape, w_shape, params) in [
        (vec![1, 1, 5, 5], vec![2, 1, 3, 3], [1, 1, 0, 0]),
        (vec![2, 3, 7, 6], vec![4, 3, 2, 3], [2, 1, 1, 2]),
        (vec![1, 2, 4, 4], vec![1, 2, 4, 4], [1, 1, 0, 0]),
        (vec![1, 1, 1, 1], vec![3, 1, 1, 1], [3, 3, 2, 2]),
    ] {
        let x = Tensor::f32(x_shape.clone(), values.ordinary(x_shape.iter().product())).unwrap();
        let w = Tensor::f32(w_shape.clone(), values.ordinary(w_shape.iter().product())).unwrap();
        let bias = Tensor::f32(vec![w_shape[0]], values.ordinary(w_shape[0])).unwrap();
        let call = OpCall::decode(Op::Conv2d, &params.map(|p| p as i64), 3).unwrap();
        same(&job, &call, &[&x, &w, &bias], &format!("conv2d {x_shape:?} {w_shape:?} {params:?}"));
        let call = OpCall::decode(Op::Conv2d, &params.map(|p| p as i64), 2).unwrap();
        same(&job, &call, &[&x, &w], &format!("conv2d without bias {x_shape:?}"));
    }
}

#[test]
fn layout_ops_match_and_bad_gathers_are_codes() {
    let Some(device) = device("layout_ops_match_and_bad_gathers_are_codes") else { return };
    let job = device.new_job().unwrap();
    let mut values = Values(4);
    let x = Tensor::f32(vec![2, 3, 5], values.any_bits(30)).unwrap();
    same(&job, &OpCall::Permute { perm: vec![2, 0, 1] }, &[&x], "permute");
    same(&job, &OpCall::Reshape { shape: vec![5, 6] }, &[&x], "reshape");
    same(&job, &OpCall::Slice { axis: 2, start: 1, end: 4 }, &[&x], "slice");
    same(&job, &OpCall::Slice { axis: 0, start: 1, end: 1 }, &[&x], "empty slice");
    let y = Tensor::f32(vec![2, 1, 5], values.ordinary(10)).unwrap();
    same(&job, &OpCall::Concat { axis: 1 }, &[&x, &y, &x], "concat");
    let ids = Tensor::i32(vec![2, 2], vec![1, 0, 1, 1]).unwrap();
    same(&job, &OpCall::Gather, &[&x, &ids], "gather");
    // Two bad indices: both backends name the first in row-major order (position 1, -1).
    let bad = Tensor::i32(vec![2, 2], vec![1, -1, 2, 0]).unwrap();
    same(&job, &OpCall::Gather, &[&x, &bad], "gather out of range");
    let ints = Tensor::i32(vec![3, 4], (0..12).collect()).unwrap();
    same(&job, &OpCall::Permute { perm: vec![1, 0] }, &[&ints], "permute i32");
}

#[test]
fn a_job_never_sees_what_an_earlier_job_left_on_the_device() {
    let Some(device) = device("a_job_never_sees_what_an_earlier_job_left_on_the_device") else { return };
    // An earlier job fills and frees a large poisoned buffer...
    {
        let earlier = device.new_job().unwrap();
        let poison = Tensor::f32(vec![1 << 24], vec![f32::from_bits(0x7FBA_DBAD); 1 << 24]).unwrap();
        let held = earlier.upload(&poison).unwrap();
        drop(held);
        earlier.stream.synchronize().unwrap();
    }
    // ...and a later job's outputs, which reuse that memory, hold only what it computed.
    let job = device.new_job().unwrap();
    let mut values = Values(5);
    let a = Tensor::f32(vec![300, 200], values.ordinary(60_000)).unwrap();
    let b = Tensor::f32(vec![200, 300], values.ordinary(60_000)).unwrap();
    for _ in 0..4 {
        same(&job, &OpCall::Matmul, &[&a, &b], "matmul after a poisoned job");
        same(&job, &OpCall::Unary(UnaryOp::Exp), &[&a], "exp after a poisoned job");
        same(&job, &OpCall::Reduce { op: ReduceOp::Sum, axis: 0, keepdims: false }, &[&a], "sum after a poisoned job");
    }
}

#[test]
fn half_precision_casts_and_layout_ops_match_bit_for_bit() {
    let Some(device) = device("half_precision_casts_and_layout_ops_match_bit_for_bit") else { return };
    let job = device.new_job().unwrap();
    // Every f16 and bf16 bit pattern through cast (subnormals, infinities, NaN payloads).
    let every: Vec<u16> = (0..=u16::MAX).collect();
    for half in [Tensor::f16 as fn(Vec<usize>, Vec<u16>) -> Result<Tensor, OpError>, Tensor::bf16] {
        let x = half(vec![every.len()], every.clone()).unwrap();
        let what = x.dtype().name();
        same(&job, &OpCall::Cast { to: DType::F32 }, &[&x], &format!("cast {what}"));
        // Odd lengths and offsets, so elements straddle the halves of the device's 32-bit words.
        let x = half(vec![3, 5, 7], every[..105].to_vec()).unwrap();
        same(&job, &OpCall::Permute { perm: vec![2, 0, 1] }, &[&x], &format!("permute {what}"));
        same(&job, &OpCall::Reshape { shape: vec![7, 15] }, &[&x], &format!("reshape {what}"));
        same(&job, &OpCall::Slice { axis: 2, start: 1, end: 4 }, &[&x], &format!("slice {what}"));
        same(&job, &OpCall::Slice { axis: 0, start: 1, end: 2 }, &[&x], &format!("slice rows {what}"));
        let y = half(vec![3, 1, 7], every[200..221].to_vec()).unwrap();
        same(&job, &OpCall::Concat { axis: 1 }, &[&x, &y, &x], &format!("concat {what}"));
        let ids = Tensor::i32(vec![3], vec![2, 0, 2]).unwrap();
        same(&job, &OpCall::Gather, &[&x, &ids], &format!("gather {what}"));
        let sliced = half(vec![1], vec![0x3C00]).unwrap();
        same(&job, &OpCall::Cast { to: DType::F32 }, &[&sliced], &format!("cast of one {what}"));
        let empty = half(vec![0, 3], vec![]).unwrap();
        same(&job, &OpCall::Cast { to: DType::F32 }, &[&empty], &format!("cast of nothing {what}"));
        // A round trip through the device keeps odd-length 2-byte tensors whole.
        assert_eq!(job.download(&job.upload(&x).unwrap()).unwrap(), x, "{what} round trip");
    }
}

#[test]
fn rope_and_its_sin_and_cos_match_bit_for_bit() {
    let Some(device) = device("rope_and_its_sin_and_cos_match_bit_for_bit") else { return };
    let job = device.new_job().unwrap();
    let mut values = Values(6);
    // Positions far out (large angles: the exact reduction's whole range of windows), bases
    // models use, head sizes around the warp width, and special values among the inputs.
    for (shape, offset, theta) in [
        (vec![1, 2], 0u32, 10_000.0f32),
        (vec![3, 7, 64], 5, 10_000.0),
        (vec![2, 3, 33, 128], 4_000, 500_000.0),
        (vec![1, 40, 2], (1 << 24) - 40, 1_000_000.0),
        (vec![9, 1, 96], 65_537, 3.5),
        (vec![0, 4, 8], 0, 10_000.0),
    ] {
        let len: usize = shape.iter().product();
        let mut xs = values.ordinary(len);
        for (i, v) in xs.iter_mut().enumerate().step_by(13) {
            *v = [f32::NAN, f32::INFINITY, -0.0, 1e-40][i % 4];
        }
        let x = Tensor::f32(shape.clone(), xs).unwrap();
        same(&job, &OpCall::Rope { offset, theta }, &[&x], &format!("rope {shape:?} offset {offset} theta {theta}"));
    }
}

#[test]
fn attention_matches_bit_for_bit() {
    let Some(device) = device("attention_matches_bit_for_bit") else { return };
    let job = device.new_job().unwrap();
    let mut values = Values(7);
    // Grouped heads, a prompt and a single decode row, S around the warp width, D around the
    // 128 columns a warp holds at once, and special values among the inputs.
    for (hq, hkv, t_len, s_len, d, offset) in
        [(1, 1, 1, 1, 1, 0), (9, 3, 32, 32, 64, 0), (9, 3, 1, 97, 64, 96), (4, 2, 5, 33, 129, 28), (2, 2, 3, 65, 300, 1), (3, 1, 0, 4, 8, 0)]
    {
        let mut q = values.ordinary(hq * t_len * d);
        q.iter_mut().step_by(17).for_each(|v| *v = -0.0);
        let mut k = values.ordinary(hkv * s_len * d);
        if let Some(v) = k.get_mut(5) {
            *v = f32::INFINITY;
        }
        let q = Tensor::f32(vec![hq, t_len, d], q).unwrap();
        let k = Tensor::f32(vec![hkv, s_len, d], k).unwrap();
        let v = Tensor::f32(vec![hkv, s_len, d], values.any_bits(hkv * s_len * d)).unwrap();
        let call = OpCall::Attention { offset, scale: 1.0 / (d as f32).sqrt() };
        same(&job, &call, &[&q, &k, &v], &format!("attention Hq {hq} Hkv {hkv} T {t_len} S {s_len} D {d} offset {offset}"));
    }
}
