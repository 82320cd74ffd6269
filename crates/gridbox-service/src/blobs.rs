//! Content-addressed blob storage: `DATA/blobs/<first two hex digits>/<BLAKE3 hex>`.
//!
//! A blob is written to `DATA/tmp`, synced, renamed into place and its folder synced, so a
//! crash leaves either the whole blob or nothing under its name. Every read is hashed again:
//! a file that was damaged on disk is reported as corrupted, never served.
//!
//! Uploads sync their own file and folder. Job results go through [`BlobStore::put_durably`]:
//! a committer thread takes the results of many jobs at once and makes them durable with two
//! `syncfs` calls in all (one before the renames, one after), the same guarantee for a fraction
//! of the syscalls, in the way the job database commits groups of writes.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;

use gridbox_core::digest::{BlobRef, Digest};

/// A blob could not be stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// No blob has this hash.
    #[error("no blob {0}")]
    NotFound(Digest),
    /// The bytes do not hash to the hash the client claimed.
    #[error("the uploaded bytes have BLAKE3 {actual}, not the claimed {claimed}")]
    HashMismatch {
        /// What the client said.
        claimed: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The stored file no longer hashes to its name: the disk damaged it.
    #[error("blob {0} is corrupted on disk (its bytes no longer hash to its name)")]
    Corrupted(Digest),
    /// The blob is larger than allowed.
    #[error("blob is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The file system failed.
    #[error("blob store I/O on {path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_path_buf(), source }
}

/// Where blob `digest` lives under the store's `blobs` folder.
fn blob_path(blobs: &Path, digest: &Digest) -> PathBuf {
    let hex = digest.to_hex();
    blobs.join(&hex[..2]).join(hex)
}

/// The size of blob `digest` in the store under data folder `data`, if it is there (readable
/// before the store is opened).
pub fn stored_size(data: &Path, digest: &Digest) -> Option<u64> {
    std::fs::metadata(blob_path(&data.join("blobs"), digest)).ok().map(|meta| meta.len())
}

/// The blob store under one data folder.
#[derive(Debug)]
pub struct BlobStore {
    blobs: PathBuf,
    tmp: PathBuf,
    stored_bytes: Arc<AtomicU64>,
    next_tmp: AtomicU64,
    committer: Mutex<mpsc::Sender<Staged>>,
    unsynced: Arc<Unsynced>,
    broken: Arc<Mutex<Option<String>>>,
}

/// Blobs whose names exist but may not be durable yet: each writer marks a name just before
/// its rename and unmarks it once the rename is durable. A blob that exists and is not marked
/// is durable; one that is marked is waited for.
#[derive(Debug, Default)]
struct Unsynced(Mutex<HashMap<Digest, usize>>);

impl Unsynced {
    fn mark(&self, digest: Digest) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()).entry(digest).or_default() += 1;
    }

    fn unmark(&self, digest: &Digest) {
        let mut marks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = marks.get_mut(digest) {
            *count -= 1;
            if *count == 0 {
                marks.remove(digest);
            }
        }
    }

    fn contains(&self, digest: &Digest) -> bool {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).contains_key(digest)
    }
}

/// Temporary files written but not yet synced, for the committer thread.
#[derive(Debug)]
struct Staged {
    /// (temporary file, blob, size)
    files: Vec<(PathBuf, Digest, u64)>,
    reply: oneshot::Sender<Result<(), String>>,
}

/// Results handed to the committer: wait on it to know they are durable.
#[must_use = "the blobs are durable only once `durable` returns"]
#[derive(Default)]
pub struct PendingBlobs(Option<oneshot::Receiver<Result<(), String>>>);

impl PendingBlobs {
    /// Returns once every blob of the batch is durable under its name.
    pub async fn durable(self) -> Result<(), BlobError> {
        let Some(answer) = self.0 else { return Ok(()) };
        let failed = |message: String| BlobError::Io { path: PathBuf::from("(blob sync)"), source: std::io::Error::other(message) };
        answer.await.map_err(|_| failed("the committer stopped".into()))?.map_err(failed)
    }
}

