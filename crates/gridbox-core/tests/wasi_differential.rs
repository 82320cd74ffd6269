//! Differential test of gridbox's WASI preview1 filesystem against wasmtime-wasi's.
//!
//! Seeded random sequences of filesystem calls run through the same wasm module twice: over
//! gridbox's in-memory filesystem (`/output`, fd 4) and over wasmtime-wasi 48 with a fresh host
//! temporary folder preopened at the same fd. Every call must give the same errno and the same
//! results where both define them (bytes read and written, positions, file types and sizes,
//! listings as sets of names), and after each sequence both trees must hold the same names,
//! kinds and bytes. Timestamps, inode and device numbers, link counts, readdir cookies and fd
//! numbers are not compared (spec/determinism.md, "Files", says why they differ).
//!
//! The few places where gridbox differs on purpose are tolerated below, each for exactly its
//! case, and listed in spec/determinism.md.
//!
//! A failure prints the seed; `GRIDBOX_DIFF_SEED=<seed>` runs that sequence alone, and
//! `GRIDBOX_DIFF_SEQUENCES=<n>` runs more sequences than the default.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::panic)]

#[path = "wasi_differential/calls.rs"]
mod calls;
#[path = "shared/rng.rs"]
mod rng;
#[path = "wasi_differential/sides.rs"]
mod sides;

use calls::{Call, Fd, Handle, OFLAGS_CREAT, OFLAGS_TRUNC, RIGHTS_FD_READ, RIGHTS_FD_WRITE, Rng, SYNC_FDFLAGS};
use gridbox_core::wasi::DeterministicWasi;
use sides::{FILETYPE_DIRECTORY, OUTPUT_BYTES, Outcome, Shared, Side, Value};
use wasmtime_wasi::p1::WasiP1Ctx;

/// Sequences run by default, and the range of their lengths.
const SEQUENCES: u64 = 600;
const MIN_CALLS: u64 = 30;
const MAX_CALLS: u64 = 60;

const EBADF: i32 = 8;
const EBUSY: i32 = 10;
const EINVAL: i32 = 28;
const EISDIR: i32 = 31;
const ENOTDIR: i32 = 54;
const ENOTEMPTY: i32 = 55;
const ENOTSUP: i32 = 58;
const EPERM: i32 = 63;

#[test]
fn gridbox_wasi_matches_wasmtime_wasi_call_by_call() {
    let shared = Shared::new();
    let seeds: Vec<u64> = match std::env::var("GRIDBOX_DIFF_SEED") {
        Ok(seed) => vec![seed.parse().expect("GRIDBOX_DIFF_SEED is a number")],
        Err(_) => {
            let count = std::env::var("GRIDBOX_DIFF_SEQUENCES").map_or(SEQUENCES, |n| n.parse().expect("GRIDBOX_DIFF_SEQUENCES is a number"));
            (0..count).collect()
        }
    };
    let mut calls = 0;
    for &seed in &seeds {
        calls += run_sequence(&shared, seed);
    }
    println!("{} sequences, {calls} calls, no difference", seeds.len());
}

/// One sequence on fresh sides; returns how many calls it made.
fn run_sequence(shared: &Shared, seed: u64) -> usize {
    let root = tempfile::tempdir().expect("temporary folder");
    let mut run = Run { seed, gridbox: shared.gridbox(), host: shared.host(root.path()), handles: Vec::new(), log: Vec::new() };
    let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x0067_7269_6462_6f78);
    let length = MIN_CALLS + rng.below(MAX_CALLS - MIN_CALLS + 1);
    for _ in 0..length {
        let call = calls::call(&mut rng, &run.handles);
        run.step(call);
    }
    let (gridbox, host) = (sides::gridbox_tree(run.gridbox.data()), sides::host_tree(&root.path().join("output")));
    if gridbox != host {
        run.fail(&format!("the trees differ after the sequence\n  gridbox:        {gridbox:?}\n  wasmtime-wasi:  {host:?}"));
    }
    run.log.len()
}

