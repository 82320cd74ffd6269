//! Sizes, codes and encodings of the preview1 ABI (`typenames.witx`).

use super::vfs::{Errno, FileKind, Stat};

pub(super) const IOVEC_SIZE: u64 = 8;
pub(super) const FILESTAT_SIZE: usize = 64;
pub(super) const FDSTAT_SIZE: usize = 24;
pub(super) const DIRENT_SIZE: usize = 24;
pub(super) const SUBSCRIPTION_SIZE: u64 = 48;
pub(super) const EVENT_SIZE: usize = 32;

// filetype
pub(super) const FILETYPE_UNKNOWN: u8 = 0;
pub(super) const FILETYPE_DIRECTORY: u8 = 3;
pub(super) const FILETYPE_REGULAR_FILE: u8 = 4;

// clockid
pub(super) const CLOCK_REALTIME: u32 = 0;
pub(super) const CLOCK_THREAD_CPUTIME: u32 = 3;

// fdflags
pub(super) const FDFLAGS_APPEND: u32 = 1 << 0;
pub(super) const FDFLAGS_DSYNC: u32 = 1 << 1;
pub(super) const FDFLAGS_RSYNC: u32 = 1 << 3;
pub(super) const FDFLAGS_SYNC: u32 = 1 << 4;
pub(super) const FDFLAGS_ALL: u32 = (1 << 5) - 1;

// oflags
pub(super) const OFLAGS_CREAT: u32 = 1 << 0;
pub(super) const OFLAGS_DIRECTORY: u32 = 1 << 1;
pub(super) const OFLAGS_EXCL: u32 = 1 << 2;
pub(super) const OFLAGS_TRUNC: u32 = 1 << 3;
pub(super) const OFLAGS_ALL: u32 = (1 << 4) - 1;

// fstflags
pub(super) const FSTFLAGS_ATIM: u32 = 1 << 0;
pub(super) const FSTFLAGS_ATIM_NOW: u32 = 1 << 1;
pub(super) const FSTFLAGS_MTIM: u32 = 1 << 2;
pub(super) const FSTFLAGS_MTIM_NOW: u32 = 1 << 3;
pub(super) const FSTFLAGS_ALL: u32 = (1 << 4) - 1;

// whence
pub(super) const WHENCE_SET: u32 = 0;
pub(super) const WHENCE_CUR: u32 = 1;
pub(super) const WHENCE_END: u32 = 2;

// advice: normal .. noreuse
pub(super) const ADVICE_MAX: u32 = 5;

// eventtype
pub(super) const EVENTTYPE_CLOCK: u8 = 0;
pub(super) const EVENTTYPE_FD_READ: u8 = 1;
pub(super) const EVENTTYPE_FD_WRITE: u8 = 2;
pub(super) const EVENTRWFLAGS_HANGUP: u16 = 1;
pub(super) const SUBCLOCKFLAGS_ABSTIME: u16 = 1;

// rights
pub(super) const RIGHTS_FD_DATASYNC: u64 = 1 << 0;
pub(super) const RIGHTS_FD_READ: u64 = 1 << 1;
pub(super) const RIGHTS_FD_SEEK: u64 = 1 << 2;
pub(super) const RIGHTS_FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
pub(super) const RIGHTS_FD_SYNC: u64 = 1 << 4;
pub(super) const RIGHTS_FD_TELL: u64 = 1 << 5;
pub(super) const RIGHTS_FD_WRITE: u64 = 1 << 6;
pub(super) const RIGHTS_FD_ADVISE: u64 = 1 << 7;
pub(super) const RIGHTS_FD_ALLOCATE: u64 = 1 << 8;
pub(super) const RIGHTS_PATH_CREATE_DIRECTORY: u64 = 1 << 9;
pub(super) const RIGHTS_PATH_CREATE_FILE: u64 = 1 << 10;
pub(super) const RIGHTS_PATH_LINK_SOURCE: u64 = 1 << 11;
pub(super) const RIGHTS_PATH_LINK_TARGET: u64 = 1 << 12;
pub(super) const RIGHTS_PATH_OPEN: u64 = 1 << 13;
pub(super) const RIGHTS_FD_READDIR: u64 = 1 << 14;
pub(super) const RIGHTS_PATH_READLINK: u64 = 1 << 15;
pub(super) const RIGHTS_PATH_RENAME_SOURCE: u64 = 1 << 16;
pub(super) const RIGHTS_PATH_RENAME_TARGET: u64 = 1 << 17;
pub(super) const RIGHTS_PATH_FILESTAT_GET: u64 = 1 << 18;
pub(super) const RIGHTS_PATH_FILESTAT_SET_SIZE: u64 = 1 << 19;
pub(super) const RIGHTS_PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
pub(super) const RIGHTS_FD_FILESTAT_GET: u64 = 1 << 21;
pub(super) const RIGHTS_FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
pub(super) const RIGHTS_FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
pub(super) const RIGHTS_PATH_SYMLINK: u64 = 1 << 24;
pub(super) const RIGHTS_PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
pub(super) const RIGHTS_PATH_UNLINK_FILE: u64 = 1 << 26;
pub(super) const RIGHTS_POLL_FD_READWRITE: u64 = 1 << 27;
pub(super) const RIGHTS_ALL: u64 = (1 << 30) - 1;

