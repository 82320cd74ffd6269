//! The service's core, below HTTP: tenants, the bounded queue, the worker pool, running jobs
//! and recording how they ended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use tokio::sync::{Notify, Semaphore, watch};

use crate::blobs::{BlobStore, PendingBlobs};
use crate::config::ServiceConfig;
use crate::db::{JobDb, JobRecord, JobResult, JobState, Recovered, now_ms};
use crate::error::ServiceError;
use crate::events::{EventHook, JobEvent, JobEventKind, no_events};
use crate::metrics::{Gauges, Metrics};
use crate::remote::{RemoteJob, RemoteOutcome, RemoteRunner, RunResults};
use crate::wire::JobStatus;
use gridbox_core::digest::Digest;
use gridbox_core::engine::JobEngine;
use gridbox_core::errors::error_chain;
use gridbox_core::job::{Job, Outcome, RunError, RunOptions};
use gridbox_core::manifest::{Manifest, ResolvedManifest};
use gridbox_core::receipt::Receipt;
use gridbox_core::trace_file;

mod evidence;
mod live;

use live::{Attempt, Execution, LiveJob, Queue, new_job_id, stored_status};

/// What one collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs left with no owner by expiry.
    pub candidates: usize,
    /// Blob files deleted.
    pub deleted: usize,
}

/// How many times an attempt may fail for the provider's reasons before the job is failed.
const MAX_HOST_FAULTS: u32 = 3;

/// How long a job whose attempt failed for the provider's reasons waits before it is queued again.
const HOST_FAULT_BACKOFF: Duration = Duration::from_secs(1);

/// After the grace period, how long stopped jobs get to unwind before shutdown returns anyway.
const CANCEL_GRACE: Duration = Duration::from_secs(10);

/// The provider service: one per data folder.
pub struct Service {
    config: ServiceConfig,
    engine: JobEngine,
    blobs: Arc<BlobStore>,
    db: JobDb,
    key: SigningKey,
    tokens: Vec<(blake3::Hash, String)>,
    queue: Mutex<Queue>,
    /// See [`Service::gc_guard`].
    gc_lock: tokio::sync::RwLock<()>,
    /// Wakes idle workers: a job was queued, a tenant's slot freed, or the service is stopping.
    work_ready: Notify,
    /// Wakes [`Service::shutdown`] when a run ends.
    run_ended: Notify,
    stopping: AtomicBool,
    stop_signal: watch::Sender<bool>,
    next_seq: AtomicU64,
    failure: Mutex<Option<String>>,
    /// Told of every job event (see [`crate::events`]).
    events: EventHook,
    /// Counters and histograms.
    pub metrics: Metrics,
    /// Kept tensors (spot-check evidence), one folder per tenant: see [`evidence`].
    tensors_dir: std::path::PathBuf,
    /// Where jobs run when not here: a gateway's market (see [`crate::remote`]).
    runner: Option<Arc<dyn RemoteRunner>>,
}

/// Results waiting to be stored, per worker (see [`Service::work`]). Storing waits on the disk
/// for a few milliseconds; this many let a worker keep running tiny jobs meanwhile.
const STORING_PER_WORKER: u32 = 64;

/// Bytes of results waiting to be stored, per worker, in KiB: the count above must not let
/// large outputs pile up in memory.
const STORING_KIB_PER_WORKER: u32 = 256 << 10;

impl Service {
    /// Opens the service over `data`, queueing again every job a previous process left
    /// unfinished. Job events are dropped: see [`Service::open_with_events`].
    pub fn open(config: ServiceConfig, engine: JobEngine, data: &std::path::Path, key: SigningKey) -> Result<Arc<Self>, ServiceError> {
        Self::open_with_events(config, engine, data, key, no_events())
    }

    /// [`Service::open`], telling `events` of every job event from here on: jobs recovered or
    /// given up on at this start included.
    pub fn open_with_events(
        config: ServiceConfig,
        engine: JobEngine,
        data: &std::path::Path,
        key: SigningKey,
        events: EventHook,
    ) -> Result<Arc<Self>, ServiceError> {
        Self::open_with_runner(config, engine, data, key, events, None)
    }

