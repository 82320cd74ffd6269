//! What WASI calls cost in fuel (spec/determinism.md, "Fuel"): every call pays before it works,
//! in proportion to the work the guest can make it do, so no call is free however it is used.
//!
//! A call costs [`CALL_FUEL`], plus one unit per 4 bytes it reads or writes in the job's memory
//! (iovec arrays and buffers at their requested lengths, paths, dirents, subscriptions,
//! arguments and environment) or by which it grows a file, plus one unit per random byte
//! ([`RANDOM_FUEL_PER_BYTE`]: BLAKE3's output costs more than a copy) and one per directory entry
//! `fd_readdir` skips to reach its cookie. The price depends only on the arguments and the
//! job's own state, so it is the same on every host.

use wasmtime::Trap;

use super::state::{DeterministicWasi, HostError, HostResult};

/// What every WASI call costs before anything else (as every tensor bridge call does).
pub const CALL_FUEL: u64 = 100;

/// Fuel per random byte.
pub const RANDOM_FUEL_PER_BYTE: u64 = 1;

/// Fuel for moving `bytes` bytes: one unit per 4.
pub fn byte_fuel(bytes: u64) -> u64 {
    bytes / 4
}

impl DeterministicWasi {
    /// Takes `fuel` from what the job has left for this call, or stops it with the fuel trap.
    pub(super) fn charge(&mut self, fuel: u64) -> HostResult {
        match self.fuel_left.checked_sub(fuel) {
            Some(left) => {
                self.fuel_left = left;
                Ok(())
            }
            None => {
                self.fuel_left = 0;
                Err(HostError::Trap(Trap::OutOfFuel.into()))
            }
        }
    }

    /// [`DeterministicWasi::charge`] for moving `bytes` bytes.
    pub(super) fn charge_bytes(&mut self, bytes: u64) -> HostResult {
        self.charge(byte_fuel(bytes))
    }
}
