//! The filesystem's errors and the values its API hands out.

use crate::limits::LimitExceeded;

/// A WASI preview1 error number. The discriminants are the `errno` enum of
/// `wasi_snapshot_preview1.witx` (its variants are numbered in declaration order from 0).
///
/// Only the values this implementation returns are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Errno {
    /// `success`: not an error. Listed so that the numbering can be checked in one place.
    Success = 0,
    /// `2big`: argument list too long.
    TooBig = 1,
    /// `acces`: permission denied.
    Acces = 2,
    /// `badf`: bad file descriptor.
    Badf = 8,
    /// `busy`: device or resource busy.
    Busy = 10,
    /// `exist`: file exists.
    Exist = 20,
    /// `fault`: bad address (a guest pointer out of bounds).
    Fault = 21,
    /// `fbig`: file too large.
    Fbig = 22,
    /// `ilseq`: illegal byte sequence (a path that is not UTF-8).
    Ilseq = 25,
    /// `inval`: invalid argument.
    Inval = 28,
    /// `io`: I/O error.
    Io = 29,
    /// `isdir`: is a directory.
    Isdir = 31,
    /// `mfile`: too many open files.
    Mfile = 33,
    /// `nametoolong`: file name too long.
    Nametoolong = 37,
    /// `noent`: no such file or directory.
    Noent = 44,
    /// `nomem`: not enough space (the host could not allocate).
    Nomem = 48,
    /// `nospc`: no space left on device.
    Nospc = 51,
    /// `notdir`: not a directory.
    Notdir = 54,
    /// `notempty`: directory not empty.
    Notempty = 55,
    /// `notsup`: not supported.
    Notsup = 58,
    /// `overflow`: value too large to be stored in data type.
    Overflow = 61,
    /// `perm`: operation not permitted (also what a path escaping its mount gets, as with
    /// wasmtime-wasi's cap-std preopens).
    Perm = 63,
    /// `rofs`: read-only file system.
    Rofs = 69,
    /// `spipe`: invalid seek.
    Spipe = 70,
    /// `xdev`: cross-device link (a rename between mounts).
    Xdev = 75,
    /// `notcapable`: extension: capabilities insufficient.
    Notcapable = 76,
}

impl Errno {
    /// The number the guest sees.
    pub fn raw(self) -> u16 {
        self as u16
    }
}

/// Why a filesystem operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    /// An error the guest gets back as an errno and may handle.
    Errno(Errno),
    /// The operation would take the job past an output quota: the job must stop.
    Limit(LimitExceeded),
}

impl From<Errno> for FsError {
    fn from(errno: Errno) -> Self {
        FsError::Errno(errno)
    }
}

/// Why the host could not add a mount. These are the host's mistakes (or a manifest's), never the
/// guest's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The guest path of a mount must be absolute, normalised and short enough.
    #[error("bad mount path {path:?}: {reason}")]
    BadMountPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two mounts at the same guest path.
    #[error("{path:?} is already mounted")]
    DuplicateMount {
        /// The path given.
        path: String,
    },
    /// An input file's relative path is not a plain relative path (`a.txt`, `data/b.bin`).
    #[error("bad file path {path:?}: {reason}")]
    BadFilePath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two input files at the same path, or a file where a directory is needed (`a` and `a/b`).
    #[error("input file path {path:?} conflicts with another input")]
    Conflict {
        /// The path given.
        path: String,
    },
    /// A writable mount's files are larger than the `output_bytes` quota left.
    #[error("the files of writable mount {path:?} hold {bytes} bytes, more than the {limit} bytes `output_bytes` allows")]
    OverQuota {
        /// The mount's guest path.
        path: String,
        /// The files' total size.
        bytes: u64,
        /// The `output_bytes` quota.
        limit: u64,
    },
    /// No file descriptor is free for the mount's preopen.
    #[error("too many open file descriptors to preopen {path:?}")]
    TooManyDescriptors {
        /// The path given.
        path: String,
    },
}

/// Identifies a node (file or directory) of a [`Vfs`]. Ids are never reused, so a stale id
/// refers to nothing rather than to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub(super) usize);

/// What kind of node this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A regular file.
    RegularFile,
}

/// A node's metadata, as `filestat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The index of the node's mount.
    pub dev: u64,
    /// The node's inode number: its rank in creation order, from 1.
    pub ino: u64,
    /// File or directory.
    pub kind: FileKind,
    /// 1 while the node has a name, 0 once it is unlinked (and still open).
    pub nlink: u64,
    /// Bytes of a file; 0 for a directory.
    pub size: u64,
    /// Last access time, ns since the Unix epoch (virtual).
    pub atim: u64,
    /// Last modification time, ns since the Unix epoch (virtual).
    pub mtim: u64,
    /// Last status change time, ns since the Unix epoch (virtual).
    pub ctim: u64,
}

/// One entry of a directory listing, as `fd_readdir` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// The cookie that resumes the listing after this entry (its index + 1).
    pub next: u64,
    /// The entry's inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: FileKind,
    /// The entry's name (`.` and `..` come first).
    pub name: &'a str,
}

/// How [`Vfs::open`] opens a path: the parts of `path_open`'s flags that concern the tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Create the file if it does not exist (`O_CREAT`).
    pub create: bool,
    /// With `create`: fail if it exists (`O_EXCL`).
    pub exclusive: bool,
    /// Truncate an existing file to 0 bytes (`O_TRUNC`).
    pub truncate: bool,
    /// The path must name a directory (`O_DIRECTORY`).
    pub directory: bool,
    /// The descriptor will be written to: refused with `EROFS` for a file in a read-only mount.
    pub write: bool,
}
