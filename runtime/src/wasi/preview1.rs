//! The WASI preview1 functions that touch file descriptors, paths, clocks and polling, served
//! deterministically from the job's in-memory filesystem ([`super::vfs`]) and a virtual clock.
//!
//! wasmtime-wasi's own preview1 stays in the linker for what is already deterministic there
//! (args, environment, seeded random bytes, `proc_exit`, `proc_raise`, `sched_yield`); every
//! function in [`SHADOWED_FUNCTIONS`] is redefined by [`add_to_linker`] on top of it.
//!
//! Rules every function here follows:
//!
//! - Nothing is read from the host: no host files, no host clock, no host randomness.
//! - Every pointer and length from the guest is bounds-checked with overflow-checked arithmetic;
//!   anything out of bounds is `EFAULT`. Nothing the guest passes can make the host panic, and
//!   the host never allocates according to a guest-chosen length: iovec arrays are read in place,
//!   and only bytes actually copied are allocated.
//! - Errors the guest can handle are errnos. Going past a limit (stdio bytes, output bytes,
//!   output files) is a trap carrying a [`LimitExceeded`], which stops the job.
//!
//! Descriptors: 0 is stdin (the job's stdin blob, then end of file), 1 and 2 are stdout and
//! stderr (appended to in-memory buffers), and 3, 4, ... are the mounts, preopened in the order
//! they were added. Other descriptors take the lowest free number, up to [`MAX_OPEN_FDS`].
//!
//! Stdio limit: stdout and stderr together may hold at most `stdio_bytes`. A write that would go
//! past it is refused as a whole (none of its bytes are kept) and the job traps with
//! `LimitExceeded { limit: StdioBytes }`: what a job printed is then exactly what it printed
//! before that write.
//!
//! The virtual clock: the job's elapsed time, in ns, is the fuel it has consumed so far plus the
//! time it has virtually slept in `poll_oneoff`. Realtime is the manifest's start time plus that;
//! monotonic, process and thread CPU time are that. Sleeping never waits: it moves the clock.
//! Files take their timestamps from this clock too, so `mtim` after a write is deterministic.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use wasmtime::{Caller, Extern, Linker};

use super::vfs::{Errno, FileKind, FsError, MountError, NodeId, OpenOptions, Vfs};
use crate::limits::{LimitExceeded, LimitKind};

/// The module name the functions are defined under.
const MODULE: &str = "wasi_snapshot_preview1";

/// Every preview1 function [`add_to_linker`] defines, shadowing wasmtime-wasi's.
pub const SHADOWED_FUNCTIONS: &[&str] = &[
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "clock_res_get",
    "clock_time_get",
];

/// Most descriptors a job may have open at once (stdio and preopens included); one more open
/// is `EMFILE`.
pub const MAX_OPEN_FDS: usize = 1024;

/// Sizes and codes of the preview1 ABI (`typenames.witx`).
mod abi {
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
}

/// What a job's deterministic WASI needs to know, from its manifest and limits.
#[derive(Debug, Clone)]
pub struct WasiConfig {
    /// The job's virtual start time, ns since the Unix epoch: realtime when no fuel has been
    /// used, and the timestamps of every input file and mount.
    pub start_unix_ns: u64,
    /// The bytes the job reads from stdin (shared, not copied).
    pub stdin: Arc<[u8]>,
    /// Most bytes stdout and stderr may hold together.
    pub stdio_bytes: u64,
    /// Most bytes the files of writable mounts may hold together, at any moment.
    pub output_bytes: u64,
    /// Most files and directories the job may create in writable mounts (deleting one does not
    /// give it back).
    pub output_files: u64,
    /// The fuel the store starts with (`Store::set_fuel`): consumed fuel is this minus what is
    /// left, and drives the virtual clock.
    pub fuel_budget: u64,
}

/// An open descriptor.
#[derive(Debug, Clone)]
enum Descriptor {
    Stdin,
    Stdout,
    Stderr,
    Dir {
        node: NodeId,
        /// The guest path of a preopened mount root.
        preopen: Option<String>,
    },
    File {
        node: NodeId,
        position: u64,
        read: bool,
        write: bool,
        append: bool,
    },
}

impl Descriptor {
    fn node(&self) -> Option<NodeId> {
        match self {
            Descriptor::Dir { node, .. } | Descriptor::File { node, .. } => Some(*node),
            Descriptor::Stdin | Descriptor::Stdout | Descriptor::Stderr => None,
        }
    }
}

/// The job's virtual clock (see the module documentation).
#[derive(Debug, Clone)]
struct VirtualClock {
    start_unix_ns: u64,
    fuel_budget: u64,
    /// Fuel consumed as of the current host call.
    fuel_consumed: u64,
    /// Total virtual sleep.
    slept_ns: u64,
    /// The last elapsed time handed out: the clock never goes back, even if fuel were added.
    last_elapsed: u64,
}

impl VirtualClock {
    /// Takes note of the fuel left at the start of a host call (`None` if fuel is off).
    fn observe(&mut self, fuel_left: Option<u64>) {
        self.fuel_consumed = fuel_left.map_or(0, |left| self.fuel_budget.saturating_sub(left));
    }

    fn raw_elapsed(&self) -> u64 {
        self.fuel_consumed.saturating_add(self.slept_ns)
    }

    /// Elapsed virtual ns since the start, non-decreasing.
    fn elapsed(&mut self) -> u64 {
        self.last_elapsed = self.last_elapsed.max(self.raw_elapsed());
        self.last_elapsed
    }

    /// Realtime now, ns since the Unix epoch.
    fn realtime(&mut self) -> u64 {
        self.start_unix_ns.saturating_add(self.elapsed())
    }

    /// Sleeps virtually until the elapsed time is at least `deadline`.
    fn sleep_until(&mut self, deadline: u64) {
        let raw = self.raw_elapsed();
        if deadline > raw {
            self.slept_ns = self.slept_ns.saturating_add(deadline - raw);
        }
    }
}

/// A job's deterministic WASI state: its filesystem, descriptors, stdio and virtual clock.
///
/// Create one per job with [`DeterministicWasi::new`], add the mounts, put it in the store's
/// data and register the functions with [`add_to_linker`]. After the run, read
/// [`stdout`](DeterministicWasi::stdout), [`stderr`](DeterministicWasi::stderr) and
/// [`collect_outputs`](DeterministicWasi::collect_outputs).
#[derive(Debug, Clone)]
pub struct DeterministicWasi {
    vfs: Vfs,
    fds: BTreeMap<u32, Descriptor>,
    stdin: Arc<[u8]>,
    stdin_position: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    stdio_limit: u64,
    clock: VirtualClock,
}

/// Why a host function stops: an errno for the guest, or a trap that ends the job.
enum HostError {
    Errno(Errno),
    Trap(wasmtime::Error),
}

impl From<Errno> for HostError {
    fn from(errno: Errno) -> Self {
        HostError::Errno(errno)
    }
}

impl From<FsError> for HostError {
    fn from(error: FsError) -> Self {
        match error {
            FsError::Errno(errno) => HostError::Errno(errno),
            FsError::Limit(limit) => HostError::Trap(wasmtime::Error::new(limit)),
        }
    }
}

type HostResult<T = ()> = Result<T, HostError>;

impl DeterministicWasi {
    /// The state for one job: stdio set up, no mounts yet.
    pub fn new(config: WasiConfig) -> Self {
        let fds = BTreeMap::from([(0, Descriptor::Stdin), (1, Descriptor::Stdout), (2, Descriptor::Stderr)]);
        DeterministicWasi {
            vfs: Vfs::new(config.start_unix_ns, config.output_bytes, config.output_files),
            fds,
            stdin: config.stdin,
            stdin_position: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdio_limit: config.stdio_bytes,
            clock: VirtualClock {
                start_unix_ns: config.start_unix_ns,
                fuel_budget: config.fuel_budget,
                fuel_consumed: 0,
                slept_ns: 0,
                last_elapsed: 0,
            },
        }
    }

    /// Mounts `files` read-only at `guest_path` (such as `/input`) and preopens it; returns its
    /// descriptor (3 for the first mount, then 4, ...). Each file is a relative path with `/`
    /// separators and its bytes, shared rather than copied; see [`Vfs::add_read_only_mount`].
    pub fn mount_read_only<I>(&mut self, guest_path: &str, files: I) -> Result<u32, MountError>
    where
        I: IntoIterator<Item = (String, Arc<[u8]>)>,
    {
        self.check_preopen_slot(guest_path)?;
        let mount = self.vfs.add_read_only_mount(guest_path, files)?;
        self.preopen(mount, guest_path)
    }

    /// Mounts an empty writable directory at `guest_path` (such as `/output`) and preopens it;
    /// returns its descriptor.
    pub fn mount_writable(&mut self, guest_path: &str) -> Result<u32, MountError> {
        self.check_preopen_slot(guest_path)?;
        let mount = self.vfs.add_writable_mount(guest_path)?;
        self.preopen(mount, guest_path)
    }

    /// Everything the job wrote to stdout.
    pub fn stdout(&self) -> &[u8] {
        &self.stdout
    }

    /// Everything the job wrote to stderr.
    pub fn stderr(&self) -> &[u8] {
        &self.stderr
    }

    /// Every regular file under the writable mounts, by path relative to its mount (see
    /// [`Vfs::collect_outputs`]).
    pub fn collect_outputs(&self) -> BTreeMap<String, Vec<u8>> {
        self.vfs.collect_outputs()
    }

    /// The job's filesystem.
    pub fn vfs(&self) -> &Vfs {
        &self.vfs
    }

    /// Virtual ns the job has slept in `poll_oneoff` so far.
    pub fn slept_ns(&self) -> u64 {
        self.clock.slept_ns
    }

    fn check_preopen_slot(&self, guest_path: &str) -> Result<(), MountError> {
        if self.fds.len() >= MAX_OPEN_FDS {
            return Err(MountError::TooManyDescriptors { path: guest_path.to_string() });
        }
        Ok(())
    }

    fn preopen(&mut self, mount: usize, guest_path: &str) -> Result<u32, MountError> {
        let too_many = || MountError::TooManyDescriptors { path: guest_path.to_string() };
        let node = self.vfs.mount_root(mount).ok_or_else(too_many)?;
        self.vfs.retain(node).map_err(|_| too_many())?;
        self.push_fd(Descriptor::Dir { node, preopen: Some(guest_path.to_string()) }).map_err(|_| too_many())
    }

    // ----- descriptor table -----

    /// Adds `descriptor` at the lowest free number.
    fn push_fd(&mut self, descriptor: Descriptor) -> Result<u32, Errno> {
        if self.fds.len() >= MAX_OPEN_FDS {
            return Err(Errno::Mfile);
        }
        let mut fd = 0u32;
        for &used in self.fds.keys() {
            if used != fd {
                break;
            }
            fd = fd.checked_add(1).ok_or(Errno::Mfile)?;
        }
        self.fds.insert(fd, descriptor);
        Ok(fd)
    }

    fn fd(&self, fd: u32) -> Result<&Descriptor, Errno> {
        self.fds.get(&fd).ok_or(Errno::Badf)
    }

    /// The directory node of `fd`: `ENOTDIR` for a file, `EBADF` for stdio or a closed fd.
    fn dir(&self, fd: u32) -> Result<NodeId, Errno> {
        match self.fd(fd)? {
            Descriptor::Dir { node, .. } => Ok(*node),
            Descriptor::File { .. } => Err(Errno::Notdir),
            _ => Err(Errno::Badf),
        }
    }

    fn release(&mut self, descriptor: Descriptor) {
        if let Some(node) = descriptor.node() {
            self.vfs.release(node);
        }
    }

    // ----- stdio -----

