//! The job's filesystem: an in-memory tree whose every observable property is a function of the
//! job's inputs and of what the job itself did.
//!
//! A host directory (cap-std, as wasmtime-wasi preopens it) leaks host timestamps, inode and
//! device numbers and the host's directory listing order. Here instead:
//!
//! - directories keep their entries in a `BTreeMap`, so listings are sorted by name bytes;
//! - inode numbers are handed out sequentially in creation order (mounts are added by the host
//!   in a fixed order and input files are inserted sorted by path), and `dev` is the mount index;
//! - every node starts with atim = mtim = ctim = the job's virtual start time. Operations that
//!   change a node set its mtim/ctim to the `now` the caller passes in, which the preview1 layer
//!   takes from the job's *virtual* clock, so they are deterministic too. Reads never change
//!   atim (as with `noatime`): it would make every read a mutation for no benefit.
//!
//! There are no symbolic or hard links: every node has exactly one name (nlink = 1) until it is
//! unlinked. A mount is either read-only (the job's inputs, whose bytes are shared with the host
//! through `Arc<[u8]>` and never copied) or writable (the job's outputs; it may start with
//! files, shared in the same way until the job first writes to one). Writable mounts are
//! subject to two quotas, which stop the job with a [`LimitExceeded`] rather than an errno:
//!
//! - `output_bytes`: the total size of all files in writable mounts, at any moment (files that
//!   are unlinked but still open count until their last descriptor closes). Checked *before*
//!   anything is resized, so a write far past the end of a file allocates nothing.
//! - `output_files`: the number of files and directories *created* in writable mounts. Every
//!   creation counts, and deleting does not give the count back, so it also bounds the work a
//!   job can make the host do by creating and deleting in a loop. Mount roots do not count.
//!
//! This module knows nothing about wasm: errors are the WASI preview1 errno values ([`Errno`]),
//! which are POSIX's, and it is driven by the preview1 functions in [`super`].
//!
//! The pieces: errors and the types the API hands out (`types`), path parsing (`paths`), and
//! the tree itself (here).

mod paths;
#[cfg(test)]
mod tests;
mod types;

use std::collections::BTreeMap;
use std::sync::Arc;

use paths::{Last, ParsedPath, check_relative_file_path, parse_path};
pub use paths::{MAX_NAME_LEN, MAX_OUTPUT_PATH, MAX_PATH_LEN, is_normalised_absolute};
pub use types::{DirEntry, Errno, FileKind, FsError, MountError, NodeId, OpenOptions, Stat};

use crate::limits::{LimitExceeded, LimitKind};

/// One mount: a directory tree the guest sees at `guest_path`.
#[derive(Debug, Clone)]
struct Mount {
    guest_path: String,
    root: NodeId,
    writable: bool,
}

/// A file's bytes: shared with the host (read-only inputs, never copied) or owned (written by
/// the job). Shared bytes are copied into `owned` only if a file holding them is ever written,
/// which cannot happen for inputs as their mount is read-only.
#[derive(Debug, Clone, Default)]
struct FileData {
    shared: Option<Arc<[u8]>>,
    owned: Vec<u8>,
}

impl FileData {
    fn shared(bytes: Arc<[u8]>) -> Self {
        FileData { shared: Some(bytes), owned: Vec::new() }
    }

    fn bytes(&self) -> &[u8] {
        match &self.shared {
            Some(bytes) => bytes,
            None => &self.owned,
        }
    }

    /// The bytes as a vector that can be changed, copying shared bytes on first write.
    fn owned(&mut self) -> &mut Vec<u8> {
        if let Some(bytes) = self.shared.take() {
            self.owned = bytes.to_vec();
        }
        &mut self.owned
    }
}

#[derive(Debug, Clone)]
enum NodeKind {
    Dir(BTreeMap<String, NodeId>),
    File(FileData),
}

#[derive(Debug, Clone)]
struct Node {
    ino: u64,
    mount: usize,
    /// The directory holding this node; `None` for a mount root and for an unlinked node.
    parent: Option<NodeId>,
    /// Still reachable by a name (mount roots always are).
    linked: bool,
    is_root: bool,
    /// Open descriptors on this node: an unlinked node is freed when the last one closes.
    open: u64,
    atim: u64,
    mtim: u64,
    ctim: u64,
    kind: NodeKind,
    /// The length of this node's name in its directory (0 for a mount root).
    name_len: u32,
    /// For a directory: an upper bound on the length of any path below it, relative to it
    /// (it grows as entries are made and never shrinks). 0 for a file.
    below: u32,
}

impl Node {
    fn size(&self) -> u64 {
        match &self.kind {
            NodeKind::Dir(_) => 0,
            NodeKind::File(data) => data.bytes().len() as u64,
        }
    }

    fn file_kind(&self) -> FileKind {
        match self.kind {
            NodeKind::Dir(_) => FileKind::Directory,
            NodeKind::File(_) => FileKind::RegularFile,
        }
    }
}

