//! The NumPy oracle: every case in spec/vectors/ops.txt (written by spec/vectors/generate.py)
//! run through the CPU kernels and checked within its tolerance.

use gridbox_abi::{DType, Op};

use crate::ops::OpCall;
use crate::tensor::{Tensor, TensorData};

const VECTORS: &str = include_str!("../../../../spec/vectors/ops.txt");
const GENERATOR: &[u8] = include_bytes!("../../../../spec/vectors/generate.py");

fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01B3))
}

fn parse_tensor(text: &str) -> Tensor {
    let mut parts = text.splitn(3, ':');
    let (dtype, dims, bits) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
    let shape: Vec<usize> = if dims == "-" { vec![] } else { dims.split('x').map(|d| d.parse().unwrap()).collect() };
    let words: Vec<u32> = if bits.is_empty() { vec![] } else { bits.split(',').map(|b| u32::from_str_radix(b, 16).unwrap()).collect() };
    match dtype {
        "f32" => Tensor::f32(shape, words.into_iter().map(f32::from_bits).collect()).unwrap(),
        "i32" => Tensor::i32(shape, words.into_iter().map(|w| w as i32).collect()).unwrap(),
        "f16" => Tensor::f16(shape, words.into_iter().map(|w| u16::try_from(w).unwrap()).collect()).unwrap(),
        "bf16" => Tensor::bf16(shape, words.into_iter().map(|w| u16::try_from(w).unwrap()).collect()).unwrap(),
        other => panic!("dtype {other}"),
    }
}

fn ulps(a: f32, b: f32) -> u64 {
    let key = |x: f32| {
        let bits = x.to_bits() as i64;
        if bits < 0x8000_0000 { bits } else { 0x8000_0000 - bits }
    };
    (key(a) - key(b)).unsigned_abs()
}

#[test]
fn vectors_are_up_to_date_with_their_generator() {
    let first = VECTORS.lines().next().unwrap();
    let expected = format!("# generator fnv1a64 {:016x}", fnv1a64(GENERATOR));
    assert_eq!(first, expected, "spec/vectors/ops.txt is out of date: run python3 spec/vectors/generate.py");
}

#[test]
fn every_op_matches_the_numpy_oracle() {
    let mut checked = std::collections::BTreeSet::new();
    for (number, line) in VECTORS.lines().skip(1).enumerate() {
        let fields: Vec<&str> = line.split('|').collect();
        let [op_name, params, tolerance, inputs, output] = fields[..] else { panic!("line {number}: {line}") };
        let op = Op::from_name(op_name).unwrap();
        let params: Vec<i64> = if params.is_empty() { vec![] } else { params.split(',').map(|p| p.parse().unwrap()).collect() };
        let inputs: Vec<Tensor> = inputs.split(';').map(parse_tensor).collect();
        let want = parse_tensor(output);
        let call = OpCall::decode(op, &params, inputs.len()).unwrap();
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let metas: Vec<_> = inputs.iter().map(|t| t.meta()).collect();
        let out = call.infer(&metas).unwrap();
        let got = super::execute(&call, &refs, &out, 2).unwrap_or_else(|e| panic!("case {number} {op_name}: {e}"));
        assert_eq!(got.shape(), want.shape(), "case {number} {op_name}");
        let context = || format!("case {number}: {op_name} {params:?} ({tolerance})");
        match (got.data(), want.data()) {
            (TensorData::I32(g), TensorData::I32(w)) => assert_eq!(g, w, "{}", context()),
            (TensorData::F16(g), TensorData::F16(w)) | (TensorData::Bf16(g), TensorData::Bf16(w)) => assert_eq!(g, w, "{}", context()),
            (TensorData::F32(g), TensorData::F32(w)) => {
                let scale = w.iter().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs())).max(1e-30);
                for (index, (&g, &w)) in g.iter().zip(w).enumerate() {
                    if w.is_nan() || g.is_nan() {
                        assert!(w.is_nan() && g.is_nan(), "{} at {index}: got {g:e}, want {w:e}", context());
                        continue;
                    }
                    let ok = match tolerance.split_once(' ') {
                        None => g.to_bits() == w.to_bits(),
                        Some(("ulps", n)) => ulps(g, w) <= n.parse().unwrap(),
                        Some(("rel", x)) => (g - w).abs() <= x.parse::<f32>().unwrap() * scale || g == w,
                        Some(other) => panic!("tolerance {other:?}"),
                    };
                    assert!(ok, "{} at {index}: got {g:e} ({:08x}), want {w:e} ({:08x})", context(), g.to_bits(), w.to_bits());
                }
            }
            _ => panic!("{}: dtype differs", context()),
        }
        assert_eq!(got.dtype() == DType::I32, want.dtype() == DType::I32);
        checked.insert(op);
    }
    let missing: Vec<&str> = Op::ALL.iter().filter(|op| !checked.contains(op)).map(|op| op.name()).collect();
    assert!(missing.is_empty(), "ops without oracle vectors: {missing:?}");
}
