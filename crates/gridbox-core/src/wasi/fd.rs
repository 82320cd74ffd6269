//! The `fd_*` functions: reading, writing, seeking and describing open descriptors.

use super::abi::{self, decode_times, encode_filestat, filetype};
use super::guest::{WasiMemory, read_into};
use super::state::{Descriptor, DeterministicWasi, HostResult};
use super::vfs::{Errno, NodeId};
use crate::guest_memory::GuestMemory;

impl DeterministicWasi {
    pub(super) fn fd_advise(&mut self, _mem: &mut GuestMemory<'_>, fd: u32, _offset: u64, _len: u64, advice: u32) -> HostResult {
        match self.fd(fd)? {
            Descriptor::File { .. } if advice <= abi::ADVICE_MAX => Ok(()),
            Descriptor::File { .. } => Err(Errno::Inval.into()),
            _ => Err(Errno::Badf.into()),
        }
    }

    pub(super) fn fd_allocate(&mut self, _mem: &mut GuestMemory<'_>, fd: u32, _offset: u64, _len: u64) -> HostResult {
        // As in wasmtime-wasi: preview1's fd_allocate is not supported.
        match self.fd(fd)? {
            Descriptor::File { .. } => Err(Errno::Notsup.into()),
            _ => Err(Errno::Badf.into()),
        }
    }

    pub(super) fn fd_close(&mut self, _mem: &mut GuestMemory<'_>, fd: u32) -> HostResult {
        let descriptor = self.fds.remove(&fd).ok_or(Errno::Badf)?;
        self.release(descriptor);
        Ok(())
    }

    pub(super) fn fd_sync(&mut self, _mem: &mut GuestMemory<'_>, fd: u32) -> HostResult {
        // Nothing to flush: the filesystem is memory.
        self.fd(fd)?;
        Ok(())
    }

    /// Like `fd_sync`: the data is memory, so there is nothing to flush.
    pub(super) fn fd_datasync(&mut self, mem: &mut GuestMemory<'_>, fd: u32) -> HostResult {
        self.fd_sync(mem, fd)
    }

    pub(super) fn fd_fdstat_get(&mut self, mem: &mut GuestMemory<'_>, fd: u32, result: u32) -> HostResult {
        let (filetype, flags, base, inheriting) = match self.fd(fd)? {
            // Not character devices: stdio is a buffer, not a terminal, and a libc that saw a
            // character device without seek rights would take it for a tty (`isatty`), which
            // changes what programs print. wasmtime-wasi reports a non-tty stdio the same way.
            Descriptor::Stdin => (abi::FILETYPE_UNKNOWN, 0, abi::RIGHTS_FD_READ, abi::RIGHTS_FD_READ),
            Descriptor::Stdout | Descriptor::Stderr => (abi::FILETYPE_UNKNOWN, 0, abi::RIGHTS_FD_WRITE, abi::RIGHTS_FD_WRITE),
            Descriptor::Dir { preopen: Some(_), .. } => (abi::FILETYPE_DIRECTORY, 0, abi::PREOPEN_RIGHTS_BASE, abi::PREOPEN_RIGHTS_INHERITING),
            Descriptor::Dir { preopen: None, .. } => {
                let rights =
                    abi::RIGHTS_ALL & !(abi::RIGHTS_FD_SEEK | abi::RIGHTS_FD_FILESTAT_SET_SIZE | abi::RIGHTS_PATH_FILESTAT_SET_SIZE | abi::RIGHTS_FD_WRITE);
                (abi::FILETYPE_DIRECTORY, 0, rights, rights)
            }
            Descriptor::File { read, write, append, .. } => {
                let mut rights = abi::RIGHTS_ALL;
                if !read {
                    rights &= !(abi::RIGHTS_FD_READ | abi::RIGHTS_FD_READDIR);
                }
                if !write {
                    rights &= !abi::RIGHTS_FD_WRITE;
                }
                let flags = if *append { abi::FDFLAGS_APPEND as u16 } else { 0 };
                (abi::FILETYPE_REGULAR_FILE, flags, rights, rights)
            }
        };
        let mut out = [0u8; abi::FDSTAT_SIZE];
        out[0] = filetype;
        out[2..4].copy_from_slice(&flags.to_le_bytes());
        out[8..16].copy_from_slice(&base.to_le_bytes());
        out[16..24].copy_from_slice(&inheriting.to_le_bytes());
        mem.write(result, &out)?;
        Ok(())
    }