    /// Appends to stdout or stderr, refusing (and trapping on) a write that would take them past
    /// the stdio limit.
    fn write_stdio(&mut self, mem: &Guest<'_>, iovs: u32, iovs_len: u32, to_stderr: bool) -> HostResult<u32> {
        let total = iovecs_total(mem, iovs, iovs_len)?;
        let used = (self.stdout.len() as u64).saturating_add(self.stderr.len() as u64);
        if used.saturating_add(total) > self.stdio_limit {
            return Err(HostError::Trap(wasmtime::Error::new(LimitExceeded {
                limit: LimitKind::StdioBytes,
                value: self.stdio_limit,
            })));
        }
        let buffer = if to_stderr { &mut self.stderr } else { &mut self.stdout };
        // `total` is within the limit, so reserving it is bounded by the job's own limit.
        buffer.try_reserve(usize::try_from(total).map_err(|_| Errno::Nomem)?).map_err(|_| Errno::Nomem)?;
        for index in 0..iovs_len {
            let (buf, len) = mem.iovec(iovs, index)?;
            buffer.extend_from_slice(mem.bytes(buf, u64::from(len))?);
        }
        Ok(total as u32)
    }

    // ----- the functions, one per import -----
    //
    // Each takes the guest's memory and the raw arguments, already reinterpreted as unsigned,
    // and writes its results through the guest's pointers.

    fn clock_res_get(&mut self, mem: &mut Guest<'_>, id: u32, result: u32) -> HostResult {
        check_clock(id)?;
        mem.write_u64(result, 1)?;
        Ok(())
    }

    fn clock_time_get(&mut self, mem: &mut Guest<'_>, id: u32, _precision: u64, result: u32) -> HostResult {
        check_clock(id)?;
        let now = if id == abi::CLOCK_REALTIME { self.clock.realtime() } else { self.clock.elapsed() };
        mem.write_u64(result, now)?;
        Ok(())
    }

    fn fd_advise(&mut self, _mem: &mut Guest<'_>, fd: u32, _offset: u64, _len: u64, advice: u32) -> HostResult {
        match self.fd(fd)? {
            Descriptor::File { .. } if advice <= abi::ADVICE_MAX => Ok(()),
            Descriptor::File { .. } => Err(Errno::Inval.into()),
            _ => Err(Errno::Badf.into()),
        }
    }

    fn fd_allocate(&mut self, _mem: &mut Guest<'_>, fd: u32, _offset: u64, _len: u64) -> HostResult {
        // As in wasmtime-wasi: preview1's fd_allocate is not supported.
        match self.fd(fd)? {
            Descriptor::File { .. } => Err(Errno::Notsup.into()),
            _ => Err(Errno::Badf.into()),
        }
    }

    fn fd_close(&mut self, _mem: &mut Guest<'_>, fd: u32) -> HostResult {
        let descriptor = self.fds.remove(&fd).ok_or(Errno::Badf)?;
        self.release(descriptor);
        Ok(())
    }

    fn fd_sync(&mut self, _mem: &mut Guest<'_>, fd: u32) -> HostResult {
        // Nothing to flush: the filesystem is memory.
        self.fd(fd)?;
        Ok(())
    }

    fn fd_fdstat_get(&mut self, mem: &mut Guest<'_>, fd: u32, result: u32) -> HostResult {
        let (filetype, flags, base, inheriting) = match self.fd(fd)? {
            // Not character devices: stdio is a buffer, not a terminal, and a libc that saw a
            // character device without seek rights would take it for a tty (`isatty`), which
            // changes what programs print. wasmtime-wasi reports a non-tty stdio the same way.
            Descriptor::Stdin => (abi::FILETYPE_UNKNOWN, 0, abi::RIGHTS_FD_READ, abi::RIGHTS_FD_READ),
            Descriptor::Stdout | Descriptor::Stderr => {
                (abi::FILETYPE_UNKNOWN, 0, abi::RIGHTS_FD_WRITE, abi::RIGHTS_FD_WRITE)
            }
            Descriptor::Dir { preopen: Some(_), .. } => {
                (abi::FILETYPE_DIRECTORY, 0, abi::PREOPEN_RIGHTS_BASE, abi::PREOPEN_RIGHTS_INHERITING)
            }
            Descriptor::Dir { preopen: None, .. } => {
                let rights = abi::RIGHTS_ALL
                    & !(abi::RIGHTS_FD_SEEK
                        | abi::RIGHTS_FD_FILESTAT_SET_SIZE
                        | abi::RIGHTS_PATH_FILESTAT_SET_SIZE
                        | abi::RIGHTS_FD_WRITE);
                (abi::FILETYPE_DIRECTORY, 0, rights, rights)
            }
            Descriptor::File { read, write, append, .. } => {
                let mut rights = abi::RIGHTS_ALL;
                if !read {
                    rights &= !(abi::RIGHTS_FD_READ | abi::RIGHTS_FD_READDIR);
                }
                if !write {
                    rights &= !abi::RIGHTS_FD_WRITE;
                }
                let flags = if *append { abi::FDFLAGS_APPEND as u16 } else { 0 };
                (abi::FILETYPE_REGULAR_FILE, flags, rights, rights)
            }
        };
        let mut out = [0u8; abi::FDSTAT_SIZE];
        out[0] = filetype;
        out[2..4].copy_from_slice(&flags.to_le_bytes());
        out[8..16].copy_from_slice(&base.to_le_bytes());
        out[16..24].copy_from_slice(&inheriting.to_le_bytes());
        mem.write(result, &out)?;
        Ok(())
    }

    fn fd_fdstat_set_flags(&mut self, _mem: &mut Guest<'_>, fd: u32, flags: u32) -> HostResult {
        let Some(Descriptor::File { append, .. }) = self.fds.get_mut(&fd) else {
            return Err(Errno::Badf.into());
        };
        // Like wasmtime-wasi: APPEND and NONBLOCK may change (NONBLOCK means nothing here, as
        // nothing ever blocks); the sync flags may not.
        if flags & !abi::FDFLAGS_ALL != 0 || flags & (abi::FDFLAGS_DSYNC | abi::FDFLAGS_RSYNC | abi::FDFLAGS_SYNC) != 0 {
            return Err(Errno::Inval.into());
        }
        *append = flags & abi::FDFLAGS_APPEND != 0;
        Ok(())
    }

    fn fd_fdstat_set_rights(&mut self, _mem: &mut Guest<'_>, fd: u32, _base: u64, _inheriting: u64) -> HostResult {
        // Rights are not enforced beyond read/write, so dropping some changes nothing.
        self.fd(fd)?;
        Ok(())
    }

    fn fd_filestat_get(&mut self, mem: &mut Guest<'_>, fd: u32, result: u32) -> HostResult {
        let out = match self.fd(fd)?.node() {
            Some(node) => encode_filestat(&self.vfs.stat(node)?),
            None => {
                let mut out = [0u8; abi::FILESTAT_SIZE];
                out[16] = abi::FILETYPE_UNKNOWN;
                out
            }
        };
        mem.write(result, &out)?;
        Ok(())
    }

    fn fd_filestat_set_size(&mut self, _mem: &mut Guest<'_>, fd: u32, size: u64) -> HostResult {
        let node = match self.fd(fd)? {
            Descriptor::File { node, write: true, .. } => *node,
            _ => return Err(Errno::Badf.into()),
        };
        let now = self.clock.realtime();
        self.vfs.set_size(node, size, now)?;
        Ok(())
    }

    fn fd_filestat_set_times(&mut self, _mem: &mut Guest<'_>, fd: u32, atim: u64, mtim: u64, flags: u32) -> HostResult {
        let node = self.fd(fd)?.node().ok_or(Errno::Badf)?;
        let now = self.clock.realtime();
        let (atim, mtim) = decode_times(atim, mtim, flags, now)?;
        self.vfs.set_times(node, atim, mtim, now)?;
        Ok(())
    }

    fn fd_pread(&mut self, mem: &mut Guest<'_>, fd: u32, iovs: u32, iovs_len: u32, offset: u64, result: u32) -> HostResult {
        mem.check(result, 4)?;
        let node = match self.fd(fd)? {
            Descriptor::File { node, read: true, .. } => *node,
            Descriptor::File { .. } | Descriptor::Stdout | Descriptor::Stderr => return Err(Errno::Badf.into()),
            Descriptor::Dir { .. } => return Err(Errno::Isdir.into()),
            Descriptor::Stdin => return Err(Errno::Spipe.into()),
        };
        iovecs_total(mem, iovs, iovs_len)?;
        let vfs = &self.vfs;
        let mut position = offset;
        let n = read_into(mem, iovs, iovs_len, |buf| {
            let n = vfs.read_at(node, position, buf).unwrap_or(0);
            position = position.saturating_add(n as u64);
            n
        })?;
        mem.write_u32(result, n)?;
        Ok(())
    }

    fn fd_prestat_get(&mut self, mem: &mut Guest<'_>, fd: u32, result: u32) -> HostResult {
        // EBADF for anything but a preopen: wasi-libc scans descriptors from 3 until EBADF.
        let Descriptor::Dir { preopen: Some(path), .. } = self.fd(fd)? else {
            return Err(Errno::Badf.into());
        };
        let len = u32::try_from(path.len()).map_err(|_| Errno::Overflow)?;
        let mut out = [0u8; 8];
        out[0] = 0; // preopentype `dir`
        out[4..8].copy_from_slice(&len.to_le_bytes());
        mem.write(result, &out)?;
        Ok(())
    }

    fn fd_prestat_dir_name(&mut self, mem: &mut Guest<'_>, fd: u32, path: u32, path_len: u32) -> HostResult {
        let Descriptor::Dir { preopen: Some(name), .. } = self.fd(fd)? else {
            return Err(Errno::Badf.into());
        };
        if name.len() > path_len as usize {
            return Err(Errno::Nametoolong.into());
        }
        mem.write(path, name.as_bytes())?;
        Ok(())
    }

    fn fd_pwrite(&mut self, mem: &mut Guest<'_>, fd: u32, iovs: u32, iovs_len: u32, offset: u64, result: u32) -> HostResult {
        mem.check(result, 4)?;
        let node = match self.fd(fd)? {
            Descriptor::File { node, write: true, .. } => *node,
            Descriptor::Stdin | Descriptor::Stdout | Descriptor::Stderr => return Err(Errno::Spipe.into()),
            _ => return Err(Errno::Badf.into()),
        };
        let n = self.write_file(mem, node, iovs, iovs_len, offset)?;
        mem.write_u32(result, n)?;
        Ok(())
    }

    fn fd_read(&mut self, mem: &mut Guest<'_>, fd: u32, iovs: u32, iovs_len: u32, result: u32) -> HostResult {
        mem.check(result, 4)?;
        let n = match self.fds.get_mut(&fd).ok_or(Errno::Badf)? {
            Descriptor::Stdin => {
                iovecs_total(mem, iovs, iovs_len)?;
                let stdin = &self.stdin;
                let position = &mut self.stdin_position;
                read_into(mem, iovs, iovs_len, |buf| {
                    let available = stdin.get(*position..).unwrap_or_default();
                    let n = available.len().min(buf.len());
                    if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    *position = position.saturating_add(n);
                    n
                })?
            }
            Descriptor::File { node, position, read: true, .. } => {
                iovecs_total(mem, iovs, iovs_len)?;
                let node = *node;
                let vfs = &self.vfs;
                read_into(mem, iovs, iovs_len, |buf| {
                    let n = vfs.read_at(node, *position, buf).unwrap_or(0);
                    *position = position.saturating_add(n as u64);
                    n
                })?
            }
            Descriptor::Dir { .. } => return Err(Errno::Isdir.into()),
            _ => return Err(Errno::Badf.into()),
        };
        mem.write_u32(result, n)?;
        Ok(())
    }

