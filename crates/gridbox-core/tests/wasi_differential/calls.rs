//! The calls a sequence is made of, and the seeded generator that draws them.
//!
//! Calls are drawn one at a time while the sequence runs, so that they can name the descriptors
//! earlier calls opened; as both sides must agree on every result, the sequence a seed makes is
//! the same on every run.

use std::fmt;

// Preview1 constants (typenames.witx), as a guest would pass them.
pub(crate) const OFLAGS_CREAT: u32 = 1 << 0;
pub(crate) const OFLAGS_DIRECTORY: u32 = 1 << 1;
pub(crate) const OFLAGS_EXCL: u32 = 1 << 2;
pub(crate) const OFLAGS_TRUNC: u32 = 1 << 3;
pub(crate) const FDFLAGS_APPEND: u32 = 1 << 0;
pub(crate) const FDFLAGS_DSYNC: u32 = 1 << 1;
pub(crate) const FDFLAGS_NONBLOCK: u32 = 1 << 2;
pub(crate) const FDFLAGS_RSYNC: u32 = 1 << 3;
pub(crate) const FDFLAGS_SYNC: u32 = 1 << 4;
pub(crate) const SYNC_FDFLAGS: u32 = FDFLAGS_DSYNC | FDFLAGS_RSYNC | FDFLAGS_SYNC;
pub(crate) const RIGHTS_FD_READ: u64 = 1 << 1;
pub(crate) const RIGHTS_FD_WRITE: u64 = 1 << 6;
/// Rights a guest asks for besides read and write (seek, tell, stat, readdir, ...); neither side
/// looks at them, but a guest passes them.
const RIGHTS_OTHER: u64 = (1 << 2) | (1 << 5) | (1 << 14) | (1 << 21) | (1 << 22);

pub(crate) use crate::rng::Rng;

/// A descriptor as both sides number it: the two may hand out different numbers for the same
/// open (gridbox takes the lowest free one, wasmtime-wasi reuses the highest), so every open fd
/// is a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fd {
    pub(crate) gridbox: u32,
    pub(crate) host: u32,
}

impl Fd {
    /// A number both sides agree on: the preopens and a number never opened.
    pub(crate) const fn same(fd: u32) -> Self {
        Fd { gridbox: fd, host: fd }
    }
}

/// The read-only `/input` preopen.
pub(crate) const INPUT: Fd = Fd::same(3);
/// The writable `/output` preopen, where the sequences work.
pub(crate) const OUTPUT: Fd = Fd::same(4);
/// A descriptor that is never open on either side.
pub(crate) const NEVER_OPEN: Fd = Fd::same(1000);

impl fmt::Display for Fd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.gridbox == self.host { write!(f, "fd {}", self.gridbox) } else { write!(f, "fd {} (wasmtime-wasi: {})", self.gridbox, self.host) }
    }
}

/// What the generator knows of an open descriptor.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    pub(crate) fd: Fd,
    pub(crate) directory: bool,
    /// Opened under `/input`: wasmtime-wasi refuses every change through it with `EPERM`.
    pub(crate) read_only: bool,
    /// The rights and flags it was opened with.
    pub(crate) rights: u64,
    pub(crate) oflags: u32,
    pub(crate) fdflags: u32,
}

/// One preview1 call with its arguments.
#[derive(Debug, Clone)]
pub(crate) enum Call {
    Open { dir: Fd, path: String, oflags: u32, rights: u64, fdflags: u32 },
    Read { fd: Fd, len: u32 },
    Write { fd: Fd, data: Vec<u8> },
    Pread { fd: Fd, len: u32, offset: u64 },
    Pwrite { fd: Fd, data: Vec<u8>, offset: u64 },
    Seek { fd: Fd, offset: i64, whence: u32 },
    Tell { fd: Fd },
    SetSize { fd: Fd, size: u64 },
    Rename { old_dir: Fd, old: String, new_dir: Fd, new: String },
    Unlink { dir: Fd, path: String },
    Mkdir { dir: Fd, path: String },
    Rmdir { dir: Fd, path: String },
    Readdir { fd: Fd },
    PathStat { dir: Fd, path: String },
    FdStat { fd: Fd },
    Close { fd: Fd },
}