/// Most staged batches the committer makes durable together.
const MAX_COMMIT_BATCH: usize = 256;

impl BlobStore {
    /// Opens (creating) the store under `data`, removing uploads a crash left half written.
    pub fn open(data: &Path) -> Result<Self, BlobError> {
        let blobs = data.join("blobs");
        let tmp = data.join("tmp");
        std::fs::create_dir_all(&blobs).map_err(io(&blobs))?;
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        // Every shard folder exists, durably, before the first blob: no writer ever has to make
        // one and wonder whether its name reached the disk.
        for shard in 0..=255u8 {
            let path = blobs.join(hex::encode([shard]));
            std::fs::create_dir_all(&path).map_err(io(&path))?;
        }
        // One descriptor for the committer's whole life (syncfs reports write errors that
        // happened since the descriptor was opened), and a first sync: names a killed process
        // placed but never synced become durable before anyone takes them for stored.
        let root = File::open(&blobs).map_err(io(&blobs))?;
        rustix::fs::syncfs(&root).map_err(|e| io(&blobs)(e.into()))?;
        let mut stored = 0;
        for shard in std::fs::read_dir(&blobs).map_err(io(&blobs))? {
            let shard = shard.map_err(io(&blobs))?.path();
            for entry in std::fs::read_dir(&shard).map_err(io(&shard))? {
                let entry = entry.map_err(io(&shard))?;
                stored += entry.metadata().map_err(io(&entry.path()))?.len();
            }
        }
        let stored_bytes = Arc::new(AtomicU64::new(stored));
        let unsynced = Arc::new(Unsynced::default());
        let (committer, staged) = mpsc::channel();
        let broken = Arc::new(Mutex::new(None));
        let committer_state = Committer { root, blobs: blobs.clone(), stored_bytes: stored_bytes.clone(), unsynced: unsynced.clone(), broken: broken.clone() };
        std::thread::Builder::new().name("gridbox-blob-sync".into()).spawn(move || committer_state.run(&staged)).map_err(io(&blobs))?;
        Ok(BlobStore { blobs, tmp, stored_bytes, next_tmp: AtomicU64::new(0), committer: Mutex::new(committer), unsynced, broken })
    }