/// A sequence in progress.
struct Run {
    seed: u64,
    gridbox: Side<DeterministicWasi>,
    host: Side<WasiP1Ctx>,
    /// The descriptors both sides have open.
    handles: Vec<Handle>,
    /// The calls made so far, for the failure message.
    log: Vec<String>,
}

impl Run {
    fn step(&mut self, call: Call) {
        self.log.push(call.to_string());
        let handle = call.fd().and_then(|fd| self.handle(fd)).cloned();
        let offset = handle.as_ref().and_then(|handle| self.offset_of(&call, handle));
        if let Some(errno) = handle.as_ref().and_then(|handle| gridbox_only(&call, handle, offset)) {
            // See `gridbox_only`: the host would do what gridbox refuses, so only gridbox runs
            // the call, and it must refuse it without changing anything.
            let gridbox = self.gridbox.run(&call, true);
            if gridbox.errno() != Some(errno) {
                self.fail(&format!(
                    "gridbox should refuse this call with errno {errno}: the descriptor lacks the access wasmtime-wasi would grant\n  gridbox: {gridbox:?}"
                ));
            }
            return;
        }
        if call.dir_paths().into_iter().any(|(fd, path)| self.handle(fd).is_some_and(|h| h.directory) && calls::climbs_above_start(path)) {
            // `..` above a directory descriptor that is not a preopen: wasmtime-wasi confines
            // each directory descriptor to its own tree (EPERM), gridbox only to the mount, as
            // POSIX's openat does (spec/determinism.md). The host alone runs the call, which it
            // must refuse; gridbox's `..` is tested by its own unit tests.
            let host = self.host.run(&call, false);
            if host.errno().is_none_or(|errno| errno == 0) {
                self.fail(&format!("wasmtime-wasi should refuse a path above a directory descriptor\n  wasmtime-wasi: {host:?}"));
            }
            return;
        }
        if let (Call::Write { data, .. } | Call::Pwrite { data, .. }, Some(offset)) = (&call, offset)
            && !data.is_empty()
            && offset.checked_add(data.len() as u64).is_some_and(|end| end > OUTPUT_BYTES && end <= i64::MAX as u64)
        {
            // A write ending past the output quota (but within off_t): gridbox stops the job
            // (LimitExceeded, before allocating anything); what the host says depends on its
            // filesystem's largest file (EFBIG on ext4, a sparse file on tmpfs). So gridbox alone
            // runs it, and must stop it or refuse it for the descriptor's access.
            let gridbox = self.gridbox.run(&call, true);
            let refused = match &gridbox {
                Outcome::Trap(trap) => trap.contains("output_bytes"),
                Outcome::Done { errno, .. } => *errno == EBADF,
            };
            if !refused {
                self.fail(&format!("gridbox should stop a write past its output quota\n  gridbox: {gridbox:?}"));
            }
            return;
        }
        let gridbox = self.gridbox.run(&call, true);
        let host = match &call {
            Call::Open { dir, path, oflags, rights, fdflags } if fdflags & SYNC_FDFLAGS != 0 => {
                // wasmtime-wasi refuses the sync flags (ENOTSUP: cap-std does not support them),
                // before it looks at the path; gridbox accepts them, as POSIX does (its files
                // are memory: nothing to sync). So the host's answer to compare with is that of
                // the same open without them.
                let refused = self.host.run(&call, false);
                if refused.errno() == Some(ENOTSUP) {
                    let fdflags = fdflags & !SYNC_FDFLAGS;
                    self.host.run(&Call::Open { dir: *dir, path: path.clone(), oflags: *oflags, rights: *rights, fdflags }, false)
                } else {
                    refused
                }
            }
            _ => self.host.run(&call, false),
        };
        // What a descriptor only gridbox opened is (some tolerated differences depend on it).
        let gridbox_only_fd = match (&gridbox, &host) {
            (Outcome::Done { errno: 0, value: Value::Fd(g) }, Outcome::Done { errno, .. }) if *errno != 0 => Some(*g),
            _ => None,
        };
        let gridbox_opened_dir = gridbox_only_fd.map(|g| self.gridbox_is_dir(Fd::same(g)));
        if let Err(why) = agree(&call, &gridbox, &host, &Context { handles: &self.handles, gridbox_opened_dir }) {
            self.fail(&format!("{why}\n  gridbox:        {gridbox:?}\n  wasmtime-wasi:  {host:?}"));
        }
        if let Call::Rmdir { dir, path } = &call
            && path.ends_with('/')
            && (gridbox.errno(), host.errno()) == (Some(0), Some(EINVAL))
        {
            // The tolerated rmdir of `name/` (see `deliberate`): gridbox removed the directory,
            // so the host removes it too, by the name without the slash.
            let again = self.host.run(&Call::Rmdir { dir: *dir, path: path.trim_end_matches('/').to_string() }, false);
            if again.errno() != Some(0) {
                self.fail(&format!("wasmtime-wasi could not remove the directory without the trailing slash either: {again:?}"));
            }
        }
        if let Some(g) = gridbox_only_fd {
            // A tolerated open that only gridbox made: close it again so that both sides keep
            // the same descriptors.
            let closed = self.gridbox.run(&Call::Close { fd: Fd::same(g) }, true);
            assert_eq!(closed.errno(), Some(0), "seed {}: closing gridbox's extra descriptor", self.seed);
        }
        match (&call, &gridbox, &host) {
            (
                Call::Open { dir, rights, oflags, fdflags, .. },
                Outcome::Done { errno: 0, value: Value::Fd(g) },
                Outcome::Done { errno: 0, value: Value::Fd(h) },
            ) => {
                let fd = Fd { gridbox: *g, host: *h };
                let read_only = *dir == calls::INPUT || self.handle(*dir).is_some_and(|handle| handle.read_only);
                let directory = self.gridbox_is_dir(fd);
                self.handles.push(Handle { fd, directory, read_only, rights: *rights, oflags: *oflags, fdflags: *fdflags });
            }
            (Call::Close { fd }, Outcome::Done { errno: 0, .. }, _) => self.handles.retain(|h| h.fd != *fd),
            _ => {}
        }
    }