impl Call {
    /// The paths of a path call, each with the directory descriptor it is resolved from.
    pub(crate) fn dir_paths(&self) -> Vec<(Fd, &str)> {
        match self {
            Call::Open { dir, path, .. }
            | Call::Unlink { dir, path }
            | Call::Mkdir { dir, path }
            | Call::Rmdir { dir, path }
            | Call::PathStat { dir, path } => {
                vec![(*dir, path.as_str())]
            }
            Call::Rename { old_dir, old, new_dir, new } => vec![(*old_dir, old.as_str()), (*new_dir, new.as_str())],
            _ => Vec::new(),
        }
    }

    /// The directory descriptors a path call resolves its paths from.
    pub(crate) fn dir_fds(&self) -> Vec<Fd> {
        self.dir_paths().into_iter().map(|(fd, _)| fd).collect()
    }

    /// The descriptor an `fd_*` call works on.
    pub(crate) fn fd(&self) -> Option<Fd> {
        match self {
            Call::Read { fd, .. }
            | Call::Write { fd, .. }
            | Call::Pread { fd, .. }
            | Call::Pwrite { fd, .. }
            | Call::Seek { fd, .. }
            | Call::Tell { fd }
            | Call::SetSize { fd, .. }
            | Call::Readdir { fd }
            | Call::FdStat { fd }
            | Call::Close { fd } => Some(*fd),
            _ => None,
        }
    }

    /// Whether the call changes the tree or a file (or would, for an open: creating,
    /// truncating or asking to write).
    pub(crate) fn changes_the_tree(&self) -> bool {
        match self {
            Call::Open { oflags, rights, .. } => oflags & (OFLAGS_CREAT | OFLAGS_TRUNC) != 0 || rights & RIGHTS_FD_WRITE != 0,
            Call::Rename { .. } | Call::Unlink { .. } | Call::Mkdir { .. } | Call::Rmdir { .. } => true,
            Call::Write { .. } | Call::Pwrite { .. } | Call::SetSize { .. } => true,
            _ => false,
        }
    }
}

/// Whether `path`, read as written, climbs above the directory it starts from (`a/../..`).
pub(crate) fn climbs_above_start(path: &str) -> bool {
    let mut depth = 0usize;
    for component in path.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if component == ".." {
            let Some(up) = depth.checked_sub(1) else { return true };
            depth = up;
        } else {
            depth += 1;
        }
    }
    false
}

/// A path as a failure message shows it: long runs of one byte are abbreviated.
struct ShowPath<'a>(&'a str);

impl fmt::Display for ShowPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        let bytes = self.0.as_bytes();
        let mut at = 0;
        while at < bytes.len() {
            let run = bytes[at..].iter().take_while(|&&b| b == bytes[at]).count();
            if run > 8 {
                write!(f, "{}×{run}", bytes[at] as char)?;
            } else {
                f.write_str(&self.0[at..at + run])?;
            }
            at += run;
        }
        f.write_str("\"")
    }
}

impl fmt::Display for Call {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Call::Open { dir, path, oflags, rights, fdflags } => {
                write!(f, "path_open({dir}, {}, oflags {oflags:#x}, rights {rights:#x}, fdflags {fdflags:#x})", ShowPath(path))
            }
            Call::Read { fd, len } => write!(f, "fd_read({fd}, {len} bytes)"),
            Call::Write { fd, data } => write!(f, "fd_write({fd}, {} bytes)", data.len()),
            Call::Pread { fd, len, offset } => write!(f, "fd_pread({fd}, {len} bytes at {offset})"),
            Call::Pwrite { fd, data, offset } => write!(f, "fd_pwrite({fd}, {} bytes at {offset})", data.len()),
            Call::Seek { fd, offset, whence } => write!(f, "fd_seek({fd}, {offset}, whence {whence})"),
            Call::Tell { fd } => write!(f, "fd_tell({fd})"),
            Call::SetSize { fd, size } => write!(f, "fd_filestat_set_size({fd}, {size})"),
            Call::Rename { old_dir, old, new_dir, new } => write!(f, "path_rename({old_dir}, {}, {new_dir}, {})", ShowPath(old), ShowPath(new)),
            Call::Unlink { dir, path } => write!(f, "path_unlink_file({dir}, {})", ShowPath(path)),
            Call::Mkdir { dir, path } => write!(f, "path_create_directory({dir}, {})", ShowPath(path)),
            Call::Rmdir { dir, path } => write!(f, "path_remove_directory({dir}, {})", ShowPath(path)),
            Call::Readdir { fd } => write!(f, "fd_readdir({fd}) until the end"),
            Call::PathStat { dir, path } => write!(f, "path_filestat_get({dir}, {})", ShowPath(path)),
            Call::FdStat { fd } => write!(f, "fd_filestat_get({fd})"),
            Call::Close { fd } => write!(f, "fd_close({fd})"),
        }
    }
}

