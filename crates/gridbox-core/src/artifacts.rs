//! The files a run leaves in its output directory: `stdout`, `stderr`, `output/...` (the job's
//! `/output`), `mounts/...` (its writable mounts, by guest path: `/data/a.txt` is
//! `mounts/data/a.txt`), `trace.jsonl` (the trace log, when it was kept; spec/trace.md) and
//! `receipt.json`, written so that a crash never leaves a half-written directory behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use gridbox_compute::TraceEntry;

use crate::job::JobRun;
use crate::receipt::Receipt;
use crate::trace_file::{self, TRACE_FILE, TraceFileError};

/// The receipt's file name inside an artifact directory.
pub const RECEIPT_FILE: &str = "receipt.json";
/// The job's stdout.
pub const STDOUT_FILE: &str = "stdout";
/// The job's stderr.
pub const STDERR_FILE: &str = "stderr";
/// The folder holding the job's `/output` files.
pub const OUTPUT_FOLDER: &str = "output";
/// The folder holding the files of the job's writable mounts, by guest path.
pub const MOUNTS_FOLDER: &str = "mounts";

/// Where output `name` goes in an artifact directory: a relative name under [`OUTPUT_FOLDER`],
/// an absolute guest path (a writable mount's file) under [`MOUNTS_FOLDER`]. `None` for a name
/// that is not a plain path.
fn artifact_path(name: &str) -> Option<PathBuf> {
    let (folder, relative) = match name.strip_prefix('/') {
        Some(relative) => (MOUNTS_FOLDER, relative),
        None => (OUTPUT_FOLDER, name),
    };
    // `\` is an ordinary byte in a Unix file name (a job on Linux may make one); only where it
    // separates paths could it move a file elsewhere.
    let separator = |part: &str| cfg!(windows) && part.contains('\\');
    let plain = relative.split('/').all(|part| !part.is_empty() && part != "." && part != ".." && !separator(part) && !part.contains('\0'));
    plain.then(|| Path::new(folder).join(relative))
}

/// An artifact directory could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// I/O failed on a path.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The directory exists and is not empty; gridbox never overwrites results.
    #[error("output directory {0} exists and is not empty: choose another, remove it, or pass --replace if it holds an earlier run's results")]
    NotEmpty(PathBuf),
    /// `--replace` was asked for a folder that is not a gridbox output folder.
    #[error("{0} is not empty and holds no receipt.json: --replace replaces only the results of an earlier run")]
    NotAnOutputFolder(PathBuf),
    /// An output path from the job is not a plain relative path.
    #[error("output path {0:?} is not a plain relative path")]
    BadPath(String),
    /// A folder being read holds a symbolic link or a special file, which gridbox does not follow
    /// or read.
    #[error("{0} is a symbolic link or a special file: only regular files and folders are read, and links are not followed")]
    NotAFile(PathBuf),
    /// A file name that is not valid UTF-8, which no job path can hold.
    #[error("{0} has a name that is not valid UTF-8")]
    NotUtf8(PathBuf),
    /// The folder's `trace.jsonl` cannot be read.
    #[error("{path}: {source}")]
    Trace {
        /// The file.
        path: PathBuf,
        /// Why.
        source: TraceFileError,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArtifactError + '_ {
    move |source| ArtifactError::Io { path: path.to_path_buf(), source }
}

/// Fails unless `dir` is absent or empty: called before a run, so nothing is computed in vain.
pub fn check_writable(dir: &Path) -> Result<(), ArtifactError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            Some(_) => Err(ArtifactError::NotEmpty(dir.to_path_buf())),
            None => Ok(()),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// Fails unless `dir` is absent, empty, or the output folder of an earlier run (it holds a
/// `receipt.json`): what `--replace` may replace.
pub fn check_replaceable(dir: &Path) -> Result<(), ArtifactError> {
    match check_writable(dir) {
        Err(ArtifactError::NotEmpty(_)) if dir.join(RECEIPT_FILE).is_file() => Ok(()),
        Err(ArtifactError::NotEmpty(_)) => Err(ArtifactError::NotAnOutputFolder(dir.to_path_buf())),
        other => other,
    }
}

/// Moves an earlier run's output folder out of `dir`'s way (to a hidden sibling) so that new
/// results can be written there; returns where it went, or `None` if there was nothing there.
/// Then [`discard`] it once the new results are written, or [`restore`] it if they could not be.
pub fn set_aside(dir: &Path) -> Result<Option<PathBuf>, ArtifactError> {
    check_replaceable(dir)?;
    if check_writable(dir).is_ok() {
        return Ok(None);
    }
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let aside = dir.with_file_name(format!(".{name}.replaced-{}", std::process::id()));
    std::fs::rename(dir, &aside).map_err(io(dir))?;
    Ok(Some(aside))
}

/// Puts a folder [`set_aside`] moved back where it was.
pub fn restore(dir: &Path, aside: &Path) -> Result<(), ArtifactError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::rename(aside, dir).map_err(io(aside))
}

/// Deletes a folder [`set_aside`] moved, once the new results are in place.
pub fn discard(aside: &Path) -> Result<(), ArtifactError> {
    std::fs::remove_dir_all(aside).map_err(io(aside))
}

