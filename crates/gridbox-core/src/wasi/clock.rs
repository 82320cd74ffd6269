//! The job's virtual clock (see the module documentation of [`super`]) and the clock functions.

use super::abi;
use super::state::{DeterministicWasi, HostResult};
use super::vfs::Errno;
use crate::guest_memory::GuestMemory;

/// The job's virtual clock (see the module documentation).
#[derive(Debug, Clone)]
pub(super) struct VirtualClock {
    pub(super) start_unix_ns: u64,
    pub(super) fuel_budget: u64,
    /// Fuel consumed as of the current host call.
    pub(super) fuel_consumed: u64,
    /// Total virtual sleep.
    pub(super) slept_ns: u64,
    /// The last elapsed time handed out: the clock never goes back, even if fuel were added.
    pub(super) last_elapsed: u64,
}

impl VirtualClock {
    /// Takes note of the fuel left at the start of a host call (`None` if fuel is off).
    pub(super) fn observe(&mut self, fuel_left: Option<u64>) {
        self.fuel_consumed = fuel_left.map_or(0, |left| self.fuel_budget.saturating_sub(left));
    }

    fn raw_elapsed(&self) -> u64 {
        self.fuel_consumed.saturating_add(self.slept_ns)
    }

    /// Elapsed virtual ns since the start, non-decreasing.
    pub(super) fn elapsed(&mut self) -> u64 {
        self.last_elapsed = self.last_elapsed.max(self.raw_elapsed());
        self.last_elapsed
    }

    /// Realtime now, ns since the Unix epoch.
    pub(super) fn realtime(&mut self) -> u64 {
        self.start_unix_ns.saturating_add(self.elapsed())
    }

    /// Sleeps virtually until the elapsed time is at least `deadline`.
    pub(super) fn sleep_until(&mut self, deadline: u64) {
        let raw = self.raw_elapsed();
        if deadline > raw {
            self.slept_ns = self.slept_ns.saturating_add(deadline - raw);
        }
    }
}

impl DeterministicWasi {
    pub(super) fn clock_res_get(&mut self, mem: &mut GuestMemory<'_>, id: u32, result: u32) -> HostResult {
        check_clock(id)?;
        mem.write_u64(result, 1)?;
        Ok(())
    }

    pub(super) fn clock_time_get(&mut self, mem: &mut GuestMemory<'_>, id: u32, _precision: u64, result: u32) -> HostResult {
        check_clock(id)?;
        let now = if id == abi::CLOCK_REALTIME { self.clock.realtime() } else { self.clock.elapsed() };
        mem.write_u64(result, now)?;
        Ok(())
    }
}

pub(super) fn check_clock(id: u32) -> Result<(), Errno> {
    if id > abi::CLOCK_THREAD_CPUTIME {
        return Err(Errno::Inval);
    }
    Ok(())
}