    /// Why the store refuses to store results, if a sync has failed. A failed sync cannot be
    /// retried safely (the kernel reports a write-back error once, to one caller), so after one
    /// the store takes no more results: the service stops and a restart recovers.
    pub fn broken(&self) -> Option<String> {
        self.broken.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Writes each of `blobs` that is not stored yet to a temporary file and hands them to the
    /// committer thread, which makes many jobs' blobs durable at once; await the answer with
    /// [`PendingBlobs::durable`]. Returns each blob's reference, in order. Blocks on file
    /// writes: call it from a blocking thread.
    pub fn stage(&self, blobs: &[&[u8]]) -> Result<(PendingBlobs, Vec<BlobRef>), BlobError> {
        if let Some(reason) = self.broken() {
            return Err(io(&self.blobs)(std::io::Error::other(reason)));
        }
        let mut files = Vec::new();
        let mut seen = HashSet::new();
        let mut wait = false;
        let refs: Vec<BlobRef> = blobs.iter().map(|bytes| BlobRef::of(bytes)).collect();
        let staged = (|| {
            for (bytes, blob) in blobs.iter().zip(&refs) {
                let digest = blob.blake3;
                if !seen.insert(digest) {
                    continue;
                }
                // Existence first, then the mark: a name that exists and is not marked is durable.
                if self.size(&digest).is_some() {
                    wait |= self.unsynced.contains(&digest);
                    continue;
                }
                let path = self.tmp.join(format!("result-{}-{}", std::process::id(), self.next_tmp.fetch_add(1, Ordering::Relaxed)));
                files.push((path.clone(), digest, bytes.len() as u64));
                std::fs::write(&path, bytes).map_err(io(&path))?;
            }
            Ok(())
        })();
        if let Err(error) = staged {
            files.iter().for_each(|(tmp, _, _)| _ = std::fs::remove_file(tmp));
            return Err(error);
        }
        if files.is_empty() && !wait {
            return Ok((PendingBlobs(None), refs));
        }
        // Nothing new but a name still being synced: an empty batch waits for the next sync.
        let (reply, answer) = oneshot::channel();
        let sent = self.committer.lock().unwrap_or_else(|e| e.into_inner()).send(Staged { files, reply });
        sent.map_err(|_| io(&self.blobs)(std::io::Error::other("the blob committer stopped")))?;
        Ok((PendingBlobs(Some(answer)), refs))
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        blob_path(&self.blobs, digest)
    }

    /// Deletes a blob nobody owns any more (the caller holds the service's collection lock, so
    /// no upload or job result is placing the same bytes meanwhile). Returns whether it was there.
    pub fn delete(&self, digest: &Digest) -> Result<bool, BlobError> {
        if self.unsynced.contains(digest) {
            // Being placed right now: not garbage.
            return Ok(false);
        }
        let path = self.path(digest);
        let size = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io(&path)(e)),
        };
        match std::fs::remove_file(&path) {
            Ok(()) => {
                self.stored_bytes.fetch_sub(size.min(self.stored_bytes()), Ordering::Relaxed);
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Bytes held by all blobs.
    pub fn stored_bytes(&self) -> u64 {
        self.stored_bytes.load(Ordering::Relaxed)
    }

    /// The blob's size, if it is stored.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// Starts writing a blob whose hash is not known yet (an upload being received).
    pub fn writer(self: &Arc<Self>, limit: u64) -> Result<BlobWriter, BlobError> {
        let path = self.tmp.join(format!("upload-{}-{}", std::process::id(), self.next_tmp.fetch_add(1, Ordering::Relaxed)));
        let file = File::create(&path).map_err(io(&path))?;
        Ok(BlobWriter { store: self.clone(), file: Some(file), path, hasher: blake3::Hasher::new(), size: 0, limit })
    }

    /// Stores `bytes`; returns their hash and whether they were new.
    pub fn put(self: &Arc<Self>, bytes: &[u8]) -> Result<(Digest, bool), BlobError> {
        let mut writer = self.writer(u64::MAX)?;
        writer.write(bytes)?;
        let (digest, _, new) = writer.finish(None)?;
        Ok((digest, new))
    }

    /// Opens a blob for streaming after checking, in one pass over the file, that its bytes
    /// still hash to its name. Returns the file at its start and its size.
    pub fn open_checked(&self, digest: &Digest) -> Result<(File, u64), BlobError> {
        use std::io::Seek;
        let path = self.path(digest);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlobError::NotFound(*digest)),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut hasher = blake3::Hasher::new();
        let size = std::io::copy(&mut file, &mut hasher).map_err(io(&path))?;
        if Digest(*hasher.finalize().as_bytes()) != *digest {
            return Err(BlobError::Corrupted(*digest));
        }
        file.rewind().map_err(io(&path))?;
        Ok((file, size))
    }

    /// Reads a blob, checking that its bytes still hash to its name.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(BlobError::NotFound(*digest)),
            Err(e) => return Err(io(&path)(e)),
        };
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path))?;
        if Digest::of(&bytes) != *digest {
            return Err(BlobError::Corrupted(*digest));
        }
        Ok(bytes)
    }
}

/// A blob being written: bytes go to a temporary file and are hashed as they arrive. Dropped
/// without [`BlobWriter::finish`], the temporary file is removed.
pub struct BlobWriter {
    store: Arc<BlobStore>,
    file: Option<File>,
    path: PathBuf,
    hasher: blake3::Hasher,
    size: u64,
    limit: u64,
}