    fn fd_readdir(&mut self, mem: &mut Guest<'_>, fd: u32, buf: u32, buf_len: u32, cookie: u64, result: u32) -> HostResult {
        mem.check(result, 4)?;
        let node = self.dir(fd)?;
        let out = mem.bytes_mut(buf, u64::from(buf_len))?;
        // The exact fill rule of wasmtime-wasi (and of the preview1 spec): entries one after the
        // other, each a 24-byte dirent and the name without NUL; the last one is cut short if it
        // does not fit, and then the whole buffer counts as used, which tells the guest to call
        // again from the cookie of the last entry it read whole.
        let mut used = 0usize;
        let mut full = false;
        'entries: for entry in self.vfs.read_dir(node, cookie)? {
            let mut dirent = [0u8; abi::DIRENT_SIZE];
            dirent[0..8].copy_from_slice(&entry.next.to_le_bytes());
            dirent[8..16].copy_from_slice(&entry.ino.to_le_bytes());
            let name_len = u32::try_from(entry.name.len()).map_err(|_| Errno::Overflow)?;
            dirent[16..20].copy_from_slice(&name_len.to_le_bytes());
            dirent[20] = filetype(entry.kind);
            for part in [&dirent[..], entry.name.as_bytes()] {
                let room = out.len().saturating_sub(used);
                let n = part.len().min(room);
                if let (Some(dst), Some(src)) = (out.get_mut(used..used + n), part.get(..n)) {
                    dst.copy_from_slice(src);
                }
                used += n;
                if used == out.len() {
                    full = true;
                    break 'entries;
                }
            }
        }
        let used = if full { buf_len } else { used as u32 };
        mem.write_u32(result, used)?;
        Ok(())
    }

    fn fd_renumber(&mut self, _mem: &mut Guest<'_>, from: u32, to: u32) -> HostResult {
        // As in wasmtime-wasi, both must be open.
        if !self.fds.contains_key(&from) || !self.fds.contains_key(&to) {
            return Err(Errno::Badf.into());
        }
        if from == to {
            return Ok(());
        }
        let descriptor = self.fds.remove(&from).ok_or(Errno::Badf)?;
        if let Some(replaced) = self.fds.insert(to, descriptor) {
            self.release(replaced);
        }
        Ok(())
    }

    fn fd_seek(&mut self, mem: &mut Guest<'_>, fd: u32, offset: i64, whence: u32, result: u32) -> HostResult {
        mem.check(result, 8)?;
        let (node, position) = match self.fds.get_mut(&fd).ok_or(Errno::Badf)? {
            Descriptor::File { node, position, .. } => (*node, position),
            Descriptor::Stdin | Descriptor::Stdout | Descriptor::Stderr => return Err(Errno::Spipe.into()),
            Descriptor::Dir { .. } => return Err(Errno::Badf.into()),
        };
        let new = match whence {
            abi::WHENCE_SET => u64::try_from(offset).ok(),
            abi::WHENCE_CUR => position.checked_add_signed(offset),
            abi::WHENCE_END => self.vfs.size(node)?.checked_add_signed(offset),
            _ => None,
        };
        // A negative or overflowing result is EINVAL, and the position stays.
        let new = new.ok_or(Errno::Inval)?;
        *position = new;
        mem.write_u64(result, new)?;
        Ok(())
    }

    fn fd_tell(&mut self, mem: &mut Guest<'_>, fd: u32, result: u32) -> HostResult {
        let position = match self.fd(fd)? {
            Descriptor::File { position, .. } => *position,
            Descriptor::Stdin | Descriptor::Stdout | Descriptor::Stderr => return Err(Errno::Spipe.into()),
            Descriptor::Dir { .. } => return Err(Errno::Badf.into()),
        };
        mem.write_u64(result, position)?;
        Ok(())
    }

    fn fd_write(&mut self, mem: &mut Guest<'_>, fd: u32, iovs: u32, iovs_len: u32, result: u32) -> HostResult {
        mem.check(result, 4)?;
        let n = match self.fd(fd)? {
            Descriptor::Stdout => self.write_stdio(mem, iovs, iovs_len, false)?,
            Descriptor::Stderr => self.write_stdio(mem, iovs, iovs_len, true)?,
            &Descriptor::File { node, position, write: true, append, .. } => {
                let at = if append { self.vfs.size(node)? } else { position };
                let n = self.write_file(mem, node, iovs, iovs_len, at)?;
                if let Some(Descriptor::File { position, .. }) = self.fds.get_mut(&fd) {
                    *position = at.saturating_add(u64::from(n));
                }
                n
            }
            _ => return Err(Errno::Badf.into()),
        };
        mem.write_u32(result, n)?;
        Ok(())
    }

    /// Writes the iovecs into file `node` at `offset`, after checking the whole write against
    /// the quota (so that a refused write changes nothing).
    fn write_file(&mut self, mem: &Guest<'_>, node: NodeId, iovs: u32, iovs_len: u32, offset: u64) -> HostResult<u32> {
        let total = iovecs_total(mem, iovs, iovs_len)?;
        self.vfs.check_write(node, offset, total)?;
        let now = self.clock.realtime();
        let mut at = offset;
        for index in 0..iovs_len {
            let (buf, len) = mem.iovec(iovs, index)?;
            self.vfs.write_at(node, at, mem.bytes(buf, u64::from(len))?, now)?;
            at = at.saturating_add(u64::from(len));
        }
        Ok(total as u32)
    }

    fn path_create_directory(&mut self, mem: &mut Guest<'_>, fd: u32, path: u32, path_len: u32) -> HostResult {
        let dir = self.dir(fd)?;
        let path = mem.string(path, path_len)?;
        let now = self.clock.realtime();
        self.vfs.create_dir(dir, path, now)?;
        Ok(())
    }

    fn path_filestat_get(&mut self, mem: &mut Guest<'_>, fd: u32, _flags: u32, path: u32, path_len: u32, result: u32) -> HostResult {
        mem.check(result, abi::FILESTAT_SIZE as u64)?;
        let dir = self.dir(fd)?;
        let node = self.vfs.lookup(dir, mem.string(path, path_len)?)?;
        let out = encode_filestat(&self.vfs.stat(node)?);
        mem.write(result, &out)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn path_filestat_set_times(
        &mut self,
        mem: &mut Guest<'_>,
        fd: u32,
        _flags: u32,
        path: u32,
        path_len: u32,
        atim: u64,
        mtim: u64,
        fst_flags: u32,
    ) -> HostResult {
        let dir = self.dir(fd)?;
        let node = self.vfs.lookup(dir, mem.string(path, path_len)?)?;
        let now = self.clock.realtime();
        let (atim, mtim) = decode_times(atim, mtim, fst_flags, now)?;
        self.vfs.set_times(node, atim, mtim, now)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn path_link(
        &mut self,
        mem: &mut Guest<'_>,
        old_fd: u32,
        _old_flags: u32,
        old_path: u32,
        old_path_len: u32,
        new_fd: u32,
        new_path: u32,
        new_path_len: u32,
    ) -> HostResult {
        // Every node has exactly one name: no hard links.
        self.dir(old_fd)?;
        self.dir(new_fd)?;
        mem.string(old_path, old_path_len)?;
        mem.string(new_path, new_path_len)?;
        Err(Errno::Notsup.into())
    }

    #[allow(clippy::too_many_arguments)]
    fn path_open(
        &mut self,
        mem: &mut Guest<'_>,
        fd: u32,
        _dirflags: u32,
        path: u32,
        path_len: u32,
        oflags: u32,
        rights_base: u64,
        _rights_inheriting: u64,
        fdflags: u32,
        result: u32,
    ) -> HostResult {
        mem.check(result, 4)?;
        let dir = self.dir(fd)?;
        if oflags & !abi::OFLAGS_ALL != 0 || fdflags & !abi::FDFLAGS_ALL != 0 {
            return Err(Errno::Inval.into());
        }
        // Checked before opening, so that EMFILE leaves no file created behind.
        if self.fds.len() >= MAX_OPEN_FDS {
            return Err(Errno::Mfile.into());
        }
        let read = rights_base & abi::RIGHTS_FD_READ != 0;
        let write = rights_base & abi::RIGHTS_FD_WRITE != 0;
        let options = OpenOptions {
            create: oflags & abi::OFLAGS_CREAT != 0,
            exclusive: oflags & abi::OFLAGS_EXCL != 0,
            truncate: oflags & abi::OFLAGS_TRUNC != 0,
            directory: oflags & abi::OFLAGS_DIRECTORY != 0,
            write,
        };
        let now = self.clock.realtime();
        let node = self.vfs.open(dir, mem.string(path, path_len)?, options, now)?;
        let descriptor = match self.vfs.kind(node)? {
            FileKind::Directory => Descriptor::Dir { node, preopen: None },
            FileKind::RegularFile => Descriptor::File {
                node,
                position: 0,
                read,
                write,
                append: fdflags & abi::FDFLAGS_APPEND != 0,
            },
        };
        let new_fd = match self.push_fd(descriptor) {
            Ok(new_fd) => new_fd,
            Err(errno) => {
                self.vfs.release(node);
                return Err(errno.into());
            }
        };
        mem.write_u32(result, new_fd)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn path_readlink(&mut self, mem: &mut Guest<'_>, fd: u32, path: u32, path_len: u32, buf: u32, buf_len: u32, result: u32) -> HostResult {
        mem.check(buf, u64::from(buf_len))?;
        mem.check(result, 4)?;
        let dir = self.dir(fd)?;
        // There are no symbolic links: whatever exists is not one.
        self.vfs.lookup(dir, mem.string(path, path_len)?)?;
        Err(Errno::Inval.into())
    }

    fn path_remove_directory(&mut self, mem: &mut Guest<'_>, fd: u32, path: u32, path_len: u32) -> HostResult {
        let dir = self.dir(fd)?;
        let now = self.clock.realtime();
        self.vfs.remove_dir(dir, mem.string(path, path_len)?, now)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn path_rename(&mut self, mem: &mut Guest<'_>, fd: u32, old_path: u32, old_path_len: u32, new_fd: u32, new_path: u32, new_path_len: u32) -> HostResult {
        let old_dir = self.dir(fd)?;
        let new_dir = self.dir(new_fd)?;
        let old_path = mem.string(old_path, old_path_len)?;
        let new_path = mem.string(new_path, new_path_len)?;
        let now = self.clock.realtime();
        self.vfs.rename(old_dir, old_path, new_dir, new_path, now)?;
        Ok(())
    }

    fn path_symlink(&mut self, mem: &mut Guest<'_>, old_path: u32, old_path_len: u32, fd: u32, new_path: u32, new_path_len: u32) -> HostResult {
        // No symbolic links: a link could only point inside the mounts, and leaving them out
        // keeps path resolution simple.
        self.dir(fd)?;
        mem.string(old_path, old_path_len)?;
        mem.string(new_path, new_path_len)?;
        Err(Errno::Notsup.into())
    }

    fn path_unlink_file(&mut self, mem: &mut Guest<'_>, fd: u32, path: u32, path_len: u32) -> HostResult {
        let dir = self.dir(fd)?;
        let now = self.clock.realtime();
        self.vfs.unlink_file(dir, mem.string(path, path_len)?, now)?;
        Ok(())
    }

    /// Never waits. Descriptors are always ready (everything is in memory): if any descriptor
    /// subscription is there, those events are returned (a bad descriptor's with `EBADF`) and
    /// no clock fires. Otherwise the virtual clock jumps to the earliest clock deadline and every
    /// clock subscription due by then fires.
    fn poll_oneoff(&mut self, mem: &mut Guest<'_>, subs: u32, events: u32, nsubscriptions: u32, result: u32) -> HostResult {
        if nsubscriptions == 0 {
            // As in wasmtime-wasi: waiting for nothing would be waiting forever.
            return Err(Errno::Inval.into());
        }
        mem.check(subs, u64::from(nsubscriptions) * abi::SUBSCRIPTION_SIZE)?;
        mem.check(events, u64::from(nsubscriptions) * abi::EVENT_SIZE as u64)?;
        mem.check(result, 4)?;
        let now = self.clock.elapsed();

        // First pass: validate, find whether any descriptor is subscribed and the earliest deadline.
        let mut any_fd = false;
        let mut earliest: Option<u64> = None;
        for index in 0..nsubscriptions {
            match self.subscription(mem, subs, index, now)? {
                Subscription::Clock { deadline, .. } => earliest = Some(earliest.map_or(deadline, |e| e.min(deadline))),
                Subscription::Fd { .. } => any_fd = true,
            }
        }
        let due = if any_fd {
            None
        } else {
            if let Some(deadline) = earliest {
                self.clock.sleep_until(deadline);
            }
            Some(self.clock.elapsed())
        };

        // Second pass: write the events that fire, in subscription order.
        let mut count = 0u32;
        for index in 0..nsubscriptions {
            let mut event = [0u8; abi::EVENT_SIZE];
            match (self.subscription(mem, subs, index, now)?, due) {
                (Subscription::Clock { userdata, deadline }, Some(due)) if deadline <= due => {
                    event[0..8].copy_from_slice(&userdata.to_le_bytes());
                    event[10] = abi::EVENTTYPE_CLOCK;
                }
                (Subscription::Fd { userdata, fd, write }, None) => {
                    let (errno, nbytes, hangup) = self.fd_readiness(fd, write);
                    event[0..8].copy_from_slice(&userdata.to_le_bytes());
                    event[8..10].copy_from_slice(&errno.raw().to_le_bytes());
                    event[10] = if write { abi::EVENTTYPE_FD_WRITE } else { abi::EVENTTYPE_FD_READ };
                    event[16..24].copy_from_slice(&nbytes.to_le_bytes());
                    let flags = if hangup { abi::EVENTRWFLAGS_HANGUP } else { 0 };
                    event[24..26].copy_from_slice(&flags.to_le_bytes());
                }
                _ => continue,
            }
            let at = events.checked_add(count.checked_mul(abi::EVENT_SIZE as u32).ok_or(Errno::Fault)?).ok_or(Errno::Fault)?;
            mem.write(at, &event)?;
            count += 1;
        }
        mem.write_u32(result, count)?;
        Ok(())
    }

    /// Reads subscription `index`; a relative clock timeout counts from `now` (elapsed ns).
    fn subscription(&self, mem: &Guest<'_>, subs: u32, index: u32, now: u64) -> Result<Subscription, Errno> {
        let offset = u64::from(index) * abi::SUBSCRIPTION_SIZE;
        let base = u32::try_from(u64::from(subs) + offset).map_err(|_| Errno::Fault)?;
        let at = |delta: u32| base.checked_add(delta).ok_or(Errno::Fault);
        let userdata = mem.read_u64(base)?;
        match mem.read_u8(at(8)?)? {
            abi::EVENTTYPE_CLOCK => {
                let id = mem.read_u32(at(16)?)?;
                check_clock(id)?;
                let timeout = mem.read_u64(at(24)?)?;
                let flags = mem.read_u16(at(40)?)?;
                let deadline = if flags & abi::SUBCLOCKFLAGS_ABSTIME == 0 {
                    now.saturating_add(timeout)
                } else if id == abi::CLOCK_REALTIME {
                    timeout.saturating_sub(self.clock.start_unix_ns)
                } else {
                    timeout
                };
                Ok(Subscription::Clock { userdata, deadline })
            }
            tag @ (abi::EVENTTYPE_FD_READ | abi::EVENTTYPE_FD_WRITE) => {
                let fd = mem.read_u32(at(16)?)?;
                Ok(Subscription::Fd { userdata, fd, write: tag == abi::EVENTTYPE_FD_WRITE })
            }
            _ => Err(Errno::Inval),
        }
    }

    /// The error, byte count and hang-up flag of a ready descriptor event.
    fn fd_readiness(&self, fd: u32, write: bool) -> (Errno, u64, bool) {
        match (self.fds.get(&fd), write) {
            (Some(Descriptor::Stdin), false) => {
                let left = self.stdin.len().saturating_sub(self.stdin_position) as u64;
                (Errno::Success, left, left == 0)
            }
            (Some(Descriptor::File { node, position, .. }), false) => {
                let left = self.vfs.size(*node).unwrap_or(0).saturating_sub(*position);
                (Errno::Success, left, left == 0)
            }
            (Some(Descriptor::Stdout | Descriptor::Stderr | Descriptor::File { .. }), true) => (Errno::Success, 1, false),
            _ => (Errno::Badf, 0, false),
        }
    }
}

/// One `poll_oneoff` subscription.
enum Subscription {
    Clock { userdata: u64, deadline: u64 },
    Fd { userdata: u64, fd: u32, write: bool },
}

fn check_clock(id: u32) -> Result<(), Errno> {
    if id > abi::CLOCK_THREAD_CPUTIME {
        return Err(Errno::Inval);
    }
    Ok(())
}

fn filetype(kind: FileKind) -> u8 {
    match kind {
        FileKind::Directory => abi::FILETYPE_DIRECTORY,
        FileKind::RegularFile => abi::FILETYPE_REGULAR_FILE,
    }
}

fn encode_filestat(stat: &super::vfs::Stat) -> [u8; abi::FILESTAT_SIZE] {
    let mut out = [0u8; abi::FILESTAT_SIZE];
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
fn decode_times(atim: u64, mtim: u64, flags: u32, now: u64) -> Result<(Option<u64>, Option<u64>), Errno> {
    if flags & !abi::FSTFLAGS_ALL != 0 {
        return Err(Errno::Inval);
    }
    let pick = |value: u64, set: u32, set_now: u32| match (flags & set != 0, flags & set_now != 0) {
        (true, true) => Err(Errno::Inval),
        (true, false) => Ok(Some(value)),
        (false, true) => Ok(Some(now)),
        (false, false) => Ok(None),
    };
    Ok((pick(atim, abi::FSTFLAGS_ATIM, abi::FSTFLAGS_ATIM_NOW)?, pick(mtim, abi::FSTFLAGS_MTIM, abi::FSTFLAGS_MTIM_NOW)?))
}

/// Checks every iovec of an array and returns their total length. Refuses totals that do not
/// fit the `size` result (`EINVAL`, like `writev` past `SSIZE_MAX`).
fn iovecs_total(mem: &Guest<'_>, iovs: u32, iovs_len: u32) -> Result<u64, Errno> {
    // The whole array must be in memory: this also bounds the loop below by the memory's size.
    mem.check(iovs, u64::from(iovs_len) * abi::IOVEC_SIZE)?;
    let mut total = 0u64;
    for index in 0..iovs_len {
        let (buf, len) = mem.iovec(iovs, index)?;
        mem.check(buf, u64::from(len))?;
        total = total.saturating_add(u64::from(len));
    }
    if total > u64::from(u32::MAX) {
        return Err(Errno::Inval);
    }
    Ok(total)
}

/// Fills the iovecs in order from `source`, which copies into the buffer it is given and says
/// how many bytes it copied; stops at the first short copy. Returns the total.
fn read_into(mem: &mut Guest<'_>, iovs: u32, iovs_len: u32, mut source: impl FnMut(&mut [u8]) -> usize) -> Result<u32, Errno> {
    let mut total = 0u32;
    for index in 0..iovs_len {
        let (buf, len) = mem.iovec(iovs, index)?;
        // Keep the total within the `size` result.
        let len = len.min(u32::MAX - total);
        let dst = mem.bytes_mut(buf, u64::from(len))?;
        let n = source(dst);
        total = total.saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
        if n < len as usize || total == u32::MAX {
            break;
        }
    }
    Ok(total)
}

/// The guest's linear memory, with bounds-checked access.
struct Guest<'a> {
    mem: &'a mut [u8],
}

impl Guest<'_> {
    fn range(&self, ptr: u32, len: u64) -> Result<Range<usize>, Errno> {
        let start = ptr as usize;
        let len = usize::try_from(len).map_err(|_| Errno::Fault)?;
        let end = start.checked_add(len).ok_or(Errno::Fault)?;
        if end > self.mem.len() {
            return Err(Errno::Fault);
        }
        Ok(start..end)
    }

    fn check(&self, ptr: u32, len: u64) -> Result<(), Errno> {
        self.range(ptr, len).map(|_| ())
    }

    fn bytes(&self, ptr: u32, len: u64) -> Result<&[u8], Errno> {
        let range = self.range(ptr, len)?;
        self.mem.get(range).ok_or(Errno::Fault)
    }

    fn bytes_mut(&mut self, ptr: u32, len: u64) -> Result<&mut [u8], Errno> {
        let range = self.range(ptr, len)?;
        self.mem.get_mut(range).ok_or(Errno::Fault)
    }

    fn array<const N: usize>(&self, ptr: u32) -> Result<[u8; N], Errno> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(ptr, N as u64)?);
        Ok(out)
    }

    fn read_u8(&self, ptr: u32) -> Result<u8, Errno> {
        Ok(self.array::<1>(ptr)?[0])
    }

    fn read_u16(&self, ptr: u32) -> Result<u16, Errno> {
        Ok(u16::from_le_bytes(self.array(ptr)?))
    }

    fn read_u32(&self, ptr: u32) -> Result<u32, Errno> {
        Ok(u32::from_le_bytes(self.array(ptr)?))
    }

    fn read_u64(&self, ptr: u32) -> Result<u64, Errno> {
        Ok(u64::from_le_bytes(self.array(ptr)?))
    }

    fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), Errno> {
        self.bytes_mut(ptr, bytes.len() as u64)?.copy_from_slice(bytes);
        Ok(())
    }

    fn write_u32(&mut self, ptr: u32, value: u32) -> Result<(), Errno> {
        self.write(ptr, &value.to_le_bytes())
    }

    fn write_u64(&mut self, ptr: u32, value: u64) -> Result<(), Errno> {
        self.write(ptr, &value.to_le_bytes())
    }

    /// Iovec `index` of the array at `iovs`: (buffer pointer, length).
    fn iovec(&self, iovs: u32, index: u32) -> Result<(u32, u32), Errno> {
        let at = u64::from(iovs) + u64::from(index) * abi::IOVEC_SIZE;
        let at = u32::try_from(at).map_err(|_| Errno::Fault)?;
        let buf = self.read_u32(at)?;
        let len = self.read_u32(at.checked_add(4).ok_or(Errno::Fault)?)?;
        Ok((buf, len))
    }

    /// A path from the guest: in bounds (`EFAULT`) and UTF-8 (`EILSEQ`).
    fn string(&self, ptr: u32, len: u32) -> Result<&str, Errno> {
        std::str::from_utf8(self.bytes(ptr, u64::from(len))?).map_err(|_| Errno::Ilseq)
    }
}