    pub(super) fn fd_fdstat_set_flags(&mut self, _mem: &mut GuestMemory<'_>, fd: u32, flags: u32) -> HostResult {
        let Some(Descriptor::File { append, .. }) = self.fds.get_mut(&fd) else {
            return Err(Errno::Badf.into());
        };
        // Like wasmtime-wasi: APPEND and NONBLOCK may change (NONBLOCK means nothing here, as
        // nothing ever blocks); the sync flags may not.
        if flags & !abi::FDFLAGS_ALL != 0 || flags & (abi::FDFLAGS_DSYNC | abi::FDFLAGS_RSYNC | abi::FDFLAGS_SYNC) != 0 {
            return Err(Errno::Inval.into());
        }
        *append = flags & abi::FDFLAGS_APPEND != 0;
        Ok(())
    }

    pub(super) fn fd_fdstat_set_rights(&mut self, _mem: &mut GuestMemory<'_>, fd: u32, _base: u64, _inheriting: u64) -> HostResult {
        // Rights are not enforced beyond read/write, so dropping some changes nothing.
        self.fd(fd)?;
        Ok(())
    }

    pub(super) fn fd_filestat_get(&mut self, mem: &mut GuestMemory<'_>, fd: u32, result: u32) -> HostResult {
        let out = match self.fd(fd)?.node() {
            Some(node) => encode_filestat(&self.vfs.stat(node)?),
            None => {
                let mut out = [0u8; abi::FILESTAT_SIZE];
                out[16] = abi::FILETYPE_UNKNOWN;
                out
            }
        };
        mem.write(result, &out)?;
        Ok(())
    }

    pub(super) fn fd_filestat_set_size(&mut self, _mem: &mut GuestMemory<'_>, fd: u32, size: u64) -> HostResult {
        let node = match self.fd(fd)? {
            // A size that is negative as an off_t is EINVAL, and so is a file not open for
            // writing (as Linux's ftruncate says; POSIX allows EBADF or EINVAL).
            &Descriptor::File { node, write, .. } => {
                check_offset(size)?;
                if !write {
                    return Err(Errno::Inval.into());
                }
                node
            }
            _ => return Err(Errno::Badf.into()),
        };
        self.vfs.check_set_size(node, size)?;
        self.charge_bytes(size.saturating_sub(self.vfs.size(node).unwrap_or(0)))?;
        let now = self.clock.realtime();
        self.vfs.set_size(node, size, now)?;
        Ok(())
    }

    pub(super) fn fd_filestat_set_times(&mut self, _mem: &mut GuestMemory<'_>, fd: u32, atim: u64, mtim: u64, flags: u32) -> HostResult {
        let node = self.fd(fd)?.node().ok_or(Errno::Badf)?;
        let now = self.clock.realtime();
        let (atim, mtim) = decode_times(atim, mtim, flags, now)?;
        self.vfs.set_times(node, atim, mtim, now)?;
        Ok(())
    }

