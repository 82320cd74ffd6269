//! One pre-norm transformer block, forward pass, on the tensor bridge: token embeddings
//! (`gather`) plus learned positions, causal multi-head self-attention and a GELU MLP, each
//! behind a layer norm with a residual connection, then a final RMS norm.
//!
//! Build and run it (from the repository root):
//!
//! ```sh
//! cargo build --release --manifest-path examples/Cargo.toml
//! gridbox run examples/target/wasm32-wasip1/release/transformer.wasm --capability tensor \
//!     --dir examples/transformer/data::/input --out out
//! gridbox verify out/receipt.json --module examples/target/wasm32-wasip1/release/transformer.wasm \
//!     --dir examples/transformer/data::/input
//! ```
//!
//! The weights are random, drawn from a fixed seed by the job itself, so the model is small and
//! self-contained; tokens come from `/input/tokens.txt` (whitespace-separated ids below 100).
//! Outputs: `/output/hidden.bin` (the final `[seq, d_model]` activations, little-endian f32)
//! and `/output/summary.txt`.

use std::error::Error;

use gridbox_sdk::Tensor;

const VOCAB: usize = 100;
const SEQ: usize = 16;
const D_MODEL: usize = 64;
const HEADS: usize = 4;
const HEAD_DIM: usize = D_MODEL / HEADS;
const HIDDEN: usize = 256;
const EPS: f32 = 1e-5;

fn main() {
    if let Err(e) = run() {
        eprintln!("transformer: {e}");
        std::process::exit(1);
    }
}

/// splitmix64: the job's own generator, so the weights are the same everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-scale, scale).
    fn uniform(&mut self, scale: f32) -> f32 {
        let unit = (self.next() >> 40) as f32 / (1u64 << 24) as f32;
        (2.0 * unit - 1.0) * scale
    }

    /// A tensor of `shape` with entries uniform in +-1/sqrt(fan_in).
    fn tensor(&mut self, shape: &[usize], fan_in: usize) -> Result<Tensor, gridbox_sdk::Error> {
        let scale = 1.0 / (fan_in as f32).sqrt();
        let values: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| self.uniform(scale)).collect();
        Tensor::from_slice(&values, shape)
    }
}

/// A linear layer `x W + b`.
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn new(rng: &mut Rng, inputs: usize, outputs: usize) -> Result<Self, gridbox_sdk::Error> {
        Ok(Linear { weight: rng.tensor(&[inputs, outputs], inputs)?, bias: rng.tensor(&[outputs], inputs)? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, gridbox_sdk::Error> {
        &x.matmul(&self.weight)? + &self.bias
    }
}

/// Layer-norm parameters.
struct Norm {
    gamma: Tensor,
    beta: Tensor,
}

impl Norm {
    fn new() -> Result<Self, gridbox_sdk::Error> {
        Ok(Norm { gamma: Tensor::from_slice(&[1.0; D_MODEL], &[D_MODEL])?, beta: Tensor::from_slice(&[0.0; D_MODEL], &[D_MODEL])? })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor, gridbox_sdk::Error> {
        x.layer_norm(&self.gamma, &self.beta, EPS)
    }
}

fn tokens() -> Result<Vec<i32>, Box<dyn Error>> {
    let text = match std::fs::read_to_string("/input/tokens.txt") {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0..SEQ as i32).collect()),
        Err(e) => return Err(format!("cannot read /input/tokens.txt: {e}").into()),
    };
    let ids: Vec<i32> = text
        .split_whitespace()
        .map(|word| match word.parse::<i32>() {
            Ok(id) if (0..VOCAB as i32).contains(&id) => Ok(id),
            _ => Err(format!("/input/tokens.txt: {word:?} is not a token id in 0..{VOCAB}")),
        })
        .collect::<Result<_, _>>()?;
    if ids.len() != SEQ {
        return Err(format!("/input/tokens.txt holds {} tokens; this model takes exactly {SEQ}", ids.len()).into());
    }
    Ok(ids)
}

/// Causal multi-head self-attention.
fn attention(x: &Tensor, qkv: &Linear, out: &Linear, mask: &Tensor) -> Result<Tensor, gridbox_sdk::Error> {
    // One fused projection, split with slice; heads split with reshape + permute: [H, S, Dh].
    let fused = qkv.forward(x)?;
    let heads = |index: usize| -> Result<Tensor, gridbox_sdk::Error> {
        fused.slice(-1, index * D_MODEL, (index + 1) * D_MODEL)?.reshape(&[SEQ, HEADS, HEAD_DIM])?.permute(&[1, 0, 2])
    };
    let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
    let scale = Tensor::scalar(1.0 / (HEAD_DIM as f32).sqrt())?;
    let scores = (&(&q.matmul(&k.transpose()?)? * &scale)? + mask)?;
    let context = scores.softmax()?.matmul(&v)?; // [H, S, Dh]
    let merged = context.permute(&[1, 0, 2])?.reshape(&[SEQ, D_MODEL])?;
    out.forward(&merged)
}

fn run() -> Result<(), Box<dyn Error>> {
    let ids = tokens()?;
    let mut rng = Rng(0x0067_7269_6462_6f78); // "gridbox"
    let embedding = rng.tensor(&[VOCAB, D_MODEL], D_MODEL)?;
    let positions = rng.tensor(&[SEQ, D_MODEL], D_MODEL)?;
    let (norm1, norm2) = (Norm::new()?, Norm::new()?);
    let qkv = Linear::new(&mut rng, D_MODEL, 3 * D_MODEL)?;
    let projection = Linear::new(&mut rng, D_MODEL, D_MODEL)?;
    let up = Linear::new(&mut rng, D_MODEL, HIDDEN)?;
    let down = Linear::new(&mut rng, HIDDEN, D_MODEL)?;
    let final_gamma = Tensor::from_slice(&[1.0; D_MODEL], &[D_MODEL])?;
    let mask_values: Vec<f32> = (0..SEQ * SEQ).map(|i| if i % SEQ > i / SEQ { -1e9 } else { 0.0 }).collect();
    let mask = Tensor::from_slice(&mask_values, &[SEQ, SEQ])?;

    let x = (&embedding.gather(&Tensor::from_i32(&ids, &[SEQ])?)? + &positions)?;
    let h = (&x + &attention(&norm1.forward(&x)?, &qkv, &projection, &mask)?)?;
    let mlp = down.forward(&up.forward(&norm2.forward(&h)?)?.gelu()?)?;
    let y = (&h + &mlp)?.rms_norm(&final_gamma, EPS)?;

    let values = y.to_vec()?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err("the block produced a non-finite activation".into());
    }
    let mean = y.mean(-1, false)?.mean(0, false)?.to_vec()?;
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write("/output/hidden.bin", &bytes).map_err(|e| format!("cannot write /output/hidden.bin: {e}"))?;
    let last = &values[(SEQ - 1) * D_MODEL..(SEQ - 1) * D_MODEL + 8];
    let summary =
        format!("tokens {ids:?}\noutput shape {:?}\nmean {:.6}\nlast position, first 8: {last:?}\n", y.shape(), mean.first().copied().unwrap_or(f32::NAN));
    std::fs::write("/output/summary.txt", &summary).map_err(|e| format!("cannot write /output/summary.txt: {e}"))?;
    print!("{summary}");
    Ok(())
}