/// Runs one host function: finds the guest's memory, updates the virtual clock from the fuel
/// left and turns the result into an errno or a trap.
fn host_call<T: 'static>(
    caller: &mut Caller<'_, T>,
    get: fn(&mut T) -> &mut DeterministicWasi,
    body: impl FnOnce(&mut DeterministicWasi, &mut Guest<'_>) -> HostResult,
) -> wasmtime::Result<i32> {
    let fuel_left = caller.get_fuel().ok();
    let memory = match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => memory,
        _ => {
            return Err(wasmtime::Error::msg(
                "gridbox: the module calls a WASI preview1 function but does not export a linear memory named \"memory\"",
            ));
        }
    };
    let (data, state) = memory.data_and_store_mut(&mut *caller);
    let wasi = get(state);
    wasi.clock.observe(fuel_left);
    let mut guest = Guest { mem: data };
    match body(wasi, &mut guest) {
        Ok(()) => Ok(0),
        Err(HostError::Errno(errno)) => Ok(i32::from(errno.raw())),
        Err(HostError::Trap(error)) => Err(error),
    }
}

/// Defines `$name` as a host function whose wasm parameters are `$arg: $ty` and which calls the
/// method of the same name with each argument reinterpreted as the unsigned type it is in the
/// ABI (`as _`: a wasm i32 is a u32 pointer, size or flags word; i64 a u64, except fd_seek's
/// signed offset, which the method takes as i64).
macro_rules! define {
    ($linker:ident, $get:ident, $name:ident ( $($arg:ident : $ty:ty),* )) => {
        $linker.func_wrap(
            MODULE,
            stringify!($name),
            move |mut caller: Caller<'_, T>, $($arg: $ty),*| -> wasmtime::Result<i32> {
                host_call(&mut caller, $get, |wasi, mem| wasi.$name(mem, $($arg as _),*))
            },
        )?;
    };
}