/// The in-memory filesystem of one job. See the module documentation.
#[derive(Debug, Clone)]
pub struct Vfs {
    /// All nodes by id; `None` once freed. Ids are never reused.
    nodes: Vec<Option<Node>>,
    mounts: Vec<Mount>,
    next_ino: u64,
    start_ns: u64,
    output_bytes_limit: u64,
    output_files_limit: u64,
    /// Bytes held by files in writable mounts now.
    output_bytes_used: u64,
    /// Files and directories created in writable mounts so far.
    output_files_created: u64,
}

impl Vfs {
    /// An empty filesystem (no mounts). Nodes created by the host get `start_ns` (ns since the
    /// Unix epoch, the job's virtual start time) as their three timestamps; `output_bytes` and
    /// `output_files` are the quotas of writable mounts (see the module documentation).
    pub fn new(start_ns: u64, output_bytes: u64, output_files: u64) -> Self {
        Vfs {
            nodes: Vec::new(),
            mounts: Vec::new(),
            next_ino: 1,
            start_ns,
            output_bytes_limit: output_bytes,
            output_files_limit: output_files,
            output_bytes_used: 0,
            output_files_created: 0,
        }
    }

    /// Adds a read-only mount at `guest_path` (such as `/input`) holding `files`, each a relative
    /// path with `/` separators (`a.txt`, `data/b.bin`) and its bytes, which are shared, not
    /// copied. See [`Vfs::add_mount`].
    pub fn add_read_only_mount<I>(&mut self, guest_path: &str, files: I) -> Result<usize, MountError>
    where
        I: IntoIterator<Item = (String, Arc<[u8]>)>,
    {
        self.add_mount(guest_path, files, false)
    }

    /// Adds an empty writable mount at `guest_path` (such as `/output`). Returns the mount's index
    /// (its `dev`).
    pub fn add_writable_mount(&mut self, guest_path: &str) -> Result<usize, MountError> {
        self.add_mount(guest_path, [], true)
    }

    /// Adds a mount at `guest_path` holding `files`, each a relative path with `/` separators
    /// (`a.txt`, `data/b.bin`) and its bytes, shared until the job first writes to the file.
    /// Intermediate directories are created. Files are inserted sorted by path whatever order
    /// they come in, so inode numbers depend only on the set of files. Returns the mount's index
    /// (its `dev`).
    ///
    /// The files of a writable mount count against the `output_bytes` quota from the start (they
    /// are part of what the job leaves behind), but not against `output_files`, which counts what
    /// the job creates; their paths must fit [`MAX_OUTPUT_PATH`]. A refused mount leaves the
    /// filesystem unchanged.
    pub fn add_mount<I>(&mut self, guest_path: &str, files: I, writable: bool) -> Result<usize, MountError>
    where
        I: IntoIterator<Item = (String, Arc<[u8]>)>,
    {
        self.check_mount_path(guest_path)?;
        let mut sorted = BTreeMap::new();
        let mut total_bytes = 0u64;
        for (path, bytes) in files {
            check_relative_file_path(&path)?;
            if writable && path.len() > MAX_OUTPUT_PATH {
                return Err(MountError::BadFilePath { path, reason: "it is longer than the 1024 bytes a writable mount allows" });
            }
            if sorted.contains_key(&path) {
                return Err(MountError::Conflict { path });
            }
            total_bytes = total_bytes.saturating_add(bytes.len() as u64);
            sorted.insert(path, bytes);
        }
        if writable && self.output_bytes_used.saturating_add(total_bytes) > self.output_bytes_limit {
            return Err(MountError::OverQuota { path: guest_path.to_string(), bytes: total_bytes, limit: self.output_bytes_limit });
        }
        // Check for a file that is also needed as a directory before creating anything, so that
        // a refused mount leaves the filesystem unchanged.
        for path in sorted.keys() {
            let mut prefix = String::new();
            for component in path.split('/') {
                if !prefix.is_empty() {
                    if sorted.contains_key(&prefix) {
                        return Err(MountError::Conflict { path: prefix });
                    }
                    prefix.push('/');
                }
                prefix.push_str(component);
            }
        }
        let mount = self.mounts.len();
        let root = self.new_root(mount);
        self.mounts.push(Mount { guest_path: guest_path.to_string(), root, writable });
        if writable {
            self.output_bytes_used = self.output_bytes_used.saturating_add(total_bytes);
        }
        for (path, bytes) in sorted {
            let mut dir = root;
            let mut components = path.split('/').peekable();
            while let Some(component) = components.next() {
                let existing = self.children(dir).and_then(|children| children.get(component).copied());
                if components.peek().is_none() {
                    // Conflicts were ruled out above, so the name is free.
                    let node = self.new_node(mount, dir, NodeKind::File(FileData::shared(bytes)), self.start_ns);
                    self.insert_child(dir, component, node);
                    self.grew(node, component.len());
                    break;
                }
                dir = match existing {
                    Some(child) => child,
                    None => {
                        let child = self.new_node(mount, dir, NodeKind::Dir(BTreeMap::new()), self.start_ns);
                        self.insert_child(dir, component, child);
                        self.grew(child, component.len());
                        child
                    }
                };
            }
        }
        Ok(mount)
    }

