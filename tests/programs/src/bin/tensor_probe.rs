//! A test job for the tensor bridge, one scenario per subcommand:
//! `tensor-probe ops | edges | quota-bytes | quota-count | errors | chain N | matmuls N SIZE`.

use gridbox_sdk::{Error, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str).unwrap_or("ops") {
        "ops" => ops(),
        "edges" => edges(),
        "quota-bytes" => quota_bytes(),
        "quota-count" => quota_count(),
        "errors" => errors(),
        "chain" => chain(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10)),
        "matmuls" => matmuls(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100), args.get(3).and_then(|n| n.parse().ok()).unwrap_or(256)),
        other => {
            eprintln!("tensor-probe: unknown subcommand {other:?}");
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("tensor-probe: {e}");
        std::process::exit(1);
    }
}

/// Prints a tensor's shape and the bit patterns of its elements, one line per tensor.
fn show(name: &str, t: &Tensor) -> Result<(), Error> {
    let bits: Vec<String> = t.to_vec()?.iter().map(|x| format!("{:08x}", x.to_bits())).collect();
    println!("{name} {:?} {}", t.shape(), bits.join(","));
    Ok(())
}

/// Every op once, on small awkward inputs, results printed bit for bit.
fn ops() -> Result<(), Error> {
    let values: Vec<f32> = (0..30).map(|i| (i as f32 - 13.5) * 0.37).collect();
    let a = Tensor::from_slice(&values[..6], &[2, 3])?;
    let b = Tensor::from_slice(&values[6..18], &[3, 4])?;
    let row = Tensor::from_slice(&values[18..21], &[3])?;
    let x = Tensor::from_slice(&values, &[2, 3, 5])?;
    show("matmul", &a.matmul(&b)?)?;
    show("add", &(&a + &row)?)?;
    show("sub", &(&a - &row)?)?;
    show("mul", &(&a * &row)?)?;
    show("div", &(&a / &row)?)?;
    show("neg", &(-&a)?)?;
    show("relu", &x.relu()?)?;
    show("gelu", &x.gelu()?)?;
    show("sigmoid", &x.sigmoid()?)?;
    show("tanh", &x.tanh()?)?;
    show("exp", &x.exp()?)?;
    show("log", &x.relu()?.log()?)?;
    show("sqrt", &x.sqrt()?)?;
    show("softmax", &x.softmax()?)?;
    let gamma = Tensor::from_slice(&values[..5], &[5])?;
    let beta = Tensor::from_slice(&values[5..10], &[5])?;
    show("layer_norm", &x.layer_norm(&gamma, &beta, 1e-5)?)?;
    show("rms_norm", &x.rms_norm(&gamma, 1e-6)?)?;
    show("sum", &x.sum(1, false)?)?;
    show("mean", &x.mean(-1, true)?)?;
    show("max", &x.max(0, false)?)?;
    show("permute", &x.permute(&[2, 0, 1])?)?;
    show("reshape", &x.reshape(&[5, 6])?)?;
    show("slice", &x.slice(2, 1, 4)?)?;
    show("concat", &Tensor::concat(&[&a, &a], 0)?)?;
    let ids = Tensor::from_i32(&[2, 0, 1, 2], &[2, 2])?;
    show("gather", &b.gather(&ids)?)?;
    let image = Tensor::from_slice(&values[..25], &[1, 1, 5, 5])?;
    let kernel = Tensor::from_slice(&values[3..21], &[2, 1, 3, 3])?;
    let bias = Tensor::from_slice(&[0.5, -0.5], &[2])?;
    show("conv2d", &image.conv2d(&kernel, Some(&bias), (2, 2), (1, 1))?)?;
    Ok(())
}

/// Allocates until the tensor memory quota says no, and handles it.
fn quota_bytes() -> Result<(), Error> {
    let block = vec![1.0f32; 1024];
    let mut held = Vec::new();
    loop {
        match Tensor::from_slice(&block, &[1024]) {
            Ok(t) => held.push(t),
            Err(e @ Error::TensorMemoryQuota { .. }) => {
                println!("quota after {} tensors: {e}", held.len());
                break;
            }
            Err(e) => return Err(e),
        }
    }
    // Freeing gives the memory back.
    held.clear();
    Tensor::from_slice(&block, &[1024])?;
    println!("allocated again after freeing");
    Ok(())
}