/// Writes the run's artifacts and receipt into `dir`, which must be absent or empty.
///
/// Everything goes to a sibling staging directory first, each file synced, and the staging
/// directory is renamed onto `dir` last: readers see all of it or none of it.
pub fn write(dir: &Path, run: &JobRun, receipt: &Receipt) -> Result<(), ArtifactError> {
    write_files(dir, &run.stdout, &run.stderr, &run.outputs, run.trace_log.entries(), receipt)
}

/// Writes artifacts received from elsewhere (a server) and their receipt, as [`write`] does.
pub fn write_parts(dir: &Path, parts: &Artifacts, receipt: &Receipt) -> Result<(), ArtifactError> {
    let (stdout, stderr) = (parts.stdout.as_deref().unwrap_or_default(), parts.stderr.as_deref().unwrap_or_default());
    write_files(dir, stdout, stderr, &parts.outputs, parts.trace.as_deref(), receipt)
}

fn write_files(
    dir: &Path,
    stdout: &[u8],
    stderr: &[u8],
    outputs: &BTreeMap<String, Vec<u8>>,
    trace: Option<&[TraceEntry]>,
    receipt: &Receipt,
) -> Result<(), ArtifactError> {
    check_writable(dir)?;
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let staging = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let result = write_into(&staging, stdout, stderr, outputs, trace, receipt).and_then(|()| {
        if dir.exists() {
            // An empty directory: rename(2) replaces it atomically.
            std::fs::remove_dir(dir).map_err(io(dir))?;
        }
        std::fs::rename(&staging, dir).map_err(io(dir))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn write_into(
    staging: &Path,
    stdout: &[u8],
    stderr: &[u8],
    outputs: &BTreeMap<String, Vec<u8>>,
    trace: Option<&[TraceEntry]>,
    receipt: &Receipt,
) -> Result<(), ArtifactError> {
    std::fs::create_dir_all(staging.join(OUTPUT_FOLDER)).map_err(io(staging))?;
    write_synced(&staging.join(STDOUT_FILE), stdout)?;
    write_synced(&staging.join(STDERR_FILE), stderr)?;
    for (name, bytes) in outputs {
        let path = staging.join(artifact_path(name).ok_or_else(|| ArtifactError::BadPath(name.clone()))?);
        if let Some(folder) = path.parent() {
            std::fs::create_dir_all(folder).map_err(io(folder))?;
        }
        write_synced(&path, bytes)?;
    }
    if let Some(entries) = trace {
        write_synced(&staging.join(TRACE_FILE), &trace_file::encode(entries))?;
    }
    write_synced(&staging.join(RECEIPT_FILE), &receipt.to_canonical_json())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ArtifactError> {
    // `create_new`: on a case-folding filesystem two outputs (`A` and `a`) would otherwise end
    // up as one file without a word.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))?;
    file.sync_all().map_err(io(path))
}

/// What an artifact directory holds, for `gridbox verify` to check against a receipt.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Artifacts {
    /// The `stdout` file, if present.
    pub stdout: Option<Vec<u8>>,
    /// The `stderr` file, if present.
    pub stderr: Option<Vec<u8>>,
    /// Every regular file under `output/`, by relative path, and under `mounts/`, by absolute
    /// guest path (the receipt's names).
    pub outputs: BTreeMap<String, Vec<u8>>,
    /// The `trace.jsonl` log, if present.
    pub trace: Option<Vec<TraceEntry>>,
}

/// Reads an artifact directory.
pub fn read(dir: &Path) -> Result<Artifacts, ArtifactError> {
    let optional = |path: PathBuf| match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    };
    let trace_path = dir.join(TRACE_FILE);
    let trace = match optional(trace_path.clone())? {
        Some(bytes) => Some(trace_file::decode(&bytes).map_err(|source| ArtifactError::Trace { path: trace_path, source })?),
        None => None,
    };
    let mut artifacts = Artifacts { stdout: optional(dir.join(STDOUT_FILE))?, stderr: optional(dir.join(STDERR_FILE))?, outputs: BTreeMap::new(), trace };
    let output = dir.join(OUTPUT_FOLDER);
    if output.is_dir() {
        for (name, path) in walk_files(&output)? {
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            artifacts.outputs.insert(name, bytes);
        }
    }
    let mounts = dir.join(MOUNTS_FOLDER);
    if mounts.is_dir() {
        for (name, path) in walk_files(&mounts)? {
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            artifacts.outputs.insert(format!("/{name}"), bytes);
        }
    }
    Ok(artifacts)
}

/// Every regular file under `root`, by `/`-separated relative path, in sorted order: hidden files
/// (names starting with `.`) included, empty folders left out (a job's inputs are files).
/// Symbolic links and other special files are refused rather than followed.
pub fn walk_files(root: &Path) -> Result<Vec<(String, PathBuf)>, ArtifactError> {
    let mut found = Vec::new();
    let mut pending = vec![(String::new(), root.to_path_buf())];
    while let Some((prefix, folder)) = pending.pop() {
        for entry in std::fs::read_dir(&folder).map_err(io(&folder))? {
            let entry = entry.map_err(io(&folder))?;
            let path = entry.path();
            let name = entry.file_name().into_string().map_err(|_| ArtifactError::NotUtf8(path.clone()))?;
            let relative = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
            let kind = entry.file_type().map_err(io(&path))?;
            if kind.is_dir() {
                pending.push((relative, path));
            } else if kind.is_file() {
                found.push((relative, path));
            } else {
                return Err(ArtifactError::NotAFile(path));
            }
        }
    }
    found.sort();
    Ok(found)
}
