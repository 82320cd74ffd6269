//! Compiled modules kept on disk between processes, so that a module run before is not compiled
//! again: [`CompiledCache`].
//!
//! An entry is one file, `DIR/<key>.cwasm`, named by BLAKE3(module hash, engine fingerprint):
//!
//! ```text
//! MAGIC (16 bytes) | module BLAKE3 (32) | engine fingerprint (32) | BLAKE3 of the code (32) | code
//! ```
//!
//! where the code is what [`Module::serialize`] wrote. Loading native code is only as safe as
//! the bytes loaded, so nothing is handed to wasmtime until the header names this very module
//! and engine and the code hashes to the checksum beside it; wasmtime then checks the code's
//! own version and settings against the engine. Anything that fails a check is compiled again
//! and the entry rewritten. A cache problem never fails a job: the worst it costs is a compile.
//!
//! The folder is opened once and checked (this user's, no one else may write to it); every
//! entry is then reached through that open folder, never through a symbolic link, and must be a
//! plain file of this user's that no one else may write, so swapping the folder or anything on
//! its path after the check changes nothing. Files are written to a temporary name and renamed
//! into place, so a reader sees a whole entry or none; nothing is synced, because a file a power cut left short or empty fails the
//! checksum like any other damage. Eviction keeps the folder under its size bound by deleting
//! the least recently used entries (a hit sets the file's modification time).
#![allow(unsafe_code)]

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use wasmtime::{Engine, Module};

use crate::digest::Digest;
use crate::errors::BoxError;

/// The default size bound of a cache folder: 512 MiB (wasmtime's own cache uses the same).
pub const DEFAULT_MAX_BYTES: u64 = 512 << 20;

/// The first bytes of every entry; the digit is the entry format's version.
const MAGIC: &[u8; 16] = b"gridbox-cwasm/1\n";
/// Magic, module hash, engine fingerprint, code checksum.
const HEADER_LEN: usize = MAGIC.len() + 3 * 32;
/// Entries end in this; temporary files start with [`TEMP_PREFIX`] and never do.
const EXTENSION: &str = "cwasm";
const TEMP_PREFIX: &str = ".tmp-";
/// A temporary file older than this was left by a process that died while writing it.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// What identifies a compiled module: the module's bytes and the engine that compiled them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    /// BLAKE3 of the module's bytes.
    pub module: Digest,
    /// [`crate::engine::JobEngine`]'s configuration fingerprint.
    pub engine: [u8; 32],
}

impl CacheKey {
    fn file_name(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&self.module.0).update(&self.engine);
        format!("{}.{EXTENSION}", hasher.finalize().to_hex())
    }
}

/// A folder of compiled modules shared by every gridbox process of one user.
pub struct CompiledCache {
    dir: PathBuf,
    /// The folder `open` checked, held open: every entry is reached through it (`openat`), so
    /// renaming the folder, a folder above it or a symbolic link on its path afterwards cannot
    /// send gridbox to another folder.
    #[cfg(unix)]
    fd: std::os::fd::OwnedFd,
    max_bytes: u64,
    report: Box<dyn Fn(&CacheProblem) + Send + Sync>,
    reported: AtomicBool,
}