/// Names a sequence works with: few, so that calls keep meeting what earlier calls made.
const NAMES: &[&str] = &["a", "b", "c", "d", "e"];

/// A path drawn from the vocabulary: plain relative paths of one to three names, decorated now
/// and then with `.`, `..`, `//` and trailing slashes, plus paths that escape the preopen, empty
/// paths and names of 255 (the longest allowed) and 256 bytes.
pub(crate) fn path(rng: &mut Rng) -> String {
    let long = "L".repeat(255);
    match rng.below(100) {
        0..=9 => {
            let special = ["", ".", "..", "./", "../a", "../output/a", "/a", "/", "a/..", "a/../..", "a/.", "./a/../b", "a//b", "a/./b/", "a/b/../../c"];
            rng.pick(&special).to_string()
        }
        10..=14 => match rng.below(7) {
            0 => long,
            1 => format!("{long}L"),
            2 => format!("a/{long}"),
            3 => format!("{long}/a"),
            4 => format!("{long}/"),
            // Too long in the middle or at the end, after a directory that may be missing.
            5 => format!("a/{long}L"),
            _ => format!("{long}L/a"),
        },
        _ => {
            let depth = match rng.below(10) {
                0..=5 => 1,
                6..=8 => 2,
                _ => 3,
            };
            let mut path = String::new();
            if rng.chance(5) {
                path.push_str("./");
            }
            for index in 0..depth {
                if index > 0 {
                    path.push_str(if rng.chance(5) { "//" } else { "/" });
                }
                path.push_str(rng.pick::<&str>(NAMES));
                if rng.chance(5) {
                    // `x/..` only resolves when `x` is a directory that exists.
                    path.push_str("/../");
                    path.push_str(rng.pick::<&str>(NAMES));
                }
            }
            if rng.chance(12) {
                path.push('/');
            }
            path
        }
    }
}

/// Bytes to write: mostly short, now and then empty or a few KiB.
fn data(rng: &mut Rng) -> Vec<u8> {
    let len = match rng.below(10) {
        0 => 0,
        1..=6 => 1 + rng.below(16),
        7..=8 => rng.below(300),
        _ => 1000 + rng.below(4000),
    };
    let first = rng.below(256) as u8;
    (0..len).map(|i| first.wrapping_add((i * 7) as u8)).collect()
}

/// A file offset: small, near the sizes files reach, or far out.
fn offset(rng: &mut Rng) -> u64 {
    match rng.below(20) {
        0..=11 => rng.below(24),
        12..=16 => rng.below(6000),
        17 => 65_536 + rng.below(4096),
        18 => i64::MAX as u64,
        _ => u64::MAX - rng.below(2),
    }
}

/// A signed seek offset, including negative ones and the extremes.
fn seek_offset(rng: &mut Rng) -> i64 {
    match rng.below(20) {
        0..=7 => rng.below(24) as i64,
        8..=14 => -(rng.below(24) as i64),
        15..=16 => rng.below(6000) as i64 - 3000,
        17 => i64::MAX,
        18 => i64::MIN,
        _ => -1,
    }
}

/// The directory a path call starts from: mostly `/output`, sometimes an open descriptor (a
/// directory, or a file by mistake), `/input` or a descriptor that is not open.
fn dir_fd(rng: &mut Rng, handles: &[Handle]) -> Fd {
    let dirs: Vec<&Handle> = handles.iter().filter(|h| h.directory).collect();
    match rng.below(100) {
        0..=79 => OUTPUT,
        80..=89 if !dirs.is_empty() => rng.pick(&dirs).fd,
        90..=93 if !handles.is_empty() => rng.pick(handles).fd,
        94..=96 => INPUT,
        97..=99 => NEVER_OPEN,
        _ => OUTPUT,
    }
}

/// The descriptor an `fd_*` call works on: mostly an open file, sometimes an open directory, a
/// preopen or a descriptor that is not open.
fn any_fd(rng: &mut Rng, handles: &[Handle]) -> Fd {
    let files: Vec<&Handle> = handles.iter().filter(|h| !h.directory).collect();
    match rng.below(100) {
        0..=74 if !files.is_empty() => rng.pick(&files).fd,
        0..=89 if !handles.is_empty() => rng.pick(handles).fd,
        90..=94 => OUTPUT,
        95..=96 => INPUT,
        _ => NEVER_OPEN,
    }
}

