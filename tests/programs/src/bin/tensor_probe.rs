//! A test job for the tensor bridge, one scenario per subcommand:
//! `tensor-probe ops | quota-bytes | quota-count | errors | chain N`.

use gridbox_sdk::{Error, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str).unwrap_or("ops") {
        "ops" => ops(),
        "quota-bytes" => quota_bytes(),
        "quota-count" => quota_count(),
        "errors" => errors(),
        "chain" => chain(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10)),
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
            Err(Error::TensorMemoryQuota) => break,
            Err(e) => return Err(e),
        }
    }
    println!("quota after {} tensors", held.len());
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
            Err(Error::TensorCountQuota) => break,
            Err(e) => return Err(e),
        }
    }
    println!("count quota after {} tensors", held.len());
    Ok(())
}

/// Errors the job can handle come back as values.
fn errors() -> Result<(), Error> {
    let a = Tensor::from_slice(&[1.0; 6], &[2, 3])?;
    let b = Tensor::from_slice(&[1.0; 6], &[2, 3])?;
    println!("matmul 2x3 by 2x3: {:?}", a.matmul(&b).err());
    println!("axis 5: {:?}", a.sum(5, false).err());
    println!("slice past end: {:?}", a.slice(1, 2, 9).err());
    let ids = Tensor::from_i32(&[7], &[1])?;
    println!("gather out of range: {:?}", a.gather(&ids).err());
    println!("exp of i32: {:?}", ids.exp().err());
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
