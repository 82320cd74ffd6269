//! WASI's view of the job's memory: iovec arrays and path strings, on top of the shared
//! bounds-checked [`GuestMemory`].

use super::abi;
use super::vfs::Errno;
use crate::guest_memory::{GuestMemory, OutOfBounds};

impl From<OutOfBounds> for Errno {
    fn from(_: OutOfBounds) -> Self {
        Errno::Fault
    }
}

/// What preview1 functions read from memory beyond plain integers.
pub(super) trait WasiMemory {
    /// Iovec `index` of the array at `iovs`: (buffer pointer, length).
    fn iovec(&self, iovs: u32, index: u32) -> Result<(u32, u32), Errno>;
    /// A path from the guest: in bounds (`EFAULT`) and UTF-8 (`EILSEQ`).
    fn string(&self, ptr: u32, len: u32) -> Result<&str, Errno>;
}

impl WasiMemory for GuestMemory<'_> {
    fn iovec(&self, iovs: u32, index: u32) -> Result<(u32, u32), Errno> {
        let at = u64::from(iovs) + u64::from(index) * abi::IOVEC_SIZE;
        let at = u32::try_from(at).map_err(|_| Errno::Fault)?;
        let buf = self.read_u32(at)?;
        let len = self.read_u32(at.checked_add(4).ok_or(Errno::Fault)?)?;
        Ok((buf, len))
    }

    fn string(&self, ptr: u32, len: u32) -> Result<&str, Errno> {
        std::str::from_utf8(self.bytes(ptr, u64::from(len))?).map_err(|_| Errno::Ilseq)
    }
}

/// Checks every iovec of an array and returns their total length. Refuses totals that do not
/// fit the `size` result (`EINVAL`, like `writev` past `SSIZE_MAX`).
pub(super) fn iovecs_total(mem: &GuestMemory<'_>, iovs: u32, iovs_len: u32) -> Result<u64, Errno> {
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
pub(super) fn read_into(mem: &mut GuestMemory<'_>, iovs: u32, iovs_len: u32, mut source: impl FnMut(&mut [u8]) -> usize) -> Result<u32, Errno> {
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
