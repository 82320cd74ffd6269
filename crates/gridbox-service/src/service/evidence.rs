//! Evidence for spot checks (spec/http.md, "Trace and tensors"): a traced job's trace log is one
//! of its results (a blob, counted and expiring like the others), and with `keep_tensors` every
//! tensor its trace names is kept too, so that a verifier can check sampled ops
//! (`gridbox spot-check`) without a replay.
//!
//! Kept tensors live apart from blobs, in `DATA/tensors/<tenant key>/<hash>.tensor` (the files of
//! spec/trace.md): they are named by tensor hash, not by BLAKE3 of the bytes, and they have their
//! own lifetime (`tensor_retention_s`) and cap (`tenant_tensor_bytes`), oldest first out, since
//! they can be many times a job's results. Keeping them never changes a run: the keeper only
//! sees tensors the run made anyway.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use gridbox_compute::{TraceEntry, merkle, tensor_file, trace_log};
use gridbox_core::digest::Digest;
use gridbox_core::kept_tensors::{self, TensorDir};
use gridbox_core::trace_file;

use super::Service;
use crate::error::ServiceError;
use crate::wire::{ProvenTraceEntry, TraceSample};

impl Service {
    /// The folder of `tenant`'s kept tensors. Named by a hash of the tenant's name: a name may
    /// be `..`, which must not become a path.
    fn tensor_dir(&self, tenant: &str) -> PathBuf {
        self.tensors_dir.join(&blake3::hash(tenant.as_bytes()).to_hex()[..32])
    }

    /// A keeper for one run of `tenant`'s job, when the policy keeps tensors.
    pub(super) fn tensor_keeper(&self, tenant: &str) -> Option<Arc<TensorDir>> {
        if !self.config.serve.keep_tensors {
            return None;
        }
        match TensorDir::create(&self.tensor_dir(tenant)) {
            Ok(dir) => Some(Arc::new(dir)),
            Err(e) => {
                // Evidence is not a result: a job whose tensors cannot be kept still runs (and
                // a spot check of it says the provider could not produce them).
                eprintln!("gridbox: cannot keep tensors: {e}");
                None
            }
        }
    }

    /// After a run: reports a tensor that could not be written and brings the tenant back under
    /// `tenant_tensor_bytes`.
    pub(super) fn tensors_kept(&self, tenant: &str, keeper: &TensorDir) {
        if let Err(e) = keeper.finish() {
            eprintln!("gridbox: a tensor could not be kept: {e}");
        }
        let cap = self.config.serve.tenant_tensor_bytes;
        self.prune_tensors(tenant, |files| {
            let mut total: u64 = files.iter().map(|(_, size, _)| size).sum();
            let mut oldest = Vec::new();
            for (path, size, _) in files {
                if total <= cap {
                    break;
                }
                total -= size;
                oldest.push(path.clone());
            }
            oldest
        });
    }

    /// Removes every kept tensor older than `tensor_retention_s` (the collector calls it).
    pub(super) fn expire_tensors(&self) {
        let Ok(tenants) = std::fs::read_dir(&self.tensors_dir) else { return };
        let retention = Duration::from_secs(self.config.serve.tensor_retention_s);
        let Some(cutoff) = SystemTime::now().checked_sub(retention) else { return };
        for dir in tenants.flatten() {
            remove_where(dir.path(), |files| files.iter().filter(|(_, _, at)| *at < cutoff).map(|(path, _, _)| path.clone()).collect());
        }
    }

    fn prune_tensors(&self, tenant: &str, choose: impl FnOnce(&[(PathBuf, u64, SystemTime)]) -> Vec<PathBuf>) {
        remove_where(self.tensor_dir(tenant), choose);
    }

