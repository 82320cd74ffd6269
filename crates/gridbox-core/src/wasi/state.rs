//! A job's WASI state: the descriptor table, stdio buffers and the errors host functions return.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::abi;
use super::clock::VirtualClock;
use super::guest::{WasiMemory, iovecs_total};
use super::process::{Process, layout_bytes};
use super::random::JobRandom;
use super::vfs::{Errno, FsError, MountError, NodeId, Vfs};
use crate::guest_memory::{GuestMemory, OutOfBounds};
use crate::limits::{LimitExceeded, LimitKind};

/// Most descriptors a job may have open at once (stdio and preopens included); one more open
/// is `EMFILE`.
pub const MAX_OPEN_FDS: usize = 1024;

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
    /// The job's arguments, `argv[0]` first.
    pub args: Vec<String>,
    /// The job's environment, in the order `environ_get` lists it.
    pub env: Vec<(String, String)>,
    /// The stream `random_get` reads.
    pub random: JobRandom,
}

/// An open descriptor.
#[derive(Debug, Clone)]
pub(super) enum Descriptor {
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
    pub(super) fn node(&self) -> Option<NodeId> {
        match self {
            Descriptor::Dir { node, .. } | Descriptor::File { node, .. } => Some(*node),
            Descriptor::Stdin | Descriptor::Stdout | Descriptor::Stderr => None,
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
    pub(super) vfs: Vfs,
    pub(super) fds: BTreeMap<u32, Descriptor>,
    pub(super) stdin: Arc<[u8]>,
    pub(super) stdin_position: usize,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
    pub(super) stdio_limit: u64,
    pub(super) clock: VirtualClock,
    pub(super) process: Process,
    /// Fuel the job has left during the current call (see [`super::fuel`]).
    pub(super) fuel_left: u64,
    /// The first few paths the job tried to open and did not exist, for the person running it
    /// (never part of a result).
    pub(super) missing: Vec<String>,
    /// Shown what the job writes to stdout and stderr as it writes it.
    pub(super) echo: Option<StdioEcho>,
}

/// Which of the job's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StdStream {
    /// fd 1.
    Stdout,
    /// fd 2.
    Stderr,
}

/// Where a job's stdout and stderr are shown as they are written (a terminal, a log), besides
/// being kept for the receipt. It only watches: what it does never changes the job.
#[derive(Clone)]
pub struct StdioEcho(pub Arc<EchoFn>);

/// What a [`StdioEcho`] calls with each write: the stream and the bytes written.
pub type EchoFn = dyn Fn(StdStream, &[u8]) + Send + Sync;

impl std::fmt::Debug for StdioEcho {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StdioEcho")
    }
}

/// How many missing paths [`DeterministicWasi::missing_paths`] remembers.
const MISSING_PATHS_KEPT: usize = 8;

/// Why a host function stops: an errno for the guest, or a trap that ends the job.
pub(super) enum HostError {
    Errno(Errno),
    Trap(wasmtime::Error),
}

impl From<Errno> for HostError {
    fn from(errno: Errno) -> Self {
        HostError::Errno(errno)
    }
}

impl From<OutOfBounds> for HostError {
    fn from(error: OutOfBounds) -> Self {
        HostError::Errno(error.into())
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

pub(super) type HostResult<T = ()> = Result<T, HostError>;

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
            clock: VirtualClock { start_unix_ns: config.start_unix_ns, fuel_budget: config.fuel_budget, fuel_consumed: 0, slept_ns: 0, last_elapsed: 0 },
            process: {
                let env: Vec<String> = config.env.into_iter().map(|(key, value)| format!("{key}={value}")).collect();
                Process { args_bytes: layout_bytes(&config.args), env_bytes: layout_bytes(&env), args: config.args, env, random: config.random }
            },
            fuel_left: 0,
            missing: Vec::new(),
            echo: None,
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

    /// Mounts `files` at `guest_path`, writable or not, and preopens it; returns its descriptor.
    /// A writable mount's files count against `output_bytes`; see [`Vfs::add_mount`].
    pub fn mount<I>(&mut self, guest_path: &str, files: I, writable: bool) -> Result<u32, MountError>
    where
        I: IntoIterator<Item = (String, Arc<[u8]>)>,
    {
        self.check_preopen_slot(guest_path)?;
        let mount = self.vfs.add_mount(guest_path, files, writable)?;
        self.preopen(mount, guest_path)
    }

    /// Every writable mount, in the order they were added: its guest path and every regular file
    /// the job left in it, by path relative to the mount (see [`Vfs::collect_mount`]).
    pub fn writable_mounts(&self) -> impl Iterator<Item = (&str, BTreeMap<String, Vec<u8>>)> + '_ {
        (0..self.vfs.mount_count()).filter(|&index| self.vfs.mount_is_writable(index) == Some(true)).filter_map(|index| {
            let path = self.vfs.mount_path(index)?;
            Some((path, self.vfs.collect_mount(index)?))
        })
    }