    /// How many mounts there are.
    pub fn mount_count(&self) -> usize {
        self.mounts.len()
    }

    /// The guest path of mount `index` (such as `/input`).
    pub fn mount_path(&self, index: usize) -> Option<&str> {
        self.mounts.get(index).map(|m| m.guest_path.as_str())
    }

    /// The root directory of mount `index`.
    pub fn mount_root(&self, index: usize) -> Option<NodeId> {
        self.mounts.get(index).map(|m| m.root)
    }

    /// Whether mount `index` is writable.
    pub fn mount_is_writable(&self, index: usize) -> Option<bool> {
        self.mounts.get(index).map(|m| m.writable)
    }

    /// Bytes held by files in writable mounts now (what the `output_bytes` quota limits).
    pub fn output_bytes_used(&self) -> u64 {
        self.output_bytes_used
    }

    /// Files and directories created in writable mounts so far (what `output_files` limits).
    pub fn output_files_created(&self) -> u64 {
        self.output_files_created
    }

    /// Every regular file under writable mount `index`, by path relative to the mount with `/`
    /// separators. Empty directories do not appear. `None` if there is no such mount.
    pub fn collect_mount(&self, index: usize) -> Option<BTreeMap<String, Vec<u8>>> {
        let root = self.mount_root(index)?;
        let mut files = BTreeMap::new();
        // An explicit stack: a job can nest directories deeper than the host stack would like.
        let mut pending = vec![(root, String::new())];
        while let Some((dir, prefix)) = pending.pop() {
            let Some(children) = self.children(dir) else { continue };
            for (name, &child) in children {
                let path = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                match self.node(child).map(|n| &n.kind) {
                    Some(NodeKind::File(data)) => {
                        files.insert(path, data.bytes().to_vec());
                    }
                    Some(NodeKind::Dir(_)) => pending.push((child, path)),
                    None => {}
                }
            }
        }
        Some(files)
    }

    /// Every regular file under every writable mount, by path relative to its mount. With several
    /// writable mounts a path present in more than one keeps the first mount's file: use
    /// [`Vfs::collect_mount`] to tell them apart.
    pub fn collect_outputs(&self) -> BTreeMap<String, Vec<u8>> {
        let mut all = BTreeMap::new();
        for (index, mount) in self.mounts.iter().enumerate() {
            if !mount.writable {
                continue;
            }
            for (path, bytes) in self.collect_mount(index).unwrap_or_default() {
                all.entry(path).or_insert(bytes);
            }
        }
        all
    }

    /// The metadata of `node`.
    pub fn stat(&self, node: NodeId) -> Result<Stat, Errno> {
        let n = self.node(node).ok_or(Errno::Badf)?;
        Ok(Stat { dev: n.mount as u64, ino: n.ino, kind: n.file_kind(), nlink: u64::from(n.linked), size: n.size(), atim: n.atim, mtim: n.mtim, ctim: n.ctim })
    }

    /// The kind of `node`.
    pub fn kind(&self, node: NodeId) -> Result<FileKind, Errno> {
        Ok(self.node(node).ok_or(Errno::Badf)?.file_kind())
    }

    /// The size of `node` in bytes (0 for a directory).
    pub fn size(&self, node: NodeId) -> Result<u64, Errno> {
        Ok(self.node(node).ok_or(Errno::Badf)?.size())
    }

    /// Whether `node` is in a writable mount.
    pub fn is_writable(&self, node: NodeId) -> Result<bool, Errno> {
        let n = self.node(node).ok_or(Errno::Badf)?;
        Ok(self.mounts.get(n.mount).is_some_and(|m| m.writable))
    }

    /// Resolves `path` relative to directory `base`. `..` may not climb above the mount root
    /// (`EPERM`), absolute paths are refused (`EPERM`), and a trailing `/` requires a directory.
    pub fn lookup(&self, base: NodeId, path: &str) -> Result<NodeId, Errno> {
        let parsed = parse_path(path)?;
        let node = self.walk(base, &parsed.components)?;
        if parsed.trailing_slash && self.kind(node)? != FileKind::Directory {
            return Err(Errno::Notdir);
        }
        Ok(node)
    }