    pub(super) fn fd_pread(&mut self, mem: &mut GuestMemory<'_>, fd: u32, iovs: u32, iovs_len: u32, offset: u64, result: u32) -> HostResult {
        mem.check(result, 4)?;
        let node = match self.fd(fd)? {
            &Descriptor::File { node, read, .. } => {
                check_offset(offset)?;
                if !read {
                    return Err(Errno::Badf.into());
                }
                node
            }
            Descriptor::Stdout | Descriptor::Stderr => return Err(Errno::Badf.into()),
            Descriptor::Dir { .. } => return Err(Errno::Isdir.into()),
            Descriptor::Stdin => return Err(Errno::Spipe.into()),
        };
        let total = self.charged_iovecs(mem, iovs, iovs_len)?;
        check_range(offset, total)?;
        let vfs = &self.vfs;
        let mut position = offset;
        let n = read_into(mem, iovs, iovs_len, |buf| {
            let n = vfs.read_at(node, position, buf).unwrap_or(0);
            position = position.saturating_add(n as u64);
            n
        })?;
        mem.write_u32(result, n)?;
        Ok(())
    }

    pub(super) fn fd_prestat_get(&mut self, mem: &mut GuestMemory<'_>, fd: u32, result: u32) -> HostResult {
        // EBADF for anything but a preopen: wasi-libc scans descriptors from 3 until EBADF.
        let Descriptor::Dir { preopen: Some(path), .. } = self.fd(fd)? else {
            return Err(Errno::Badf.into());
        };
        let len = u32::try_from(path.len()).map_err(|_| Errno::Overflow)?;
        let mut out = [0u8; 8];
        out[0] = 0; // preopentype `dir`
        out[4..8].copy_from_slice(&len.to_le_bytes());
        mem.write(result, &out)?;
        Ok(())
    }

    pub(super) fn fd_prestat_dir_name(&mut self, mem: &mut GuestMemory<'_>, fd: u32, path: u32, path_len: u32) -> HostResult {
        let Descriptor::Dir { preopen: Some(name), .. } = self.fd(fd)? else {
            return Err(Errno::Badf.into());
        };
        if name.len() > path_len as usize {
            return Err(Errno::Nametoolong.into());
        }
        let name = name.clone();
        self.charge_bytes(name.len() as u64)?;
        mem.write(path, name.as_bytes())?;
        Ok(())
    }

    pub(super) fn fd_pwrite(&mut self, mem: &mut GuestMemory<'_>, fd: u32, iovs: u32, iovs_len: u32, offset: u64, result: u32) -> HostResult {
        mem.check(result, 4)?;
        let node = match self.fd(fd)? {
            &Descriptor::File { node, write, .. } => {
                check_offset(offset)?;
                if !write {
                    return Err(Errno::Badf.into());
                }
                node
            }
            Descriptor::Stdin | Descriptor::Stdout | Descriptor::Stderr => return Err(Errno::Spipe.into()),
            _ => return Err(Errno::Badf.into()),
        };
        let n = self.write_file(mem, node, iovs, iovs_len, offset)?;
        mem.write_u32(result, n)?;
        Ok(())
    }

