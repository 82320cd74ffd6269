//! Counters and histograms for `GET /metrics`, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A histogram with fixed upper bounds.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum: Mutex<f64>,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum: Mutex::new(0.0) }
    }

    /// Records one observation.
    pub fn observe(&self, value: f64) {
        let bucket = self.bounds.iter().position(|bound| value <= *bound).unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        *self.sum.lock().unwrap_or_else(|e| e.into_inner()) += value;
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (index, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            match self.bounds.get(index) {
                Some(bound) => _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}"),
                None => _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}"),
            }
        }
        let sum = *self.sum.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// The service's metrics.
pub struct Metrics {
    /// Jobs accepted since start.
    pub submitted: AtomicU64,
    /// Jobs that ended succeeded, including those found in the database at start.
    pub succeeded: AtomicU64,
    /// Jobs that ended failed, likewise.
    pub failed: AtomicU64,
    /// Run time of each run, in seconds.
    pub run_seconds: Histogram,
    /// Fuel each run consumed.
    pub fuel: Histogram,
    /// Blob files deleted by collection since start.
    pub gc_deleted: AtomicU64,
    rejections: Mutex<BTreeMap<&'static str, u64>>,
}

/// The gauges that the service reads off its state when metrics are asked for.
pub struct Gauges {
    /// Jobs waiting.
    pub queued: u64,
    /// Jobs running.
    pub running: u64,
    /// Bytes held by blobs.
    pub blob_bytes: u64,
    /// Worker threads.
    pub workers: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        const SECONDS: &[f64] = &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0];
        const FUEL: &[f64] = &[1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12];
        Metrics {
            submitted: AtomicU64::new(0),
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            run_seconds: Histogram::new(SECONDS),
            fuel: Histogram::new(FUEL),
            gc_deleted: AtomicU64::new(0),
            rejections: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    /// Counts a request refused with error `code`.
    pub fn reject(&self, code: &'static str) {
        *self.rejections.lock().unwrap_or_else(|e| e.into_inner()).entry(code).or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# HELP gridbox_jobs Jobs by state (succeeded and failed count every job in the database).");
        let _ = writeln!(out, "# TYPE gridbox_jobs gauge");
        for (state, value) in [
            ("queued", gauges.queued),
            ("running", gauges.running),
            ("succeeded", self.succeeded.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
        ] {
            let _ = writeln!(out, "gridbox_jobs{{state=\"{state}\"}} {value}");
        }
        for (name, kind, help, value) in [
            ("gridbox_queue_depth", "gauge", "Jobs waiting for a worker.", gauges.queued),
            ("gridbox_workers", "gauge", "Jobs that can run at once.", gauges.workers),
            ("gridbox_blob_bytes_stored", "gauge", "Bytes held by the blob store.", gauges.blob_bytes),
            ("gridbox_jobs_submitted_total", "counter", "Jobs accepted since the service started.", self.submitted.load(Ordering::Relaxed)),
            ("gridbox_blobs_collected_total", "counter", "Blob files deleted because nothing held them any more.", self.gc_deleted.load(Ordering::Relaxed)),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        }
        self.run_seconds.render(&mut out, "gridbox_job_run_seconds", "Wall time of each job run.");
        self.fuel.render(&mut out, "gridbox_job_fuel", "Fuel consumed by each job run.");
        let _ = writeln!(out, "# HELP gridbox_rejections_total Requests refused, by error code.\n# TYPE gridbox_rejections_total counter");
        for (code, count) in self.rejections.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "gridbox_rejections_total{{reason=\"{code}\"}} {count}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let metrics = Metrics::default();
        metrics.run_seconds.observe(0.002);
        metrics.run_seconds.observe(1000.0);
        metrics.reject("queue_full");
        metrics.reject("queue_full");
        let text = metrics.render(&Gauges { queued: 3, running: 1, blob_bytes: 10, workers: 2 });
        assert!(text.contains("gridbox_jobs{state=\"queued\"} 3\n"), "{text}");
        assert!(text.contains("gridbox_job_run_seconds_bucket{le=\"0.001\"} 0\n"), "{text}");
        assert!(text.contains("gridbox_job_run_seconds_bucket{le=\"0.005\"} 1\n"), "{text}");
        assert!(text.contains("gridbox_job_run_seconds_bucket{le=\"+Inf\"} 2\n"), "{text}");
        assert!(text.contains("gridbox_job_run_seconds_count 2\n"), "{text}");
        assert!(text.contains("gridbox_rejections_total{reason=\"queue_full\"} 2\n"), "{text}");
    }
}