    /// Opens (and with `create`, creates) `path` relative to directory `base`, as `path_open`
    /// does, and counts one more open descriptor on the node: release it with
    /// [`Vfs::release`]. `now` (virtual ns since the epoch) stamps what changes.
    pub fn open(&mut self, base: NodeId, path: &str, options: OpenOptions, now: u64) -> Result<NodeId, FsError> {
        let parsed = parse_path(path)?;
        let node = match self.last(base, &parsed)? {
            Last::Dots(node) => {
                if options.create && options.exclusive {
                    return Err(Errno::Exist.into());
                }
                node
            }
            // `O_CREAT` with a trailing `/` is EISDIR before the name is looked up, whether it
            // exists or not (as in Linux).
            Last::Name { .. } if options.create && parsed.trailing_slash => return Err(Errno::Isdir.into()),
            Last::Name { parent, name } => match self.child(parent, name)? {
                Some(node) => {
                    if options.create && options.exclusive {
                        return Err(Errno::Exist.into());
                    }
                    if (parsed.trailing_slash || options.directory) && self.kind(node)? != FileKind::Directory {
                        return Err(Errno::Notdir.into());
                    }
                    node
                }
                None if !options.create => return Err(Errno::Noent.into()),
                None if options.directory => return Err(Errno::Inval.into()),
                None => self.create(parent, name, NodeKind::File(FileData::default()), now)?,
            },
        };
        match self.kind(node)? {
            FileKind::Directory => {
                // Write rights on a directory are ignored (some guests ask for every right when
                // opening anything); a truncation is refused, and so is `O_CREAT` without
                // `O_DIRECTORY`, as POSIX says (`EISDIR`, what Linux and wasmtime-wasi return).
                if options.truncate || (options.create && !options.directory) {
                    return Err(Errno::Isdir.into());
                }
            }
            FileKind::RegularFile => {
                if (options.write || options.truncate) && !self.is_writable(node)? {
                    return Err(Errno::Rofs.into());
                }
                if options.truncate && self.size(node)? > 0 {
                    self.set_size(node, 0, now)?;
                }
            }
        }
        self.retain(node)?;
        Ok(node)
    }

    /// Counts one more open descriptor on `node`, which keeps it alive after an unlink.
    pub fn retain(&mut self, node: NodeId) -> Result<(), Errno> {
        let n = self.node_mut(node).ok_or(Errno::Badf)?;
        n.open = n.open.saturating_add(1);
        Ok(())
    }

    /// Counts one open descriptor less on `node`; an unlinked node is freed with its last one.
    pub fn release(&mut self, node: NodeId) {
        let Some(n) = self.node_mut(node) else { return };
        n.open = n.open.saturating_sub(1);
        if n.open == 0 && !n.linked && !n.is_root {
            self.free(node);
        }
    }

    /// Copies bytes of file `node` from `offset` into `buf`; returns how many (0 at or past the
    /// end). Reading a directory is `EISDIR`.
    pub fn read_at(&self, node: NodeId, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        let bytes = self.file_bytes(node)?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(bytes.len());
        let available = bytes.get(start..).unwrap_or_default();
        let n = available.len().min(buf.len());
        if let (Some(dst), Some(src)) = (buf.get_mut(..n), available.get(..n)) {
            dst.copy_from_slice(src);
        }
        Ok(n)
    }

    /// The bytes of file `node`.
    pub fn file_bytes(&self, node: NodeId) -> Result<&[u8], Errno> {
        match &self.node(node).ok_or(Errno::Badf)?.kind {
            NodeKind::File(data) => Ok(data.bytes()),
            NodeKind::Dir(_) => Err(Errno::Isdir),
        }
    }

    /// Checks that file `node` may grow to hold `len` bytes at `offset`: the end must be
    /// representable (`EFBIG`), the mount writable (`EROFS`), and the output quota must allow the
    /// new size. Changes nothing; [`Vfs::write_at`] checks the same.
    pub fn check_write(&self, node: NodeId, offset: u64, len: u64) -> Result<(), FsError> {
        let n = self.node(node).ok_or(Errno::Badf)?;
        if !matches!(n.kind, NodeKind::File(_)) {
            return Err(Errno::Isdir.into());
        }
        if !self.is_writable(node)? {
            return Err(Errno::Rofs.into());
        }
        if len == 0 {
            return Ok(());
        }
        let end = offset.checked_add(len).ok_or(Errno::Fbig)?;
        self.check_resize(n, end.max(n.size()))
    }

    /// Checks that file `node` may be resized to `size`: writable, and within the output quota.
    pub fn check_set_size(&self, node: NodeId, size: u64) -> Result<(), FsError> {
        let n = self.node(node).ok_or(Errno::Badf)?;
        if !matches!(n.kind, NodeKind::File(_)) {
            return Err(Errno::Isdir.into());
        }
        if !self.is_writable(node)? {
            return Err(Errno::Rofs.into());
        }
        self.check_resize(n, size)
    }