    /// The first paths (up to 8) the job tried to open that did not exist, as guest paths when
    /// they were opened from a preopened folder: for telling a person which file a job missed.
    pub fn missing_paths(&self) -> &[String] {
        &self.missing
    }

    /// Shows what the job writes to stdout and stderr to `echo` as it writes it.
    pub fn set_echo(&mut self, echo: StdioEcho) {
        self.echo = Some(echo);
    }

    /// Remembers that opening `path` from descriptor `fd` found nothing.
    pub(super) fn note_missing(&mut self, fd: u32, path: &str) {
        if self.missing.len() >= MISSING_PATHS_KEPT {
            return;
        }
        let full = match self.fds.get(&fd) {
            Some(Descriptor::Dir { preopen: Some(root), .. }) => format!("{}/{path}", root.trim_end_matches('/')),
            _ => path.to_string(),
        };
        if !self.missing.contains(&full) {
            self.missing.push(full);
        }
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
    pub(super) fn push_fd(&mut self, descriptor: Descriptor) -> Result<u32, Errno> {
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

    pub(super) fn fd(&self, fd: u32) -> Result<&Descriptor, Errno> {
        self.fds.get(&fd).ok_or(Errno::Badf)
    }

    /// The directory node of `fd`: `ENOTDIR` for a file, `EBADF` for stdio or a closed fd.
    pub(super) fn dir(&self, fd: u32) -> Result<NodeId, Errno> {
        match self.fd(fd)? {
            Descriptor::Dir { node, .. } => Ok(*node),
            Descriptor::File { .. } => Err(Errno::Notdir),
            _ => Err(Errno::Badf),
        }
    }

    pub(super) fn release(&mut self, descriptor: Descriptor) {
        if let Some(node) = descriptor.node() {
            self.vfs.release(node);
        }
    }

    // ----- stdio -----

    /// The total length of an iovec array, paid for (the array and the bytes) before anything
    /// is copied.
    pub(super) fn charged_iovecs(&mut self, mem: &GuestMemory<'_>, iovs: u32, iovs_len: u32) -> HostResult<u64> {
        // The array's bounds first (free), then its walk, then the bytes it names.
        mem.check(iovs, u64::from(iovs_len) * abi::IOVEC_SIZE)?;
        self.charge_bytes(u64::from(iovs_len) * abi::IOVEC_SIZE)?;
        let total = iovecs_total(mem, iovs, iovs_len)?;
        self.charge_bytes(total)?;
        Ok(total)
    }

    /// A path from the guest, paid for by its length before it is read.
    pub(super) fn guest_path<'m>(&mut self, mem: &'m GuestMemory<'_>, ptr: u32, len: u32) -> HostResult<&'m str> {
        self.charge_bytes(u64::from(len))?;
        Ok(mem.string(ptr, len)?)
    }

    /// Appends to stdout or stderr, refusing (and trapping on) a write that would take them past
    /// the stdio limit.
    pub(super) fn write_stdio(&mut self, mem: &GuestMemory<'_>, iovs: u32, iovs_len: u32, to_stderr: bool) -> HostResult<u32> {
        let total = self.charged_iovecs(mem, iovs, iovs_len)?;
        let used = (self.stdout.len() as u64).saturating_add(self.stderr.len() as u64);
        if used.saturating_add(total) > self.stdio_limit {
            return Err(HostError::Trap(wasmtime::Error::new(LimitExceeded { limit: LimitKind::StdioBytes, value: self.stdio_limit })));
        }
        let buffer = if to_stderr { &mut self.stderr } else { &mut self.stdout };
        // `total` is within the limit, so reserving it is bounded by the job's own limit.
        buffer.try_reserve(usize::try_from(total).map_err(|_| Errno::Nomem)?).map_err(|_| Errno::Nomem)?;
        let start = buffer.len();
        for index in 0..iovs_len {
            let (buf, len) = mem.iovec(iovs, index)?;
            buffer.extend_from_slice(mem.bytes(buf, u64::from(len))?);
        }
        if let Some(echo) = &self.echo {
            (echo.0)(if to_stderr { StdStream::Stderr } else { StdStream::Stdout }, &buffer[start..]);
        }
        Ok(total as u32)
    }
}
