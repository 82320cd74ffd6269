//! `poll_oneoff`, which never waits: everything is in memory and the clock is virtual.

use super::abi;
use super::clock::check_clock;
use super::state::{Descriptor, DeterministicWasi, HostResult};
use super::vfs::Errno;
use crate::guest_memory::GuestMemory;

impl DeterministicWasi {
    /// Never waits. Descriptors are always ready (everything is in memory): if any descriptor
    /// subscription is there, those events are returned (a bad descriptor's with `EBADF`) and
    /// no clock fires. Otherwise the virtual clock jumps to the earliest clock deadline and every
    /// clock subscription due by then fires.
    pub(super) fn poll_oneoff(&mut self, mem: &mut GuestMemory<'_>, subs: u32, events: u32, nsubscriptions: u32, result: u32) -> HostResult {
        if nsubscriptions == 0 {
            // As in wasmtime-wasi: waiting for nothing would be waiting forever.
            return Err(Errno::Inval.into());
        }
        mem.check(subs, u64::from(nsubscriptions) * abi::SUBSCRIPTION_SIZE)?;
        mem.check(events, u64::from(nsubscriptions) * abi::EVENT_SIZE as u64)?;
        mem.check(result, 4)?;
        // Each subscription is read twice and may give an event.
        self.charge_bytes(u64::from(nsubscriptions) * (2 * abi::SUBSCRIPTION_SIZE + abi::EVENT_SIZE as u64))?;
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
    pub(super) fn subscription(&self, mem: &GuestMemory<'_>, subs: u32, index: u32, now: u64) -> Result<Subscription, Errno> {
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
    pub(super) fn fd_readiness(&self, fd: u32, write: bool) -> (Errno, u64, bool) {
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
pub(super) enum Subscription {
    Clock { userdata: u64, deadline: u64 },
    Fd { userdata: u64, fd: u32, write: bool },
}