    fn handle(&self, fd: Fd) -> Option<&Handle> {
        self.handles.iter().find(|h| h.fd == fd)
    }

    /// The file offset a read or write through `handle` starts at: its own for `fd_pread` and
    /// `fd_pwrite`, the descriptor's position (asked of gridbox) for `fd_read` and a
    /// non-appending `fd_write`.
    fn offset_of(&mut self, call: &Call, handle: &Handle) -> Option<u64> {
        match call {
            Call::Pread { offset, .. } | Call::Pwrite { offset, .. } => Some(*offset),
            Call::Write { .. } if handle.fdflags & calls::FDFLAGS_APPEND != 0 => None,
            Call::Read { .. } | Call::Write { .. } => match self.gridbox.run(&Call::Tell { fd: handle.fd }, true) {
                Outcome::Done { errno: 0, value: Value::Position(position) } => Some(position),
                _ => None,
            },
            _ => None,
        }
    }

    /// Whether gridbox's descriptor `fd` is a directory.
    fn gridbox_is_dir(&mut self, fd: Fd) -> bool {
        let stat = self.gridbox.run(&Call::FdStat { fd }, true);
        matches!(stat, Outcome::Done { errno: 0, value: Value::Stat { filetype: FILETYPE_DIRECTORY, .. } })
    }

