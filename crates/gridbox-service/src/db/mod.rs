//! The job database: an embedded redb file, `DATA/jobs.redb`.
//!
//! Tables: `jobs` (id -> JSON [`JobRecord`]), `queue` (sequence number -> id, every job not yet
//! finished, in submission order), `starts` (id -> how many times an unfinished job was
//! started), `tenant_jobs` ((tenant, sequence number) -> id, for listing), and the ownership
//! tables of [`ownership`] (who may read which blob, each tenant's usage, what expires when).
//!
//! All writes go through one writer thread that commits whatever has arrived in one
//! transaction (group commit): each caller still waits for a durable commit, but a burst of
//! submissions or completions shares one fsync. A job's "running" state is never written:
//! after a crash every unfinished job is queued again, which is right because jobs are
//! deterministic.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::oneshot;

use gridbox_core::digest::{BlobRef, Digest};
use gridbox_core::manifest::ResolvedManifest;

mod ownership;

use ownership::{Change, ENDED, OWNERS, Owners, ROWS, USAGE};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const QUEUE: TableDefinition<u64, &str> = TableDefinition::new("queue");
/// Before gridbox 0.2: `(tenant, hash) -> ()`, read once to make [`OWNERS`] rows, then dropped.
const OLD_BLOB_OWNERS: TableDefinition<(&str, &str), ()> = TableDefinition::new("blob_owners");
const STARTS: TableDefinition<&str, u32> = TableDefinition::new("starts");
const TENANT_JOBS: TableDefinition<(&str, u64), &str> = TableDefinition::new("tenant_jobs");

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 1024;

/// A job that was running when the server stopped this many times is failed at the next start
/// rather than run again: it may be what brings the server down. Starts are counted for jobs
/// found unfinished at a start (a job that brings the server down is one of them after the first
/// time), so such a job runs at most `MAX_STARTS + 1` times.
pub const MAX_STARTS: u32 = 3;