    /// Writes `data` into file `node` at `offset`, zero-filling any gap past the end. The size
    /// the file reaches is checked against the output quota before anything is allocated.
    pub fn write_at(&mut self, node: NodeId, offset: u64, data: &[u8], now: u64) -> Result<(), FsError> {
        self.check_write(node, offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let start = usize::try_from(offset).map_err(|_| Errno::Fbig)?;
        let end = start.checked_add(data.len()).ok_or(Errno::Fbig)?;
        let old_size = self.size(node)?;
        let n = self.node_mut(node).ok_or(Errno::Badf)?;
        let NodeKind::File(file) = &mut n.kind else { return Err(Errno::Isdir.into()) };
        let bytes = file.owned();
        if end > bytes.len() {
            grow(bytes, end)?;
        }
        if let Some(dst) = bytes.get_mut(start..end) {
            dst.copy_from_slice(data);
        }
        n.mtim = now;
        n.ctim = now;
        let new_size = n.size();
        self.account_resize(old_size, new_size);
        Ok(())
    }

    /// Sets the size of file `node`, cutting or zero-filling, subject to the output quota.
    pub fn set_size(&mut self, node: NodeId, size: u64, now: u64) -> Result<(), FsError> {
        self.check_set_size(node, size)?;
        let old_size = self.size(node).unwrap_or(0);
        let new_len = usize::try_from(size).map_err(|_| Errno::Fbig)?;
        let n = self.node_mut(node).ok_or(Errno::Badf)?;
        let NodeKind::File(file) = &mut n.kind else { return Err(Errno::Isdir.into()) };
        let bytes = file.owned();
        if new_len > bytes.len() {
            grow(bytes, new_len)?;
        } else {
            bytes.truncate(new_len);
        }
        n.mtim = now;
        n.ctim = now;
        self.account_resize(old_size, size);
        Ok(())
    }

    /// Sets the access and/or modification time of `node` (`None` leaves one as it is); the
    /// change time becomes `now`. Refused with `EROFS` in a read-only mount.
    pub fn set_times(&mut self, node: NodeId, atim: Option<u64>, mtim: Option<u64>, now: u64) -> Result<(), Errno> {
        if !self.is_writable(node)? {
            return Err(Errno::Rofs);
        }
        let n = self.node_mut(node).ok_or(Errno::Badf)?;
        if let Some(atim) = atim {
            n.atim = atim;
        }
        if let Some(mtim) = mtim {
            n.mtim = mtim;
        }
        n.ctim = now;
        Ok(())
    }

    /// Creates directory `path` relative to directory `base`, as `path_create_directory` does.
    pub fn create_dir(&mut self, base: NodeId, path: &str, now: u64) -> Result<(), FsError> {
        let parsed = parse_path(path)?;
        match self.last(base, &parsed)? {
            Last::Dots(_) => Err(Errno::Exist.into()),
            Last::Name { parent, name } => {
                if self.child(parent, name)?.is_some() {
                    return Err(Errno::Exist.into());
                }
                self.create(parent, name, NodeKind::Dir(BTreeMap::new()), now)?;
                Ok(())
            }
        }
    }

    /// Removes the file `path` relative to directory `base`, as `path_unlink_file` does. A file
    /// still open stays readable through its descriptors until they close.
    pub fn unlink_file(&mut self, base: NodeId, path: &str, now: u64) -> Result<(), Errno> {
        let parsed = parse_path(path)?;
        let (parent, name) = match self.last(base, &parsed)? {
            Last::Dots(_) => return Err(Errno::Isdir),
            Last::Name { parent, name } => (parent, name),
        };
        let node = self.child(parent, name)?.ok_or(Errno::Noent)?;
        if self.kind(node)? == FileKind::Directory {
            return Err(Errno::Isdir);
        }
        if parsed.trailing_slash {
            return Err(Errno::Notdir);
        }
        if !self.is_writable(parent)? {
            return Err(Errno::Rofs);
        }
        self.remove_child(parent, name, now);
        self.detach(node);
        Ok(())
    }

    /// Removes the empty directory `path` relative to directory `base`, as
    /// `path_remove_directory` does.
    pub fn remove_dir(&mut self, base: NodeId, path: &str, now: u64) -> Result<(), Errno> {
        let parsed = parse_path(path)?;
        let (parent, name) = match self.last(base, &parsed)? {
            // `rmdir(".")` is EINVAL in POSIX; a mount root cannot be removed either way.
            Last::Dots(_) => return Err(Errno::Inval),
            Last::Name { parent, name } => (parent, name),
        };
        let node = self.child(parent, name)?.ok_or(Errno::Noent)?;
        match self.children(node) {
            None => return Err(Errno::Notdir),
            Some(children) if !children.is_empty() => return Err(Errno::Notempty),
            Some(_) => {}
        }
        if !self.is_writable(parent)? {
            return Err(Errno::Rofs);
        }
        self.remove_child(parent, name, now);
        self.detach(node);
        Ok(())
    }

    /// Renames `old_path` relative to directory `old_base` to `new_path` relative to `new_base`,
    /// as `path_rename` does: an existing target is replaced if it is a file and the source is a
    /// file, or if both are directories and the target is empty. Between mounts: `EXDEV`.
    pub fn rename(&mut self, old_base: NodeId, old_path: &str, new_base: NodeId, new_path: &str, now: u64) -> Result<(), Errno> {
        // When several checks fail, POSIX lets any of their errors be returned; these come in
        // Linux's order, which jobs meet under wasmtime-wasi: the directory of each path (old,
        // then new), the mounts, `.` and `..` as last components, the mount's writability, the
        // names (old, then new), then their kinds.
        let old = parse_path(old_path)?;
        let old_last = self.last(old_base, &old)?;
        let new = parse_path(new_path)?;
        let new_last = self.last(new_base, &new)?;
        let dir_of = |last: &Last<'_>| match *last {
            Last::Dots(node) | Last::Name { parent: node, .. } => node,
        };
        if self.node(dir_of(&old_last)).ok_or(Errno::Badf)?.mount != self.node(dir_of(&new_last)).ok_or(Errno::Badf)?.mount {
            return Err(Errno::Xdev);
        }
        // POSIX's EINVAL for a last component `.` or `..` (Linux says EBUSY).
        let (Last::Name { parent: old_parent, name: old_name }, Last::Name { parent: new_parent, name: new_name }) = (old_last, new_last) else {
            return Err(Errno::Inval);
        };
        if !self.is_writable(old_parent)? {
            return Err(Errno::Rofs);
        }
        let source = self.child(old_parent, old_name)?.ok_or(Errno::Noent)?;
        let target = self.child(new_parent, new_name)?;
        if !self.node(new_parent).is_some_and(|n| n.linked) {
            // A removed directory (still open somewhere) has no names to look up.
            return Err(Errno::Noent);
        }
        let source_kind = self.kind(source)?;
        if source_kind == FileKind::RegularFile && (old.trailing_slash || new.trailing_slash) {
            return Err(Errno::Notdir);
        }
        // Neither may hold the other: a directory cannot move into itself or below itself
        // (EINVAL), nor replace a directory above it (which is not empty).
        if self.is_within(new_parent, source) {
            return Err(Errno::Inval);
        }
        if let Some(target) = target
            && target != source
            && self.is_within(old_parent, target)
        {
            return Err(Errno::Notempty);
        }
        if let Some(target) = target {
            if target == source {
                return Ok(());
            }
            match (source_kind, self.kind(target)?) {
                (FileKind::Directory, FileKind::RegularFile) => return Err(Errno::Notdir),
                (FileKind::RegularFile, FileKind::Directory) => return Err(Errno::Isdir),
                (FileKind::Directory, FileKind::Directory) => {
                    if self.children(target).is_some_and(|c| !c.is_empty()) {
                        return Err(Errno::Notempty);
                    }
                }
                (FileKind::RegularFile, FileKind::RegularFile) => {}
            }
        }
        let moved_below = self.node(source).map_or(0, |n| if n.below == 0 { 0 } else { n.below as usize + 1 });
        if self.relative_len(new_parent).saturating_add(1 + new_name.len() + moved_below) > MAX_OUTPUT_PATH + 1 {
            return Err(Errno::Nametoolong);
        }
        self.remove_child(old_parent, old_name, now);
        if let Some(target) = target {
            self.remove_child(new_parent, new_name, now);
            self.detach(target);
        }
        self.insert_child(new_parent, new_name, source);
        if let Some(n) = self.node_mut(new_parent) {
            n.mtim = now;
            n.ctim = now;
        }
        if let Some(n) = self.node_mut(source) {
            n.parent = Some(new_parent);
            n.ctim = now;
        }
        self.grew(source, new_name.len());
        Ok(())
    }