impl BlobWriter {
    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        self.size += bytes.len() as u64;
        if self.size > self.limit {
            return Err(BlobError::TooLarge { limit: self.limit });
        }
        self.hasher.update(bytes);
        let file = self.file.as_mut().ok_or_else(|| io(&self.path)(std::io::ErrorKind::NotConnected.into()))?;
        file.write_all(bytes).map_err(io(&self.path))
    }

    /// Syncs the file, checks it against `claimed` and renames it into place. Returns the
    /// hash, the size and whether the blob is new (false: it was stored already).
    pub fn finish(mut self, claimed: Option<Digest>) -> Result<(Digest, u64, bool), BlobError> {
        let actual = Digest(*self.hasher.finalize().as_bytes());
        if let Some(claimed) = claimed
            && claimed != actual
        {
            return Err(BlobError::HashMismatch { claimed, actual });
        }
        let store = self.store.clone();
        let target = store.path(&actual);
        let shard = target.parent().unwrap_or(&store.blobs).to_path_buf();
        if target.exists() {
            if store.unsynced.contains(&actual) {
                sync_dir(&shard)?; // another writer's rename, not durable yet: make it so
            }
            return Ok((actual, self.size, false));
        }
        let file = self.file.take().ok_or_else(|| io(&self.path)(std::io::ErrorKind::NotConnected.into()))?;
        file.sync_all().map_err(io(&self.path))?;
        drop(file);
        store.unsynced.mark(actual);
        let placed = place(&self.path, &target);
        if placed.is_ok() {
            self.path = PathBuf::new(); // gone: nothing for Drop to remove
        }
        let synced = sync_dir(&shard);
        if synced.is_ok() {
            // A name whose sync failed stays marked: nobody may take it for durable.
            store.unsynced.unmark(&actual);
        }
        let created = placed.map_err(io(&target))?;
        synced?;
        if created {
            store.stored_bytes.fetch_add(self.size, Ordering::Relaxed);
        }
        Ok((actual, self.size, created))
    }
}

/// Puts `tmp` under the name `target` unless that name exists, and removes `tmp`. Returns
/// whether it did: `link` never replaces a name, so two writers of one blob count it once.
fn place(tmp: &Path, target: &Path) -> std::io::Result<bool> {
    let linked = match std::fs::hard_link(tmp, target) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    // A temporary name left behind is harmless (the next start clears `tmp/`); the blob is placed.
    let _ = std::fs::remove_file(tmp);
    Ok(linked)
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The committer thread's state.
struct Committer {
    root: File,
    blobs: PathBuf,
    stored_bytes: Arc<AtomicU64>,
    unsynced: Arc<Unsynced>,
    /// Set at the first failure; from then on every batch is refused.
    broken: Arc<Mutex<Option<String>>>,
}

impl Committer {
    fn run(self, staged: &mpsc::Receiver<Staged>) {
        while let Ok(first) = staged.recv() {
            let mut batch = vec![first];
            batch.extend(staged.try_iter().take(MAX_COMMIT_BATCH - 1));
            let already = self.broken.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let result = match already {
                Some(reason) => Err(reason),
                None => self.commit(&batch).map_err(|e| {
                    let reason = format!("syncing blobs under {}: {e}", self.blobs.display());
                    *self.broken.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.clone());
                    reason
                }),
            };
            for staged in batch {
                for (tmp, _, _) in &staged.files {
                    // Placed files are gone from here already; this cleans up after a failure.
                    let _ = std::fs::remove_file(tmp);
                }
                let _ = staged.reply.send(result.clone());
            }
        }
    }

    /// Sync the staged files' contents, put them in place, sync the new names: a crash at any
    /// point leaves each blob whole under its name or absent. After a failure the names placed
    /// stay marked unsynced for good, and the store is broken (see [`BlobStore::broken`]).
    fn commit(&self, batch: &[Staged]) -> std::io::Result<()> {
        rustix::fs::syncfs(&self.root)?;
        let mut placed = Vec::new();
        for staged in batch {
            for (tmp, digest, size) in &staged.files {
                let hex = digest.to_hex();
                self.unsynced.mark(*digest);
                // Placed by another writer or by us, this batch's second sync covers the name.
                if place(tmp, &self.blobs.join(&hex[..2]).join(&hex))? {
                    self.stored_bytes.fetch_add(*size, Ordering::Relaxed);
                }
                placed.push(*digest);
            }
        }
        rustix::fs::syncfs(&self.root)?;
        for digest in &placed {
            self.unsynced.unmark(digest);
        }
        Ok(())
    }
}

