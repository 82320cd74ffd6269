//! An MLP classifier on the tensor bridge: weights from `/input/weights.safetensors`, a batch of
//! points from `/input/points.safetensors`, predictions to `/output/predictions.csv`.
//!
//! Build and run it (from the repository root; `examples/mlp/train.py` made the data):
//!
//! ```sh
//! cargo build --release --manifest-path examples/Cargo.toml
//! gridbox run examples/target/wasm32-wasip1/release/mlp.wasm --capability tensor \
//!     --dir examples/mlp/data::/input --out out
//! gridbox verify out/receipt.json --module examples/target/wasm32-wasip1/release/mlp.wasm \
//!     --dir examples/mlp/data::/input
//! ```
//!
//! The network is Linear(2, 32) - ReLU - Linear(32, 32) - ReLU - Linear(32, 3) - softmax; the
//! argmax is taken here in the job.

use std::error::Error;
use std::fmt::Write as _;

use gridbox_sdk::Tensor;
use safetensors::{Dtype, SafeTensors};

fn main() {
    if let Err(e) = run() {
        eprintln!("mlp: {e}");
        std::process::exit(1);
    }
}

/// A tensor named `name` from a safetensors file, with its shape, as the SDK's tensor.
fn load(file: &SafeTensors<'_>, path: &str, name: &str) -> Result<Tensor, Box<dyn Error>> {
    let view = file.tensor(name).map_err(|e| format!("{path}: no tensor {name:?}: {e}"))?;
    match view.dtype() {
        Dtype::F32 => {
            let values: Vec<f32> = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Ok(Tensor::from_slice(&values, view.shape())?)
        }
        Dtype::I32 => {
            let values: Vec<i32> = view.data().chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Ok(Tensor::from_i32(&values, view.shape())?)
        }
        other => Err(format!("{path}: tensor {name:?} is {other:?}; expected F32 or I32").into()),
    }
}

fn read(path: &str) -> Result<Vec<u8>, Box<dyn Error>> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}").into())
}

fn run() -> Result<(), Box<dyn Error>> {
    let (weights_path, points_path) = ("/input/weights.safetensors", "/input/points.safetensors");
    let weights_bytes = read(weights_path)?;
    let points_bytes = read(points_path)?;
    let weights = SafeTensors::deserialize(&weights_bytes).map_err(|e| format!("{weights_path}: {e}"))?;
    let points = SafeTensors::deserialize(&points_bytes).map_err(|e| format!("{points_path}: {e}"))?;

    let x = load(&points, points_path, "x")?;
    let labels = load(&points, points_path, "y")?.to_vec_i32()?;
    let mut h = x;
    for layer in 1..=3 {
        let w = load(&weights, weights_path, &format!("w{layer}"))?;
        let b = load(&weights, weights_path, &format!("b{layer}"))?;
        h = (&h.matmul(&w)? + &b)?;
        if layer < 3 {
            h = h.relu()?;
        }
    }
    let probabilities = h.softmax()?;
    let [rows, classes] = probabilities.shape() else {
        return Err(format!("expected [batch, classes] probabilities, got {:?}", probabilities.shape()).into());
    };
    let (rows, classes) = (*rows, *classes);
    if labels.len() != rows {
        return Err(format!("{points_path}: {} labels for {rows} points", labels.len()).into());
    }
    let values = probabilities.to_vec()?;

    let mut csv = String::from("index,predicted,true,probability\n");
    let mut correct = 0;
    for (index, row) in values.chunks(classes).enumerate() {
        // The first maximum wins ties, so the choice is as deterministic as the values.
        let (predicted, p) = row.iter().enumerate().fold((0, f32::NEG_INFINITY), |best, (i, &p)| if p > best.1 { (i, p) } else { best });
        correct += usize::from(predicted as i32 == labels[index]);
        writeln!(csv, "{index},{predicted},{},{p:.6}", labels[index])?;
    }
    std::fs::write("/output/predictions.csv", csv).map_err(|e| format!("cannot write /output/predictions.csv: {e}"))?;
    println!("{rows} points, {classes} classes: {correct} correct, accuracy {:.4}", correct as f64 / rows as f64);
    for line in std::fs::read_to_string("/output/predictions.csv")?.lines().take(4) {
        println!("  {line}");
    }
    Ok(())
}
