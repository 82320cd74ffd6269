//! The service's in-memory job state: jobs that have not ended, the queue, what one attempt
//! gave, and a job's status from its stored record. Apart from `service.rs` so that it stays
//! readable; nothing here touches the disk.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use crate::db::{JobRecord, JobResult, JobState};
use crate::remote::RunResults;
use crate::wire::JobStatus;
use gridbox_core::job::RunMonitor;

/// A job that has not ended yet, as the workers and status requests see it.
pub(super) struct LiveJob {
    pub(super) record: JobRecord,
    pub(super) monitor: Arc<RunMonitor>,
    /// 0 until a worker starts it.
    pub(super) started_at_ms: AtomicU64,
    /// Queued, running, then final.
    pub(super) phase: watch::Sender<JobState>,
    /// Found unfinished in the database at start: its starts are noted durably.
    pub(super) recovered: bool,
    /// Attempts that failed for the provider's reasons (disk, driver), not the job's.
    pub(super) host_faults: AtomicU32,
    /// Whether this process has noted a start of this (recovered) job: one per process.
    pub(super) start_noted: AtomicBool,
}

#[derive(Default)]
pub(super) struct Queue {
    pub(super) waiting: VecDeque<Arc<LiveJob>>,
    /// Slots taken by submissions still being written to the database.
    pub(super) reserved: usize,
    /// Waiting and reserved jobs by tenant.
    pub(super) queued_by_tenant: HashMap<String, usize>,
    pub(super) running: usize,
    pub(super) running_by_tenant: HashMap<String, usize>,
    pub(super) live: HashMap<String, Arc<LiveJob>>,
}

impl Queue {
    pub(super) fn count(map: &mut HashMap<String, usize>, tenant: &str, up: bool) {
        let count = map.entry(tenant.to_string()).or_default();
        *count = if up { *count + 1 } else { count.saturating_sub(1) };
    }

    /// Queues a job in its submission order (a retried job goes back to its place).
    pub(super) fn push(&mut self, live: Arc<LiveJob>) {
        Self::count(&mut self.queued_by_tenant, &live.record.tenant, true);
        live.phase.send_replace(JobState::Queued);
        self.live.insert(live.record.id.clone(), live.clone());
        let seq = live.record.seq;
        match self.waiting.back() {
            Some(last) if last.record.seq > seq => {
                let index = self.waiting.partition_point(|job| job.record.seq < seq);
                self.waiting.insert(index, live);
            }
            _ => self.waiting.push_back(live),
        }
    }
}

/// What running a job gave, before its results are stored.
pub(super) enum Execution {
    /// It ran to an outcome (here or elsewhere).
    Ran(Box<RunResults>),
    /// It could not run, for the job's reasons; the reason says why.
    Refused(String),
    /// It could not run or its results could not be stored, for the provider's reasons.
    HostFault(String),
    /// The service stopped it (shutdown).
    Stopped,
}

/// How one attempt at running a job ended.
#[allow(clippy::large_enum_variant)] // One per job, moved once: boxing would only add an allocation.
pub(super) enum Attempt {
    /// It ended (either way): record it.
    Ended(JobState, JobResult),
    /// The service stopped it (shutdown): it stays queued for the next start.
    Stopped,
    /// The provider failed (disk, driver): try again later, up to [`MAX_HOST_FAULTS`] times.
    HostFault(String),
}

impl LiveJob {
    pub(super) fn new(record: JobRecord) -> Self {
        LiveJob {
            record,
            monitor: Arc::new(RunMonitor::default()),
            started_at_ms: AtomicU64::new(0),
            phase: watch::channel(JobState::Queued).0,
            recovered: false,
            host_faults: AtomicU32::new(0),
            start_noted: AtomicBool::new(false),
        }
    }

    pub(super) fn status(&self) -> JobStatus {
        let started = self.started_at_ms.load(Ordering::Relaxed);
        let state = *self.phase.borrow();
        JobStatus {
            id: self.record.id.clone(),
            state,
            submitted_at_ms: self.record.submitted_at_ms,
            started_at_ms: (state == JobState::Running && started != 0).then_some(started),
            finished_at_ms: None,
            fuel_used: if state == JobState::Running { self.monitor.fuel_used() } else { 0 },
            outcome: None,
            reason: None,
            receipt: None,
            stdout: None,
            stderr: None,
            outputs: BTreeMap::new(),
            trace: None,
            kept: false,
            expires_at_ms: None,
            verdict: None,
        }
    }
}

pub(super) fn stored_status(record: &JobRecord, expires_at_ms: Option<u64>) -> JobStatus {
    let result = record.result.clone();
    let result = result.as_ref();
    JobStatus {
        id: record.id.clone(),
        state: record.state,
        submitted_at_ms: record.submitted_at_ms,
        started_at_ms: result.map(|r| r.started_at_ms),
        finished_at_ms: result.map(|r| r.finished_at_ms),
        fuel_used: result.map(|r| r.fuel_used).unwrap_or(0),
        outcome: result.and_then(|r| r.outcome.clone()),
        reason: result.and_then(|r| r.reason.clone()),
        receipt: result.and_then(|r| r.receipt),
        stdout: result.and_then(|r| r.stdout),
        stderr: result.and_then(|r| r.stderr),
        outputs: result.map(|r| r.outputs.clone()).unwrap_or_default(),
        trace: result.and_then(|r| r.trace),
        kept: record.kept,
        expires_at_ms,
        verdict: None,
    }
}

pub(super) fn new_job_id() -> String {
    let mut bytes = [0u8; 16];
    // The id only needs to be unguessable; if the OS has no randomness, hash the time instead.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        bytes.copy_from_slice(&blake3::hash(&nanos.to_le_bytes()).as_bytes()[..16]);
    }
    hex::encode(bytes)
}