fn sync_dir(path: &Path) -> Result<(), BlobError> {
    File::open(path).and_then(|dir| dir.sync_all()).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_deduplicates_and_detects_corruption() {
        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(data.path()).unwrap());
        let (digest, new) = store.put(b"hello").unwrap();
        assert!(new);
        assert_eq!(store.put(b"hello").unwrap(), (digest, false));
        assert_eq!(store.read(&digest).unwrap(), b"hello");
        assert_eq!(store.stored_bytes(), 5);
        assert!(std::fs::read_dir(data.path().join("tmp")).unwrap().next().is_none(), "no temporary file is left");

        std::fs::write(store.path(&digest), b"hellp").unwrap();
        assert!(matches!(store.read(&digest), Err(BlobError::Corrupted(d)) if d == digest));
        assert!(matches!(store.read(&Digest::of(b"other")), Err(BlobError::NotFound(_))));
    }

    #[test]
    fn a_wrong_claim_or_an_oversized_upload_leaves_nothing() {
        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(data.path()).unwrap());
        let mut writer = store.writer(100).unwrap();
        writer.write(b"abc").unwrap();
        let error = writer.finish(Some(Digest::of(b"abd"))).unwrap_err();
        assert!(error.to_string().contains("not the claimed"), "{error}");
        let mut writer = store.writer(4).unwrap();
        writer.write(b"abc").unwrap();
        assert!(matches!(writer.write(b"de"), Err(BlobError::TooLarge { limit: 4 })));
        drop(writer);
        assert!(std::fs::read_dir(data.path().join("tmp")).unwrap().next().is_none());
        assert_eq!(store.stored_bytes(), 0);
        assert!(store.size(&Digest::of(b"abc")).is_none());
    }

    #[test]
    fn results_are_stored_in_batches_and_deduplicated() {
        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(BlobStore::open(data.path()).unwrap());
        store.put(b"old").unwrap();
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                std::thread::spawn(move || {
                    let (pending, refs) = store.stage(&[format!("job {i}").as_bytes(), b"same", b"same", b"old"]).unwrap();
                    assert_eq!(refs[3], BlobRef::of(b"old"));
                    tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(pending.durable()).unwrap();
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        for i in 0..8 {
            assert_eq!(store.read(&Digest::of(format!("job {i}").as_bytes())).unwrap(), format!("job {i}").as_bytes());
        }
        assert_eq!(store.read(&Digest::of(b"same")).unwrap(), b"same");
        assert_eq!(store.stored_bytes(), 3 + 8 * 5 + 4, "each blob is counted once");
        assert!(std::fs::read_dir(data.path().join("tmp")).unwrap().next().is_none());
    }

    #[test]
    fn reopening_clears_half_written_uploads_and_counts_bytes() {
        let data = tempfile::tempdir().unwrap();
        {
            let store = Arc::new(BlobStore::open(data.path()).unwrap());
            store.put(b"12345678").unwrap();
            let mut writer = store.writer(100).unwrap();
            writer.write(b"partial").unwrap();
            std::mem::forget(writer); // as if the process died mid-upload
        }
        let store = Arc::new(BlobStore::open(data.path()).unwrap());
        assert_eq!(store.stored_bytes(), 8);
        assert!(std::fs::read_dir(data.path().join("tmp")).unwrap().next().is_none());
    }
}
