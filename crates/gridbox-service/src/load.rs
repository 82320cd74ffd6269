//! `gridbox load`: submits many tiny jobs to a server from concurrent clients and reports
//! throughput and latency. A load tool, not a test: figures depend on the machine.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Client, ClientError};
use crate::wire::JobState;
use gridbox_core::digest::Digest;
use gridbox_core::manifest::Manifest;

/// The tiny job: `_start` returns at once. Its text form is [`TINY_JOB_WAT`]; a test checks
/// that the two agree.
pub const TINY_JOB_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
    0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
    0x05, 0x03, 0x01, 0x00, 0x01, // memory section: one memory, 1 page
    0x07, 0x13, 0x02, // export section: two exports
    0x06, b'_', b's', b't', b'a', b'r', b't', 0x00, 0x00, // "_start" -> func 0
    0x06, b'm', b'e', b'm', b'o', b'r', b'y', 0x02, 0x00, // "memory" -> memory 0
    0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: an empty body
];

/// [`TINY_JOB_WASM`] in the text format.
pub const TINY_JOB_WAT: &str = r#"(module (func (export "_start")) (memory (export "memory") 1))"#;

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Jobs that ended succeeded.
    pub succeeded: usize,
    /// Jobs that ended any other way.
    pub failed: usize,
    /// Submissions the server refused with 429 (each was retried).
    pub throttled: usize,
    /// From the first submission to the last job's end.
    pub elapsed: Duration,
    /// Submit-to-end latency of each job, sorted.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// Jobs ended per second.
    pub fn jobs_per_second(&self) -> f64 {
        (self.succeeded + self.failed) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The latency at quantile `q` (0 to 1).
    pub fn latency(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[index.min(self.latencies.len() - 1)]
    }
}

/// Uploads the tiny job, then runs `jobs` of it (each with its own seed, so every receipt
/// differs) from `concurrency` clients, each submitting and waiting for the end in turn.
pub async fn run(client: &Client, jobs: usize, concurrency: usize) -> Result<LoadReport, ClientError> {
    client.ensure_blob(&bytes::Bytes::from_static(TINY_JOB_WASM)).await?;
    // Seeds differ from any earlier run's, so every job is new to the server: a repeated job
    // would give a receipt the server already stores, and cost it no write.
    let base = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next) = (client.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = (Vec::new(), 0usize, 0usize, 0usize);
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= jobs {
                    return Ok::<_, ClientError>(mine);
                }
                let mut manifest = Manifest::new(Digest::of(TINY_JOB_WASM));
                manifest.seed = base.wrapping_add(index as u64);
                let text = toml::to_string(&manifest).unwrap_or_default();
                let begun = Instant::now();
                let mut status = loop {
                    match client.submit(&text).await {
                        Ok(status) => break status,
                        Err(ClientError::Api { status: 429, .. }) => {
                            // A load tool keeps the queue full: it retries sooner than Retry-After asks.
                            mine.3 += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(error) => return Err(error),
                    }
                };
                while !status.state.is_final() {
                    status = client.status(&status.id, Duration::from_secs(20)).await?;
                }
                mine.0.push(begun.elapsed());
                if status.state == JobState::Succeeded {
                    mine.1 += 1;
                } else {
                    mine.2 += 1;
                }
            }
        }));
    }
    let mut report = LoadReport { succeeded: 0, failed: 0, throttled: 0, elapsed: Duration::ZERO, latencies: Vec::new() };
    for task in tasks {
        let (latencies, succeeded, failed, throttled) = task.await??;
        report.latencies.extend(latencies);
        report.succeeded += succeeded;
        report.failed += failed;
        report.throttled += throttled;
    }
    report.elapsed = started.elapsed();
    report.latencies.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tiny_job_is_its_text() {
        assert_eq!(wat::parse_str(TINY_JOB_WAT).unwrap(), TINY_JOB_WASM);
    }
}
