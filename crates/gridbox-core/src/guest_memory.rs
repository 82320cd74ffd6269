//! The job's linear memory as host functions see it: every access bounds-checked with
//! overflow-checked arithmetic. WASI turns an out-of-bounds access into `EFAULT`; the tensor
//! bridge into a trap naming the argument.

use std::ops::Range;

use wasmtime::{Caller, Extern, Memory};

/// A guest pointer and length that do not lie inside the job's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OutOfBounds {
    /// Where the access starts.
    pub(crate) ptr: u32,
    /// How many bytes it covers.
    pub(crate) len: u64,
    /// The memory's size in bytes.
    pub(crate) memory_len: usize,
}

#[cold]
#[inline(never)]
fn out_of_bounds(ptr: u32, len: u64, memory_len: usize) -> OutOfBounds {
    OutOfBounds { ptr, len, memory_len }
}

/// The memory a module exports as `memory`, which host functions read and write.
pub(crate) fn exported_memory<T>(caller: &mut Caller<'_, T>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Some(memory),
        _ => None,
    }
}

/// The guest's linear memory, borrowed for one host call.
pub(crate) struct GuestMemory<'a> {
    bytes: &'a mut [u8],
}

impl<'a> GuestMemory<'a> {
    /// Wraps the memory's bytes.
    pub(crate) fn new(bytes: &'a mut [u8]) -> Self {
        GuestMemory { bytes }
    }

    /// The byte range `ptr .. ptr + len`, if it lies inside memory.
    #[inline(always)]
    pub(crate) fn range(&self, ptr: u32, len: u64) -> Result<Range<usize>, OutOfBounds> {
        let start = ptr as usize;
        let end = usize::try_from(len).ok().and_then(|len| start.checked_add(len));
        match end {
            Some(end) if end <= self.bytes.len() => Ok(start..end),
            _ => Err(out_of_bounds(ptr, len, self.bytes.len())),
        }
    }

    /// The bytes of a range [`GuestMemory::range`] gave.
    #[inline]
    pub(crate) fn at_mut(&mut self, range: Range<usize>) -> &mut [u8] {
        &mut self.bytes[range]
    }

    /// Checks that `ptr .. ptr + len` lies inside memory.
    pub(crate) fn check(&self, ptr: u32, len: u64) -> Result<(), OutOfBounds> {
        self.range(ptr, len).map(|_| ())
    }

    /// The bytes at `ptr .. ptr + len`.
    pub(crate) fn bytes(&self, ptr: u32, len: u64) -> Result<&[u8], OutOfBounds> {
        let range = self.range(ptr, len)?;
        Ok(&self.bytes[range])
    }

    /// The bytes at `ptr .. ptr + len`, writable.
    pub(crate) fn bytes_mut(&mut self, ptr: u32, len: u64) -> Result<&mut [u8], OutOfBounds> {
        let range = self.range(ptr, len)?;
        Ok(&mut self.bytes[range])
    }

    fn array<const N: usize>(&self, ptr: u32) -> Result<[u8; N], OutOfBounds> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(ptr, N as u64)?);
        Ok(out)
    }

    /// The byte at `ptr`.
    pub(crate) fn read_u8(&self, ptr: u32) -> Result<u8, OutOfBounds> {
        Ok(self.array::<1>(ptr)?[0])
    }

    /// The little-endian u16 at `ptr`.
    pub(crate) fn read_u16(&self, ptr: u32) -> Result<u16, OutOfBounds> {
        Ok(u16::from_le_bytes(self.array(ptr)?))
    }

    /// The little-endian u32 at `ptr`.
    pub(crate) fn read_u32(&self, ptr: u32) -> Result<u32, OutOfBounds> {
        Ok(u32::from_le_bytes(self.array(ptr)?))
    }

    /// The little-endian u64 at `ptr`.
    pub(crate) fn read_u64(&self, ptr: u32) -> Result<u64, OutOfBounds> {
        Ok(u64::from_le_bytes(self.array(ptr)?))
    }

    /// `count` little-endian u32s starting at `ptr`.
    pub(crate) fn read_u32s(&self, ptr: u32, count: u32) -> Result<Vec<u32>, OutOfBounds> {
        let bytes = self.bytes(ptr, u64::from(count) * 4)?;
        Ok(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
    }

    /// `count` little-endian i64s starting at `ptr`.
    pub(crate) fn read_i64s(&self, ptr: u32, count: u32) -> Result<Vec<i64>, OutOfBounds> {
        let bytes = self.bytes(ptr, u64::from(count) * 8)?;
        Ok(bytes.chunks_exact(8).map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])).collect())
    }

    /// Writes `bytes` at `ptr`.
    pub(crate) fn write(&mut self, ptr: u32, bytes: &[u8]) -> Result<(), OutOfBounds> {
        self.bytes_mut(ptr, bytes.len() as u64)?.copy_from_slice(bytes);
        Ok(())
    }

    /// Writes a little-endian u32 at `ptr`.
    pub(crate) fn write_u32(&mut self, ptr: u32, value: u32) -> Result<(), OutOfBounds> {
        self.write(ptr, &value.to_le_bytes())
    }

    /// Writes a little-endian u64 at `ptr`.
    pub(crate) fn write_u64(&mut self, ptr: u32, value: u64) -> Result<(), OutOfBounds> {
        self.write(ptr, &value.to_le_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_at_the_edges_and_past_them() {
        let mut bytes = vec![0u8; 16];
        let mut memory = GuestMemory::new(&mut bytes);
        assert_eq!(memory.range(0, 16), Ok(0..16));
        assert_eq!(memory.range(16, 0), Ok(16..16));
        assert!(memory.range(16, 1).is_err());
        assert!(memory.range(u32::MAX, u64::MAX).is_err());
        assert!(memory.range(1, u64::MAX).is_err());
        memory.write_u32(12, 0xdead_beef).unwrap();
        assert_eq!(memory.read_u32(12), Ok(0xdead_beef));
        assert_eq!(memory.read_u32(13), Err(OutOfBounds { ptr: 13, len: 4, memory_len: 16 }));
        assert_eq!(memory.read_u32s(8, 2).unwrap(), vec![0, 0xdead_beef]);
        assert!(memory.read_i64s(0, 3).is_err());
    }
}
