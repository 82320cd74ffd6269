//! The job's process: its arguments and environment (from the manifest), its exit, and its
//! random bytes (a stream keyed by the manifest, see [`super::random`]).

use super::fuel::RANDOM_FUEL_PER_BYTE;
use super::random::JobRandom;
use super::state::{DeterministicWasi, HostError, HostResult};
use super::vfs::Errno;
use crate::guest_memory::GuestMemory;

/// A job ended itself with `proc_exit(code)`, `code` below 126. It is not a trap: the run's
/// outcome is `exited` with this code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the job exited with code {0}")]
pub struct JobExit(pub u32);

/// What `proc_exit` says to a code of 126 or more, which WASI does not allow (wasmtime's text).
const INVALID_EXIT: &str = "exit with invalid exit status outside of [0..126)";

/// The job's argv and environment, and its random stream.
#[derive(Debug, Clone)]
pub(super) struct Process {
    /// `argv[0]` first.
    pub(super) args: Vec<String>,
    /// `KEY=VALUE` strings, in the manifest's (sorted) order.
    pub(super) env: Vec<String>,
    /// [`layout_bytes`] of `args`, computed once.
    pub(super) args_bytes: u64,
    /// [`layout_bytes`] of `env`, computed once.
    pub(super) env_bytes: u64,
    pub(super) random: JobRandom,
}

/// The bytes `strings` take as preview1 lays them out: each NUL-terminated, and a 4-byte
/// pointer to each.
pub(super) fn layout_bytes(strings: &[String]) -> u64 {
    strings.iter().map(|s| s.len() as u64 + 1 + 4).sum()
}

/// Writes NUL-terminated `strings` to `buf` and a pointer to each to `pointers`, after checking
/// that both arrays fit, so that a bad pointer changes nothing.
fn write_strings(mem: &mut GuestMemory<'_>, strings: &[String], pointers: u32, buf: u32) -> Result<(), Errno> {
    let total: u64 = strings.iter().map(|s| s.len() as u64 + 1).sum();
    let pointer_slots = mem.range(pointers, strings.len() as u64 * 4)?;
    let text = mem.range(buf, total)?;
    // Both ranges are inside memory, so every offset below is too; they are kept as `usize`
    // (a string may end exactly at the top of a 4 GiB memory).
    let mut at = text.start;
    for (string, slot) in strings.iter().zip(pointer_slots.step_by(4)) {
        // `at` < 2^32: it is inside a memory of at most 4 GiB, before the string's NUL.
        mem.at_mut(slot..slot + 4).copy_from_slice(&(at as u32).to_le_bytes());
        mem.at_mut(at..at + string.len()).copy_from_slice(string.as_bytes());
        at += string.len();
        mem.at_mut(at..at + 1)[0] = 0;
        at += 1;
    }
    Ok(())
}

/// The count of `strings` and the bytes they take with their NULs, as preview1's `*_sizes_get`.
fn sizes(mem: &mut GuestMemory<'_>, strings: &[String], layout: u64, count_ptr: u32, size_ptr: u32) -> Result<(), Errno> {
    let count = u32::try_from(strings.len()).map_err(|_| Errno::Overflow)?;
    // The strings' bytes with their NULs: the layout less the pointers.
    let size = u32::try_from(layout - 4 * strings.len() as u64).map_err(|_| Errno::Overflow)?;
    mem.check(count_ptr, 4)?;
    mem.check(size_ptr, 4)?;
    mem.write_u32(count_ptr, count)?;
    mem.write_u32(size_ptr, size)?;
    Ok(())
}

impl DeterministicWasi {
    pub(super) fn args_get(&mut self, mem: &mut GuestMemory<'_>, argv: u32, argv_buf: u32) -> HostResult {
        self.charge_bytes(self.process.args_bytes)?;
        Ok(write_strings(mem, &self.process.args, argv, argv_buf)?)
    }

    pub(super) fn args_sizes_get(&mut self, mem: &mut GuestMemory<'_>, argc: u32, argv_buf_size: u32) -> HostResult {
        Ok(sizes(mem, &self.process.args, self.process.args_bytes, argc, argv_buf_size)?)
    }

    pub(super) fn environ_get(&mut self, mem: &mut GuestMemory<'_>, environ: u32, environ_buf: u32) -> HostResult {
        self.charge_bytes(self.process.env_bytes)?;
        Ok(write_strings(mem, &self.process.env, environ, environ_buf)?)
    }

    pub(super) fn environ_sizes_get(&mut self, mem: &mut GuestMemory<'_>, count: u32, buf_size: u32) -> HostResult {
        Ok(sizes(mem, &self.process.env, self.process.env_bytes, count, buf_size)?)
    }

    /// Ends the job: exit codes 0-125 are its outcome; larger ones trap, as in wasmtime.
    pub(super) fn proc_exit(&mut self, _mem: &mut GuestMemory<'_>, code: u32) -> HostResult {
        if code >= 126 {
            return Err(HostError::Trap(wasmtime::Error::msg(INVALID_EXIT)));
        }
        Err(HostError::Trap(wasmtime::Error::new(JobExit(code))))
    }

    /// Signals are not supported (as in wasmtime).
    pub(super) fn proc_raise(&mut self, _mem: &mut GuestMemory<'_>, _signal: u32) -> HostResult {
        Err(Errno::Notsup.into())
    }

    /// There is nothing to yield to: jobs are single-threaded.
    pub(super) fn sched_yield(&mut self, _mem: &mut GuestMemory<'_>) -> HostResult {
        Ok(())
    }

    /// The next `len` bytes of the job's random stream; an out-of-bounds buffer is `EFAULT`
    /// and takes nothing from the stream.
    pub(super) fn random_get(&mut self, mem: &mut GuestMemory<'_>, buf: u32, len: u32) -> HostResult {
        self.charge(u64::from(len).saturating_mul(RANDOM_FUEL_PER_BYTE))?;
        let out = mem.bytes_mut(buf, u64::from(len))?;
        self.process.random.fill(out);
        Ok(())
    }
}
