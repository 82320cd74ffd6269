//! Choosing the next token from logits: greedy (argmax on the bridge), or seeded sampling with
//! temperature, top-k and top-p in the job's own code. Both are deterministic: the job's
//! arithmetic is wasm's (IEEE 754, NaNs canonical) and its generator is seeded.

use gridbox_sdk::Tensor;

/// How the next token is chosen.
#[derive(Clone, Debug)]
pub struct Sampler {
    /// 0 for greedy.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0: all).
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities sum to at least p (1: all).
    pub top_p: f32,
    /// The generator's state (splitmix64).
    pub state: u64,
}

impl Sampler {
    /// The next token of `logits` (`[1, vocab]`).
    pub fn next(&mut self, logits: &Tensor) -> Result<u32, gridbox_sdk::Error> {
        if self.temperature <= 0.0 {
            let id = logits.argmax()?.to_vec_i32()?;
            return Ok(id.first().copied().unwrap_or(0).max(0) as u32);
        }
        let logits = logits.to_vec()?;
        Ok(self.sample(&logits))
    }

    fn sample(&mut self, logits: &[f32]) -> u32 {
        // Most likely first; ties by id, so the order never depends on the sort.
        let mut order: Vec<usize> = (0..logits.len()).filter(|&i| !logits[i].is_nan()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if self.top_k > 0 {
            order.truncate(self.top_k);
        }
        let Some(&best) = order.first() else { return 0 };
        let top = logits[best];
        let weights: Vec<f64> = order.iter().map(|&i| (f64::from(logits[i] - top) / f64::from(self.temperature)).exp()).collect();
        let total: f64 = weights.iter().sum();
        // Top-p: the shortest prefix whose probability reaches p.
        let mut kept = order.len();
        let mut mass = 0.0;
        for (n, w) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= f64::from(self.top_p) {
                kept = n + 1;
                break;
            }
        }
        let kept_total: f64 = weights[..kept].iter().sum();
        let mut target = self.uniform() * kept_total;
        for (n, w) in weights[..kept].iter().enumerate() {
            if target < *w {
                return order[n] as u32;
            }
            target -= w;
        }
        order[kept - 1] as u32
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}