/// Draws the next call of a sequence, given the descriptors open now.
pub(crate) fn call(rng: &mut Rng, handles: &[Handle]) -> Call {
    // Too many open descriptors make every call about descriptors: close some first.
    let open_weight = if handles.len() > 8 { 4 } else { 22 };
    let roll = rng.below(100 + open_weight);
    if roll >= 100 {
        let mut oflags = 0;
        for (flag, percent) in [(OFLAGS_CREAT, 50), (OFLAGS_EXCL, 15), (OFLAGS_TRUNC, 20), (OFLAGS_DIRECTORY, 15)] {
            if rng.chance(percent) {
                oflags |= flag;
            }
        }
        let rights = match rng.below(20) {
            0..=6 => RIGHTS_FD_READ,
            7..=10 => RIGHTS_FD_WRITE,
            11..=18 => RIGHTS_FD_READ | RIGHTS_FD_WRITE,
            _ => 0,
        } | if rng.chance(50) { RIGHTS_OTHER } else { 0 };
        let fdflags = if rng.chance(20) { FDFLAGS_APPEND } else { 0 }
            | if rng.chance(5) { FDFLAGS_NONBLOCK } else { 0 }
            | if rng.chance(4) { rng.pick(&[FDFLAGS_DSYNC, FDFLAGS_RSYNC, FDFLAGS_SYNC]) } else { 0 };
        return Call::Open { dir: dir_fd(rng, handles), path: path(rng), oflags, rights, fdflags };
    }
    let file_handles: Vec<&Handle> = handles.iter().filter(|h| !h.directory).collect();
    match roll {
        0..=7 => Call::Read { fd: any_fd(rng, handles), len: [0, 1, 3, 16, 100, 8192][rng.below(6) as usize] },
        8..=18 => Call::Write { fd: any_fd(rng, handles), data: data(rng) },
        19..=23 => Call::Pread { fd: any_fd(rng, handles), len: [0, 1, 7, 64, 8192][rng.below(5) as usize], offset: offset(rng) },
        24..=28 => {
            let fd = any_fd(rng, handles);
            // Linux ignores pwrite's offset on an O_APPEND descriptor and appends (a
            // documented deviation from POSIX, which wasmtime-wasi inherits); gridbox writes
            // at the offset, as POSIX says. The sides would then hold different files, so a
            // pwrite through an append descriptor becomes a plain write (spec/determinism.md).
            let append = file_handles.iter().any(|h| h.fd == fd && h.fdflags & FDFLAGS_APPEND != 0);
            if append { Call::Write { fd, data: data(rng) } } else { Call::Pwrite { fd, data: data(rng), offset: offset(rng) } }
        }
        29..=37 => Call::Seek { fd: any_fd(rng, handles), offset: seek_offset(rng), whence: [0, 0, 1, 1, 2, 2, 3][rng.below(7) as usize] },
        38..=40 => Call::Tell { fd: any_fd(rng, handles) },
        41..=46 => Call::SetSize { fd: any_fd(rng, handles), size: [0, 1, 5, 17, 300, 70_000][rng.below(6) as usize] },
        47..=56 => {
            let old_dir = dir_fd(rng, handles);
            let new_dir = if rng.chance(80) { old_dir } else { dir_fd(rng, handles) };
            let old = path(rng);
            // Now and then a rename into the source itself, the case POSIX refuses.
            let new = if rng.chance(10) { format!("{}/{}", old.trim_end_matches('/'), rng.pick(NAMES)) } else { path(rng) };
            Call::Rename { old_dir, old, new_dir, new }
        }
        57..=64 => Call::Unlink { dir: dir_fd(rng, handles), path: path(rng) },
        65..=76 => Call::Mkdir { dir: dir_fd(rng, handles), path: path(rng) },
        77..=83 => Call::Rmdir { dir: dir_fd(rng, handles), path: path(rng) },
        84..=87 => {
            let dirs: Vec<&Handle> = handles.iter().filter(|h| h.directory).collect();
            let fd = if !dirs.is_empty() && rng.chance(60) {
                rng.pick(&dirs).fd
            } else if rng.chance(70) {
                OUTPUT
            } else {
                any_fd(rng, handles)
            };
            Call::Readdir { fd }
        }
        88..=92 => Call::PathStat { dir: dir_fd(rng, handles), path: path(rng) },
        93..=95 => Call::FdStat { fd: any_fd(rng, handles) },
        _ => Call::Close { fd: if handles.is_empty() || rng.chance(5) { NEVER_OPEN } else { rng.pick(handles).fd } },
    }
}