    /// Whether `node` is `ancestor` or below it.
    fn is_within(&self, node: NodeId, ancestor: NodeId) -> bool {
        let mut cursor = Some(node);
        while let Some(dir) = cursor {
            if dir == ancestor {
                return true;
            }
            cursor = self.node(dir).and_then(|n| n.parent);
        }
        false
    }

    /// How many entries directory `dir` has, `.` and `..` aside (0 for anything else).
    pub fn dir_len(&self, dir: NodeId) -> u64 {
        self.children(dir).map_or(0, |children| children.len() as u64)
    }

    /// The entries of directory `dir` from index `cookie` on: `.` and `..` first, then the
    /// children sorted by name bytes. Each entry's `next` is its index + 1, the cookie that
    /// resumes after it.
    pub fn read_dir(&self, dir: NodeId, cookie: u64) -> Result<impl Iterator<Item = DirEntry<'_>> + '_, Errno> {
        let n = self.node(dir).ok_or(Errno::Badf)?;
        let NodeKind::Dir(children) = &n.kind else { return Err(Errno::Notdir) };
        let parent_ino = n.parent.and_then(|p| self.node(p)).map_or(n.ino, |p| p.ino);
        let head = [(".", n.ino, FileKind::Directory), ("..", parent_ino, FileKind::Directory)];
        let entries = children.iter().filter_map(|(name, &child)| {
            let c = self.node(child)?;
            Some((name.as_str(), c.ino, c.file_kind()))
        });
        let skip = usize::try_from(cookie).unwrap_or(usize::MAX);
        Ok(head.into_iter().chain(entries).zip(1u64..).skip(skip).map(|((name, ino, kind), next)| DirEntry { next, ino, kind, name }))
    }