    fn fail(&self, what: &str) -> ! {
        let index = self.log.len().saturating_sub(1);
        let recent: String = self.log.iter().enumerate().skip(index.saturating_sub(15)).map(|(i, call)| format!("\n  #{i}: {call}")).collect();
        let open: Vec<String> = self
            .handles
            .iter()
            .map(|h| {
                format!(
                    "{} (directory: {}, read-only: {}, rights {:#x}, oflags {:#x}, fdflags {:#x})",
                    h.fd, h.directory, h.read_only, h.rights, h.oflags, h.fdflags
                )
            })
            .collect();
        panic!(
            "gridbox and wasmtime-wasi differ: seed {seed}, call #{index}: {call}\n{what}\nthe last calls:{recent}\nopen descriptors: {open:?}\nreproduce: GRIDBOX_DIFF_SEED={seed} cargo test -p gridbox-core --test wasi_differential",
            seed = self.seed,
            call = self.log.last().map_or("(none)", String::as_str),
        );
    }
}

/// The errno gridbox must give, alone, for a call through a descriptor that wasmtime-wasi would
/// let through and gridbox does not.
///
/// gridbox grants a descriptor the access its rights ask for (`fd_read` needs `FD_READ`,
/// writes and truncation `FD_WRITE`), as POSIX does for `O_RDONLY`/`O_WRONLY`. wasmtime-wasi
/// opens the host file with more than that: for reading whenever no write right is asked for,
/// and for writing whenever `O_CREAT` or `O_TRUNC` is given; the host then lets such calls
/// through. Running them on both sides would make the trees differ, so gridbox alone runs them.
/// An `offset` past `i64::MAX` is EINVAL before the access is looked at (as in Linux).
fn gridbox_only(call: &Call, handle: &Handle, offset: Option<u64>) -> Option<i32> {
    if handle.directory {
        return None;
    }
    let refusal = |errno| if offset.is_some_and(|offset| offset > i64::MAX as u64) { EINVAL } else { errno };
    let (gridbox_read, gridbox_write) = (handle.rights & RIGHTS_FD_READ != 0, handle.rights & RIGHTS_FD_WRITE != 0);
    let host_read = gridbox_read || !gridbox_write;
    let host_write = gridbox_write || handle.oflags & (OFLAGS_CREAT | OFLAGS_TRUNC) != 0;
    match call {
        Call::Read { .. } | Call::Pread { .. } if host_read && !gridbox_read => Some(refusal(EBADF)),
        Call::Write { .. } | Call::Pwrite { .. } if host_write && !gridbox_write => Some(refusal(EBADF)),
        // ftruncate of a file not open for writing is EINVAL in Linux, and so in gridbox.
        Call::SetSize { .. } if host_write && !gridbox_write => Some(EINVAL),
        _ => None,
    }
}

/// What the tolerated differences depend on besides the call.
struct Context<'a> {
    handles: &'a [Handle],
    /// When gridbox alone opened a descriptor: whether it is a directory.
    gridbox_opened_dir: Option<bool>,
}

impl Context<'_> {
    fn handle(&self, fd: Fd) -> Option<&Handle> {
        self.handles.iter().find(|h| h.fd == fd)
    }

    fn is_file(&self, fd: Fd) -> bool {
        self.handle(fd).is_some_and(|h| !h.directory)
    }

    fn is_dir(&self, fd: Fd) -> bool {
        fd == calls::INPUT || fd == calls::OUTPUT || self.handle(fd).is_some_and(|h| h.directory)
    }

    fn is_read_only(&self, fd: Fd) -> bool {
        fd == calls::INPUT || self.handle(fd).is_some_and(|h| h.read_only)
    }
}

/// Whether the two outcomes of `call` agree: the same, or one of the deliberate differences
/// (spec/determinism.md, "Files").
fn agree(call: &Call, gridbox: &Outcome, host: &Outcome, cx: &Context<'_>) -> Result<(), String> {
    let same = match (gridbox, host) {
        // Descriptor numbers are each side's own.
        (Outcome::Done { errno: 0, value: Value::Fd(_) }, Outcome::Done { errno: 0, value: Value::Fd(_) }) => true,
        _ => gridbox == host,
    };
    if same || deliberate(call, gridbox, host, cx) { Ok(()) } else { Err(format!("different results for {call}")) }
}