/// The database failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// redb reported an error.
    #[error("job database: {0}")]
    Storage(#[source] redb::Error),
    /// A stored record does not parse (the file was damaged or written by another version).
    #[error("job database: record {id:?} is unreadable")]
    BadRecord {
        /// The job id.
        id: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The queue names a job the jobs table does not have (the file was damaged).
    #[error("job database: job {id:?} is queued but missing from the jobs table")]
    MissingRecord {
        /// The job id.
        id: String,
    },
    /// A record could not be encoded.
    #[error("job database: cannot encode the record of job {id:?}")]
    Encode {
        /// The job id.
        id: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The writer thread could not be started.
    #[error("job database: cannot start the writer thread")]
    Thread(#[source] std::io::Error),
    /// The writer thread is gone (the service is stopping).
    #[error("job database is closed")]
    Closed,
}

fn storage(error: impl Into<redb::Error>) -> DbError {
    DbError::Storage(error.into())
}

/// Where a job is in its life. `Running` is never stored (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Accepted, waiting for a worker.
    Queued,
    /// A worker is running it.
    Running,
    /// It ran and exited with status 0.
    Succeeded,
    /// It ended any other way; `reason` says how.
    Failed,
}

impl JobState {
    /// Whether the job has ended.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }

    /// The name used on the wire and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }
}

/// Everything stored about one job.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    /// The job id (32 hex digits, random).
    pub id: String,
    /// The tenant that submitted it.
    pub tenant: String,
    /// Submission order.
    pub seq: u64,
    /// `queued`, `succeeded` or `failed` when stored.
    pub state: JobState,
    /// The resolved manifest's canonical text (what the receipt will embed).
    pub manifest: String,
    /// When it was accepted, in milliseconds since the Unix epoch.
    pub submitted_at_ms: u64,
    /// How many times a worker started it (kept in the `starts` table while it is unfinished).
    #[serde(skip)]
    pub starts: u32,
    /// How it ended; present once the state is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// The tenant keeps it: it and its results never expire.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kept: bool,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct JobResult {
    /// When the (last) run started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
    /// When it ended.
    pub finished_at_ms: u64,
    /// Fuel the job consumed.
    pub fuel_used: u64,
    /// The outcome as the receipt states it (`exited with status 0`, `trapped: ...`, ...),
    /// absent when the job was refused before it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Why it failed, for people; absent when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The signed receipt, a blob; absent when the job was refused before it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<BlobRef>,
    /// The job's stdout, a blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<BlobRef>,
    /// The job's stderr, a blob.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<BlobRef>,
    /// Files under `/output`, as blobs.
    #[serde(default)]
    pub outputs: BTreeMap<String, BlobRef>,
    /// The job's trace log (trace.jsonl, spec/trace.md), a blob; absent when the job recorded
    /// no bridge calls (its manifest does not trace, or it made none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<BlobRef>,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl JobResult {
    /// The end of a job that did not run to an outcome (refused, or given up on), ending now.
    pub fn without_run(started_at_ms: u64, reason: String) -> Self {
        JobResult {
            started_at_ms,
            finished_at_ms: now_ms(),
            fuel_used: 0,
            outcome: None,
            reason: Some(reason),
            receipt: None,
            stdout: None,
            stderr: None,
            outputs: BTreeMap::new(),
            trace: None,
        }
    }

    /// Every blob the result names.
    pub fn blobs(&self) -> impl Iterator<Item = &BlobRef> {
        self.receipt.iter().chain(self.stdout.iter()).chain(self.stderr.iter()).chain(self.outputs.values()).chain(self.trace.iter())
    }
}

enum Write {
    /// A new job, queued, and the blobs it reads (their rows live on).
    Insert { record: JobRecord, uses: Vec<(Digest, u64)> },
    /// A worker started the job.
    Started(String),
    /// A job's end; refused (Ok(false)) when it had ended already.
    Finish(JobRecord),
    /// A tenant uploaded a blob: refused (Ok(false)) when a new row would take it past `quota`.
    Own { tenant: String, blob: Digest, size: u64, quota: u64 },
    /// The tenant keeps an ended job for good; Ok(false) if it has no such job.
    Keep { tenant: String, id: String },
    /// The tenant deletes an ended job and its results' rows; Ok(false) if it has no such job.
    Forget { tenant: String, id: String },
    /// The tenant gives an upload up; Ok(false) if it did not own the blob.
    Disown { tenant: String, blob: Digest },
}

struct Pending {
    write: Write,
    reply: oneshot::Sender<Result<bool, DbError>>,
}

/// What one call of [`JobDb::expire`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Expiry {
    /// Whether more may be due: the call stopped at its `max_jobs`.
    pub more: bool,
    /// The jobs it expired, as (id, tenant).
    pub jobs: Vec<(String, String)>,
    /// The blobs left with no row: candidates for [`JobDb::collectable`].
    pub orphans: Vec<Digest>,
}

/// What [`JobDb::open`] found.
pub struct Recovered {
    /// Unfinished jobs, in submission order: they are queued again.
    pub unfinished: Vec<JobRecord>,
    /// Finished jobs by final state, for metrics (including those given up on at this start).
    pub finished: BTreeMap<&'static str, u64>,
    /// Jobs failed at this start because the server stopped [`MAX_STARTS`] times while they ran,
    /// as now stored.
    pub given_up: Vec<JobRecord>,
    /// The next sequence number.
    pub next_seq: u64,
}

/// redb's page cache: bounded, so that the service's memory does not grow with the database.
const CACHE_BYTES: usize = 64 << 20;