    // ----- internals -----

    fn node(&self, id: NodeId) -> Option<&Node> {
        self.nodes.get(id.0).and_then(Option::as_ref)
    }

    fn node_mut(&mut self, id: NodeId) -> Option<&mut Node> {
        self.nodes.get_mut(id.0).and_then(Option::as_mut)
    }

    fn children(&self, id: NodeId) -> Option<&BTreeMap<String, NodeId>> {
        match &self.node(id)?.kind {
            NodeKind::Dir(children) => Some(children),
            NodeKind::File(_) => None,
        }
    }

    /// The child `name` of directory `dir`, if any (`ENOTDIR` if `dir` is a file,
    /// `ENAMETOOLONG` for a name longer than [`MAX_NAME_LEN`]).
    fn child(&self, dir: NodeId, name: &str) -> Result<Option<NodeId>, Errno> {
        let children = self.children(dir).ok_or(Errno::Notdir)?;
        if name.len() > MAX_NAME_LEN {
            return Err(Errno::Nametoolong);
        }
        Ok(children.get(name).copied())
    }

    fn check_mount_path(&self, path: &str) -> Result<(), MountError> {
        let bad = |reason| Err(MountError::BadMountPath { path: path.to_string(), reason });
        if !path.starts_with('/') {
            return bad("it must be absolute");
        }
        if path.len() > MAX_PATH_LEN {
            return bad("it is too long");
        }
        if path.contains('\0') {
            return bad("it contains NUL");
        }
        if !is_normalised_absolute(path) {
            return bad("it must be normalised: no empty, `.` or `..` components and no trailing `/`");
        }
        if self.mounts.iter().any(|m| m.guest_path == path) {
            return Err(MountError::DuplicateMount { path: path.to_string() });
        }
        Ok(())
    }

    fn new_root(&mut self, mount: usize) -> NodeId {
        let id = self.push_node(mount, None, NodeKind::Dir(BTreeMap::new()), self.start_ns);
        if let Some(n) = self.node_mut(id) {
            n.is_root = true;
        }
        id
    }

    fn new_node(&mut self, mount: usize, parent: NodeId, kind: NodeKind, now: u64) -> NodeId {
        self.push_node(mount, Some(parent), kind, now)
    }

    fn push_node(&mut self, mount: usize, parent: Option<NodeId>, kind: NodeKind, now: u64) -> NodeId {
        let id = NodeId(self.nodes.len());
        let ino = self.next_ino;
        self.next_ino = self.next_ino.saturating_add(1);
        self.nodes.push(Some(Node { ino, mount, parent, linked: true, is_root: false, open: 0, atim: now, mtim: now, ctim: now, kind, name_len: 0, below: 0 }));
        id
    }

    /// The length of `node`'s path relative to its mount root, plus one (so 0 for a root, and a
    /// child named `n` of a root is `n.len() + 1`): the walk up is as long as the path is deep.
    fn relative_len(&self, node: NodeId) -> usize {
        let mut len = 0usize;
        let mut cursor = self.node(node);
        while let Some(n) = cursor.filter(|n| !n.is_root) {
            len = len.saturating_add(n.name_len as usize + 1);
            cursor = n.parent.and_then(|p| self.node(p));
        }
        len
    }

    /// Notes that `node` now has a name of `name_len` bytes in its directory, and raises the
    /// path bound of every directory above it.
    fn grew(&mut self, node: NodeId, name_len: usize) {
        let Some(n) = self.node_mut(node) else { return };
        n.name_len = u32::try_from(name_len).unwrap_or(u32::MAX);
        let mut extent = name_len.saturating_add(if n.below == 0 { 0 } else { n.below as usize + 1 });
        let mut parent = n.parent;
        while let Some(dir) = parent {
            let Some(d) = self.node_mut(dir) else { break };
            d.below = d.below.max(u32::try_from(extent).unwrap_or(u32::MAX));
            if d.is_root {
                break;
            }
            extent = extent.saturating_add(d.name_len as usize + 1);
            parent = d.parent;
        }
    }

    fn insert_child(&mut self, dir: NodeId, name: &str, child: NodeId) {
        if let Some(Node { kind: NodeKind::Dir(children), .. }) = self.node_mut(dir) {
            children.insert(name.to_string(), child);
        }
    }

    fn remove_child(&mut self, dir: NodeId, name: &str, now: u64) {
        if let Some(n) = self.node_mut(dir) {
            if let NodeKind::Dir(children) = &mut n.kind {
                children.remove(name);
            }
            n.mtim = now;
            n.ctim = now;
        }
    }