    /// Entry `index` of the job's trace log with its proof, and the entry before it with its.
    pub async fn trace_entry(&self, tenant: &str, id: &str, index: u64) -> Result<TraceSample, ServiceError> {
        let status = self.status(tenant, id, Duration::ZERO).await?;
        let id = id.to_string();
        let missing = move |why: String| ServiceError::NoTraceEntry { id: id.clone(), index, why };
        let Some(trace) = status.trace else {
            let why = if status.state.is_final() { "it recorded no bridge calls" } else { "it has not ended yet" };
            return Err(missing(why.into()));
        };
        let cached = decoded_logs().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&trace.blake3);
        let decoded = match cached {
            Some(decoded) => decoded,
            None => {
                let bytes = self.read_blob(trace.blake3).await?;
                let size = bytes.len();
                let missing = missing.clone();
                let decoded = tokio::task::spawn_blocking(move || {
                    // The log was written by this server from a run's entries: one that does not
                    // decode is damage on disk, which the blob's hash check would have caught.
                    let entries = trace_file::decode(&bytes).map_err(|e| missing(format!("its stored log is unreadable: {e}")))?;
                    let leaves = trace_log::leaves(&entries);
                    Ok::<_, ServiceError>(Arc::new(DecodedLog { entries, leaves }))
                })
                .await??;
                decoded_logs().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(trace.blake3, decoded.clone(), size);
                decoded
            }
        };
        let entries = decoded.entries.len();
        sample(&decoded, index).ok_or_else(|| missing(format!("its log has {entries} entries (0 to {})", entries.saturating_sub(1))))
    }

    /// The tensor file (spec/trace.md) of a tensor kept for the tenant, named by its tensor hash.
    /// Asked through one of the tenant's jobs, so that another tenant gets the job's 404.
    pub async fn kept_tensor(&self, tenant: &str, id: &str, hash: Digest) -> Result<Vec<u8>, ServiceError> {
        self.status(tenant, id, Duration::ZERO).await?;
        let path = self.tensor_dir(tenant).join(kept_tensors::file_name(&hash.0));
        tokio::task::spawn_blocking(move || {
            let bytes = std::fs::read(&path).map_err(|_| ServiceError::TensorNotKept(hash))?;
            // Checked on every read, like blobs: damaged evidence is never handed out.
            match tensor_file::decode(&bytes) {
                Ok(tensor) if tensor.content_hash() == hash.0 => Ok(bytes),
                _ => Err(ServiceError::TensorCorrupted(hash)),
            }
        })
        .await?
    }
}

/// A stored trace log, decoded, with its Merkle leaves.
struct DecodedLog {
    entries: Vec<TraceEntry>,
    leaves: Vec<[u8; 32]>,
}

/// The logs spot checks asked for last, by the BLAKE3 of the stored log (content-addressed, so a
/// cached log can never be stale): a spot check asks for K entries of one log, and decoding it
/// for each is O(n). Bounded by the bytes of the logs held.
struct DecodedLogs {
    logs: std::collections::VecDeque<(Digest, Arc<DecodedLog>, usize)>,
}

/// Most bytes of stored logs [`DecodedLogs`] keeps decoded (about 3x that in memory).
const DECODED_LOG_BYTES: usize = 32 << 20;

impl DecodedLogs {
    fn get(&mut self, digest: &Digest) -> Option<Arc<DecodedLog>> {
        let at = self.logs.iter().position(|(d, _, _)| d == digest)?;
        let hit = self.logs.remove(at)?;
        let decoded = hit.1.clone();
        self.logs.push_back(hit);
        Some(decoded)
    }

    fn insert(&mut self, digest: Digest, decoded: Arc<DecodedLog>, size: usize) {
        if size > DECODED_LOG_BYTES || self.logs.iter().any(|(d, _, _)| *d == digest) {
            return;
        }
        while self.logs.iter().map(|(_, _, n)| n).sum::<usize>() + size > DECODED_LOG_BYTES {
            self.logs.pop_front();
        }
        self.logs.push_back((digest, decoded, size));
    }
}

fn decoded_logs() -> &'static std::sync::Mutex<DecodedLogs> {
    static LOGS: std::sync::OnceLock<std::sync::Mutex<DecodedLogs>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| std::sync::Mutex::new(DecodedLogs { logs: std::collections::VecDeque::new() }))
}

/// Entry `index` and the one before it, each with its proof.
fn sample(log: &DecodedLog, index: u64) -> Option<TraceSample> {
    let entries = &log.entries;
    let at = usize::try_from(index).ok().filter(|&at| at < entries.len())?;
    let leaves = &log.leaves;
    let proven = |at: usize| ProvenTraceEntry {
        entry: trace_file::entry_value(&entries[at]),
        siblings: merkle::prove(leaves, at).unwrap_or_default().into_iter().map(Digest).collect(),
    };
    Some(TraceSample { size: entries.len() as u64, entry: proven(at), previous: at.checked_sub(1).map(proven) })
}

/// Removes the tensor files of `dir` that `choose` picks from them (path, size, when kept),
/// given oldest first. A file another job is writing has a dot name and is never listed.
fn remove_where(dir: PathBuf, choose: impl FnOnce(&[(PathBuf, u64, SystemTime)]) -> Vec<PathBuf>) {
    let Ok(listing) = std::fs::read_dir(&dir) else { return };
    let mut files: Vec<_> = listing
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tensor") && !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
        })
        .collect();
    files.sort_by(|a, b| (a.2, &a.0).cmp(&(b.2, &b.0)));
    for path in choose(&files) {
        // Already gone (another pass removed it) is what was wanted.
        let _ = std::fs::remove_file(path);
    }
}