/// The job database.
pub struct JobDb {
    db: Arc<Database>,
    /// How long a finished job and an unused upload live, in ms.
    retention_ms: u64,
    /// None once dropping.
    writer: Option<mpsc::Sender<Pending>>,
    writer_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for JobDb {
    fn drop(&mut self) {
        // Close the channel, then wait for the writer to commit what it holds and let go of the
        // file, so the database can be opened again at once.
        self.writer = None;
        if let Some(thread) = self.writer_thread.take() {
            let _ = thread.join();
        }
    }
}

impl JobDb {
    /// Opens (creating) `path` and reads what must be recovered. Finished jobs and unused
    /// uploads live `retention_ms`; `size_of` gives a stored blob's size (for databases made
    /// before usage was counted).
    pub fn open(path: &Path, retention_ms: u64, size_of: &dyn Fn(&Digest) -> u64) -> Result<(Self, Recovered), DbError> {
        // The page cache is the process's largest memory: bounded, whatever the file's size.
        let db = Arc::new(redb::Builder::new().set_cache_size(CACHE_BYTES).create(path).map_err(storage)?);
        let txn = db.begin_write().map_err(storage)?;
        {
            // Create the tables so that reads never meet a missing one.
            txn.open_table(JOBS).map_err(storage)?;
            txn.open_table(QUEUE).map_err(storage)?;
            txn.open_table(STARTS).map_err(storage)?;
            txn.open_table(TENANT_JOBS).map_err(storage)?;
            txn.open_table(OWNERS).map_err(storage)?;
            txn.open_table(ROWS).map_err(storage)?;
            txn.open_table(USAGE).map_err(storage)?;
            txn.open_table(ENDED).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;

        Self::index_tenants(&db)?;
        Self::migrate_owners(&db, size_of)?;
        let mut recovered = Recovered { unfinished: Vec::new(), finished: BTreeMap::new(), given_up: Vec::new(), next_seq: 0 };
        let read = db.begin_read().map_err(storage)?;
        let jobs = read.open_table(JOBS).map_err(storage)?;
        for entry in jobs.iter().map_err(storage)? {
            let (id, bytes) = entry.map_err(storage)?;
            let record = parse(id.value(), bytes.value())?;
            recovered.next_seq = recovered.next_seq.max(record.seq + 1);
            if record.state.is_final() {
                *recovered.finished.entry(record.state.as_str()).or_default() += 1;
            }
        }
        let queue = read.open_table(QUEUE).map_err(storage)?;
        let starts = read.open_table(STARTS).map_err(storage)?;
        for entry in queue.iter().map_err(storage)? {
            let (_, id) = entry.map_err(storage)?;
            let bytes = jobs.get(id.value()).map_err(storage)?.ok_or_else(|| DbError::MissingRecord { id: id.value().to_string() })?;
            let mut record = parse(id.value(), bytes.value())?;
            record.starts = starts.get(id.value()).map_err(storage)?.map(|count| count.value()).unwrap_or(0);
            recovered.unfinished.push(record);
        }
        drop((jobs, queue, starts, read));

        let (again, given_up): (Vec<_>, Vec<_>) = recovered.unfinished.drain(..).partition(|record| record.starts < MAX_STARTS);
        recovered.unfinished = again;
        if !given_up.is_empty() {
            let ended: Vec<JobRecord> = given_up.into_iter().map(give_up).collect();
            let batch: Vec<Pending> = ended.iter().map(|record| Pending { write: Write::Finish(record.clone()), reply: oneshot::channel().0 }).collect();
            commit(&db, &batch, retention_ms)?;
            for record in ended {
                *recovered.finished.entry(record.state.as_str()).or_default() += 1;
                recovered.given_up.push(record);
            }
        }

        let (writer, receiver) = mpsc::channel();
        let handle = db.clone();
        let writer_thread = std::thread::Builder::new()
            .name("gridbox-db-writer".into())
            .spawn(move || write_loop(&handle, &receiver, retention_ms))
            .map_err(DbError::Thread)?;
        Ok((JobDb { db, retention_ms, writer: Some(writer), writer_thread: Some(writer_thread) }, recovered))
    }

    /// Turns a database from before gridbox 0.2 (owners as a plain set) into counted rows: an
    /// upload counts as used now, a finished job's results as referenced by it.
    fn migrate_owners(db: &Database, size_of: &dyn Fn(&Digest) -> u64) -> Result<(), DbError> {
        let txn = db.begin_write().map_err(storage)?;
        let old: Vec<(String, String)> = match txn.open_table(OLD_BLOB_OWNERS) {
            Ok(table) => {
                let rows = table
                    .iter()
                    .map_err(storage)?
                    .map(|entry| entry.map(|(key, _)| (key.value().0.to_string(), key.value().1.to_string())).map_err(storage))
                    .collect::<Result<_, _>>()?;
                drop(table);
                rows
            }
            Err(e) => return Err(storage(e)),
        };
        if old.is_empty() {
            txn.delete_table(OLD_BLOB_OWNERS).map_err(storage)?;
            return txn.commit().map_err(storage);
        }
        let now = now_ms();
        {
            let mut owned = Owners {
                owners: txn.open_table(OWNERS).map_err(storage)?,
                rows: txn.open_table(ROWS).map_err(storage)?,
                usage: txn.open_table(USAGE).map_err(storage)?,
            };
            let mut ended = txn.open_table(ENDED).map_err(storage)?;
            let jobs = txn.open_table(JOBS).map_err(storage)?;
            for entry in jobs.iter().map_err(storage)? {
                let (id, bytes) = entry.map_err(storage)?;
                let record = parse(id.value(), bytes.value())?;
                if let Some(result) = &record.result {
                    owned.job_refs(&record, Change::AddRef, 0)?;
                    ended.insert((result.finished_at_ms, record.id.as_str()), ()).map_err(storage)?;
                }
            }
            for (tenant, hex) in &old {
                let size = hex.parse::<Digest>().map(|d| size_of(&d)).unwrap_or(0);
                owned.change(tenant, hex, size, Change::Use { now }, 0)?;
            }
        }
        txn.delete_table(OLD_BLOB_OWNERS).map_err(storage)?;
        txn.commit().map_err(storage)
    }

    /// Fills the `tenant_jobs` index from `jobs` when it is empty and `jobs` is not (a database
    /// made before the index existed).
    fn index_tenants(db: &Database) -> Result<(), DbError> {
        let read = db.begin_read().map_err(storage)?;
        let (jobs, index) = (read.open_table(JOBS).map_err(storage)?, read.open_table(TENANT_JOBS).map_err(storage)?);
        if !index.is_empty().map_err(storage)? || jobs.is_empty().map_err(storage)? {
            return Ok(());
        }
        let mut entries = Vec::new();
        for entry in jobs.iter().map_err(storage)? {
            let (id, bytes) = entry.map_err(storage)?;
            let record = parse(id.value(), bytes.value())?;
            entries.push((record.tenant, record.seq, record.id));
        }
        drop((jobs, index, read));
        let txn = db.begin_write().map_err(storage)?;
        {
            let mut index = txn.open_table(TENANT_JOBS).map_err(storage)?;
            for (tenant, seq, id) in &entries {
                index.insert((tenant.as_str(), *seq), id.as_str()).map_err(storage)?;
            }
        }
        txn.commit().map_err(storage)
    }

    async fn write(&self, write: Write) -> Result<bool, DbError> {
        let (reply, answer) = oneshot::channel();
        self.writer.as_ref().ok_or(DbError::Closed)?.send(Pending { write, reply }).map_err(|_| DbError::Closed)?;
        answer.await.map_err(|_| DbError::Closed)?
    }

    /// Stores a new queued job, noting that it uses `uses` (blobs and their sizes); returns
    /// once it is durable.
    pub async fn insert(&self, record: JobRecord, uses: Vec<(Digest, u64)>) -> Result<(), DbError> {
        self.write(Write::Insert { record, uses }).await.map(|_| ())
    }

    /// Notes that a worker started the job, once the note is durable (see [`MAX_STARTS`]).
    pub async fn started(&self, id: &str) -> Result<(), DbError> {
        self.write(Write::Started(id.to_string())).await.map(|_| ())
    }

    /// Stores a job's end and lets its tenant read the blobs it made. Returns false, changing
    /// nothing, when the job had ended already: each job ends exactly once.
    pub async fn finish(&self, record: JobRecord) -> Result<bool, DbError> {
        self.write(Write::Finish(record)).await
    }

    /// Lets `tenant` read `blob` (`size` bytes) it uploaded, unless that would take its
    /// usage past `quota` (then false, and nothing changes).
    pub async fn own(&self, tenant: &str, blob: Digest, size: u64, quota: u64) -> Result<bool, DbError> {
        self.write(Write::Own { tenant: tenant.to_string(), blob, size, quota }).await
    }

    /// Keeps `tenant`'s ended job `id` for good; false if it has no such job.
    pub async fn keep(&self, tenant: &str, id: &str) -> Result<bool, DbError> {
        self.write(Write::Keep { tenant: tenant.to_string(), id: id.to_string() }).await
    }

    /// Deletes `tenant`'s ended job `id`; false if it has no such job.
    pub async fn forget(&self, tenant: &str, id: &str) -> Result<bool, DbError> {
        self.write(Write::Forget { tenant: tenant.to_string(), id: id.to_string() }).await
    }

    /// Gives up `tenant`'s upload of `blob`; false if it did not own it.
    pub async fn disown(&self, tenant: &str, blob: Digest) -> Result<bool, DbError> {
        self.write(Write::Disown { tenant: tenant.to_string(), blob }).await
    }

    /// Bytes `tenant` holds.
    pub fn usage(&self, tenant: &str) -> Result<u64, DbError> {
        let read = self.db.begin_read().map_err(storage)?;
        let usage = read.open_table(USAGE).map_err(storage)?;
        Ok(usage.get(tenant).map_err(storage)?.map_or(0, |v| v.value()))
    }

    /// When a finished job expires, if it does.
    pub fn expires_at(&self, record: &JobRecord) -> Option<u64> {
        let result = record.result.as_ref()?;
        (!record.kept).then(|| result.finished_at_ms.saturating_add(self.retention_ms))
    }

    /// Expires what has outlived the retention time at `now`: finished jobs that are not kept
    /// (record and result rows) and uploads unused since. At most `max_jobs` jobs per call, so
    /// that one transaction stays small.
    pub fn expire(&self, now: u64, max_jobs: usize) -> Result<Expiry, DbError> {
        let expire_before = now.saturating_sub(self.retention_ms);
        let txn = self.db.begin_write().map_err(storage)?;
        let mut orphans = Vec::new();
        let mut expired = Vec::new();
        let more;
        {
            let mut jobs = txn.open_table(JOBS).map_err(storage)?;
            let mut tenant_jobs = txn.open_table(TENANT_JOBS).map_err(storage)?;
            let mut ended = txn.open_table(ENDED).map_err(storage)?;
            let mut owned = Owners {
                owners: txn.open_table(OWNERS).map_err(storage)?,
                rows: txn.open_table(ROWS).map_err(storage)?,
                usage: txn.open_table(USAGE).map_err(storage)?,
            };
            let due: Vec<(u64, String)> = ended
                .range((0, "")..(expire_before, ""))
                .map_err(storage)?
                .take(max_jobs + 1)
                .map(|entry| entry.map(|(key, _)| (key.value().0, key.value().1.to_string())).map_err(storage))
                .collect::<Result<_, _>>()?;
            more = due.len() > max_jobs;
            for (finished, id) in due.into_iter().take(max_jobs) {
                ended.remove((finished, id.as_str())).map_err(storage)?;
                let record = match jobs.remove(id.as_str()).map_err(storage)? {
                    Some(bytes) => parse(&id, bytes.value())?,
                    None => continue,
                };
                tenant_jobs.remove((record.tenant.as_str(), record.seq)).map_err(storage)?;
                orphans.extend(owned.job_refs(&record, Change::DropRef, expire_before)?);
                expired.push((id, record.tenant));
            }
            // Uploads nobody has used within the retention time, and no job result names.
            let stale: Vec<(String, String, u64)> = owned
                .owners
                .iter()
                .map_err(storage)?
                .filter_map(|entry| match entry {
                    Ok((key, value)) => {
                        let (refs, used, size) = value.value();
                        (refs == 0 && used < expire_before).then(|| Ok((key.value().0.to_string(), key.value().1.to_string(), size)))
                    }
                    Err(e) => Some(Err(storage(e))),
                })
                .collect::<Result<_, _>>()?;
            for (tenant, hex, size) in stale {
                if owned.change(&tenant, &hex, size, Change::Disown, expire_before)? {
                    orphans.extend(hex.parse::<Digest>().ok());
                }
            }
        }
        txn.commit().map_err(storage)?;
        Ok(Expiry { more, jobs: expired, orphans })
    }

    /// Of `candidates`, the blobs nothing may read and no unfinished job reads: the blob store
    /// may delete them. Call it with uploads and result storing held off.
    pub fn collectable(&self, candidates: &[Digest]) -> Result<Vec<Digest>, DbError> {
        let read = self.db.begin_read().map_err(storage)?;
        let rows = read.open_table(ROWS).map_err(storage)?;
        let (queue, jobs) = (read.open_table(QUEUE).map_err(storage)?, read.open_table(JOBS).map_err(storage)?);
        let mut in_use = std::collections::BTreeSet::new();
        for entry in queue.iter().map_err(storage)? {
            let (_, id) = entry.map_err(storage)?;
            if let Some(bytes) = jobs.get(id.value()).map_err(storage)? {
                let record = parse(id.value(), bytes.value())?;
                if let Ok(resolved) = ResolvedManifest::from_canonical_text(&record.manifest) {
                    in_use.insert(resolved.manifest().module);
                    in_use.extend(resolved.manifest().inputs.values().copied());
                }
            }
        }
        let mut free = Vec::new();
        for blob in candidates {
            if !ownership::has_rows(&rows, blob)? && !in_use.contains(blob) {
                free.push(*blob);
            }
        }
        Ok(free)
    }

    /// The job `id`, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<JobRecord>, DbError> {
        let read = self.db.begin_read().map_err(storage)?;
        let jobs = read.open_table(JOBS).map_err(storage)?;
        let found = jobs.get(id).map_err(storage)?;
        found.map(|bytes| parse(id, bytes.value())).transpose()
    }