    pub(super) fn fd_read(&mut self, mem: &mut GuestMemory<'_>, fd: u32, iovs: u32, iovs_len: u32, result: u32) -> HostResult {
        mem.check(result, 4)?;
        if let Some(Descriptor::File { position, .. }) = self.fds.get(&fd) {
            check_offset(*position)?;
        }
        if matches!(self.fds.get(&fd), Some(Descriptor::Stdin | Descriptor::File { read: true, .. })) {
            let total = self.charged_iovecs(mem, iovs, iovs_len)?;
            if let Some(Descriptor::File { position, .. }) = self.fds.get(&fd) {
                check_range(*position, total)?;
            }
        }
        let n = match self.fds.get_mut(&fd).ok_or(Errno::Badf)? {
            Descriptor::Stdin => {
                let stdin = &self.stdin;
                let position = &mut self.stdin_position;
                read_into(mem, iovs, iovs_len, |buf| {
                    let available = stdin.get(*position..).unwrap_or_default();
                    let n = available.len().min(buf.len());
                    if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
                        dst.copy_from_slice(src);
                    }
                    *position = position.saturating_add(n);
                    n
                })?
            }
            Descriptor::File { node, position, read: true, .. } => {
                let node = *node;
                let vfs = &self.vfs;
                read_into(mem, iovs, iovs_len, |buf| {
                    let n = vfs.read_at(node, *position, buf).unwrap_or(0);
                    *position = position.saturating_add(n as u64);
                    n
                })?
            }
            Descriptor::Dir { .. } => return Err(Errno::Isdir.into()),
            _ => return Err(Errno::Badf.into()),
        };
        mem.write_u32(result, n)?;
        Ok(())
    }

    pub(super) fn fd_readdir(&mut self, mem: &mut GuestMemory<'_>, fd: u32, buf: u32, buf_len: u32, cookie: u64, result: u32) -> HostResult {
        mem.check(result, 4)?;
        let node = self.dir(fd)?;
        // The listing skips `cookie` entries (at most all of them) and fills at most the buffer.
        self.charge(self.vfs.dir_len(node).saturating_add(2).min(cookie))?;
        self.charge_bytes(u64::from(buf_len))?;
        let out = mem.bytes_mut(buf, u64::from(buf_len))?;
        // The exact fill rule of wasmtime-wasi (and of the preview1 spec): entries one after the
        // other, each a 24-byte dirent and the name without NUL; the last one is cut short if it
        // does not fit, and then the whole buffer counts as used, which tells the guest to call
        // again from the cookie of the last entry it read whole.
        let mut used = 0usize;
        let mut full = false;
        'entries: for entry in self.vfs.read_dir(node, cookie)? {
            let mut dirent = [0u8; abi::DIRENT_SIZE];
            dirent[0..8].copy_from_slice(&entry.next.to_le_bytes());
            dirent[8..16].copy_from_slice(&entry.ino.to_le_bytes());
            let name_len = u32::try_from(entry.name.len()).map_err(|_| Errno::Overflow)?;
            dirent[16..20].copy_from_slice(&name_len.to_le_bytes());
            dirent[20] = filetype(entry.kind);
            for part in [&dirent[..], entry.name.as_bytes()] {
                let room = out.len().saturating_sub(used);
                let n = part.len().min(room);
                if let (Some(dst), Some(src)) = (out.get_mut(used..used + n), part.get(..n)) {
                    dst.copy_from_slice(src);
                }
                used += n;
                if used == out.len() {
                    full = true;
                    break 'entries;
                }
            }
        }
        let used = if full { buf_len } else { used as u32 };
        mem.write_u32(result, used)?;
        Ok(())
    }

    pub(super) fn fd_renumber(&mut self, _mem: &mut GuestMemory<'_>, from: u32, to: u32) -> HostResult {
        // As in wasmtime-wasi, both must be open.
        if !self.fds.contains_key(&from) || !self.fds.contains_key(&to) {
            return Err(Errno::Badf.into());
        }
        if from == to {
            return Ok(());
        }
        let descriptor = self.fds.remove(&from).ok_or(Errno::Badf)?;
        if let Some(replaced) = self.fds.insert(to, descriptor) {
            self.release(replaced);
        }
        Ok(())
    }

    pub(super) fn fd_seek(&mut self, mem: &mut GuestMemory<'_>, fd: u32, offset: i64, whence: u32, result: u32) -> HostResult {
        mem.check(result, 8)?;
        let (node, position) = match self.fds.get_mut(&fd).ok_or(Errno::Badf)? {
            Descriptor::File { node, position, .. } => (*node, position),
            Descriptor::Stdin | Descriptor::Stdout | Descriptor::Stderr => return Err(Errno::Spipe.into()),
            Descriptor::Dir { .. } => return Err(Errno::Badf.into()),
        };
        let new = match whence {
            abi::WHENCE_SET => u64::try_from(offset).ok(),
            abi::WHENCE_CUR => position.checked_add_signed(offset),
            abi::WHENCE_END => self.vfs.size(node)?.checked_add_signed(offset),
            _ => None,
        };
        // A negative or overflowing result is EINVAL, and the position stays.
        let new = new.ok_or(Errno::Inval)?;
        *position = new;
        mem.write_u64(result, new)?;
        Ok(())
    }

    pub(super) fn fd_tell(&mut self, mem: &mut GuestMemory<'_>, fd: u32, result: u32) -> HostResult {
        let position = match self.fd(fd)? {
            Descriptor::File { position, .. } => *position,
            Descriptor::Stdin | Descriptor::Stdout | Descriptor::Stderr => return Err(Errno::Spipe.into()),
            Descriptor::Dir { .. } => return Err(Errno::Badf.into()),
        };
        mem.write_u64(result, position)?;
        Ok(())
    }

    pub(super) fn fd_write(&mut self, mem: &mut GuestMemory<'_>, fd: u32, iovs: u32, iovs_len: u32, result: u32) -> HostResult {
        mem.check(result, 4)?;
        let n = match self.fd(fd)? {
            Descriptor::Stdout => self.write_stdio(mem, iovs, iovs_len, false)?,
            Descriptor::Stderr => self.write_stdio(mem, iovs, iovs_len, true)?,
            &Descriptor::File { node, position, write, append, .. } => {
                // An append goes to the end whatever the position; otherwise the position is
                // an offset like fd_pwrite's.
                if !append {
                    check_offset(position)?;
                }
                if !write {
                    return Err(Errno::Badf.into());
                }
                let at = if append { self.vfs.size(node)? } else { position };
                let n = self.write_file(mem, node, iovs, iovs_len, at)?;
                if let Some(Descriptor::File { position, .. }) = self.fds.get_mut(&fd) {
                    *position = at.saturating_add(u64::from(n));
                }
                n
            }
            _ => return Err(Errno::Badf.into()),
        };
        mem.write_u32(result, n)?;
        Ok(())
    }

    /// Writes the iovecs into file `node` at `offset`, after checking the whole write against
    /// the quota (so that a refused write changes nothing).
    pub(super) fn write_file(&mut self, mem: &GuestMemory<'_>, node: NodeId, iovs: u32, iovs_len: u32, offset: u64) -> HostResult<u32> {
        let total = self.charged_iovecs(mem, iovs, iovs_len)?;
        check_range(offset, total)?;
        self.vfs.check_write(node, offset, total)?;
        // Writing past the end fills the gap with zeros: that is work too (the quota bounds it).
        let gap = offset.saturating_sub(self.vfs.size(node).unwrap_or(0));
        self.charge_bytes(if total == 0 { 0 } else { gap })?;
        let now = self.clock.realtime();
        let mut at = offset;
        for index in 0..iovs_len {
            let (buf, len) = mem.iovec(iovs, index)?;
            self.vfs.write_at(node, at, mem.bytes(buf, u64::from(len))?, now)?;
            at = at.saturating_add(u64::from(len));
        }
        Ok(total as u32)
    }
}

/// File offsets and sizes are POSIX's `off_t`, signed 64 bits: one above `i64::MAX` is a negative
/// one, `EINVAL` for a read, write or truncation whatever the descriptor allows (Linux checks it first, and
/// wasmtime-wasi's positioned reads and writes meet that check).
fn check_offset(offset: u64) -> Result<(), Errno> {
    if offset > i64::MAX as u64 { Err(Errno::Inval) } else { Ok(()) }
}

/// A read or write of `len` bytes at `offset` whose end would pass `i64::MAX` is `EINVAL`, as in
/// Linux (checked after the descriptor's access).
fn check_range(offset: u64, len: u64) -> Result<(), Errno> {
    match offset.checked_add(len) {
        Some(end) if end <= i64::MAX as u64 => Ok(()),
        _ => Err(Errno::Inval),
    }
}