/// What a preopened directory reports, exactly as wasmtime-wasi does: some guest libcs look
/// at these bits.
pub(super) const PREOPEN_RIGHTS_BASE: u64 = RIGHTS_PATH_CREATE_DIRECTORY
    | RIGHTS_PATH_CREATE_FILE
    | RIGHTS_PATH_LINK_SOURCE
    | RIGHTS_PATH_LINK_TARGET
    | RIGHTS_PATH_OPEN
    | RIGHTS_FD_READDIR
    | RIGHTS_PATH_READLINK
    | RIGHTS_PATH_RENAME_SOURCE
    | RIGHTS_PATH_RENAME_TARGET
    | RIGHTS_PATH_SYMLINK
    | RIGHTS_PATH_REMOVE_DIRECTORY
    | RIGHTS_PATH_UNLINK_FILE
    | RIGHTS_PATH_FILESTAT_GET
    | RIGHTS_PATH_FILESTAT_SET_TIMES
    | RIGHTS_FD_FILESTAT_GET
    | RIGHTS_FD_FILESTAT_SET_TIMES;
pub(super) const PREOPEN_RIGHTS_INHERITING: u64 = PREOPEN_RIGHTS_BASE
    | RIGHTS_FD_DATASYNC
    | RIGHTS_FD_READ
    | RIGHTS_FD_SEEK
    | RIGHTS_FD_FDSTAT_SET_FLAGS
    | RIGHTS_FD_SYNC
    | RIGHTS_FD_TELL
    | RIGHTS_FD_WRITE
    | RIGHTS_FD_ADVISE
    | RIGHTS_FD_ALLOCATE
    | RIGHTS_FD_FILESTAT_GET
    | RIGHTS_FD_FILESTAT_SET_SIZE
    | RIGHTS_FD_FILESTAT_SET_TIMES
    | RIGHTS_POLL_FD_READWRITE;

pub(super) fn filetype(kind: FileKind) -> u8 {
    match kind {
        FileKind::Directory => FILETYPE_DIRECTORY,
        FileKind::RegularFile => FILETYPE_REGULAR_FILE,
    }
}

pub(super) fn encode_filestat(stat: &Stat) -> [u8; FILESTAT_SIZE] {
    let mut out = [0u8; FILESTAT_SIZE];
    out[0..8].copy_from_slice(&stat.dev.to_le_bytes());
    out[8..16].copy_from_slice(&stat.ino.to_le_bytes());
    out[16] = filetype(stat.kind);
    out[24..32].copy_from_slice(&stat.nlink.to_le_bytes());
    out[32..40].copy_from_slice(&stat.size.to_le_bytes());
    out[40..48].copy_from_slice(&stat.atim.to_le_bytes());
    out[48..56].copy_from_slice(&stat.mtim.to_le_bytes());
    out[56..64].copy_from_slice(&stat.ctim.to_le_bytes());
    out
}

/// The new access and modification times of `fst_flags` (`None`: unchanged); `_NOW` means the
/// virtual `now`. Both a time and its `_NOW` flag is `EINVAL`.
pub(super) fn decode_times(atim: u64, mtim: u64, flags: u32, now: u64) -> Result<(Option<u64>, Option<u64>), Errno> {
    if flags & !FSTFLAGS_ALL != 0 {
        return Err(Errno::Inval);
    }
    let pick = |value: u64, set: u32, set_now: u32| match (flags & set != 0, flags & set_now != 0) {
        (true, true) => Err(Errno::Inval),
        (true, false) => Ok(Some(value)),
        (false, true) => Ok(Some(now)),
        (false, false) => Ok(None),
    };
    Ok((pick(atim, FSTFLAGS_ATIM, FSTFLAGS_ATIM_NOW)?, pick(mtim, FSTFLAGS_MTIM, FSTFLAGS_MTIM_NOW)?))
}