/// Defines every function of [`SHADOWED_FUNCTIONS`] in `linker` under `wasi_snapshot_preview1`,
/// with the signatures of the preview1 witx. `get` finds the job's [`DeterministicWasi`] in the
/// store's data.
///
/// Call it after `wasmtime_wasi::p1::add_to_linker_sync` and `linker.allow_shadowing(true)`, so
/// that these definitions replace wasmtime-wasi's.
pub fn add_to_linker<T: 'static>(linker: &mut Linker<T>, get: fn(&mut T) -> &mut DeterministicWasi) -> wasmtime::Result<()> {
    define!(linker, get, clock_res_get(id: i32, result: i32));
    define!(linker, get, clock_time_get(id: i32, precision: i64, result: i32));
    define!(linker, get, fd_advise(fd: i32, offset: i64, len: i64, advice: i32));
    define!(linker, get, fd_allocate(fd: i32, offset: i64, len: i64));
    define!(linker, get, fd_close(fd: i32));
    linker.func_wrap(MODULE, "fd_datasync", move |mut caller: Caller<'_, T>, fd: i32| -> wasmtime::Result<i32> {
        host_call(&mut caller, get, |wasi, mem| wasi.fd_sync(mem, fd as u32))
    })?;
    define!(linker, get, fd_fdstat_get(fd: i32, result: i32));
    define!(linker, get, fd_fdstat_set_flags(fd: i32, flags: i32));
    define!(linker, get, fd_fdstat_set_rights(fd: i32, base: i64, inheriting: i64));
    define!(linker, get, fd_filestat_get(fd: i32, result: i32));
    define!(linker, get, fd_filestat_set_size(fd: i32, size: i64));
    define!(linker, get, fd_filestat_set_times(fd: i32, atim: i64, mtim: i64, flags: i32));
    define!(linker, get, fd_pread(fd: i32, iovs: i32, iovs_len: i32, offset: i64, result: i32));
    define!(linker, get, fd_prestat_get(fd: i32, result: i32));
    define!(linker, get, fd_prestat_dir_name(fd: i32, path: i32, path_len: i32));
    define!(linker, get, fd_pwrite(fd: i32, iovs: i32, iovs_len: i32, offset: i64, result: i32));
    define!(linker, get, fd_read(fd: i32, iovs: i32, iovs_len: i32, result: i32));
    define!(linker, get, fd_readdir(fd: i32, buf: i32, buf_len: i32, cookie: i64, result: i32));
    define!(linker, get, fd_renumber(fd: i32, to: i32));
    define!(linker, get, fd_seek(fd: i32, offset: i64, whence: i32, result: i32));
    define!(linker, get, fd_sync(fd: i32));
    define!(linker, get, fd_tell(fd: i32, result: i32));
    define!(linker, get, fd_write(fd: i32, iovs: i32, iovs_len: i32, result: i32));
    define!(linker, get, path_create_directory(fd: i32, path: i32, path_len: i32));
    define!(linker, get, path_filestat_get(fd: i32, flags: i32, path: i32, path_len: i32, result: i32));
    define!(linker, get, path_filestat_set_times(fd: i32, flags: i32, path: i32, path_len: i32, atim: i64, mtim: i64, fst_flags: i32));
    define!(linker, get, path_link(old_fd: i32, old_flags: i32, old_path: i32, old_path_len: i32, new_fd: i32, new_path: i32, new_path_len: i32));
    define!(linker, get, path_open(fd: i32, dirflags: i32, path: i32, path_len: i32, oflags: i32, base: i64, inheriting: i64, fdflags: i32, result: i32));
    define!(linker, get, path_readlink(fd: i32, path: i32, path_len: i32, buf: i32, buf_len: i32, result: i32));
    define!(linker, get, path_remove_directory(fd: i32, path: i32, path_len: i32));
    define!(linker, get, path_rename(fd: i32, old_path: i32, old_path_len: i32, new_fd: i32, new_path: i32, new_path_len: i32));
    define!(linker, get, path_symlink(old_path: i32, old_path_len: i32, fd: i32, new_path: i32, new_path_len: i32));
    define!(linker, get, path_unlink_file(fd: i32, path: i32, path_len: i32));
    define!(linker, get, poll_oneoff(subs: i32, events: i32, nsubscriptions: i32, result: i32));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Config, Engine, Instance, Memory, Module, Store, Val};
    use wasmtime_wasi::WasiCtxBuilder;
    use wasmtime_wasi::p1::WasiP1Ctx;

    const T0: u64 = 1_767_225_600_000_000_000;
    const FUEL: u64 = 10_000_000_000;
    const ENOTSUP: i32 = 58;
    const EBADF: i32 = 8;
    const EFAULT: i32 = 21;
    const EFBIG: i32 = 22;
    const EINVAL: i32 = 28;
    const EISDIR: i32 = 31;
    const EMFILE: i32 = 33;
    const ENAMETOOLONG: i32 = 37;
    const ENOENT: i32 = 44;
    const ENOTDIR: i32 = 54;
    const EPERM: i32 = 63;
    const EROFS: i32 = 69;
    const ESPIPE: i32 = 70;
    const EXDEV: i32 = 75;
    const EEXIST: i32 = 20;

    /// Every shadowed function with its wasm parameter types, written from the witx. A module
    /// importing them all instantiates only if `add_to_linker` defines them with these types.
    const SIGNATURES: &[(&str, &str)] = &[
        ("fd_advise", "i32 i64 i64 i32"),
        ("fd_allocate", "i32 i64 i64"),
        ("fd_close", "i32"),
        ("fd_datasync", "i32"),
        ("fd_fdstat_get", "i32 i32"),
        ("fd_fdstat_set_flags", "i32 i32"),
        ("fd_fdstat_set_rights", "i32 i64 i64"),
        ("fd_filestat_get", "i32 i32"),
        ("fd_filestat_set_size", "i32 i64"),
        ("fd_filestat_set_times", "i32 i64 i64 i32"),
        ("fd_pread", "i32 i32 i32 i64 i32"),
        ("fd_prestat_get", "i32 i32"),
        ("fd_prestat_dir_name", "i32 i32 i32"),
        ("fd_pwrite", "i32 i32 i32 i64 i32"),
        ("fd_read", "i32 i32 i32 i32"),
        ("fd_readdir", "i32 i32 i32 i64 i32"),
        ("fd_renumber", "i32 i32"),
        ("fd_seek", "i32 i64 i32 i32"),
        ("fd_sync", "i32"),
        ("fd_tell", "i32 i32"),
        ("fd_write", "i32 i32 i32 i32"),
        ("path_create_directory", "i32 i32 i32"),
        ("path_filestat_get", "i32 i32 i32 i32 i32"),
        ("path_filestat_set_times", "i32 i32 i32 i32 i64 i64 i32"),
        ("path_link", "i32 i32 i32 i32 i32 i32 i32"),
        ("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32"),
        ("path_readlink", "i32 i32 i32 i32 i32 i32"),
        ("path_remove_directory", "i32 i32 i32"),
        ("path_rename", "i32 i32 i32 i32 i32 i32"),
        ("path_symlink", "i32 i32 i32 i32 i32"),
        ("path_unlink_file", "i32 i32 i32"),
        ("poll_oneoff", "i32 i32 i32 i32"),
        ("clock_res_get", "i32 i32"),
        ("clock_time_get", "i32 i64 i32"),
    ];

    /// A module that imports every shadowed function and exports a wrapper of the same name
    /// (host functions must be called from wasm to see the caller's memory), a 10-page memory
    /// and `burn`, which spends fuel.
    fn test_module() -> String {
        let mut wat = String::from("(module\n");
        for (name, params) in SIGNATURES {
            wat += &format!("  (import \"wasi_snapshot_preview1\" \"{name}\" (func ${name} (param {params}) (result i32)))\n");
        }
        wat += "  (import \"wasi_snapshot_preview1\" \"random_get\" (func $random_get (param i32 i32) (result i32)))\n";
        wat += "  (memory (export \"memory\") 10)\n";
        for (name, params) in SIGNATURES {
            let gets: String = (0..params.split(' ').count()).map(|i| format!("local.get {i} ")).collect();
            wat += &format!("  (func (export \"{name}\") (param {params}) (result i32) {gets} call ${name})\n");
        }
        wat += "  (func (export \"random_get\") (param i32 i32) (result i32) local.get 0 local.get 1 call $random_get)\n";
        wat += "  (func (export \"burn\") (param $n i32) (result i32) (loop $l local.get $n i32.const 1 i32.sub local.tee $n br_if $l) i32.const 0)\n";
        wat + ")\n"
    }

    struct TestState {
        wasi_p1: WasiP1Ctx,
        det: DeterministicWasi,
    }

    fn config() -> WasiConfig {
        WasiConfig {
            start_unix_ns: T0,
            stdin: Arc::from(&b"hello stdin"[..]),
            stdio_bytes: 1 << 20,
            output_bytes: 1 << 20,
            output_files: 100,
            fuel_budget: FUEL,
        }
    }

    fn engine() -> Engine {
        let mut config = Config::new();
        config.consume_fuel(true);
        Engine::new(&config).expect("engine")
    }

    fn linker(engine: &Engine) -> Linker<TestState> {
        let mut linker = Linker::new(engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut TestState| &mut s.wasi_p1).expect("p1");
        linker.allow_shadowing(true);
        add_to_linker(&mut linker, |s: &mut TestState| &mut s.det).expect("shadow");
        linker
    }

    fn store(engine: &Engine, config: WasiConfig) -> Store<TestState> {
        let mut det = DeterministicWasi::new(config);
        let inputs = [("a.txt", &b"alpha"[..]), ("sub/b.txt", b"bravo"), ("zeta.txt", b"zeta")];
        assert_eq!(det.mount_read_only("/input", inputs.map(|(n, b)| (n.to_string(), Arc::from(b)))).unwrap(), 3);
        assert_eq!(det.mount_writable("/output").unwrap(), 4);
        let mut store = Store::new(engine, TestState { wasi_p1: WasiCtxBuilder::new().build_p1(), det });
        store.set_fuel(FUEL).expect("fuel");
        store
    }

    struct Harness {
        store: Store<TestState>,
        instance: Instance,
        memory: Memory,
    }

    fn i(value: i32) -> Val {
        Val::I32(value)
    }

    fn l(value: i64) -> Val {
        Val::I64(value)
    }

    impl Harness {
        fn new() -> Self {
            Self::with(config())
        }

        fn with(config: WasiConfig) -> Self {
            let engine = engine();
            let module = Module::new(&engine, wat::parse_str(test_module()).expect("wat")).expect("module");
            let mut store = store(&engine, config);
            let instance = linker(&engine).instantiate(&mut store, &module).expect("instantiate");
            let memory = instance.get_memory(&mut store, "memory").expect("memory");
            Harness { store, instance, memory }
        }

        fn call(&mut self, name: &str, args: &[Val]) -> wasmtime::Result<i32> {
            let func = self.instance.get_func(&mut self.store, name).expect("export");
            let mut results = [Val::I32(0)];
            func.call(&mut self.store, args, &mut results)?;
            Ok(results[0].unwrap_i32())
        }

        /// Calls `name` and returns its errno; panics on a trap.
        fn errno(&mut self, name: &str, args: &[Val]) -> i32 {
            self.call(name, args).unwrap_or_else(|e| panic!("{name} trapped: {e:?}"))
        }

        fn trap(&mut self, name: &str, args: &[Val]) -> wasmtime::Error {
            match self.call(name, args) {
                Ok(errno) => panic!("{name} returned {errno} instead of trapping"),
                Err(error) => error,
            }
        }

        fn poke(&mut self, at: usize, bytes: &[u8]) {
            self.memory.data_mut(&mut self.store)[at..at + bytes.len()].copy_from_slice(bytes);
        }

        fn peek(&self, at: usize, len: usize) -> Vec<u8> {
            self.memory.data(&self.store)[at..at + len].to_vec()
        }

        fn u32(&self, at: usize) -> u32 {
            u32::from_le_bytes(self.peek(at, 4).try_into().unwrap())
        }

        fn u64(&self, at: usize) -> u64 {
            u64::from_le_bytes(self.peek(at, 8).try_into().unwrap())
        }

        /// Puts `text` at `at` and returns (pointer, length) arguments.
        fn text(&mut self, at: usize, text: &str) -> [Val; 2] {
            self.poke(at, text.as_bytes());
            [i(at as i32), i(text.len() as i32)]
        }

        /// Puts one iovec at `at` pointing to `data` placed at `at + 8`; returns (iovs, 1).
        fn iovec(&mut self, at: usize, data: &[u8]) -> [Val; 2] {
            let buf = at + 8;
            self.poke(at, &(buf as u32).to_le_bytes());
            self.poke(at + 4, &(data.len() as u32).to_le_bytes());
            self.poke(buf, data);
            [i(at as i32), i(1)]
        }

        fn det(&self) -> &DeterministicWasi {
            &self.store.data().det
        }

        /// Opens `path` under `dir_fd` and returns the new fd.
        fn open(&mut self, dir_fd: i32, path: &str, oflags: i32, rights: i64, fdflags: i32) -> Result<i32, i32> {
            let [p, n] = self.text(1000, path);
            let errno = self.errno("path_open", &[i(dir_fd), i(0), p, n, i(oflags), l(rights), l(rights), i(fdflags), i(900)]);
            if errno == 0 { Ok(self.u32(900) as i32) } else { Err(errno) }
        }

        fn write(&mut self, fd: i32, data: &[u8]) -> i32 {
            let [iovs, count] = self.iovec(2000, data);
            self.errno("fd_write", &[i(fd), iovs, count, i(904)])
        }

        fn now(&mut self, clock: i32) -> u64 {
            assert_eq!(self.errno("clock_time_get", &[i(clock), l(0), i(800)]), 0);
            self.u64(800)
        }
    }

    const READ: i64 = abi::RIGHTS_FD_READ as i64 | abi::RIGHTS_FD_SEEK as i64 | abi::RIGHTS_FD_READDIR as i64;
    const WRITE: i64 = abi::RIGHTS_FD_WRITE as i64;
    const CREAT: i32 = abi::OFLAGS_CREAT as i32;
    const TRUNC: i32 = abi::OFLAGS_TRUNC as i32;
    const EXCL: i32 = abi::OFLAGS_EXCL as i32;
    const DIRECTORY: i32 = abi::OFLAGS_DIRECTORY as i32;

    #[test]
    fn every_function_is_shadowed_with_the_witx_signature() {
        let mut names: Vec<&str> = SIGNATURES.iter().map(|(n, _)| *n).collect();
        let mut shadowed = SHADOWED_FUNCTIONS.to_vec();
        names.sort();
        shadowed.sort();
        assert_eq!(names, shadowed);
        // Instantiating checks the types; writing to stdout checks ours replaced wasmtime-wasi's.
        let mut h = Harness::new();
        assert_eq!(h.write(1, b"captured"), 0);
        assert_eq!(h.u32(904), 8);
        assert_eq!(h.det().stdout(), b"captured");
        // What stays with wasmtime-wasi still works next to it.
        assert_eq!(h.errno("random_get", &[i(0), i(16)]), 0);
    }

    #[test]
    fn stdio_reads_and_writes_memory_buffers() {
        let mut h = Harness::new();
        assert_eq!(h.write(2, b"to stderr"), 0);
        assert_eq!(h.det().stderr(), b"to stderr");
        // Two iovecs: 5 bytes then 100.
        h.poke(3000, &[0x1c, 0x0c, 0, 0, 5, 0, 0, 0, 0x80, 0x0c, 0, 0, 100, 0, 0, 0]);
        assert_eq!(h.errno("fd_read", &[i(0), i(3000), i(2), i(904)]), 0);
        assert_eq!(h.u32(904), 11);
        assert_eq!(h.peek(0x0c1c, 5), b"hello");
        assert_eq!(h.peek(0x0c80, 6), b" stdin");
        assert_eq!(h.errno("fd_read", &[i(0), i(3000), i(2), i(904)]), 0);
        assert_eq!(h.u32(904), 0, "end of file");
        assert_eq!(h.errno("fd_read", &[i(1), i(3000), i(2), i(904)]), EBADF);
        assert_eq!(h.errno("fd_seek", &[i(1), l(0), i(0), i(904)]), ESPIPE);
        assert_eq!(h.errno("fd_pwrite", &[i(1), i(3000), i(1), l(0), i(904)]), ESPIPE);
        // Stdio is no terminal, and it has no filesystem metadata.
        assert_eq!(h.errno("fd_fdstat_get", &[i(1), i(800)]), 0);
        assert_eq!(h.peek(800, 1), [abi::FILETYPE_UNKNOWN]);
        assert_eq!(h.u64(808), abi::RIGHTS_FD_WRITE);
        assert_eq!(h.errno("fd_filestat_get", &[i(0), i(800)]), 0);
        assert_eq!(h.peek(800, 64), [0; 64]);
    }

    #[test]
    fn stdio_limit_refuses_the_whole_write_and_traps() {
        let mut h = Harness::with(WasiConfig { stdio_bytes: 10, ..config() });
        assert_eq!(h.write(1, b"12345"), 0);
        assert_eq!(h.write(2, b"1234"), 0);
        let [iovs, count] = h.iovec(2000, b"ab");
        let error = h.trap("fd_write", &[i(1), iovs, count, i(904)]);
        assert_eq!(error.downcast_ref::<LimitExceeded>(), Some(&LimitExceeded { limit: LimitKind::StdioBytes, value: 10 }));
        assert_eq!(h.det().stdout(), b"12345", "nothing of the refused write is kept");
    }

    #[test]
    fn hostile_pointers_and_lengths_are_efault_never_panics() {
        let mut h = Harness::new();
        let end = 10 * 65536;
        // The iovec array itself past the end, or wrapping around.
        assert_eq!(h.errno("fd_write", &[i(1), i(end - 4), i(1), i(904)]), EFAULT);
        assert_eq!(h.errno("fd_write", &[i(1), i(-1), i(1), i(904)]), EFAULT);
        assert_eq!(h.errno("fd_read", &[i(0), i(0), i(i32::MAX), i(904)]), EFAULT);
        assert_eq!(h.errno("fd_write", &[i(1), i(0), i(-1), i(904)]), EFAULT, "a huge iovec count");
        // An iovec whose buffer is past the end.
        h.poke(0, &[0xff, 0xff, 0xff, 0xff, 16, 0, 0, 0]);
        assert_eq!(h.errno("fd_write", &[i(1), i(0), i(1), i(904)]), EFAULT);
        h.poke(0, &((end - 8) as u32).to_le_bytes());
        assert_eq!(h.errno("fd_read", &[i(0), i(0), i(1), i(904)]), EFAULT);
        assert_eq!(h.det().stdout(), b"", "a faulting write writes nothing");
        // Result pointers past the end.
        let [iovs, count] = h.iovec(2000, b"x");
        assert_eq!(h.errno("fd_write", &[i(1), iovs, count, i(end - 2)]), EFAULT);
        assert_eq!(h.errno("fd_read", &[i(0), iovs, count, i(-4)]), EFAULT);
        assert_eq!(h.errno("clock_time_get", &[i(0), l(0), i(end - 7)]), EFAULT);
        assert_eq!(h.errno("fd_fdstat_get", &[i(3), i(end - 23)]), EFAULT);
        assert_eq!(h.errno("fd_filestat_get", &[i(3), i(end - 63)]), EFAULT);
        assert_eq!(h.errno("fd_prestat_dir_name", &[i(3), i(end - 2), i(100)]), EFAULT);
        // Paths past the end of memory, or wrapping.
        assert_eq!(h.errno("path_open", &[i(3), i(0), i(end - 3), i(10), i(0), l(0), l(0), i(0), i(900)]), EFAULT);
        assert_eq!(h.errno("path_filestat_get", &[i(3), i(0), i(-1), i(2), i(800)]), EFAULT);
        assert_eq!(h.errno("path_create_directory", &[i(4), i(0), i(-1)]), EFAULT);
        let [p, n] = h.text(1000, "x");
        assert_eq!(h.errno("path_rename", &[i(4), p, n, i(4), i(end), i(1)]), EFAULT);
        // A path that is not UTF-8.
        h.poke(100, &[0xff, 0xfe]);
        assert_eq!(h.errno("path_create_directory", &[i(4), i(100), i(2)]), 25);
        // Descriptors that were never opened.
        for fd in [5, 99, -1, i32::MAX] {
            assert_eq!(h.errno("fd_write", &[i(fd), i(2000), i(1), i(904)]), EBADF, "{fd}");
            assert_eq!(h.errno("fd_close", &[i(fd)]), EBADF);
            assert_eq!(h.errno("fd_seek", &[i(fd), l(0), i(0), i(904)]), EBADF);
            assert_eq!(h.errno("fd_prestat_get", &[i(fd), i(800)]), EBADF);
            assert_eq!(h.errno("fd_readdir", &[i(fd), i(0), i(100), l(0), i(904)]), EBADF);
            assert_eq!(h.errno("path_open", &[i(fd), i(0), i(1000), i(1), i(0), l(0), l(0), i(0), i(900)]), EBADF);
            assert_eq!(h.errno("fd_renumber", &[i(fd), i(1)]), EBADF);
        }
        // Unknown flag bits and clocks.
        assert_eq!(h.errno("clock_time_get", &[i(4), l(0), i(800)]), EINVAL);
        assert_eq!(h.errno("clock_res_get", &[i(-1), i(800)]), EINVAL);
        assert_eq!(h.errno("path_open", &[i(4), i(0), i(1000), i(1), i(0x100), l(0), l(0), i(0), i(900)]), EINVAL);
        // 65,537 iovecs that all cover the same 64 KiB: more than 4 GiB in total. Refused
        // without allocating anything of that size.
        for index in 0..65_537usize {
            h.poke(65_536 + index * 8, &[0, 0, 0, 0, 0, 0, 1, 0]);
        }
        assert_eq!(h.errno("fd_write", &[i(1), i(65_536), i(65_537), i(904)]), EINVAL);
        let file = h.open(4, "big", CREAT, WRITE, 0).unwrap();
        assert_eq!(h.errno("fd_write", &[i(file), i(65_536), i(65_537), i(904)]), EINVAL);
        assert_eq!(h.det().vfs().output_bytes_used(), 0);
    }

    #[test]
    fn writes_far_past_the_end_are_refused_before_allocating() {
        let mut h = Harness::with(WasiConfig { output_bytes: 1000, ..config() });
        let fd = h.open(4, "f", CREAT, READ | WRITE, 0).unwrap();
        let [iovs, count] = h.iovec(2000, b"abc");
        // An offset whose end overflows u64 is EFBIG.
        assert_eq!(h.errno("fd_pwrite", &[i(fd), iovs, count, l(-2), i(904)]), EFBIG);
        assert_eq!(h.errno("fd_pwrite", &[i(fd), iovs, count, l(i64::MAX), i(904)]), EFBIG);
        assert_eq!(h.det().vfs().output_bytes_used(), 0);
        let error = h.trap("fd_pwrite", &[i(fd), iovs, count, l(1 << 40), i(904)]);
        assert_eq!(error.downcast_ref::<LimitExceeded>(), Some(&LimitExceeded { limit: LimitKind::OutputBytes, value: 1000 }));
        assert_eq!(h.det().vfs().output_bytes_used(), 0);
    }

    #[test]
    fn files_can_be_created_written_seeked_and_read_back() {
        let mut h = Harness::new();
        let fd = h.open(4, "notes.txt", CREAT | EXCL, READ | WRITE, 0).unwrap();
        assert_eq!(fd, 5, "lowest free descriptor");
        assert_eq!(h.open(4, "notes.txt", CREAT | EXCL, READ, 0), Err(EEXIST));
        assert_eq!(h.write(fd, b"hello world"), 0);
        assert_eq!(h.errno("fd_tell", &[i(fd), i(800)]), 0);
        assert_eq!(h.u64(800), 11);
        assert_eq!(h.errno("fd_seek", &[i(fd), l(-5), i(1), i(800)]), 0);
        assert_eq!(h.u64(800), 6);
        assert_eq!(h.errno("fd_seek", &[i(fd), l(-100), i(1), i(800)]), EINVAL);
        assert_eq!(h.errno("fd_seek", &[i(fd), l(-1), i(0), i(800)]), EINVAL);
        assert_eq!(h.errno("fd_seek", &[i(fd), l(0), i(3), i(800)]), EINVAL);
        assert_eq!(h.errno("fd_seek", &[i(fd), l(-2), i(2), i(800)]), 0);
        assert_eq!(h.u64(800), 9);
        let [iovs, count] = h.iovec(2000, &[0; 16]);
        assert_eq!(h.errno("fd_read", &[i(fd), iovs, count, i(904)]), 0);
        assert_eq!((h.u32(904), h.peek(2008, 2)), (2, b"ld".to_vec()));
        // pread and pwrite leave the position alone.
        assert_eq!(h.errno("fd_pread", &[i(fd), iovs, count, l(0), i(904)]), 0);
        assert_eq!(h.peek(2008, h.u32(904) as usize), b"hello world");
        let [wiovs, wcount] = h.iovec(3000, b"HELLO");
        assert_eq!(h.errno("fd_pwrite", &[i(fd), wiovs, wcount, l(0), i(904)]), 0);
        assert_eq!(h.errno("fd_tell", &[i(fd), i(800)]), 0);
        assert_eq!(h.u64(800), 11);
        assert_eq!(h.errno("fd_filestat_get", &[i(fd), i(800)]), 0);
        assert_eq!(h.peek(816, 1), [abi::FILETYPE_REGULAR_FILE]);
        assert_eq!((h.u64(800), h.u64(824), h.u64(832)), (1, 1, 11), "dev, nlink, size");
        assert!(h.u64(848) >= T0, "mtim from the virtual clock");
        assert_eq!(h.errno("fd_filestat_set_size", &[i(fd), l(4)]), 0);
        assert_eq!(h.errno("fd_close", &[i(fd)]), 0);
        assert_eq!(h.errno("fd_close", &[i(fd)]), EBADF);
        // Append mode writes at the end whatever the position.
        let fd = h.open(4, "notes.txt", 0, WRITE, abi::FDFLAGS_APPEND as i32).unwrap();
        assert_eq!(h.write(fd, b"!"), 0);
        assert_eq!(h.errno("fd_fdstat_get", &[i(fd), i(800)]), 0);
        assert_eq!(h.peek(802, 2), [1, 0], "append flag reported");
        assert_eq!(h.errno("fd_fdstat_set_flags", &[i(fd), i(0)]), 0);
        assert_eq!(h.errno("fd_fdstat_set_flags", &[i(fd), i(abi::FDFLAGS_SYNC as i32)]), EINVAL);
        assert_eq!(h.write(fd, b"?"), 0, "now at position 5");
        let [iovs, count] = h.iovec(2000, b"");
        assert_eq!(h.errno("fd_read", &[i(fd), iovs, count, i(904)]), EBADF, "not opened for reading");
        assert_eq!(h.errno("fd_advise", &[i(fd), l(0), l(0), i(1)]), 0);
        assert_eq!(h.errno("fd_advise", &[i(fd), l(0), l(0), i(9)]), EINVAL);
        assert_eq!(h.errno("fd_allocate", &[i(fd), l(0), l(10)]), ENOTSUP);
        assert_eq!(h.errno("fd_sync", &[i(fd)]), 0);
        assert_eq!(h.errno("fd_datasync", &[i(fd)]), 0);
        assert_eq!(h.errno("fd_fdstat_set_rights", &[i(fd), l(0), l(0)]), 0);
        // Truncation on open.
        let fd2 = h.open(4, "notes.txt", TRUNC, WRITE, 0).unwrap();
        assert_eq!(h.write(fd2, b"new"), 0);
        assert_eq!(h.det().collect_outputs()["notes.txt"], b"new");
    }

    #[test]
    fn inputs_are_read_only_and_mounts_cannot_be_escaped() {
        let mut h = Harness::new();
        let fd = h.open(3, "a.txt", 0, READ, 0).unwrap();
        let [iovs, count] = h.iovec(2000, &[0; 8]);
        assert_eq!(h.errno("fd_read", &[i(fd), iovs, count, i(904)]), 0);
        assert_eq!(h.peek(2008, 5), b"alpha");
        assert_eq!(h.write(fd, b"x"), EBADF);
        assert_eq!(h.open(3, "a.txt", 0, READ | WRITE, 0), Err(EROFS));
        assert_eq!(h.open(3, "a.txt", TRUNC, READ, 0), Err(EROFS));
        assert_eq!(h.open(3, "new.txt", CREAT, WRITE, 0), Err(EROFS));
        assert_eq!(h.open(3, "missing", 0, READ, 0), Err(ENOENT));
        assert_eq!(h.open(3, "../etc/passwd", 0, READ, 0), Err(EPERM));
        assert_eq!(h.open(3, "sub/../../output/x", CREAT, WRITE, 0), Err(EPERM));
        assert_eq!(h.open(3, "/etc/passwd", 0, READ, 0), Err(EPERM));
        assert_eq!(h.open(3, "a.txt/", 0, READ, 0), Err(ENOTDIR));
        assert_eq!(h.open(3, "a.txt", DIRECTORY, READ, 0), Err(ENOTDIR));
        assert_eq!(h.open(3, &"x".repeat(300), 0, READ, 0), Err(ENAMETOOLONG));
        assert_eq!(h.open(fd, "x", 0, READ, 0), Err(ENOTDIR), "a file is no directory fd");
        let [p, n] = h.text(1000, "sub");
        assert_eq!(h.errno("path_create_directory", &[i(3), p, n]), EEXIST);
        let [q, m] = h.text(1100, "new");
        assert_eq!(h.errno("path_create_directory", &[i(3), q, m]), EROFS);
        assert_eq!(h.errno("path_remove_directory", &[i(3), p, n]), 55);
        let [p, n] = h.text(1000, "a.txt");
        assert_eq!(h.errno("path_unlink_file", &[i(3), p, n]), EROFS);
        assert_eq!(h.errno("path_filestat_set_times", &[i(3), i(0), p, n, l(0), l(0), i(2)]), EROFS);
        assert_eq!(h.errno("path_rename", &[i(3), p, n, i(4), p, n]), EXDEV);
        assert_eq!(h.errno("path_link", &[i(3), i(0), p, n, i(4), p, n]), ENOTSUP);
        assert_eq!(h.errno("path_symlink", &[p, n, i(4), p, n]), ENOTSUP);
        assert_eq!(h.errno("path_readlink", &[i(3), p, n, i(0), i(10), i(904)]), EINVAL);
        let [q, m] = h.text(1100, "nope");
        assert_eq!(h.errno("path_readlink", &[i(3), q, m, i(0), i(10), i(904)]), ENOENT);
        // Metadata comes from the filesystem: inode in sorted order, dev = mount, start time.
        assert_eq!(h.errno("path_filestat_get", &[i(3), i(0), p, n, i(800)]), 0);
        assert_eq!((h.u64(800), h.u64(808), h.u64(824), h.u64(832)), (0, 2, 1, 5));
        assert_eq!((h.u64(840), h.u64(848), h.u64(856)), (T0, T0, T0));
        // Preopens.
        assert_eq!(h.errno("fd_prestat_get", &[i(3), i(800)]), 0);
        assert_eq!((h.peek(800, 1)[0], h.u32(804)), (0, 6));
        assert_eq!(h.errno("fd_prestat_dir_name", &[i(4), i(800), i(7)]), 0);
        assert_eq!(h.peek(800, 7), b"/output");
        assert_eq!(h.errno("fd_prestat_dir_name", &[i(4), i(800), i(6)]), ENAMETOOLONG);
        assert_eq!(h.errno("fd_prestat_get", &[i(fd), i(800)]), EBADF, "not a preopen");
        assert_eq!(h.errno("fd_fdstat_get", &[i(3), i(800)]), 0);
        assert_eq!((h.peek(800, 1)[0], h.u64(808)), (abi::FILETYPE_DIRECTORY, abi::PREOPEN_RIGHTS_BASE));
        assert_eq!(h.errno("fd_read", &[i(3), i(2000), i(1), i(904)]), EISDIR);
    }

    #[test]
    fn directories_are_listed_in_name_order_with_preview1_buffer_rules() {
        let mut h = Harness::new();
        // Everything: ".", "..", "a.txt", "sub", "zeta.txt".
        assert_eq!(h.errno("fd_readdir", &[i(3), i(4000), i(1000), l(0), i(904)]), 0);
        let used = h.u32(904) as usize;
        assert_eq!(used, 5 * 24 + 1 + 2 + 5 + 3 + 8);
        let mut names = Vec::new();
        let mut at = 4000;
        while at < 4000 + used {
            let next = h.u64(at);
            let namlen = h.u32(at + 16) as usize;
            names.push((next, h.peek(at + 8, 8), h.peek(at + 20, 1)[0], String::from_utf8(h.peek(at + 24, namlen)).unwrap()));
            at += 24 + namlen;
        }
        let listed: Vec<(u64, &str)> = names.iter().map(|(n, _, _, s)| (*n, s.as_str())).collect();
        assert_eq!(listed, [(1, "."), (2, ".."), (3, "a.txt"), (4, "sub"), (5, "zeta.txt")]);
        assert_eq!(names[3].2, abi::FILETYPE_DIRECTORY);
        assert_eq!(names[2].2, abi::FILETYPE_REGULAR_FILE);
        // A buffer too small: the last entry is cut and the whole buffer counts as used.
        assert_eq!(h.errno("fd_readdir", &[i(3), i(4000), i(24 + 1 + 10), l(0), i(904)]), 0);
        assert_eq!(h.u32(904), 35);
        assert_eq!(h.errno("fd_readdir", &[i(3), i(4000), i(0), l(0), i(904)]), 0);
        assert_eq!(h.u32(904), 0);
        // Resuming from a cookie.
        assert_eq!(h.errno("fd_readdir", &[i(3), i(4000), i(1000), l(4), i(904)]), 0);
        assert_eq!(h.u32(904), 24 + 8);
        assert_eq!(h.peek(4024, 8), b"zeta.txt");
        assert_eq!(h.errno("fd_readdir", &[i(3), i(4000), i(1000), l(-1), i(904)]), 0);
        assert_eq!(h.u32(904), 0);
        // Not a directory; buffer past the end.
        let fd = h.open(3, "a.txt", 0, READ, 0).unwrap();
        assert_eq!(h.errno("fd_readdir", &[i(fd), i(4000), i(100), l(0), i(904)]), ENOTDIR);
        assert_eq!(h.errno("fd_readdir", &[i(3), i(10 * 65536 - 10), i(100), l(0), i(904)]), EFAULT);
        // A subdirectory opened by path lists its own entries, `..` being the mount root.
        let sub = h.open(3, "sub", DIRECTORY, READ, 0).unwrap();
        assert_eq!(h.errno("fd_readdir", &[i(sub), i(4000), i(1000), l(0), i(904)]), 0);
        assert_eq!(h.u32(904), 3 * 24 + 1 + 2 + 5);
        assert_eq!(h.u64(4000 + 24 + 1 + 8), 1, "`..` is the root, inode 1");
    }

    #[test]
    fn directories_files_and_renames_in_the_output() {
        let mut h = Harness::new();
        let [p, n] = h.text(1000, "a");
        assert_eq!(h.errno("path_create_directory", &[i(4), p, n]), 0);
        assert_eq!(h.errno("path_create_directory", &[i(4), p, n]), EEXIST);
        let fd = h.open(4, "a/one.txt", CREAT, WRITE, 0).unwrap();
        assert_eq!(h.write(fd, b"one"), 0);
        assert_eq!(h.errno("fd_close", &[i(fd)]), 0);
        let [o, on] = h.text(1000, "a/one.txt");
        let [q, qn] = h.text(1100, "moved.txt");
        assert_eq!(h.errno("path_rename", &[i(4), o, on, i(4), q, qn]), 0);
        assert_eq!(h.errno("path_rename", &[i(4), o, on, i(4), q, qn]), ENOENT);
        let [x, xn] = h.text(1200, ".");
        assert_eq!(h.errno("path_rename", &[i(4), q, qn, i(4), x, xn]), EINVAL);
        assert_eq!(h.errno("path_unlink_file", &[i(4), p, n]), EISDIR);
        assert_eq!(h.errno("path_remove_directory", &[i(4), p, n]), 0);
        assert_eq!(h.errno("path_filestat_set_times", &[i(4), i(0), q, qn, l(5), l(6), i(1 | 4)]), 0);
        assert_eq!(h.errno("path_filestat_get", &[i(4), i(0), q, qn, i(800)]), 0);
        assert_eq!((h.u64(840), h.u64(848)), (5, 6));
        assert_eq!(h.errno("path_filestat_set_times", &[i(4), i(0), q, qn, l(5), l(6), i(1 | 2)]), EINVAL);
        let outputs = h.det().collect_outputs();
        assert_eq!(outputs.keys().collect::<Vec<_>>(), ["moved.txt"]);
        assert_eq!(outputs["moved.txt"], b"one");
        // Renumbering: the target must be open; it is closed and replaced.
        let fd = h.open(4, "moved.txt", 0, READ, 0).unwrap();
        let other = h.open(4, ".", DIRECTORY, READ, 0).unwrap();
        assert_eq!(h.errno("fd_renumber", &[i(fd), i(other)]), 0);
        assert_eq!(h.errno("fd_tell", &[i(other), i(800)]), 0);
        assert_eq!(h.errno("fd_tell", &[i(fd), i(800)]), EBADF);
        assert_eq!(h.errno("fd_renumber", &[i(other), i(77)]), EBADF);
    }

    #[test]
    fn output_file_quota_traps() {
        let mut h = Harness::with(WasiConfig { output_files: 2, ..config() });
        assert!(h.open(4, "one", CREAT, WRITE, 0).is_ok());
        let [p, n] = h.text(1000, "d");
        assert_eq!(h.errno("path_create_directory", &[i(4), p, n]), 0);
        let [p, n] = h.text(1000, "e");
        let error = h.trap("path_create_directory", &[i(4), p, n]);
        assert_eq!(error.downcast_ref::<LimitExceeded>(), Some(&LimitExceeded { limit: LimitKind::OutputFiles, value: 2 }));
    }

    #[test]
    fn descriptors_are_capped() {
        let mut h = Harness::new();
        for _ in 5..MAX_OPEN_FDS {
            h.open(3, "a.txt", 0, READ, 0).unwrap();
        }
        assert_eq!(h.open(3, "a.txt", 0, READ, 0), Err(EMFILE));
        assert_eq!(h.open(4, "new", CREAT, WRITE, 0), Err(EMFILE));
        assert!(h.det().collect_outputs().is_empty(), "EMFILE creates nothing");
        assert_eq!(h.errno("fd_close", &[i(700)]), 0);
        assert_eq!(h.open(3, "a.txt", 0, READ, 0), Ok(700), "the lowest free number is reused");
    }

    #[test]
    fn the_clock_is_virtual_and_driven_by_fuel_and_sleep() {
        let mut h = Harness::new();
        assert_eq!(h.errno("clock_res_get", &[i(1), i(800)]), 0);
        assert_eq!(h.u64(800), 1);
        let real = h.now(0);
        let mono = h.now(1);
        assert!((T0..T0 + 1_000_000).contains(&real), "{real}");
        assert!(mono >= real - T0);
        h.call("burn", &[i(100_000)]).unwrap();
        let later = h.now(1);
        assert!(later >= mono + 100_000, "{mono} -> {later}: fuel moves the clock");
        let (process, thread) = (h.now(2), h.now(3));
        assert!(process >= later && thread >= process, "cpu clocks are the same virtual time");
        // A relative 1.5 s sleep (what std::thread::sleep does): returns at once, clock moved.
        let mut sub = [0u8; 48];
        sub[0..8].copy_from_slice(&42u64.to_le_bytes());
        sub[16..20].copy_from_slice(&1u32.to_le_bytes());
        sub[24..32].copy_from_slice(&1_500_000_000u64.to_le_bytes());
        h.poke(5000, &sub);
        let before = h.now(1);
        let started = std::time::Instant::now();
        assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(1), i(904)]), 0);
        assert!(started.elapsed() < std::time::Duration::from_millis(500), "no real sleep");
        assert_eq!(h.u32(904), 1);
        assert_eq!(h.u64(6000), 42);
        assert_eq!((h.peek(6008, 2), h.peek(6010, 1)[0]), (vec![0, 0], abi::EVENTTYPE_CLOCK));
        let after = h.now(1);
        assert!(after >= before + 1_500_000_000 && after < before + 1_501_000_000, "{before} -> {after}");
        assert!(h.det().slept_ns() >= 1_500_000_000);
        // An absolute realtime deadline in the past fires at once without moving the clock.
        sub[16..20].copy_from_slice(&0u32.to_le_bytes());
        sub[24..32].copy_from_slice(&T0.to_le_bytes());
        sub[40..42].copy_from_slice(&1u16.to_le_bytes());
        h.poke(5000, &sub);
        let slept = h.det().slept_ns();
        assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(1), i(904)]), 0);
        assert_eq!(h.u32(904), 1);
        assert_eq!(h.det().slept_ns(), slept);
        // A descriptor subscription is ready at once, and then clocks do not fire.
        let mut fd_sub = [0u8; 48];
        fd_sub[0..8].copy_from_slice(&7u64.to_le_bytes());
        fd_sub[8] = abi::EVENTTYPE_FD_READ;
        fd_sub[16..20].copy_from_slice(&0u32.to_le_bytes());
        let mut bad_sub = fd_sub;
        bad_sub[0..8].copy_from_slice(&8u64.to_le_bytes());
        bad_sub[16..20].copy_from_slice(&99u32.to_le_bytes());
        let mut long_sleep = [0u8; 48];
        long_sleep[16..20].copy_from_slice(&1u32.to_le_bytes());
        long_sleep[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        h.poke(5000, &long_sleep);
        h.poke(5048, &fd_sub);
        h.poke(5096, &bad_sub);
        assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(3), i(904)]), 0);
        assert_eq!(h.u32(904), 2);
        assert_eq!((h.u64(6000), h.peek(6008, 2), h.u64(6016)), (7, vec![0, 0], 11), "stdin has 11 bytes");
        assert_eq!((h.u64(6032), h.peek(6040, 2)), (8, vec![EBADF as u8, 0]));
        assert_eq!(h.det().slept_ns(), slept);
        // Nothing to wait for, bad subscriptions, events past memory.
        assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(0), i(904)]), EINVAL);
        h.poke(5008, &[9]);
        assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(1), i(904)]), EINVAL);
        assert_eq!(h.errno("poll_oneoff", &[i(5000), i(10 * 65536 - 31), i(1), i(904)]), EFAULT);
        assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(-1), i(904)]), EFAULT);
        // Time never goes back.
        let mut last = 0;
        for _ in 0..10 {
            let now = h.now(1);
            assert!(now >= last);
            last = now;
        }
    }

    #[test]
    fn the_same_calls_give_the_same_bytes() {
        let run = || {
            let mut h = Harness::new();
            h.call("burn", &[i(1000)]).unwrap();
            let now = h.now(0);
            let fd = h.open(4, "t", CREAT, WRITE, 0).unwrap();
            assert_eq!(h.write(fd, format!("{now}").as_bytes()), 0);
            assert_eq!(h.errno("fd_filestat_get", &[i(fd), i(800)]), 0);
            (now, h.peek(800, 64), h.det().collect_outputs())
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn random_arguments_never_panic_the_host() {
        // A fixed xorshift stream of arguments biased towards edge values; the host may return
        // any errno or trap with a limit, but must never panic.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let end = 10 * 65536i64;
        let mut h = Harness::with(WasiConfig { output_bytes: 1 << 16, output_files: 1 << 20, ..config() });
        // Plausible memory contents: small pointers and lengths, text, directory names.
        for at in (0..65536).step_by(8) {
            let word = next();
            let (ptr, len) = ((word % 4096) as u32, ((word >> 32) % 64) as u32);
            h.poke(at, &ptr.to_le_bytes());
            h.poke(at + 4, &len.to_le_bytes());
        }
        h.poke(1000, b"a.txt\0sub/b.txt\0../x\0.\0..\0zeta.txt\0sub/deeper//c.bin");
        let mut calls = 0;
        for round in 0..400 {
            for (name, params) in SIGNATURES {
                let args: Vec<Val> = params
                    .split(' ')
                    .map(|ty| {
                        let word = next();
                        let value: i64 = match word % 8 {
                            0 => 0,
                            1 => -1,
                            2 => (word >> 8) as i64 % 8,
                            3 => (word >> 8) as i64 % end,
                            4 => end - ((word >> 8) as i64 % 64),
                            5 => i64::MAX - ((word >> 8) as i64 % 4),
                            6 => 1000 + (word >> 8) as i64 % 60,
                            _ => (word >> 8) as i64 % 4096,
                        };
                        if ty == "i64" { l(value) } else { i(value as i32) }
                    })
                    .collect();
                if let Err(error) = h.call(name, &args) {
                    let limit = error.downcast_ref::<LimitExceeded>();
                    assert!(limit.is_some(), "round {round}: {name}({args:?}) trapped: {error:?}");
                    // A store that trapped on a limit is done; start a fresh one.
                    h = Harness::with(WasiConfig { output_bytes: 1 << 16, output_files: 1 << 20, ..config() });
                }
                calls += 1;
            }
        }
        assert_eq!(calls, 400 * SIGNATURES.len());
    }

    #[test]
    fn a_module_without_memory_traps_clearly() {
        let engine = engine();
        let wat = r#"(module
            (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
            (func (export "run") (result i32) i32.const 3 call $close))"#;
        let module = Module::new(&engine, wat::parse_str(wat).unwrap()).unwrap();
        let mut store = store(&engine, config());
        let instance = linker(&engine).instantiate(&mut store, &module).unwrap();
        let run = instance.get_typed_func::<(), i32>(&mut store, "run").unwrap();
        let error = run.call(&mut store, ()).unwrap_err();
        assert!(format!("{error:?}").contains("does not export a linear memory named \"memory\""), "{error:?}");
    }
}