    /// [`Service::open_with_events`], running jobs through `runner` instead of this process's
    /// workers when one is given (a gateway: `engine` and `key` then run and sign nothing).
    pub fn open_with_runner(
        config: ServiceConfig,
        engine: JobEngine,
        data: &std::path::Path,
        key: SigningKey,
        events: EventHook,
        runner: Option<Arc<dyn RemoteRunner>>,
    ) -> Result<Arc<Self>, ServiceError> {
        std::fs::create_dir_all(data).map_err(|source| ServiceError::DataFolder { path: data.to_path_buf(), source })?;
        // The database first: its file lock keeps a second server off this folder before the
        // blob store clears `tmp/`.
        let (db, recovered) =
            JobDb::open(&data.join("jobs.redb"), config.serve.retention_ms(), &|digest| crate::blobs::stored_size(data, digest).unwrap_or(0))?;
        let blobs = Arc::new(BlobStore::open(data)?);
        let Recovered { unfinished, finished, given_up, next_seq } = recovered;
        for record in &given_up {
            let result = record.result.as_ref();
            let kind = JobEventKind::Ended { state: record.state, outcome: None, reason: result.and_then(|r| r.reason.as_deref()), fuel_used: 0, wall_ms: 0 };
            events(&JobEvent { at_ms: now_ms(), job: &record.id, tenant: &record.tenant, kind });
        }
        let metrics = Metrics::default();
        metrics.succeeded.store(finished.get("succeeded").copied().unwrap_or(0), Ordering::Relaxed);
        metrics.failed.store(finished.get("failed").copied().unwrap_or(0), Ordering::Relaxed);
        let tokens = config.tenants.iter().map(|t| (blake3::hash(t.token.as_bytes()), t.name.clone())).collect();
        let service = Arc::new(Service {
            config,
            engine,
            blobs,
            db,
            key,
            tokens,
            queue: Mutex::new(Queue::default()),
            gc_lock: tokio::sync::RwLock::new(()),
            work_ready: Notify::new(),
            run_ended: Notify::new(),
            stopping: AtomicBool::new(false),
            stop_signal: watch::channel(false).0,
            next_seq: AtomicU64::new(next_seq),
            failure: Mutex::new(None),
            events,
            metrics,
            tensors_dir: data.join("tensors"),
            runner,
        });
        let mut recovered = Vec::with_capacity(unfinished.len());
        {
            let mut queue = service.lock();
            for record in unfinished {
                let mut live = LiveJob::new(record);
                live.recovered = true;
                let live = Arc::new(live);
                queue.push(live.clone());
                recovered.push(live);
            }
        }
        // Reported with the queue unlocked: a hook must never run under the service's lock.
        for live in &recovered {
            service.report(&live.record, JobEventKind::Recovered);
        }
        Ok(service)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the event hook that `kind` happened to the job of `record`, now. Never call it
    /// with the queue locked.
    fn report(&self, record: &JobRecord, kind: JobEventKind<'_>) {
        (self.events)(&JobEvent { at_ms: now_ms(), job: &record.id, tenant: &record.tenant, kind });
    }

    /// The settings.
    pub fn config(&self) -> &ServiceConfig {
        &self.config
    }

    /// The blob store.
    pub fn blobs(&self) -> &Arc<BlobStore> {
        &self.blobs
    }

    /// Jobs waiting to run (including those recovered at start).
    pub fn queued(&self) -> usize {
        self.lock().waiting.len()
    }

    /// The tenant whose bearer token this is.
    pub fn authenticate(&self, token: &str) -> Option<&str> {
        // Compare hashes, whose equality is constant-time, rather than the tokens themselves.
        let hash = blake3::hash(token.as_bytes());
        self.tokens.iter().find(|(known, _)| *known == hash).map(|(_, name)| name.as_str())
    }

    /// A receiver that turns true when the service starts stopping.
    pub fn stop_signal(&self) -> watch::Receiver<bool> {
        self.stop_signal.subscribe()
    }

    /// Whether `tenant` may read `blob`.
    pub fn can_read(&self, tenant: &str, blob: &Digest) -> Result<bool, ServiceError> {
        Ok(self.db.owns(tenant, blob)?)
    }

    /// Records that `tenant` uploaded `blob` of `size` bytes, within its storage quota.
    pub async fn add_owner(&self, tenant: &str, blob: Digest, size: u64) -> Result<(), ServiceError> {
        let quota = self.config.serve.tenant_storage_bytes;
        match self.db.own(tenant, blob, size, quota).await? {
            true => Ok(()),
            false => Err(ServiceError::StorageQuota { quota, used: self.db.usage(tenant)? }),
        }
    }

    /// Bytes `tenant` holds, and its quota.
    pub fn usage(&self, tenant: &str) -> Result<(u64, u64), ServiceError> {
        Ok((self.db.usage(tenant)?, self.config.serve.tenant_storage_bytes))
    }

    /// Keeps `tenant`'s ended job for good (it never expires).
    pub async fn keep(&self, tenant: &str, id: &str) -> Result<JobStatus, ServiceError> {
        if !self.db.keep(tenant, id).await? {
            return Err(self.not_ended(tenant, id));
        }
        self.status(tenant, id, Duration::ZERO).await
    }

    /// Deletes `tenant`'s ended job: its record now, its results once nothing else holds them.
    pub async fn forget(&self, tenant: &str, id: &str) -> Result<(), ServiceError> {
        if !self.db.forget(tenant, id).await? {
            return Err(self.not_ended(tenant, id));
        }
        Ok(())
    }

    /// Gives up `tenant`'s upload of `blob`: it stays readable while a job result of the
    /// tenant names it.
    pub async fn disown(&self, tenant: &str, blob: Digest) -> Result<(), ServiceError> {
        match self.db.disown(tenant, blob).await? {
            true => Ok(()),
            false => Err(ServiceError::BlobNotFound(blob)),
        }
    }

    /// Why a keep or a delete was refused: no such job, or it has not ended.
    fn not_ended(&self, tenant: &str, id: &str) -> ServiceError {
        match self.snapshot(id) {
            Ok(Some((status, owner, _))) if owner == tenant && !status.state.is_final() => ServiceError::NotEnded(id.to_string()),
            Ok(_) => ServiceError::JobNotFound(id.to_string()),
            Err(e) => e,
        }
    }

    /// One collection: expires what outlived the retention time and deletes the blobs nothing
    /// holds any more. Uploads and result storing wait while files are deleted.
    pub async fn collect_garbage(self: &Arc<Self>) -> Result<GcReport, ServiceError> {
        let mut report = GcReport::default();
        loop {
            let service = self.clone();
            let expiry = tokio::task::spawn_blocking(move || service.db.expire(now_ms(), 1000)).await??;
            let (more, orphans) = (expiry.more, expiry.orphans);
            for (id, tenant) in &expiry.jobs {
                (self.events)(&JobEvent { at_ms: now_ms(), job: id, tenant, kind: JobEventKind::Expired });
            }
            report.candidates += orphans.len();
            if !orphans.is_empty() {
                let _exclusive = self.gc_lock.write().await;
                let service = self.clone();
                let deleted = tokio::task::spawn_blocking(move || -> Result<usize, ServiceError> {
                    let mut deleted = 0;
                    for blob in service.db.collectable(&orphans)? {
                        deleted += usize::from(service.blobs.delete(&blob)?);
                    }
                    Ok(deleted)
                })
                .await??;
                report.deleted += deleted;
            }
            if !more {
                break;
            }
        }
        let service = self.clone();
        tokio::task::spawn_blocking(move || service.expire_tensors()).await?;
        self.metrics.gc_deleted.fetch_add(report.deleted as u64, Ordering::Relaxed);
        Ok(report)
    }

    /// Held (shared) by anything that places blobs and then records who owns them; collection
    /// holds it alone while it deletes files.
    pub fn gc_guard(&self) -> &tokio::sync::RwLock<()> {
        &self.gc_lock
    }

    /// Runs [`Service::collect_garbage`] every `gc_interval_s` until the service stops.
    pub fn start_collector(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let service = self.clone();
        tokio::spawn(async move {
            let mut stop = service.stop_signal();
            let interval = Duration::from_secs(service.config.serve.gc_interval_s);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = stop.wait_for(|stopping| *stopping) => return,
                }
                if let Err(e) = service.collect_garbage().await {
                    eprintln!("gridbox: collecting expired jobs and blobs failed: {}", error_chain(&e));
                }
            }
        })
    }

    /// Accepts a job: checks the manifest against the policy and the tenant's blobs, stores it
    /// durably and queues it.
    pub async fn submit(self: &Arc<Self>, tenant: &str, manifest_text: &str) -> Result<JobStatus, ServiceError> {
        let manifest = Manifest::from_toml(manifest_text)?;
        let resolved = manifest.resolve(&self.config.policy)?;
        let wanted = std::iter::once(("module".to_string(), resolved.manifest().module))
            .chain(resolved.manifest().inputs.iter().map(|(name, digest)| (format!("input {name:?}"), *digest)));
        let mut uses = Vec::new();
        for (what, digest) in wanted {
            if !self.can_read(tenant, &digest)? {
                return Err(ServiceError::BlobNotUploaded { what, digest });
            }
            uses.push((digest, self.blobs.size(&digest).unwrap_or(0)));
        }
        let (used, quota) = self.usage(tenant)?;
        if used >= quota {
            return Err(ServiceError::StorageQuota { quota, used });
        }
        self.reserve_slot(tenant)?;
        let record = JobRecord {
            id: new_job_id(),
            tenant: tenant.to_string(),
            seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
            state: JobState::Queued,
            manifest: resolved.text().to_string(),
            submitted_at_ms: now_ms(),
            starts: 0,
            result: None,
            kept: false,
        };
        // Storing and queueing run in their own task: if the client goes away or the request
        // times out meanwhile, the job is still queued (it is durable) and the slot accounted for.
        let service = self.clone();
        let queued = tokio::spawn(async move {
            let stored = service.db.insert(record.clone(), uses).await;
            if stored.is_ok() {
                // Durable now; said before it is queued, so that its `started` never comes first.
                service.report(&record, JobEventKind::Accepted);
            }
            let mut queue = service.lock();
            queue.reserved -= 1;
            if let Err(e) = stored {
                Queue::count(&mut queue.queued_by_tenant, &record.tenant, false);
                drop(queue);
                service.fail(format!("the job database cannot store a submission: {e}"));
                return Err(ServiceError::Database(e));
            }
            Queue::count(&mut queue.queued_by_tenant, &record.tenant, false); // `push` counts it again
            let live = Arc::new(LiveJob::new(record));
            queue.push(live.clone());
            drop(queue);
            service.metrics.submitted.fetch_add(1, Ordering::Relaxed);
            service.work_ready.notify_one();
            Ok(live.status())
        });
        queued.await?
    }

    /// Takes a queue slot for `tenant`, or says why there is none.
    fn reserve_slot(&self, tenant: &str) -> Result<(), ServiceError> {
        let serve = &self.config.serve;
        let mut queue = self.lock();
        if self.stopping.load(Ordering::Relaxed) {
            return Err(ServiceError::ShuttingDown);
        }
        if queue.waiting.len() + queue.reserved >= serve.max_queued {
            return Err(ServiceError::QueueFull { limit: serve.max_queued, retry_after_s: serve.retry_after_s });
        }
        if queue.queued_by_tenant.get(tenant).copied().unwrap_or(0) >= serve.max_queued_per_tenant {
            return Err(ServiceError::TenantQueueFull { limit: serve.max_queued_per_tenant, retry_after_s: serve.retry_after_s });
        }
        queue.reserved += 1;
        Queue::count(&mut queue.queued_by_tenant, tenant, true);
        Ok(())
    }

    /// The job's status, if `tenant` submitted it. With `wait`, holds the answer until the
    /// job ends, the wait is over or the service stops.
    pub async fn status(&self, tenant: &str, id: &str, wait: Duration) -> Result<JobStatus, ServiceError> {
        let live = self.lock().live.get(id).cloned();
        if let Some(live) = live
            && live.record.tenant == tenant
            && !wait.is_zero()
        {
            let mut phase = live.phase.subscribe();
            let mut stop = self.stop_signal();
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = phase.wait_for(|state| state.is_final()) => {}
                _ = stop.wait_for(|stopping| *stopping) => {}
            }
        }
        match self.snapshot(id)? {
            Some((mut status, owner, _)) if owner == tenant => {
                if let Some(runner) = &self.runner
                    && let Some(receipt) = status.receipt
                {
                    status.verdict = runner.verdict(id, &receipt.blake3).await;
                }
                Ok(status)
            }
            _ => Err(ServiceError::JobNotFound(id.to_string())),
        }
    }

    /// The job's status now, its tenant and its sequence number: from its live state while it
    /// has not ended, from the database once it has.
    fn snapshot(&self, id: &str) -> Result<Option<(JobStatus, String, u64)>, ServiceError> {
        let live = self.lock().live.get(id).cloned();
        if let Some(live) = live
            && !live.phase.borrow().is_final()
        {
            return Ok(Some((live.status(), live.record.tenant.clone(), live.record.seq)));
        }
        let record = self.db.get(id)?;
        Ok(record.map(|record| (stored_status(&record, self.db.expires_at(&record)), record.tenant, record.seq)))
    }

    /// `tenant`'s jobs, newest first: at most `limit`, submitted before the sequence number
    /// `before`. Also returns the cursor for the next page, if there may be one.
    pub fn list(&self, tenant: &str, before: Option<u64>, limit: usize) -> Result<(Vec<JobStatus>, Option<u64>), ServiceError> {
        let ids = self.db.tenant_jobs(tenant, before.unwrap_or(u64::MAX), limit)?;
        let mut jobs = Vec::with_capacity(ids.len());
        let mut last_seq = None;
        for id in &ids {
            if let Some((status, _, seq)) = self.snapshot(id)? {
                jobs.push(status);
                last_seq = Some(seq);
            }
        }
        let next = if ids.len() == limit { last_seq } else { None };
        Ok((jobs, next))
    }

    /// The job's receipt, once it has one.
    pub async fn receipt(&self, tenant: &str, id: &str) -> Result<Vec<u8>, ServiceError> {
        let status = self.status(tenant, id, Duration::ZERO).await?;
        let Some(receipt) = status.receipt else {
            return Err(ServiceError::NoReceipt { id: id.to_string(), ended: status.state.is_final() });
        };
        self.read_blob(receipt.blake3).await
    }

    /// Reads a blob, checking its hash, off the async threads.
    pub async fn read_blob(&self, digest: Digest) -> Result<Vec<u8>, ServiceError> {
        let blobs = self.blobs.clone();
        Ok(tokio::task::spawn_blocking(move || blobs.read(&digest)).await??)
    }

    /// Opens a blob for streaming, checking its hash first, off the async threads.
    pub async fn open_blob(&self, digest: Digest) -> Result<(std::fs::File, u64), ServiceError> {
        let blobs = self.blobs.clone();
        Ok(tokio::task::spawn_blocking(move || blobs.open_checked(&digest)).await??)
    }

    /// Gauges for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let (queued, running) = {
            let queue = self.lock();
            (queue.waiting.len() as u64, queue.running as u64)
        };
        let mut text = self.metrics.render(&Gauges { queued, running, blob_bytes: self.blobs.stored_bytes(), workers: self.workers() as u64 });
        if let Some(runner) = &self.runner {
            text.push_str(&runner.render_metrics());
        }
        text
    }

    /// Workers: jobs run at once here, or a gateway's jobs handed to the market at once.
    fn workers(&self) -> usize {
        if self.runner.is_some() { self.config.fleet.in_flight } else { self.config.serve.workers }
    }

    /// Starts the worker pool on the current tokio runtime.
    pub fn start_workers(self: &Arc<Self>) -> Vec<tokio::task::JoinHandle<()>> {
        (0..self.workers()).map(|_| tokio::spawn(self.clone().work())).collect()
    }

    /// One worker: runs a job, hands its results to a storing task and takes the next job, so
    /// that waiting for fsync never holds a CPU slot. At most [`STORING_PER_WORKER`] results and
    /// [`STORING_KIB_PER_WORKER`] KiB per worker wait to be stored.
    async fn work(self: Arc<Self>) {
        let storing = Arc::new(Semaphore::new(STORING_PER_WORKER as usize));
        let storing_kib = Arc::new(Semaphore::new(STORING_KIB_PER_WORKER as usize));
        while let Some(live) = self.next_job().await {
            let waited_ms = live.started_at_ms.load(Ordering::Relaxed).saturating_sub(live.record.submitted_at_ms);
            self.report(&live.record, JobEventKind::Started { waited_ms });
            // Only recovered jobs count their starts: a job that brings the server down comes
            // back as a recovered job, so its starts are counted from the first restart on, and
            // a healthy server pays nothing per job for the guard.
            // A gateway runs no job itself, so no job can bring it down: it counts nothing.
            if live.recovered
                && self.runner.is_none()
                && !live.start_noted.swap(true, Ordering::Relaxed)
                && let Err(e) = self.db.started(&live.record.id).await
            {
                // Without the count, a job that brings the server down could do so forever.
                self.fail(format!("the job database cannot note the start of job {}: {e}", live.record.id));
                self.end_run(&live, Attempt::Stopped).await;
                continue;
            }
            let executed = match &self.runner {
                Some(runner) => Ok(self.execute_remote(runner.as_ref(), &live).await),
                None => {
                    let (service, job) = (self.clone(), live.clone());
                    tokio::task::spawn_blocking(move || service.execute(&job)).await
                }
            };
            let kib = match &executed {
                Ok(Execution::Ran(results)) => u32::try_from(results.size().div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, STORING_KIB_PER_WORKER),
                _ => 1,
            };
            let (Ok(permit), Ok(kib_permit)) = (storing.clone().acquire_owned().await, storing_kib.clone().acquire_many_owned(kib).await) else {
                return;
            };
            let service = self.clone();
            tokio::spawn(async move {
                // Collection deletes no file while results are being placed and recorded.
                let collector = service.clone();
                let _placing = collector.gc_lock.read().await;
                let attempt = match executed {
                    Ok(execution) => {
                        let (store, job) = (service.clone(), live.clone());
                        match tokio::task::spawn_blocking(move || store.stage(&job, execution)).await {
                            // The job's end is recorded only once the blobs it names are durable.
                            Ok((attempt, pending)) => Ok(match pending.durable().await {
                                Ok(()) => attempt,
                                // A failed sync cannot be retried safely: stop, a restart recovers.
                                Err(e) => {
                                    service.fail(format!("the blob store cannot make results durable: {e}"));
                                    Attempt::Stopped
                                }
                            }),
                            Err(panic) => Err(panic),
                        }
                    }
                    Err(panic) => Err(panic),
                };
                let attempt = attempt.unwrap_or_else(|panic| {
                    // A bug in gridbox, not the job's doing; record it rather than lose the job.
                    Attempt::Ended(JobState::Failed, JobResult::without_run(0, format!("internal error while running the job: {panic}")))
                });
                service.end_run(&live, attempt).await;
                drop((permit, kib_permit));
            });
        }
    }

    /// Takes the oldest waiting job whose tenant is below its cap on running jobs; None once
    /// the service is stopping.
    async fn next_job(&self) -> Option<Arc<LiveJob>> {
        loop {
            let notified = self.work_ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut queue = self.lock();
                if self.stopping.load(Ordering::Relaxed) {
                    return None;
                }
                let cap = self.config.serve.max_running_per_tenant;
                let position = {
                    let running = &queue.running_by_tenant;
                    queue.waiting.iter().position(|job| running.get(&job.record.tenant).copied().unwrap_or(0) < cap)
                };
                if let Some(live) = position.and_then(|index| queue.waiting.remove(index)) {
                    Queue::count(&mut queue.queued_by_tenant, &live.record.tenant, false);
                    queue.running += 1;
                    *queue.running_by_tenant.entry(live.record.tenant.clone()).or_default() += 1;
                    live.started_at_ms.store(now_ms(), Ordering::Relaxed);
                    live.phase.send_replace(JobState::Running);
                    if !queue.waiting.is_empty() {
                        // Another worker may be able to take the next one.
                        self.work_ready.notify_one();
                    }
                    return Some(live);
                }
            }
            notified.await;
        }
    }

    /// Runs the job once, on a blocking thread.
    fn execute(&self, live: &LiveJob) -> Execution {
        let started = Instant::now();
        let refuse = |reason: String| Execution::Refused(reason);
        let resolved = match ResolvedManifest::from_canonical_text(&live.record.manifest) {
            Ok(resolved) => resolved,
            Err(e) => return refuse(format!("the stored manifest is unreadable: {}", error_chain(&e))),
        };
        // The blobs were there when the job was accepted: failing to read them is the provider's
        // fault (disk, damage), never the job's.
        let module = match self.blobs.read(&resolved.manifest().module) {
            Ok(bytes) => Arc::from(bytes),
            Err(e) => return Execution::HostFault(format!("module: {}", error_chain(&e))),
        };
        let mut inputs = BTreeMap::new();
        for (name, digest) in &resolved.manifest().inputs {
            match self.blobs.read(digest) {
                Ok(bytes) => _ = inputs.insert(name.clone(), Arc::from(bytes)),
                Err(e) => return Execution::HostFault(format!("input {name:?}: {}", error_chain(&e))),
            }
        }
        let job = match Job::new(module, resolved, inputs) {
            Ok(job) => job,
            Err(e) => return refuse(error_chain(&e)),
        };
        // The log is kept for spot checks; entries are bounded by fuel (spec/trace.md).
        let keeper = self.tensor_keeper(&live.record.tenant);
        let keep_tensors = keeper.clone().map(|k| k as Arc<dyn gridbox_compute::TensorKeeper>);
        let options = RunOptions { monitor: Some(live.monitor.clone()), keep_trace_log: true, keep_tensors, ..RunOptions::default() };
        let ran = self.engine.run(&job, options);
        if let Some(keeper) = keeper {
            self.tensors_kept(&live.record.tenant, &keeper);
        }
        let run = match ran {
            Ok(run) => run,
            Err(RunError::Cancelled) => return Execution::Stopped,
            Err(e) if e.is_provider_fault() => return Execution::HostFault(error_chain(&e)),
            Err(e) => return refuse(format!("refused: {}", error_chain(&e))),
        };
        self.metrics.run_seconds.observe(started.elapsed().as_secs_f64());
        self.metrics.fuel.observe(run.fuel_used as f64);
        let receipt = Receipt::sign(&job, &run, &self.engine.backend().name(), &self.key);
        let trace = run.trace_log.entries().filter(|entries| !entries.is_empty()).map(trace_file::encode);
        let succeeded = run.outcome == (Outcome::Exited { code: 0 });
        let reason = (!succeeded).then(|| failure_reason(&run.outcome.to_string(), run.detail.as_deref()));
        Execution::Ran(Box::new(RunResults {
            receipt: receipt.to_canonical_json(),
            stdout: run.stdout,
            stderr: run.stderr,
            outputs: run.outputs,
            trace,
            fuel_used: run.fuel_used,
            outcome: run.outcome.to_string(),
            succeeded,
            reason,
            started_at_ms: None,
        }))
    }

    /// Hands the job to the remote runner and waits for its end.
    async fn execute_remote(&self, runner: &dyn RemoteRunner, live: &LiveJob) -> Execution {
        let resolved = match ResolvedManifest::from_canonical_text(&live.record.manifest) {
            Ok(resolved) => resolved,
            Err(e) => return Execution::Refused(format!("the stored manifest is unreadable: {}", error_chain(&e))),
        };
        let manifest = resolved.manifest();
        let job = RemoteJob { id: live.record.id.clone(), manifest: live.record.manifest.clone(), module: manifest.module, inputs: manifest.inputs.clone() };
        match runner.run(job, &self.blobs, self.stop_signal()).await {
            RemoteOutcome::Ran(results) => {
                self.metrics.fuel.observe(results.fuel_used as f64);
                Execution::Ran(results)
            }
            RemoteOutcome::Refused(reason) => Execution::Refused(reason),
            RemoteOutcome::HostFault(reason) => Execution::HostFault(reason),
            _ => Execution::Stopped,
        }
    }

    /// Writes a run's results as blobs (on a blocking thread) and hands them to the blob
    /// committer; the attempt stands once [`PendingBlobs::durable`] says so.
    fn stage(&self, live: &LiveJob, execution: Execution) -> (Attempt, PendingBlobs) {
        let started_at_ms = live.started_at_ms.load(Ordering::Relaxed);
        let nothing = || PendingBlobs::default();
        let run = match execution {
            Execution::Stopped => return (Attempt::Stopped, nothing()),
            Execution::HostFault(reason) => return (Attempt::HostFault(reason), nothing()),
            Execution::Refused(reason) => return (Attempt::Ended(JobState::Failed, JobResult::without_run(started_at_ms, reason)), nothing()),
            Execution::Ran(results) => results,
        };
        let started_at_ms = run.started_at_ms.unwrap_or(started_at_ms);
        let mut blobs: Vec<&[u8]> = vec![&run.stdout, &run.stderr, &run.receipt];
        blobs.extend(run.outputs.values().map(Vec::as_slice));
        blobs.extend(run.trace.as_deref());
        let stored = self.blobs.stage(&blobs).map(|(pending, refs)| {
            // `refs` follows `blobs`: stdout, stderr, receipt, the outputs in order, the trace.
            let (fixed, rest) = refs.split_at(3);
            let (outputs, trace_ref) = rest.split_at(run.outputs.len());
            let result = JobResult {
                started_at_ms,
                finished_at_ms: now_ms(),
                fuel_used: run.fuel_used,
                outcome: Some(run.outcome.clone()),
                reason: run.reason.clone(),
                stdout: Some(fixed[0]),
                stderr: Some(fixed[1]),
                outputs: run.outputs.keys().cloned().zip(outputs.iter().copied()).collect(),
                receipt: Some(fixed[2]),
                trace: trace_ref.first().copied(),
            };
            (pending, result)
        });
        match stored {
            Ok((pending, result)) if run.succeeded => (Attempt::Ended(JobState::Succeeded, result), pending),
            Ok((pending, result)) => (Attempt::Ended(JobState::Failed, result), pending),
            Err(e) => (Attempt::HostFault(format!("cannot store the job's results: {e}")), nothing()),
        }
    }

    async fn end_run(self: &Arc<Self>, live: &Arc<LiveJob>, attempt: Attempt) {
        let id = &live.record.id;
        let attempt = match attempt {
            Attempt::HostFault(reason) => {
                let tries = live.host_faults.fetch_add(1, Ordering::Relaxed) + 1;
                if tries >= MAX_HOST_FAULTS {
                    let started_at_ms = live.started_at_ms.load(Ordering::Relaxed);
                    let reason = format!("the provider failed to run it {MAX_HOST_FAULTS} times; the last time: {reason}");
                    Attempt::Ended(JobState::Failed, JobResult::without_run(started_at_ms, reason))
                } else {
                    self.report(&live.record, JobEventKind::Requeued { reason: &reason, tries, max_tries: MAX_HOST_FAULTS });
                    Attempt::HostFault(reason)
                }
            }
            other => other,
        };
        enum Next {
            Ended(JobState),
            Requeue,
            /// Left for the next start (shutdown, or a job database that failed).
            Stay,
        }
        let next = match attempt {
            Attempt::Ended(state, result) => {
                // Kept for the event: the database takes the record.
                let (fuel_used, wall_ms, outcome, reason) = (result.fuel_used, wall_ms(&result), result.outcome.clone(), result.reason.clone());
                let mut record = live.record.clone();
                record.state = state;
                record.result = Some(result);
                match self.db.finish(record).await {
                    Ok(true) => {
                        let counter = if state == JobState::Succeeded { &self.metrics.succeeded } else { &self.metrics.failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                        let kind = JobEventKind::Ended { state, outcome: outcome.as_deref(), reason: reason.as_deref(), fuel_used, wall_ms };
                        self.report(&live.record, kind);
                        Next::Ended(state)
                    }
                    // It had ended already (cannot happen while one process owns the data
                    // folder); the stored end stands.
                    Ok(false) => Next::Ended(self.db.get(id).ok().flatten().map(|r| r.state).unwrap_or(state)),
                    // A database that cannot commit refuses every later write too (redb wants
                    // reopening): stop, so that a restart recovers every unfinished job.
                    Err(e) => {
                        self.fail(format!("the job database cannot record the end of job {id}: {e}"));
                        Next::Stay
                    }
                }
            }
            Attempt::HostFault(_) => Next::Requeue,
            Attempt::Stopped => Next::Stay,
        };
        let mut queue = self.lock();
        queue.running = queue.running.saturating_sub(1);
        if let Some(count) = queue.running_by_tenant.get_mut(&live.record.tenant) {
            *count = count.saturating_sub(1);
        }
        match next {
            Next::Ended(state) => {
                queue.live.remove(id);
                live.phase.send_replace(state);
            }
            Next::Stay => {
                live.phase.send_replace(JobState::Queued);
            }
            Next::Requeue => {
                live.phase.send_replace(JobState::Queued);
                let (service, live) = (self.clone(), live.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(HOST_FAULT_BACKOFF).await;
                    if !service.stopping.load(Ordering::Relaxed) {
                        service.lock().push(live);
                        service.work_ready.notify_one();
                    }
                });
            }
        }
        drop(queue);
        self.work_ready.notify_one();
        self.run_ended.notify_waiters();
    }

    /// Stops the service for a fault it cannot work around; [`Service::failure`] says which.
    pub fn fail(&self, reason: String) {
        eprintln!("gridbox: stopping: {reason}; unfinished jobs run again at the next start");
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        failure.get_or_insert(reason);
        drop(failure);
        self.begin_shutdown();
    }

    /// Why the service stopped itself, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Stops accepting jobs and ends waiting status requests; workers stop taking jobs.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        self.stop_signal.send_replace(true);
        self.work_ready.notify_waiters();
    }

    /// Stops taking jobs, gives running ones `grace` to finish, then stops the rest; they stay
    /// queued in the database and run at the next start.
    pub async fn shutdown(&self, grace: Duration) {
        self.begin_shutdown();
        let deadline = tokio::time::Instant::now() + grace;
        let mut cancelled = false;
        loop {
            let ended = self.run_ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let running: Vec<Arc<LiveJob>> = {
                let queue = self.lock();
                queue.live.values().filter(|job| *job.phase.borrow() == JobState::Running).cloned().collect()
            };
            if running.is_empty() {
                return;
            }
            let now = tokio::time::Instant::now();
            if !cancelled && now >= deadline {
                eprintln!("gridbox: stopping {} job(s) still running after the grace period; they run again at the next start", running.len());
                for job in &running {
                    job.monitor.cancel();
                }
                cancelled = true;
            }
            if cancelled && now >= deadline + CANCEL_GRACE {
                // A job stuck in a host call or still compiling: it is durable and queued; go.
                eprintln!("gridbox: {} job(s) did not stop; they run again at the next start", running.len());
                return;
            }
            let _ = tokio::time::timeout_at(deadline.max(now + Duration::from_millis(50)), ended).await;
        }
    }
}

/// Why a run that did not exit with code 0 failed: its outcome and the first line of its detail.
pub fn failure_reason(outcome: &str, detail: Option<&str>) -> String {
    match detail {
        Some(detail) => format!("{outcome}: {}", detail.lines().next().unwrap_or_default()),
        None => outcome.to_string(),
    }
}

/// How long a job's last attempt took, start to end; 0 for a job that never started.
fn wall_ms(result: &JobResult) -> u64 {
    if result.started_at_ms == 0 { 0 } else { result.finished_at_ms.saturating_sub(result.started_at_ms) }
}
