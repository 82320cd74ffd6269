//! A test job for the bridge ops language models need (silu, argmax, cast, rope, attention), one scenario
//! per subcommand: `model-probe ops | edges`. Its own program, because a manifest that does not
//! list `tensor.ops` grants only the first release's ops, and these are newer: every job that
//! runs it names them.

use gridbox_sdk::{DType, Error, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str).unwrap_or("ops") {
        "ops" => ops(),
        "edges" => edges(),
        other => {
            eprintln!("model-probe: unknown subcommand {other:?}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("model-probe: {e}");
        std::process::exit(1);
    }
}

/// Prints a tensor's shape and the bit patterns of its elements, one line per tensor.
fn show(name: &str, t: &Tensor) -> Result<(), Error> {
    let bits: Vec<String> = t.to_vec()?.iter().map(|x| format!("{:08x}", x.to_bits())).collect();
    println!("{name} {:?} {}", t.shape(), bits.join(","));
    Ok(())
}

/// Each op once, on small awkward inputs, results printed bit for bit.
fn ops() -> Result<(), Error> {
    let values: Vec<f32> = (0..24).map(|i| (i as f32 - 11.5) * 0.37).collect();
    let x = Tensor::from_slice(&values, &[2, 3, 4])?;
    show("silu", &x.silu()?)?;
    println!("argmax {:?} {:?}", x.argmax()?.shape(), x.argmax()?.to_vec_i32()?);
    // Positions 7, 8, 9 of a head of size 4, base 10000.
    show("rope", &x.rope(7, 10_000.0)?)?;
    // Three query heads over one key/value head, positions 3 and 4 of a cache of 5.
    let q = Tensor::from_slice(&values[..12], &[3, 2, 2])?;
    let kv = Tensor::from_slice(&values[4..24], &[1, 5, 4])?.slice(2, 0, 2)?;
    show("attention", &q.attention(&kv, &kv, 3, 0.5)?)?;
    // Half-precision weights: 1.0, the smallest subnormal, -inf, a NaN with a payload.
    let half = Tensor::from_f16_bytes(&[0x00, 0x3C, 0x01, 0x00, 0x00, 0xFC, 0x01, 0x7E], &[2, 2])?;
    show("cast_f16", &half.permute(&[1, 0])?.cast(DType::F32)?)?;
    // bfloat16 1.0, the smallest subnormal, -0.0, a NaN; a slice of the stored weights.
    let brain = Tensor::from_bf16_bytes(&[0x80, 0x3F, 0x01, 0x00, 0x00, 0x80, 0xC1, 0x7F], &[2, 2])?;
    show("cast_bf16", &brain.slice(1, 1, 2)?.cast(DType::F32)?)?;
    println!("bf16_bytes {:?}", brain.slice(0, 1, 2)?.to_le_bytes()?);
    Ok(())
}

/// A checksum of a tensor's shape and element bits, printed one line per result.
fn check(name: &str, t: &Tensor) -> Result<(), Error> {
    let mut sum = 0xcbf29ce484222325u64;
    let words: Vec<u32> = match t.dtype() {
        DType::I32 => t.to_vec_i32()?.iter().map(|&v| v as u32).collect(),
        _ => t.to_vec()?.iter().map(|v| v.to_bits()).collect(),
    };
    for bits in words {
        sum = (sum ^ u64::from(bits)).wrapping_mul(0x100000001b3);
    }
    println!("{name} {:?} {sum:016x}", t.shape());
    Ok(())
}

/// `n` values cycling through the awkward ones (NaN, infinities, -0, subnormals, the largest and
/// smallest) among ordinary ones, with many ties.
fn awkward(n: usize, salt: usize) -> Vec<f32> {
    let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1.0e-45, -1.1e-38, f32::MAX, f32::MIN_POSITIVE, 88.7, -104.0, 9.5, -9.6];
    (0..n)
        .map(|i| {
            let k = i * 7 + salt * 13;
            if k.is_multiple_of(5) { special[(k / 5) % special.len()] } else { ((k % 37) as f32 - 18.0) * 0.173 }
        })
        .collect()
}

/// Every op over edge sizes with special values among the inputs, positions far out and every
/// f16 and bf16 bit pattern: what must give the same bits on every CPU and device.
fn edges() -> Result<(), Error> {
    for n in [2usize, 8, 16, 32, 34, 64, 66, 128, 258] {
        let m = Tensor::from_slice(&awkward(3 * n, 1), &[3, n])?;
        check(&format!("silu[3,{n}]"), &m.silu()?)?;
        check(&format!("argmax[3,{n}]"), &m.argmax()?)?;
        for (offset, theta) in [(0, 10_000.0), (4_093, 500_000.0), ((1 << 24) - 3, 1_000_000.0)] {
            check(&format!("rope[3,{n}]@{offset}"), &m.rope(offset, theta)?)?;
        }
        // Three query heads over one key/value head: a prompt of 3 rows, then one decode row.
        let q = m.reshape(&[3, 1, n])?;
        let kv = Tensor::from_slice(&awkward(5 * n, 2), &[1, 5, n])?;
        check(&format!("attention[3,1,{n}]"), &q.attention(&kv, &kv, 4, 0.125)?)?;
        check(&format!("attention prompt[1,3,{n}]"), &m.reshape(&[1, 3, n])?.attention(&kv, &kv, 0, 0.125)?)?;
    }
    let every: Vec<u8> = (0..=u16::MAX).flat_map(|b| b.to_le_bytes()).collect();
    check("cast_f16[65536]", &Tensor::from_f16_bytes(&every, &[256, 256])?.cast(DType::F32)?)?;
    let brain = Tensor::from_bf16_bytes(&every, &[256, 256])?;
    check("cast_bf16[65536]", &brain.cast(DType::F32)?)?;
    check("cast_bf16 slice", &brain.slice(1, 3, 200)?.permute(&[1, 0])?.cast(DType::F32)?)?;
    Ok(())
}