/// Why a cache folder cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The folder could not be made or read.
    #[error("cannot use the compiled-module cache folder {}", path.display())]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Someone else could put code in the folder: it belongs to another user, or others may write
    /// to it.
    #[error("the compiled-module cache folder {} {why}", path.display())]
    NotPrivate {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

/// Something that went wrong with one entry. The job is not affected: the module is compiled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheProblem {
    /// An entry failed a check before it was loaded.
    #[error("compiled-module cache: {} is damaged ({why}); compiled the module again", path.display())]
    Damaged {
        /// The entry.
        path: PathBuf,
        /// Which check it failed.
        why: &'static str,
    },
    /// wasmtime refused an entry that passed gridbox's checks (made by another engine build).
    #[error("compiled-module cache: {} was made by another engine; compiled the module again", path.display())]
    Foreign {
        /// The entry.
        path: PathBuf,
        /// What wasmtime said.
        #[source]
        source: BoxError,
    },
    /// An entry could not be read or written.
    #[error("compiled-module cache: cannot {what} {}", path.display())]
    Io {
        /// `read` or `write`.
        what: &'static str,
        /// The entry.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The compiled module could not be serialized.
    #[error("compiled-module cache: cannot serialize a compiled module")]
    Serialize(#[source] BoxError),
    /// The folder is no longer private (its mode or owner changed since it was opened), so no
    /// entry is loaded from it.
    #[error("compiled-module cache: the folder {} {why}; compiled the module again", path.display())]
    NotPrivate {
        /// The folder.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
}

impl CompiledCache {
    /// The cache in `dir`, made (mode 0700) if absent, holding at most about `max_bytes`.
    /// `report` hears of the first problem with an entry (later ones are not reported).
    ///
    /// Refuses a folder that belongs to another user or that others may write to: anyone who can
    /// write an entry can choose the native code gridbox runs.
    pub fn open(dir: PathBuf, max_bytes: u64, report: impl Fn(&CacheProblem) + Send + Sync + 'static) -> Result<Self, CacheError> {
        let folder_error = |source| CacheError::Folder { path: dir.clone(), source };
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(&dir).map_err(folder_error)?;
        #[cfg(unix)]
        {
            use rustix::fs::{Mode, OFlags};
            // What is checked is the folder held open, not whatever the path names later.
            let fd = rustix::fs::open(&dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| folder_error(e.into()))?;
            if let Err(why) = check_private_folder(&fd) {
                return Err(match why {
                    Ok(why) => CacheError::NotPrivate { path: dir, why },
                    Err(source) => folder_error(source),
                });
            }
            Ok(CompiledCache { dir, fd, max_bytes, report: Box::new(report), reported: AtomicBool::new(false) })
        }
        #[cfg(not(unix))]
        {
            let _ = (max_bytes, report);
            Err(CacheError::NotPrivate { path: dir, why: "cannot be checked on this platform for who may write to it".into() })
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The compiled module stored under `key`, if there is a sound one. A missing entry is a
    /// plain miss; a damaged or foreign one is reported and left to be overwritten.
    #[cfg(unix)]
    pub(crate) fn load(&self, engine: &Engine, key: &CacheKey) -> Option<Module> {
        use rustix::fs::{Mode, OFlags};
        // The folder's mode or owner may have changed since `open`.
        match check_private_folder(&self.fd) {
            Ok(()) => {}
            Err(Ok(why)) => return self.miss(CacheProblem::NotPrivate { path: self.dir.clone(), why }),
            Err(Err(source)) => return self.miss(CacheProblem::Io { what: "read", path: self.dir.clone(), source }),
        }
        let name = key.file_name();
        let path = self.dir.join(&name);
        // Never through a symbolic link, and never waiting on a FIFO: what is opened is checked
        // to be a plain file of this user's before a byte is read.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let file = match rustix::fs::openat(&self.fd, name.as_str(), flags, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(rustix::io::Errno::NOENT) => return None,
            Err(rustix::io::Errno::LOOP) => return self.miss(CacheProblem::Damaged { path, why: "it is a symbolic link" }),
            Err(e) => return self.miss(CacheProblem::Io { what: "read", path, source: e.into() }),
        };
        let metadata = match file.metadata() {
            Ok(metadata) => metadata,
            Err(source) => return self.miss(CacheProblem::Io { what: "read", path, source }),
        };
        if let Err(why) = check_entry_file(&metadata) {
            return self.miss(CacheProblem::Damaged { path, why });
        }
        // An entry larger than the whole cache may hold was not written by gridbox: at most one
        // byte more than that is read, and the checksum refuses it.
        let limit = self.max_bytes.saturating_add(1);
        let mut bytes = Vec::new();
        // However large the bound, memory that cannot be had is a miss, not an abort.
        if bytes.try_reserve_exact(usize::try_from(metadata.len().min(limit)).unwrap_or(usize::MAX)).is_err() {
            return self.miss(CacheProblem::Io { what: "read", path, source: io::ErrorKind::OutOfMemory.into() });
        }
        if let Err(source) = (&file).take(limit).read_to_end(&mut bytes) {
            return self.miss(CacheProblem::Io { what: "read", path, source });
        }
        let code = match check_entry(&bytes, key) {
            Ok(code) => code,
            Err(why) => return self.miss(CacheProblem::Damaged { path, why }),
        };
        // SAFETY: `Module::deserialize` runs the bytes as native code, so they must be what
        // `Module::serialize` wrote. `check_entry` has just checked them, in this process's own
        // memory (a later change to the file cannot reach them), against the BLAKE3 written
        // beside them when they were serialized; only gridbox writes into this folder: `open`
        // checked it belongs to this user and no one else may write to it (checked again just
        // now, through the descriptor `open` checked, so the folder cannot have been swapped),
        // and the entry is a plain file of this user's that no one else may write. wasmtime
        // itself refuses code made by another version or configuration of the engine.
        match unsafe { Module::deserialize(engine, code) } {
            Ok(module) => {
                // A hit makes the entry the most recently used (eviction reads the time). A
                // failure only makes it a likelier victim.
                let _ = file.set_modified(SystemTime::now());
                Some(module)
            }
            Err(e) => self.miss(CacheProblem::Foreign { path, source: e.into() }),
        }
    }

    /// No cache is ever opened where its folder cannot be checked.
    #[cfg(not(unix))]
    pub(crate) fn load(&self, _engine: &Engine, _key: &CacheKey) -> Option<Module> {
        None
    }

    /// Stores `module` under `key` (replacing whatever is there), then evicts the least recently
    /// used entries while the folder holds more than the bound. Failures are reported, never
    /// returned: the job has its compiled module either way.
    #[cfg(unix)]
    pub(crate) fn store(&self, key: &CacheKey, module: &Module) {
        let code = match module.serialize() {
            Ok(code) => code,
            Err(e) => {
                self.report_once(CacheProblem::Serialize(e.into()));
                return;
            }
        };
        let entry = encode_entry(key, &code);
        if entry.len() as u64 > self.max_bytes {
            return;
        }
        let name = key.file_name();
        if let Err(source) = self.write_atomically(&name, &entry) {
            self.report_once(CacheProblem::Io { what: "write", path: self.dir.join(&name), source });
            return;
        }
        self.evict(&name);
    }

    /// No cache is ever opened where its folder cannot be checked.
    #[cfg(not(unix))]
    pub(crate) fn store(&self, _key: &CacheKey, _module: &Module) {}

    /// Writes `bytes` to a new temporary file in the folder and renames it to `name`, so that no
    /// reader ever sees part of an entry.
    #[cfg(unix)]
    fn write_atomically(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        use rustix::fs::{Mode, OFlags};
        let mut nonce = [0u8; 8];
        getrandom::fill(&mut nonce).map_err(io::Error::other)?;
        let temp = format!("{TEMP_PREFIX}{}-{}", std::process::id(), hex::encode(nonce));
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let written = rustix::fs::openat(&self.fd, temp.as_str(), flags, Mode::from_raw_mode(0o600))
            .map_err(io::Error::from)
            .and_then(|fd| File::from(fd).write_all(bytes))
            .and_then(|()| rustix::fs::renameat(&self.fd, temp.as_str(), &self.fd, name).map_err(io::Error::from));
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, temp.as_str(), rustix::fs::AtFlags::empty());
        }
        written
    }

    /// Deletes the least recently used entries (never `keep`, just written) until the folder's
    /// entries total at most the bound, and temporary files a dead writer left behind.
    #[cfg(unix)]
    fn evict(&self, keep: &str) {
        use rustix::fs::AtFlags;
        let Ok(listing) = rustix::fs::Dir::read_from(&self.fd) else { return };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        let mut total = 0u64;
        // `Dir` ends at its first error, so this cannot spin on one.
        for item in listing.flatten() {
            let name = item.file_name().to_owned();
            let bytes = name.to_bytes();
            let Ok(stat) = rustix::fs::statat(&self.fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) else { continue };
            let (is_file, len, modified) = stat_summary(&stat);
            if bytes.starts_with(TEMP_PREFIX.as_bytes()) {
                if now.duration_since(modified).is_ok_and(|age| age > STALE_TEMP) {
                    let _ = rustix::fs::unlinkat(&self.fd, name.as_c_str(), AtFlags::empty());
                }
            } else if is_file && bytes.ends_with(EXTENSION.as_bytes()) {
                total = total.saturating_add(len);
                entries.push((modified, len, name));
            }
        }
        if total <= self.max_bytes {
            return;
        }
        entries.sort();
        for (_, len, name) in entries {
            if total <= self.max_bytes {
                break;
            }
            if name.as_bytes() != keep.as_bytes() && rustix::fs::unlinkat(&self.fd, name.as_c_str(), AtFlags::empty()).is_ok() {
                total = total.saturating_sub(len);
            }
        }
    }

    /// Reports `problem` if it is the first.
    fn report_once(&self, problem: CacheProblem) {
        if !self.reported.swap(true, Ordering::Relaxed) {
            (self.report)(&problem);
        }
    }

    /// A load that found `problem`: reported, and then a miss.
    fn miss(&self, problem: CacheProblem) -> Option<Module> {
        self.report_once(problem);
        None
    }
}

/// Whether the folder held open is a folder of this user's that no one else may write to:
/// `Err(Ok(why))` if not, `Err(Err(_))` if it cannot be told.
#[cfg(unix)]
fn check_private_folder(fd: &std::os::fd::OwnedFd) -> Result<(), Result<String, io::Error>> {
    use std::os::unix::fs::MetadataExt;
    // The descriptor's own metadata: a rename or a new link on the path changes nothing here.
    let metadata = File::from(fd.try_clone().map_err(Err)?).metadata().map_err(Err)?;
    if !metadata.is_dir() {
        return Err(Ok("is not a folder".into()));
    }
    let me = rustix::process::geteuid().as_raw();
    if metadata.uid() != me {
        return Err(Ok(format!("belongs to user {}, not to this user ({me})", metadata.uid())));
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(Ok(format!("may be written by other users (mode {:o})", metadata.mode() & 0o777)));
    }
    Ok(())
}

/// Whether an opened entry is a plain file of this user's that no one else may write to (a
/// file another user owns, or may write, could hold anyone's code, whatever its header says).
#[cfg(unix)]
fn check_entry_file(metadata: &fs::Metadata) -> Result<(), &'static str> {
    use std::os::unix::fs::MetadataExt;
    if !metadata.is_file() {
        return Err("it is not a plain file");
    }
    if metadata.uid() != rustix::process::geteuid().as_raw() {
        return Err("it belongs to another user");
    }
    if metadata.mode() & 0o022 != 0 {
        return Err("other users may write to it");
    }
    Ok(())
}

/// Whether `statat` found a plain file, its size and its modification time (the fields' types
/// vary by platform).
#[cfg(unix)]
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn stat_summary(stat: &rustix::fs::Stat) -> (bool, u64, SystemTime) {
    let is_file = rustix::fs::FileType::from_raw_mode(stat.st_mode.into()) == rustix::fs::FileType::RegularFile;
    let len = u64::try_from(stat.st_size).unwrap_or(0);
    let seconds = u64::try_from(stat.st_mtime).unwrap_or(0);
    let nanos = u32::try_from(stat.st_mtime_nsec).unwrap_or(0).min(999_999_999);
    (is_file, len, SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, nanos)).unwrap_or(SystemTime::UNIX_EPOCH))
}

