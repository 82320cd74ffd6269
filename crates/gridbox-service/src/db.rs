//! The job database: an embedded redb file, `DATA/jobs.redb`.
//!
//! Tables: `jobs` (id -> JSON [`JobRecord`]), `queue` (sequence number -> id, every job not yet
//! finished, in submission order), `starts` (id -> how many times an unfinished job was
//! started), `tenant_jobs` ((tenant, sequence number) -> id, for listing) and `blob_owners`
//! ((tenant, hash) -> ()).
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

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
const QUEUE: TableDefinition<u64, &str> = TableDefinition::new("queue");
const BLOB_OWNERS: TableDefinition<(&str, &str), ()> = TableDefinition::new("blob_owners");
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
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ms() -> u64 {
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
        }
    }

    /// Every blob the result names.
    pub fn blobs(&self) -> impl Iterator<Item = &BlobRef> {
        self.receipt.iter().chain(self.stdout.iter()).chain(self.stderr.iter()).chain(self.outputs.values())
    }
}

enum Write {
    /// A new job, queued.
    Insert(JobRecord),
    /// A worker started the job.
    Started(String),
    /// A job's end; refused (Ok(false)) when it had ended already.
    Finish(JobRecord),
    /// A tenant may read a blob.
    Own { tenant: String, blob: Digest },
}

struct Pending {
    write: Write,
    reply: oneshot::Sender<Result<bool, DbError>>,
}

/// What [`JobDb::open`] found.
pub struct Recovered {
    /// Unfinished jobs, in submission order: they are queued again.
    pub unfinished: Vec<JobRecord>,
    /// Finished jobs by final state, for metrics (including those given up on at this start).
    pub finished: BTreeMap<&'static str, u64>,
    /// Jobs failed at this start because the server stopped [`MAX_STARTS`] times while they ran.
    pub given_up: Vec<String>,
    /// The next sequence number.
    pub next_seq: u64,
}