    /// Ids of `tenant`'s jobs, newest first: at most `limit`, submitted before sequence number
    /// `before` (for paging).
    pub fn tenant_jobs(&self, tenant: &str, before: u64, limit: usize) -> Result<Vec<String>, DbError> {
        let read = self.db.begin_read().map_err(storage)?;
        let index = read.open_table(TENANT_JOBS).map_err(storage)?;
        let mut ids = Vec::new();
        for entry in index.range((tenant, 0)..(tenant, before)).map_err(storage)?.rev().take(limit) {
            let (_, id) = entry.map_err(storage)?;
            ids.push(id.value().to_string());
        }
        Ok(ids)
    }

    /// Whether `tenant` may read `blob`.
    pub fn owns(&self, tenant: &str, blob: &Digest) -> Result<bool, DbError> {
        let read = self.db.begin_read().map_err(storage)?;
        let owners = read.open_table(OWNERS).map_err(storage)?;
        Ok(owners.get((tenant, blob.to_hex().as_str())).map_err(storage)?.is_some())
    }
}

fn parse(id: &str, bytes: &[u8]) -> Result<JobRecord, DbError> {
    serde_json::from_slice(bytes).map_err(|source| DbError::BadRecord { id: id.to_string(), source })
}

/// The job's end after the server stopped [`MAX_STARTS`] times while it ran.
fn give_up(mut record: JobRecord) -> JobRecord {
    record.state = JobState::Failed;
    record.result = Some(JobResult::without_run(
        0,
        format!("the server stopped while this job was running {} times since it was first recovered after a stop; it is not run again", record.starts),
    ));
    record
}

fn write_loop(db: &Database, receiver: &mpsc::Receiver<Pending>, retention_ms: u64) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        batch.extend(receiver.try_iter().take(MAX_BATCH - 1));
        match commit(db, &batch, retention_ms) {
            Ok(answers) => {
                for (pending, answer) in batch.into_iter().zip(answers) {
                    let _ = pending.reply.send(Ok(answer));
                }
            }
            // One bad write must not fail the others it was batched with: retry them one by one.
            Err(_) if batch.len() > 1 => {
                for pending in batch {
                    let answer = commit(db, std::slice::from_ref(&pending), retention_ms).map(|answers| answers.first().copied().unwrap_or(false));
                    let _ = pending.reply.send(answer);
                }
            }
            // A batch of one (or none): its only writer gets the error itself.
            Err(error) => {
                if let Some(pending) = batch.into_iter().next() {
                    let _ = pending.reply.send(Err(error));
                }
            }
        }
    }
}

