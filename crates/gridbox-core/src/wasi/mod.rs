//! WASI preview1 for jobs, made deterministic.
//!
//! gridbox implements every preview1 function a job may import ([`FUNCTIONS`]) itself, over an
//! in-memory filesystem with fixed metadata, a virtual clock, the manifest's arguments and
//! environment and a seeded random stream: wasmtime-wasi's preview1 reads the host (a cap-std
//! preopen leaks host timestamps, inode numbers and directory order) and brings an async
//! runtime a verifier does not need.
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
//! The pieces: the witx's constants and encodings (`abi`), the descriptor table and stdio
//! (`state`), the clock (`clock`), the `fd_*` functions (`fd`), the `path_*` functions
//! (`path`), `poll_oneoff` (`poll`), arguments, environment, exit and random bytes
//! (`process`), iovecs and path strings (`guest`), the one list of functions and their
//! registration (`linker`), the filesystem ([`vfs`]) and the random stream ([`random`]).

mod abi;
mod clock;
mod fd;
pub mod fuel;
mod guest;
mod linker;
mod path;
mod poll;
mod process;
pub mod random;
mod state;
#[cfg(test)]
mod tests;
pub mod vfs;

pub use linker::{FUNCTIONS, PARAMETER_NAMES, SIGNATURES, add_to_linker};
pub use process::JobExit;
pub use state::{DeterministicWasi, EchoFn, MAX_OPEN_FDS, StdStream, StdioEcho, WasiConfig};

/// The preview1 module name.
pub const PREVIEW1_MODULE: &str = "wasi_snapshot_preview1";

/// Whether a job may import `name` from [`PREVIEW1_MODULE`] with the `wasi` capability.
pub fn is_preview1_function(name: &str) -> bool {
    FUNCTIONS.contains(&name)
}
