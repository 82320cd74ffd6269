//! The job's random bytes: a BLAKE3 extendable output stream keyed by the job's hash.
//!
//! The stream is `BLAKE3-XOF(derive_key("gridbox 2026-11 random v1 " + purpose, manifest_hash ||
//! seed_le))`, read front to back. Anyone can recompute it, so replays see the same bytes.

use crate::digest::Digest;

/// A deterministic generator for one purpose of one job (`random_get` reads the `secure` one).
#[derive(Clone)]
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

    /// Fills `out` with the stream's next bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        self.stream.fill(out);
    }

    /// The next 8 bytes, as a little-endian number.
    pub fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.stream.fill(&mut bytes);
        u64::from_le_bytes(bytes)
    }
}

impl std::fmt::Debug for JobRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The stream's position is not worth printing.
        f.write_str("JobRandom")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A known answer, computed independently (Python's `blake3` package), so that the stream
    /// a receipt depends on cannot drift: `derive_key("gridbox 2026-11 random v1 secure",
    /// BLAKE3("test job") || 0u64le)`, first 16 bytes.
    #[test]
    fn the_stream_matches_an_independent_blake3() {
        let mut stream = JobRandom::new(Digest::of(b"test job"), 0, "secure");
        let mut bytes = [0u8; 16];
        stream.fill(&mut bytes);
        assert_eq!(hex::encode(bytes), "7b6fce98c6ec635ca0fbf9c92fe524e7");
    }

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