/// Creates tensors until the count quota says no.
fn quota_count() -> Result<(), Error> {
    let mut held = Vec::new();
    loop {
        match Tensor::scalar(1.0) {
            Ok(t) => held.push(t),
            Err(e @ Error::TensorCountQuota { .. }) => {
                println!("count quota after {} tensors: {e}", held.len());
                break;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Errors the job can handle come back as values, each with its code and the host's detail:
/// one line per call, `what: Some(Code): message` (`ok` for a call that succeeded).
fn errors() -> Result<(), Error> {
    fn report(what: &str, result: Result<Tensor, Error>) {
        match result {
            Ok(t) => println!("{what}: ok {:?}", t.shape()),
            Err(e) => println!("{what}: {:?}: {e}", e.code()),
        }
    }
    let a = Tensor::from_slice(&[1.0; 6], &[2, 3])?;
    let b = Tensor::from_slice(&[1.0; 6], &[2, 3])?;
    report("matmul 2x3 by 2x3", a.matmul(&b));
    let wide = Tensor::from_slice(&[0.5; 64 * 32], &[64, 32])?;
    let narrow = Tensor::from_slice(&[0.5; 16 * 4], &[16, 4])?;
    report("matmul 64x32 by 16x4", wide.matmul(&narrow));
    report("axis 5", a.sum(5, false));
    report("slice past end", a.slice(1, 2, 9));
    let ids = Tensor::from_i32(&[1, 7], &[2])?;
    report("gather out of range", a.gather(&ids));
    report("exp of i32", ids.exp());
    // A success in between leaves the host's last detail as it was; the next refusal replaces it.
    report("relu", a.relu());
    report("reshape 6 to 4", a.reshape(&[4]));
    // A detail longer than the SDK's first buffer (256 bytes) is fetched again, whole.
    let long = a.permute(&[u32::MAX as usize; 64]).err().map(|e| e.detail().to_string()).unwrap_or_default();
    println!("long detail: {} bytes, ends {:?}", long.len(), &long[long.len().saturating_sub(12)..]);
    // The SDK's own checks speak the same way.
    report("transpose of a vector", ids.transpose());
    println!("to_vec of i32: {:?}", ids.to_vec().err().map(|e| e.to_string()));
    Ok(())
}

/// A chain of N dependent ops, for trace and fuel tests.
fn chain(n: usize) -> Result<(), Error> {
    let mut x = Tensor::from_slice(&[0.5; 64], &[8, 8])?;
    for _ in 0..n {
        x = x.matmul(&x)?.tanh()?;
    }
    show("chain", &x)?;
    Ok(())
}

/// A job dominated by matmuls, for measuring verification: `n` layers of `x = tanh(x @ w)` with
/// `size` x `size` matrices (one weight reused, so the job holds few tensors).
fn matmuls(n: usize, size: usize) -> Result<(), Error> {
    let values: Vec<f32> = (0..size * size).map(|i| ((i * 7919 % 1000) as f32 - 500.0) / (500.0 * size as f32).sqrt()).collect();
    let w = Tensor::from_slice(&values, &[size, size])?;
    let mut x = Tensor::from_slice(&values, &[size, size])?;
    for _ in 0..n {
        x = x.matmul(&w)?.tanh()?;
    }
    check("matmuls", &x)?;
    Ok(())
}

/// A checksum of a tensor's shape and element bits, printed one line per result: enough to show
/// any difference in a few bytes of stdout (the receipt's trace hashes every tensor anyway).
fn check(name: &str, t: &Tensor) -> Result<(), Error> {
    let mut sum = 0xcbf29ce484222325u64;
    for bits in t.to_vec()?.iter().map(|x| x.to_bits()) {
        sum = (sum ^ u64::from(bits)).wrapping_mul(0x100000001b3);
    }
    println!("{name} {:?} {sum:016x}", t.shape());
    Ok(())
}

/// `n` values cycling through the awkward ones (NaN, infinities, -0, subnormals, the largest and
/// smallest normals) and ordinary ones of both signs.
fn awkward(n: usize, salt: usize) -> Vec<f32> {
    let special = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1.0e-45, -1.1e-38, f32::MAX, f32::MIN_POSITIVE, 88.7, -104.0, 9.5, -9.6];
    (0..n)
        .map(|i| {
            let k = i * 7 + salt * 13;
            if k.is_multiple_of(5) { special[(k / 5) % special.len()] } else { ((k % 37) as f32 - 18.0) * 0.173 }
        })
        .collect()
}

/// Every op over edge sizes (around the SIMD widths and block sizes of the kernels) with NaN,
/// infinities, -0 and subnormals among the inputs: what must give the same bits on every CPU.
fn edges() -> Result<(), Error> {
    for n in [1usize, 7, 8, 9, 15, 16, 17, 31, 33, 64, 65, 257] {
        let v = Tensor::from_slice(&awkward(n, 1), &[n])?;
        let m = Tensor::from_slice(&awkward(3 * n, 2), &[3, n])?;
        for (name, t) in [
            ("neg", -&m),
            ("relu", m.relu()),
            ("gelu", m.gelu()),
            ("sigmoid", m.sigmoid()),
            ("tanh", m.tanh()),
            ("exp", m.exp()),
            ("log", m.log()),
            ("sqrt", m.sqrt()),
        ] {
            check(&format!("{name}[3,{n}]"), &t?)?;
        }
        for (name, t) in [("add", &m + &v), ("sub", &m - &v), ("mul", &m * &v), ("div", &m / &v)] {
            check(&format!("{name}[3,{n}]+[{n}]"), &t?)?;
        }
        check(&format!("softmax[3,{n}]"), &m.softmax()?)?;
        check(&format!("layer_norm[3,{n}]"), &m.layer_norm(&v, &v, 1e-5)?)?;
        check(&format!("rms_norm[3,{n}]"), &m.rms_norm(&v, 1e-6)?)?;
        for axis in [0, 1] {
            check(&format!("sum[3,{n}]@{axis}"), &m.sum(axis, false)?)?;
            check(&format!("mean[3,{n}]@{axis}"), &m.mean(axis, true)?)?;
            check(&format!("max[3,{n}]@{axis}"), &m.max(axis, false)?)?;
        }
        check(&format!("permute[3,{n}]"), &m.permute(&[1, 0])?)?;
        check(&format!("slice[3,{n}]"), &m.slice(1, n / 3, n)?)?;
        check(&format!("concat[3,{n}]"), &Tensor::concat(&[&m, &m, &m], 1)?)?;
    }
    // Matmuls whose sizes straddle the kernels' register and cache blocks, with and without
    // specials in the operands.
    for (index, (m, k, n)) in [(1, 1, 1), (7, 9, 17), (16, 16, 16), (33, 65, 31), (64, 64, 64), (65, 127, 33), (130, 70, 9)].into_iter().enumerate() {
        let a = Tensor::from_slice(&awkward(m * k, index), &[m, k])?;
        let ordinary: Vec<f32> = (0..k * n).map(|i| ((i * 31 % 97) as f32 - 48.0) * 0.021).collect();
        let b = Tensor::from_slice(&ordinary, &[k, n])?;
        check(&format!("matmul[{m},{k}]x[{k},{n}]"), &a.matmul(&b)?)?;
        check(&format!("matmul_plain[{k},{n}]T"), &b.permute(&[1, 0])?.matmul(&b)?)?;
    }
    let batched = Tensor::from_slice(&awkward(2 * 5 * 9, 3), &[2, 5, 9])?;
    let right = Tensor::from_slice(&awkward(9 * 17, 4), &[9, 17])?;
    check("matmul[2,5,9]x[9,17]", &batched.matmul(&right)?)?;
    for (stride, pad, size) in [((1, 1), (0, 0), 5), ((2, 2), (1, 1), 9), ((1, 2), (2, 0), 17), ((3, 1), (1, 2), 33)] {
        let image = Tensor::from_slice(&awkward(2 * 3 * size * size, 5), &[2, 3, size, size])?;
        let kernel = Tensor::from_slice(&awkward(4 * 3 * 3 * 3, 6), &[4, 3, 3, 3])?;
        let bias = Tensor::from_slice(&awkward(4, 7), &[4])?;
        check(&format!("conv2d[2,3,{size},{size}] s{stride:?} p{pad:?}"), &image.conv2d(&kernel, Some(&bias), stride, pad)?)?;
    }
    let table = Tensor::from_slice(&awkward(10 * 7, 8), &[10, 7])?;
    let ids = Tensor::from_i32(&[9, 0, 3, 3, 1, 8], &[3, 2])?;
    check("gather[10,7]", &table.gather(&ids)?)?;
    check("reshape", &table.reshape(&[7, 10])?)?;
    Ok(())
}