    /// Creates a node named `name` in directory `parent`, which must not hold that name yet.
    fn create(&mut self, parent: NodeId, name: &str, kind: NodeKind, now: u64) -> Result<NodeId, FsError> {
        let p = self.node(parent).ok_or(Errno::Badf)?;
        if !p.linked {
            // A removed directory (still open somewhere) accepts no new entries.
            return Err(Errno::Noent.into());
        }
        let mount = p.mount;
        if !self.is_writable(parent)? {
            return Err(Errno::Rofs.into());
        }
        if self.relative_len(parent).saturating_add(1 + name.len()) > MAX_OUTPUT_PATH + 1 {
            return Err(Errno::Nametoolong.into());
        }
        if self.output_files_created >= self.output_files_limit {
            return Err(FsError::Limit(LimitExceeded { limit: LimitKind::OutputFiles, value: self.output_files_limit }));
        }
        self.output_files_created += 1;
        let node = self.new_node(mount, parent, kind, now);
        self.insert_child(parent, name, node);
        self.grew(node, name.len());
        if let Some(p) = self.node_mut(parent) {
            p.mtim = now;
            p.ctim = now;
        }
        Ok(node)
    }

    /// Takes `node`, already removed from its directory, out of the tree; it is freed now unless
    /// a descriptor still holds it.
    fn detach(&mut self, node: NodeId) {
        let Some(n) = self.node_mut(node) else { return };
        n.linked = false;
        n.parent = None;
        if n.open == 0 {
            self.free(node);
        }
    }

    fn free(&mut self, node: NodeId) {
        let writable = self.is_writable(node).unwrap_or(false);
        if let Some(n) = self.nodes.get_mut(node.0).and_then(Option::take)
            && writable
        {
            self.output_bytes_used = self.output_bytes_used.saturating_sub(n.size());
        }
    }

    /// Refuses to let file `n` reach `new_size` bytes past the quota or past what a `Vec` holds.
    fn check_resize(&self, n: &Node, new_size: u64) -> Result<(), FsError> {
        let old_size = n.size();
        if new_size <= old_size {
            return Ok(());
        }
        if new_size > isize::MAX as u64 {
            return Err(Errno::Fbig.into());
        }
        let total = self.output_bytes_used.saturating_sub(old_size).saturating_add(new_size);
        if total > self.output_bytes_limit {
            return Err(FsError::Limit(LimitExceeded { limit: LimitKind::OutputBytes, value: self.output_bytes_limit }));
        }
        Ok(())
    }

    fn account_resize(&mut self, old_size: u64, new_size: u64) {
        self.output_bytes_used = self.output_bytes_used.saturating_sub(old_size).saturating_add(new_size);
    }

    /// Follows `components` from directory `base`.
    fn walk(&self, base: NodeId, components: &[&str]) -> Result<NodeId, Errno> {
        let mut current = base;
        if self.children(current).is_none() {
            return Err(if self.node(current).is_some() { Errno::Notdir } else { Errno::Badf });
        }
        for &component in components {
            let node = self.node(current).ok_or(Errno::Noent)?;
            current = match component {
                "." => {
                    if self.children(current).is_none() {
                        return Err(Errno::Notdir);
                    }
                    current
                }
                ".." => {
                    if self.children(current).is_none() {
                        return Err(Errno::Notdir);
                    }
                    if node.is_root {
                        // Above the mount root is the host: never reachable.
                        return Err(Errno::Perm);
                    }
                    node.parent.ok_or(Errno::Noent)?
                }
                name => self.child(current, name)?.ok_or(Errno::Noent)?,
            };
        }
        Ok(current)
    }

    /// Resolves all but the last component of `path`, for operations that create or remove the
    /// last one.
    fn last<'p>(&self, base: NodeId, path: &ParsedPath<'p>) -> Result<Last<'p>, Errno> {
        let Some((&last, init)) = path.components.split_last() else {
            // Only reachable for "/"-only paths, which parse_path refuses; keep it total.
            return Err(Errno::Noent);
        };
        if last == "." || last == ".." {
            return Ok(Last::Dots(self.walk(base, &path.components)?));
        }
        let parent = self.walk(base, init)?;
        if self.children(parent).is_none() {
            // `file/name`: the walk to the parent fails, whatever the name.
            return Err(Errno::Notdir);
        }
        Ok(Last::Name { parent, name: last })
    }
}

/// Grows `bytes` to `len` with zeros, reporting an allocation failure as `ENOMEM` rather than
/// aborting the host.
fn grow(bytes: &mut Vec<u8>, len: usize) -> Result<(), Errno> {
    let extra = len.saturating_sub(bytes.len());
    bytes.try_reserve_exact(extra).map_err(|_| Errno::Nomem)?;
    bytes.resize(len, 0);
    Ok(())
}