/// The job database.
pub struct JobDb {
    db: Arc<Database>,
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
    /// Opens (creating) `path` and reads what must be recovered.
    pub fn open(path: &Path) -> Result<(Self, Recovered), DbError> {
        let db = Arc::new(Database::create(path).map_err(storage)?);
        let txn = db.begin_write().map_err(storage)?;
        {
            // Create the tables so that reads never meet a missing one.
            txn.open_table(JOBS).map_err(storage)?;
            txn.open_table(QUEUE).map_err(storage)?;
            txn.open_table(BLOB_OWNERS).map_err(storage)?;
            txn.open_table(STARTS).map_err(storage)?;
            txn.open_table(TENANT_JOBS).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;

        Self::index_tenants(&db)?;
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
            commit(&db, &batch)?;
            for record in ended {
                *recovered.finished.entry(record.state.as_str()).or_default() += 1;
                recovered.given_up.push(record.id);
            }
        }

        let (writer, receiver) = mpsc::channel();
        let handle = db.clone();
        let writer_thread =
            std::thread::Builder::new().name("gridbox-db-writer".into()).spawn(move || write_loop(&handle, &receiver)).map_err(DbError::Thread)?;
        Ok((JobDb { db, writer: Some(writer), writer_thread: Some(writer_thread) }, recovered))
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

    /// Stores a new queued job; returns once it is durable.
    pub async fn insert(&self, record: JobRecord) -> Result<(), DbError> {
        self.write(Write::Insert(record)).await.map(|_| ())
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

    /// Lets `tenant` read `blob`.
    pub async fn own(&self, tenant: &str, blob: Digest) -> Result<(), DbError> {
        self.write(Write::Own { tenant: tenant.to_string(), blob }).await.map(|_| ())
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
        let owners = read.open_table(BLOB_OWNERS).map_err(storage)?;
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

fn write_loop(db: &Database, receiver: &mpsc::Receiver<Pending>) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        batch.extend(receiver.try_iter().take(MAX_BATCH - 1));
        match commit(db, &batch) {
            Ok(answers) => {
                for (pending, answer) in batch.into_iter().zip(answers) {
                    let _ = pending.reply.send(Ok(answer));
                }
            }
            // One bad write must not fail the others it was batched with: retry them one by one.
            Err(_) if batch.len() > 1 => {
                for pending in batch {
                    let answer = commit(db, std::slice::from_ref(&pending)).map(|answers| answers.first().copied().unwrap_or(false));
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

fn commit(db: &Database, batch: &[Pending]) -> Result<Vec<bool>, DbError> {
    let txn = db.begin_write().map_err(storage)?;
    let mut answers = Vec::with_capacity(batch.len());
    {
        let mut jobs = txn.open_table(JOBS).map_err(storage)?;
        let mut queue = txn.open_table(QUEUE).map_err(storage)?;
        let mut owners = txn.open_table(BLOB_OWNERS).map_err(storage)?;
        let mut starts = txn.open_table(STARTS).map_err(storage)?;
        let mut tenant_jobs = txn.open_table(TENANT_JOBS).map_err(storage)?;
        for pending in batch {
            let applied = match &pending.write {
                Write::Insert(record) => {
                    let json = serde_json::to_vec(record).map_err(|source| DbError::Encode { id: record.id.clone(), source })?;
                    jobs.insert(record.id.as_str(), json.as_slice()).map_err(storage)?;
                    queue.insert(record.seq, record.id.as_str()).map_err(storage)?;
                    tenant_jobs.insert((record.tenant.as_str(), record.seq), record.id.as_str()).map_err(storage)?;
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
                        let json = serde_json::to_vec(record).map_err(|source| DbError::Encode { id: record.id.clone(), source })?;
                        jobs.insert(record.id.as_str(), json.as_slice()).map_err(storage)?;
                        queue.remove(record.seq).map_err(storage)?;
                        starts.remove(record.id.as_str()).map_err(storage)?;
                        for blob in record.result.iter().flat_map(JobResult::blobs) {
                            owners.insert((record.tenant.as_str(), blob.blake3.to_hex().as_str()), ()).map_err(storage)?;
                        }
                    }
                    unfinished
                }
                Write::Own { tenant, blob } => {
                    owners.insert((tenant.as_str(), blob.to_hex().as_str()), ()).map_err(storage)?;
                    true
                }
            };
            answers.push(applied);
        }
    }
    txn.commit().map_err(storage)?;
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, seq: u64) -> JobRecord {
        JobRecord {
            id: id.into(),
            tenant: "alice".into(),
            seq,
            state: JobState::Queued,
            manifest: "format = 1\n".into(),
            submitted_at_ms: 1,
            starts: 0,
            result: None,
        }
    }

    fn finished(mut record: JobRecord) -> JobRecord {
        record.state = JobState::Succeeded;
        record.result = Some(JobResult {
            started_at_ms: 2,
            finished_at_ms: 3,
            fuel_used: 4,
            outcome: Some("exited with status 0".into()),
            reason: None,
            receipt: Some(BlobRef::of(b"receipt")),
            stdout: None,
            stderr: None,
            outputs: BTreeMap::new(),
        });
        record
    }

    #[tokio::test]
    async fn the_tenant_index_is_rebuilt_for_a_database_made_without_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.redb");
        {
            let (db, _) = JobDb::open(&path).unwrap();
            for (index, id) in ["a", "b"].into_iter().enumerate() {
                db.insert(record(id, index as u64)).await.unwrap();
            }
        }
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(TENANT_JOBS).unwrap();
            txn.commit().unwrap();
        }
        let (db, _) = JobDb::open(&path).unwrap();
        assert_eq!(db.tenant_jobs("alice", u64::MAX, 10).unwrap(), ["b", "a"]);
        assert_eq!(db.tenant_jobs("alice", 1, 10).unwrap(), ["a"]);
        assert!(db.tenant_jobs("bob", u64::MAX, 10).unwrap().is_empty());
    }

    #[tokio::test]
    async fn unfinished_jobs_survive_reopening_and_jobs_end_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jobs.redb");
        {
            let (db, recovered) = JobDb::open(&path).unwrap();
            assert!(recovered.unfinished.is_empty());
            for (index, id) in ["a", "b", "c"].into_iter().enumerate() {
                db.insert(record(id, index as u64)).await.unwrap();
            }
            assert!(db.finish(finished(record("b", 1))).await.unwrap());
            assert!(!db.finish(finished(record("b", 1))).await.unwrap(), "a job ends once");
            assert!(db.owns("alice", &Digest::of(b"receipt")).unwrap());
            assert!(!db.owns("bob", &Digest::of(b"receipt")).unwrap());
        }
        let (db, recovered) = JobDb::open(&path).unwrap();
        let ids: Vec<_> = recovered.unfinished.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        assert_eq!(recovered.next_seq, 3);
        assert_eq!(recovered.finished.get("succeeded"), Some(&1));
        assert_eq!(db.get("b").unwrap().unwrap().state, JobState::Succeeded);
        assert_eq!(db.get("zzz").unwrap(), None);

        // "a" was running when the server stopped, MAX_STARTS times: it is given up on.
        for _ in 0..MAX_STARTS {
            db.started("a").await.unwrap();
        }
        db.started("c").await.unwrap();
        drop(db);
        let (db, recovered) = JobDb::open(&path).unwrap();
        assert_eq!(recovered.unfinished.iter().map(|r| (r.id.as_str(), r.starts)).collect::<Vec<_>>(), [("c", 1)]);
        assert_eq!(recovered.given_up, ["a"]);
        let a = db.get("a").unwrap().unwrap();
        assert_eq!(a.state, JobState::Failed);
        assert!(a.result.unwrap().reason.unwrap().contains("running 3 times since it was first recovered"));
        assert_eq!(recovered.finished.get("failed"), Some(&1));
    }
}