/// The deliberate differences, each for exactly its case.
fn deliberate(call: &Call, gridbox: &Outcome, host: &Outcome, cx: &Context<'_>) -> bool {
    let (g, h) = (gridbox.errno(), host.errno());
    let fd = call.fd();
    // A descriptor of the wrong kind: wasmtime-wasi's legacy answer is EBADF where POSIX, and
    // gridbox, say ENOTDIR for a path call from a file (path_open agrees on ENOTDIR), EISDIR
    // for reading a directory and ENOTDIR for listing a file.
    if !matches!(call, Call::Open { .. }) && call.dir_fds().into_iter().any(|fd| cx.is_file(fd)) && g == Some(ENOTDIR) && h == Some(EBADF) {
        return true;
    }
    if matches!(call, Call::Read { .. } | Call::Pread { .. }) && fd.is_some_and(|fd| cx.is_dir(fd)) && g == Some(EISDIR) && h == Some(EBADF) {
        return true;
    }
    if matches!(call, Call::Readdir { .. }) && fd.is_some_and(|fd| cx.is_file(fd)) && g == Some(ENOTDIR) && h == Some(EBADF) {
        return true;
    }
    // An invalid `whence` makes wasmtime-wasi trap (its ABI layer refuses the enum value);
    // gridbox returns an errno, as lseek does (EINVAL, or EBADF/ESPIPE for the descriptor).
    if let Call::Seek { whence, .. } = call
        && *whence > 2
        && matches!(host, Outcome::Trap(_))
        && g.is_some_and(|errno| errno != 0)
    {
        return true;
    }
    // wasmtime-wasi refuses any change under a read-only preopen with EPERM before it looks at
    // the path; gridbox resolves the path and says why it fails as a read-only filesystem
    // would (EROFS, or ENOENT, EEXIST, ...). `O_CREAT` on a file that exists creates nothing,
    // and write rights on a directory are ignored (below), so such opens succeed in gridbox.
    if h == Some(EPERM) && call.changes_the_tree() && call.dir_fds().into_iter().chain(fd).any(|fd| cx.is_read_only(fd)) {
        let opened = g == Some(0) && cx.gridbox_opened_dir.is_some();
        let allowed_open = matches!(call, Call::Open { oflags, rights, .. } if oflags & OFLAGS_TRUNC == 0 && (rights & RIGHTS_FD_WRITE == 0 || cx.gridbox_opened_dir == Some(true)));
        if g.is_some_and(|errno| errno != 0) || (opened && allowed_open) {
            return true;
        }
    }
    // A last component `.` or `..` in a rename: POSIX says EINVAL (gridbox), Linux EBUSY.
    if let Call::Rename { old, new, .. } = call
        && [old, new].into_iter().any(|path| matches!(path.trim_end_matches('/').rsplit('/').next(), Some("." | "..")))
        && g == Some(EINVAL)
        && h == Some(EBUSY)
    {
        return true;
    }
    // rmdir of `name/`: Linux removes the directory (or says ENOTEMPTY), as gridbox does;
    // wasmtime-wasi's cap-std resolves it as `name/.` and says EINVAL. (When gridbox removed
    // it, the runner removes it on the host too.)
    if let Call::Rmdir { path, .. } = call
        && path.ends_with('/')
        && (g == Some(0) || g == Some(ENOTEMPTY))
        && h == Some(EINVAL)
    {
        return true;
    }
    // Write rights on a directory: Linux refuses the open (EISDIR), gridbox ignores them, as
    // some guests ask for every right whatever they open.
    if let Call::Open { rights, oflags, .. } = call
        && rights & RIGHTS_FD_WRITE != 0
        && oflags & (OFLAGS_CREAT | OFLAGS_TRUNC) == 0
        && h == Some(EISDIR)
        && g == Some(0)
        && cx.gridbox_opened_dir == Some(true)
    {
        return true;
    }
    false
}