/// An entry's bytes: header, then `code`.
fn encode_entry(key: &CacheKey, code: &[u8]) -> Vec<u8> {
    let mut entry = Vec::with_capacity(HEADER_LEN + code.len());
    entry.extend_from_slice(MAGIC);
    entry.extend_from_slice(&key.module.0);
    entry.extend_from_slice(&key.engine);
    entry.extend_from_slice(blake3::hash(code).as_bytes());
    entry.extend_from_slice(code);
    entry
}

/// The code in `entry` if its header is gridbox's, names `key`, and the code matches its
/// checksum; otherwise which check failed.
fn check_entry<'a>(entry: &'a [u8], key: &CacheKey) -> Result<&'a [u8], &'static str> {
    if entry.len() < HEADER_LEN {
        return Err("shorter than its header");
    }
    let (header, code) = entry.split_at(HEADER_LEN);
    let (magic, rest) = header.split_at(MAGIC.len());
    let (module, rest) = rest.split_at(32);
    let (engine, checksum) = rest.split_at(32);
    if magic != MAGIC {
        return Err("not a gridbox cache entry of this format");
    }
    if module != key.module.0 || engine != key.engine {
        return Err("its header names another module or engine");
    }
    if blake3::hash(code).as_bytes() != checksum {
        return Err("its code does not match its checksum");
    }
    Ok(code)
}

#[cfg(test)]
#[path = "compiled_cache/tests.rs"]
mod tests;
