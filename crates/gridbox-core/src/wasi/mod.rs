//! WASI preview1 for jobs, made deterministic.
//!
//! wasmtime-wasi's own preview1 stays in the linker for what is already deterministic there
//! (args, environment, seeded random bytes, `proc_exit`, `proc_raise`, `sched_yield`); every
//! function in [`SHADOWED_FUNCTIONS`] (files, stdio, clocks, polling) is redefined by
//! [`add_to_linker`] on top of it and served from an in-memory filesystem with fixed metadata
//! and a virtual clock, because a cap-std preopen leaks host timestamps, inode numbers and
//! directory order.
//!
//! Rules every function here follows:
//!
//! - Nothing is read from the host: no host files, no host clock, no host randomness.
//! - Every pointer and length from the guest is bounds-checked with overflow-checked arithmetic
//!   ([`crate::guest_memory`]); anything out of bounds is `EFAULT`. Nothing the guest passes can
//!   make the host panic, and the host never allocates according to a guest-chosen length:
//!   iovec arrays are read in place, and only bytes actually copied are allocated.
//! - Errors the guest can handle are errnos. Going past a limit (stdio bytes, output bytes,
//!   output files) is a trap carrying a [`LimitExceeded`](crate::LimitExceeded), which stops
//!   the job.
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
//!
//! The pieces: [`abi`](self) constants and encodings of the witx, the descriptor table and
//! stdio (`state`), the clock (`clock`), the `fd_*` functions (`fd`), the `path_*` functions
//! (`path`), `poll_oneoff` (`poll`), iovecs and path strings (`guest`), the one list of
//! functions and their registration (`linker`), the filesystem ([`vfs`]) and the random
//! stream ([`random`]).

mod abi;
mod clock;
mod fd;
mod guest;
mod linker;
mod path;
mod poll;
pub mod random;
mod state;
#[cfg(test)]
mod tests;
pub mod vfs;

pub use linker::{SHADOWED_FUNCTIONS, add_to_linker};
pub use state::{DeterministicWasi, MAX_OPEN_FDS, WasiConfig};

/// The preview1 module name.
pub const PREVIEW1_MODULE: &str = "wasi_snapshot_preview1";

/// The preview1 functions wasmtime-wasi serves for gridbox, unshadowed: each is deterministic
/// there (arguments and environment from the manifest, random bytes from [`random`]).
pub const WASMTIME_WASI_FUNCTIONS: &[&str] =
    &["args_get", "args_sizes_get", "environ_get", "environ_sizes_get", "proc_exit", "proc_raise", "sched_yield", "random_get"];

/// Whether a job may import `name` from [`PREVIEW1_MODULE`] with the `wasi` capability. Socket
/// functions are not among them: gridbox jobs have no network, and a module importing one is
/// refused at load.
pub fn is_preview1_function(name: &str) -> bool {
    SHADOWED_FUNCTIONS.contains(&name) || WASMTIME_WASI_FUNCTIONS.contains(&name)
}
