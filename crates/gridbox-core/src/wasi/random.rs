//! The job's random bytes: a BLAKE3 extendable output stream keyed by the job's hash.
//!
//! The stream is `BLAKE3-XOF(derive_key("gridbox 2026-11 random v1 " + purpose, manifest_hash ||
//! seed_le))`, read front to back. Anyone can recompute it, so replays see the same bytes.

use std::convert::Infallible;

use crate::digest::Digest;

/// A deterministic generator for one purpose (`secure` or `insecure`) of one job.
pub struct JobRandom {
    stream: blake3::OutputReader,
}

impl JobRandom {
    /// The stream for `purpose` of the job whose resolved manifest hashes to `job`.
    pub fn new(job: Digest, seed: u64, purpose: &str) -> Self {
        let mut hasher = blake3::Hasher::new_derive_key(&format!("gridbox 2026-11 random v1 {purpose}"));
        hasher.update(&job.0);
        hasher.update(&seed.to_le_bytes());
        JobRandom { stream: hasher.finalize_xof() }
    }

    /// The next 16 bytes as a number (what wasmtime-wasi takes as its hash-map seed).
    pub fn next_u128(&mut self) -> u128 {
        let mut bytes = [0u8; 16];
        self.stream.fill(&mut bytes);
        u128::from_le_bytes(bytes)
    }
}

impl rand_core::TryRng for JobRandom {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut bytes = [0u8; 4];
        self.stream.fill(&mut bytes);
        Ok(u32::from_le_bytes(bytes))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut bytes = [0u8; 8];
        self.stream.fill(&mut bytes);
        Ok(u64::from_le_bytes(bytes))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.stream.fill(dst);
        Ok(())
    }
}

impl rand_core::TryCryptoRng for JobRandom {}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::Rng;

    #[test]
    fn same_job_same_bytes_and_purposes_differ() {
        let job = Digest::of(b"job");
        let mut a = JobRandom::new(job, 0, "secure");
        let mut b = JobRandom::new(job, 0, "secure");
        let mut c = JobRandom::new(job, 0, "insecure");
        let mut d = JobRandom::new(job, 1, "secure");
        let (x, y, z, w) = (a.next_u64(), b.next_u64(), c.next_u64(), d.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert_ne!(x, w);
    }
}
