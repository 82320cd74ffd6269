//! The `path_*` functions: opening, creating, renaming and removing by path.

use super::abi::{self, decode_times, encode_filestat};
use super::state::MAX_OPEN_FDS;
use super::state::{Descriptor, DeterministicWasi, HostResult};
use super::vfs::{Errno, FileKind, FsError, OpenOptions};
use crate::guest_memory::GuestMemory;

impl DeterministicWasi {
    pub(super) fn path_create_directory(&mut self, mem: &mut GuestMemory<'_>, fd: u32, path: u32, path_len: u32) -> HostResult {
        let dir = self.dir(fd)?;
        let path = self.guest_path(mem, path, path_len)?;
        let now = self.clock.realtime();
        self.vfs.create_dir(dir, path, now)?;
        Ok(())
    }

    pub(super) fn path_filestat_get(&mut self, mem: &mut GuestMemory<'_>, fd: u32, _flags: u32, path: u32, path_len: u32, result: u32) -> HostResult {
        mem.check(result, abi::FILESTAT_SIZE as u64)?;
        let dir = self.dir(fd)?;
        let path = self.guest_path(mem, path, path_len)?;
        let node = self.vfs.lookup(dir, path)?;
        let out = encode_filestat(&self.vfs.stat(node)?);
        mem.write(result, &out)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn path_filestat_set_times(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        _flags: u32,
        path: u32,
        path_len: u32,
        atim: u64,
        mtim: u64,
        fst_flags: u32,
    ) -> HostResult {
        let dir = self.dir(fd)?;
        let path = self.guest_path(mem, path, path_len)?;
        let node = self.vfs.lookup(dir, path)?;
        let now = self.clock.realtime();
        let (atim, mtim) = decode_times(atim, mtim, fst_flags, now)?;
        self.vfs.set_times(node, atim, mtim, now)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn path_link(
        &mut self,
        mem: &mut GuestMemory<'_>,
        old_fd: u32,
        _old_flags: u32,
        old_path: u32,
        old_path_len: u32,
        new_fd: u32,
        new_path: u32,
        new_path_len: u32,
    ) -> HostResult {
        // Every node has exactly one name: no hard links.
        self.dir(old_fd)?;
        self.dir(new_fd)?;
        self.guest_path(mem, old_path, old_path_len)?;
        self.guest_path(mem, new_path, new_path_len)?;
        Err(Errno::Notsup.into())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn path_open(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        _dirflags: u32,
        path: u32,
        path_len: u32,
        oflags: u32,
        rights_base: u64,
        _rights_inheriting: u64,
        fdflags: u32,
        result: u32,
    ) -> HostResult {
        mem.check(result, 4)?;
        let dir = self.dir(fd)?;
        if oflags & !abi::OFLAGS_ALL != 0 || fdflags & !abi::FDFLAGS_ALL != 0 {
            return Err(Errno::Inval.into());
        }
        // As in wasmtime-wasi (and Linux for `O_CREAT`): `O_DIRECTORY` opens an existing
        // directory only, so it cannot be combined with creating, `O_EXCL` or truncating,
        // whether or not the path exists.
        if oflags & abi::OFLAGS_DIRECTORY != 0 && oflags & (abi::OFLAGS_CREAT | abi::OFLAGS_EXCL | abi::OFLAGS_TRUNC) != 0 {
            return Err(Errno::Inval.into());
        }
        // Checked before opening, so that EMFILE leaves no file created behind.
        if self.fds.len() >= MAX_OPEN_FDS {
            return Err(Errno::Mfile.into());
        }
        let read = rights_base & abi::RIGHTS_FD_READ != 0;
        let write = rights_base & abi::RIGHTS_FD_WRITE != 0;
        let options = OpenOptions {
            create: oflags & abi::OFLAGS_CREAT != 0,
            exclusive: oflags & abi::OFLAGS_EXCL != 0,
            truncate: oflags & abi::OFLAGS_TRUNC != 0,
            directory: oflags & abi::OFLAGS_DIRECTORY != 0,
            write,
        };
        let now = self.clock.realtime();
        let path = self.guest_path(mem, path, path_len)?;
        let node = match self.vfs.open(dir, path, options, now) {
            Err(FsError::Errno(Errno::Noent)) => {
                let path = path.to_string();
                self.note_missing(fd, &path);
                return Err(Errno::Noent.into());
            }
            opened => opened?,
        };
        let descriptor = match self.vfs.kind(node)? {
            FileKind::Directory => Descriptor::Dir { node, preopen: None },
            FileKind::RegularFile => Descriptor::File { node, position: 0, read, write, append: fdflags & abi::FDFLAGS_APPEND != 0 },
        };
        let new_fd = match self.push_fd(descriptor) {
            Ok(new_fd) => new_fd,
            Err(errno) => {
                self.vfs.release(node);
                return Err(errno.into());
            }
        };
        mem.write_u32(result, new_fd)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn path_readlink(&mut self, mem: &mut GuestMemory<'_>, fd: u32, path: u32, path_len: u32, buf: u32, buf_len: u32, result: u32) -> HostResult {
        mem.check(buf, u64::from(buf_len))?;
        mem.check(result, 4)?;
        let dir = self.dir(fd)?;
        // There are no symbolic links: whatever exists is not one.
        let path = self.guest_path(mem, path, path_len)?;
        self.vfs.lookup(dir, path)?;
        Err(Errno::Inval.into())
    }

    pub(super) fn path_remove_directory(&mut self, mem: &mut GuestMemory<'_>, fd: u32, path: u32, path_len: u32) -> HostResult {
        let dir = self.dir(fd)?;
        let now = self.clock.realtime();
        let path = self.guest_path(mem, path, path_len)?;
        self.vfs.remove_dir(dir, path, now)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn path_rename(
        &mut self,
        mem: &mut GuestMemory<'_>,
        fd: u32,
        old_path: u32,
        old_path_len: u32,
        new_fd: u32,
        new_path: u32,
        new_path_len: u32,
    ) -> HostResult {
        let old_dir = self.dir(fd)?;
        let new_dir = self.dir(new_fd)?;
        let old_path = self.guest_path(mem, old_path, old_path_len)?;
        let new_path = self.guest_path(mem, new_path, new_path_len)?;
        let now = self.clock.realtime();
        self.vfs.rename(old_dir, old_path, new_dir, new_path, now)?;
        Ok(())
    }

    pub(super) fn path_symlink(
        &mut self,
        mem: &mut GuestMemory<'_>,
        old_path: u32,
        old_path_len: u32,
        fd: u32,
        new_path: u32,
        new_path_len: u32,
    ) -> HostResult {
        // No symbolic links: a link could only point inside the mounts, and leaving them out
        // keeps path resolution simple.
        self.dir(fd)?;
        self.guest_path(mem, old_path, old_path_len)?;
        self.guest_path(mem, new_path, new_path_len)?;
        Err(Errno::Notsup.into())
    }

    pub(super) fn path_unlink_file(&mut self, mem: &mut GuestMemory<'_>, fd: u32, path: u32, path_len: u32) -> HostResult {
        let dir = self.dir(fd)?;
        let now = self.clock.realtime();
        let path = self.guest_path(mem, path, path_len)?;
        self.vfs.unlink_file(dir, path, now)?;
        Ok(())
    }
}