fn commit(db: &Database, batch: &[Pending], retention_ms: u64) -> Result<Vec<bool>, DbError> {
    let now = now_ms();
    let expire_before = now.saturating_sub(retention_ms);
    let txn = db.begin_write().map_err(storage)?;
    let mut answers = Vec::with_capacity(batch.len());
    {
        let mut jobs = txn.open_table(JOBS).map_err(storage)?;
        let mut queue = txn.open_table(QUEUE).map_err(storage)?;
        let mut starts = txn.open_table(STARTS).map_err(storage)?;
        let mut tenant_jobs = txn.open_table(TENANT_JOBS).map_err(storage)?;
        let mut ended = txn.open_table(ENDED).map_err(storage)?;
        let mut owned = Owners {
            owners: txn.open_table(OWNERS).map_err(storage)?,
            rows: txn.open_table(ROWS).map_err(storage)?,
            usage: txn.open_table(USAGE).map_err(storage)?,
        };
        let encode = |record: &JobRecord| serde_json::to_vec(record).map_err(|source| DbError::Encode { id: record.id.clone(), source });
        let ended_job = |jobs: &redb::Table<&str, &[u8]>, tenant: &str, id: &str| -> Result<Option<JobRecord>, DbError> {
            let Some(bytes) = jobs.get(id).map_err(storage)? else { return Ok(None) };
            let record = parse(id, bytes.value())?;
            Ok((record.tenant == tenant && record.result.is_some()).then_some(record))
        };
        for pending in batch {
            let applied = match &pending.write {
                Write::Insert { record, uses } => {
                    jobs.insert(record.id.as_str(), encode(record)?.as_slice()).map_err(storage)?;
                    queue.insert(record.seq, record.id.as_str()).map_err(storage)?;
                    tenant_jobs.insert((record.tenant.as_str(), record.seq), record.id.as_str()).map_err(storage)?;
                    for (blob, size) in uses {
                        owned.change(&record.tenant, &blob.to_hex(), *size, Change::Use { now }, expire_before)?;
                    }
                    true
                }
                Write::Started(id) => {
                    let count = starts.get(id.as_str()).map_err(storage)?.map(|count| count.value()).unwrap_or(0);
                    starts.insert(id.as_str(), count.saturating_add(1)).map_err(storage)?;
                    true
                }
                Write::Finish(record) => {
                    // A job is unfinished exactly while its sequence number is in `queue`.
                    let unfinished = queue.get(record.seq).map_err(storage)?.is_some_and(|id| id.value() == record.id);
                    if unfinished {
                        jobs.insert(record.id.as_str(), encode(record)?.as_slice()).map_err(storage)?;
                        queue.remove(record.seq).map_err(storage)?;
                        starts.remove(record.id.as_str()).map_err(storage)?;
                        owned.job_refs(record, Change::AddRef, expire_before)?;
                        if let (Some(result), false) = (&record.result, record.kept) {
                            ended.insert((result.finished_at_ms, record.id.as_str()), ()).map_err(storage)?;
                        }
                    }
                    unfinished
                }
                Write::Own { tenant, blob, size, quota } => {
                    let hex = blob.to_hex();
                    if !owned.owns(tenant, &hex)? && owned.usage_of(tenant)?.saturating_add(*size) > *quota {
                        false
                    } else {
                        owned.change(tenant, &hex, *size, Change::Use { now }, expire_before)?;
                        true
                    }
                }
                Write::Keep { tenant, id } => match ended_job(&jobs, tenant, id)? {
                    Some(mut record) => {
                        if !record.kept {
                            record.kept = true;
                            jobs.insert(id.as_str(), encode(&record)?.as_slice()).map_err(storage)?;
                            if let Some(result) = &record.result {
                                ended.remove((result.finished_at_ms, id.as_str())).map_err(storage)?;
                            }
                        }
                        true
                    }
                    None => false,
                },
                Write::Forget { tenant, id } => match ended_job(&jobs, tenant, id)? {
                    Some(record) => {
                        jobs.remove(id.as_str()).map_err(storage)?;
                        tenant_jobs.remove((record.tenant.as_str(), record.seq)).map_err(storage)?;
                        if let Some(result) = &record.result {
                            ended.remove((result.finished_at_ms, id.as_str())).map_err(storage)?;
                        }
                        // Orphaned blobs are collected by the next sweep.
                        owned.job_refs(&record, Change::DropRef, expire_before)?;
                        true
                    }
                    None => false,
                },
                Write::Disown { tenant, blob } => {
                    let hex = blob.to_hex();
                    if owned.owns(tenant, &hex)? {
                        owned.change(tenant, &hex, 0, Change::Disown, expire_before)?;
                        true
                    } else {
                        false
                    }
                }
            };
            answers.push(applied);
        }
    }
    txn.commit().map_err(storage)?;
    Ok(answers)
}

#[cfg(test)]
mod tests;
