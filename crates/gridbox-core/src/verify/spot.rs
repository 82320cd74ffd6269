//! Spot checks (`gridbox spot-check`; spec/trace.md, "Spot checks"): instead of replaying a
//! job, a verifier checks K entries of its trace log chosen at random, each as `check-op` does.
//! A provider that falsified some ops escapes only if none of them is drawn; the probability of
//! that is what [`escape_probability`] states.

/// A small seeded generator (SplitMix64): the draw must be reproducible from its seed (a
/// verifier states the seed so that anyone can redo the same check), and it needs no more.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Starts from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (`bound > 0`), without modulo bias (rejection).
    pub fn below(&mut self, bound: u64) -> u64 {
        let zone = u64::MAX - u64::MAX % bound;
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % bound;
            }
        }
    }
}

/// `k` distinct entry indices of a log of `n` entries, drawn uniformly with `seed`, ascending
/// (all of them when `k >= n`). Floyd's algorithm: `k` draws, whatever `n` is.
pub fn sample_indices(n: u64, k: u64, seed: u64) -> Vec<u64> {
    if k >= n {
        return (0..n).collect();
    }
    let mut rng = SplitMix64::new(seed);
    let mut chosen = std::collections::BTreeSet::new();
    for j in n - k..n {
        let t = rng.below(j + 1);
        if !chosen.insert(t) {
            chosen.insert(j);
        }
    }
    chosen.into_iter().collect()
}

/// The probability that `k` distinct samples of a log of `n` entries miss every falsified entry
/// when a fraction `f` of them were falsified: exact (hypergeometric) with `ceil(f * n)`
/// falsified entries, `prod_{i<k} (n - m - i) / (n - i)`. It is at most `(1 - f)^k`, the
/// figure for sampling with replacement, which [`escape_bound`] gives.
pub fn escape_probability(n: u64, k: u64, f: f64) -> f64 {
    if n == 0 {
        return 1.0;
    }
    let m = (f * n as f64).ceil() as u64;
    let k = k.min(n);
    let mut p = 1.0;
    for i in 0..k {
        if n - i <= m {
            return 0.0;
        }
        p *= (n - m - i) as f64 / (n - i) as f64;
    }
    p
}

/// `(1 - f)^k`: the escape probability when samples are drawn with replacement, an upper bound
/// on [`escape_probability`] that does not depend on the log's length.
pub fn escape_bound(k: u64, f: f64) -> f64 {
    (1.0 - f).powi(i32::try_from(k).unwrap_or(i32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_distinct_in_range_and_reproducible() {
        for seed in 0..50 {
            let s = sample_indices(100, 30, seed);
            assert_eq!(s.len(), 30);
            assert!(s.windows(2).all(|w| w[0] < w[1]) && s[29] < 100);
            assert_eq!(s, sample_indices(100, 30, seed));
        }
        assert_ne!(sample_indices(1000, 30, 1), sample_indices(1000, 30, 2));
        assert_eq!(sample_indices(5, 30, 1), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn escape_is_hypergeometric_and_below_the_bound() {
        assert_eq!(escape_probability(10, 10, 0.1), 0.0);
        assert!((escape_probability(10, 1, 0.1) - 0.9).abs() < 1e-12);
        let exact = escape_probability(1000, 30, 0.1);
        assert!(exact < escape_bound(30, 0.1) && exact > 0.03, "{exact}");
    }
}
