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
//! through `Arc<[u8]>` and never copied) or writable (the job's outputs). Writable mounts are
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
//! which are POSIX's, and it is driven by `super::preview1`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::limits::{LimitExceeded, LimitKind};

/// Longest path, in bytes, that any operation accepts (Linux's `PATH_MAX`).
pub const MAX_PATH_LEN: usize = 4096;

/// Longest single path component (file name), in bytes (Linux's `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// A WASI preview1 error number. The discriminants are the `errno` enum of
/// `wasi_snapshot_preview1.witx` (its variants are numbered in declaration order from 0).
///
/// Only the values this implementation returns are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Errno {
    /// `success`: not an error. Listed so that the numbering can be checked in one place.
    Success = 0,
    /// `2big`: argument list too long.
    TooBig = 1,
    /// `acces`: permission denied.
    Acces = 2,
    /// `badf`: bad file descriptor.
    Badf = 8,
    /// `busy`: device or resource busy.
    Busy = 10,
    /// `exist`: file exists.
    Exist = 20,
    /// `fault`: bad address (a guest pointer out of bounds).
    Fault = 21,
    /// `fbig`: file too large.
    Fbig = 22,
    /// `ilseq`: illegal byte sequence (a path that is not UTF-8).
    Ilseq = 25,
    /// `inval`: invalid argument.
    Inval = 28,
    /// `io`: I/O error.
    Io = 29,
    /// `isdir`: is a directory.
    Isdir = 31,
    /// `mfile`: too many open files.
    Mfile = 33,
    /// `nametoolong`: file name too long.
    Nametoolong = 37,
    /// `noent`: no such file or directory.
    Noent = 44,
    /// `nomem`: not enough space (the host could not allocate).
    Nomem = 48,
    /// `nospc`: no space left on device.
    Nospc = 51,
    /// `notdir`: not a directory.
    Notdir = 54,
    /// `notempty`: directory not empty.
    Notempty = 55,
    /// `notsup`: not supported.
    Notsup = 58,
    /// `overflow`: value too large to be stored in data type.
    Overflow = 61,
    /// `perm`: operation not permitted (also what a path escaping its mount gets, as with
    /// wasmtime-wasi's cap-std preopens).
    Perm = 63,
    /// `rofs`: read-only file system.
    Rofs = 69,
    /// `spipe`: invalid seek.
    Spipe = 70,
    /// `xdev`: cross-device link (a rename between mounts).
    Xdev = 75,
    /// `notcapable`: extension: capabilities insufficient.
    Notcapable = 76,
}

impl Errno {
    /// The number the guest sees.
    pub fn raw(self) -> u16 {
        self as u16
    }
}

/// Why a filesystem operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsError {
    /// An error the guest gets back as an errno and may handle.
    Errno(Errno),
    /// The operation would take the job past an output quota: the job must stop.
    Limit(LimitExceeded),
}

impl From<Errno> for FsError {
    fn from(errno: Errno) -> Self {
        FsError::Errno(errno)
    }
}

/// Why the host could not add a mount. These are the host's mistakes (or a manifest's), never the
/// guest's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MountError {
    /// The guest path of a mount must be absolute, normalised and short enough.
    #[error("bad mount path {path:?}: {reason}")]
    BadMountPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two mounts at the same guest path.
    #[error("{path:?} is already mounted")]
    DuplicateMount {
        /// The path given.
        path: String,
    },
    /// An input file's relative path is not a plain relative path (`a.txt`, `data/b.bin`).
    #[error("bad file path {path:?}: {reason}")]
    BadFilePath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two input files at the same path, or a file where a directory is needed (`a` and `a/b`).
    #[error("input file path {path:?} conflicts with another input")]
    Conflict {
        /// The path given.
        path: String,
    },
    /// No file descriptor is free for the mount's preopen.
    #[error("too many open file descriptors to preopen {path:?}")]
    TooManyDescriptors {
        /// The path given.
        path: String,
    },
}

/// Identifies a node (file or directory) of a [`Vfs`]. Ids are never reused, so a stale id
/// refers to nothing rather than to another node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(usize);

/// What kind of node this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Directory,
    /// A regular file.
    RegularFile,
}

/// A node's metadata, as `filestat` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// The index of the node's mount.
    pub dev: u64,
    /// The node's inode number: its rank in creation order, from 1.
    pub ino: u64,
    /// File or directory.
    pub kind: FileKind,
    /// 1 while the node has a name, 0 once it is unlinked (and still open).
    pub nlink: u64,
    /// Bytes of a file; 0 for a directory.
    pub size: u64,
    /// Last access time, ns since the Unix epoch (virtual).
    pub atim: u64,
    /// Last modification time, ns since the Unix epoch (virtual).
    pub mtim: u64,
    /// Last status change time, ns since the Unix epoch (virtual).
    pub ctim: u64,
}

/// One entry of a directory listing, as `fd_readdir` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'a> {
    /// The cookie that resumes the listing after this entry (its index + 1).
    pub next: u64,
    /// The entry's inode number.
    pub ino: u64,
    /// File or directory.
    pub kind: FileKind,
    /// The entry's name (`.` and `..` come first).
    pub name: &'a str,
}

/// How [`Vfs::open`] opens a path: the parts of `path_open`'s flags that concern the tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Create the file if it does not exist (`O_CREAT`).
    pub create: bool,
    /// With `create`: fail if it exists (`O_EXCL`).
    pub exclusive: bool,
    /// Truncate an existing file to 0 bytes (`O_TRUNC`).
    pub truncate: bool,
    /// The path must name a directory (`O_DIRECTORY`).
    pub directory: bool,
    /// The descriptor will be written to: refused with `EROFS` for a file in a read-only mount.
    pub write: bool,
}

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

/// A path split into its components.
struct ParsedPath<'a> {
    /// Non-empty components (`a//b` is `a/b`), `.` and `..` kept.
    components: Vec<&'a str>,
    /// The path ends in `/`: it must name a directory.
    trailing_slash: bool,
}

/// Where the last component of a path leads, for operations that create or remove a name.
enum Last<'a> {
    /// A plain name in directory `parent`.
    Name { parent: NodeId, name: &'a str },
    /// The path ends in `.` or `..`: it names an existing directory, not an entry.
    Dots(NodeId),
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
    /// copied. Intermediate directories are created. Files are inserted sorted by path whatever
    /// order they come in, so inode numbers depend only on the set of files. Returns the mount's
    /// index (its `dev`).
    pub fn add_read_only_mount<I>(&mut self, guest_path: &str, files: I) -> Result<usize, MountError>
    where
        I: IntoIterator<Item = (String, Arc<[u8]>)>,
    {
        self.check_mount_path(guest_path)?;
        let mut sorted = BTreeMap::new();
        for (path, bytes) in files {
            check_relative_file_path(&path)?;
            if sorted.contains_key(&path) {
                return Err(MountError::Conflict { path });
            }
            sorted.insert(path, bytes);
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
        self.mounts.push(Mount { guest_path: guest_path.to_string(), root, writable: false });
        for (path, bytes) in sorted {
            let mut dir = root;
            let mut components = path.split('/').peekable();
            while let Some(component) = components.next() {
                let existing = self.children(dir).and_then(|children| children.get(component).copied());
                if components.peek().is_none() {
                    // Conflicts were ruled out above, so the name is free.
                    let node = self.new_node(mount, dir, NodeKind::File(FileData::shared(bytes)), self.start_ns);
                    self.insert_child(dir, component, node);
                    break;
                }
                dir = match existing {
                    Some(child) => child,
                    None => {
                        let child = self.new_node(mount, dir, NodeKind::Dir(BTreeMap::new()), self.start_ns);
                        self.insert_child(dir, component, child);
                        child
                    }
                };
            }
        }
        Ok(mount)
    }

    /// Adds an empty writable mount at `guest_path` (such as `/output`). Returns the mount's index
    /// (its `dev`).
    pub fn add_writable_mount(&mut self, guest_path: &str) -> Result<usize, MountError> {
        self.check_mount_path(guest_path)?;
        let mount = self.mounts.len();
        let root = self.new_root(mount);
        self.mounts.push(Mount { guest_path: guest_path.to_string(), root, writable: true });
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
                None if parsed.trailing_slash => return Err(Errno::Isdir.into()),
                None if options.directory => return Err(Errno::Inval.into()),
                None => self.create(parent, name, NodeKind::File(FileData::default()), now)?,
            },
        };
        match self.kind(node)? {
            FileKind::Directory => {
                // Write rights on a directory are ignored (some guests ask for every right when
                // opening anything); only a truncation is refused.
                if options.truncate {
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
        let n = self.node(node).ok_or(Errno::Badf)?;
        if !matches!(n.kind, NodeKind::File(_)) {
            return Err(Errno::Isdir.into());
        }
        if !self.is_writable(node)? {
            return Err(Errno::Rofs.into());
        }
        let old_size = n.size();
        self.check_resize(n, size)?;
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
        let old = parse_path(old_path)?;
        let new = parse_path(new_path)?;
        let (old_parent, old_name) = match self.last(old_base, &old)? {
            Last::Dots(_) => return Err(Errno::Inval),
            Last::Name { parent, name } => (parent, name),
        };
        let (new_parent, new_name) = match self.last(new_base, &new)? {
            Last::Dots(_) => return Err(Errno::Inval),
            Last::Name { parent, name } => (parent, name),
        };
        let source = self.child(old_parent, old_name)?.ok_or(Errno::Noent)?;
        let old_mount = self.node(old_parent).ok_or(Errno::Badf)?.mount;
        let new_mount = self.node(new_parent).ok_or(Errno::Badf)?.mount;
        if old_mount != new_mount {
            return Err(Errno::Xdev);
        }
        if !self.is_writable(old_parent)? {
            return Err(Errno::Rofs);
        }
        let source_kind = self.kind(source)?;
        if source_kind == FileKind::RegularFile && (old.trailing_slash || new.trailing_slash) {
            return Err(Errno::Notdir);
        }
        let target = self.child(new_parent, new_name)?;
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
        if source_kind == FileKind::Directory {
            // A directory cannot move into itself or below itself.
            let mut cursor = Some(new_parent);
            while let Some(dir) = cursor {
                if dir == source {
                    return Err(Errno::Inval);
                }
                cursor = self.node(dir).and_then(|n| n.parent);
            }
        }
        if !self.node(new_parent).is_some_and(|n| n.linked) {
            return Err(Errno::Noent);
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
        Ok(())
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

    /// The child `name` of directory `dir`, if any (`ENOTDIR` if `dir` is a file).
    fn child(&self, dir: NodeId, name: &str) -> Result<Option<NodeId>, Errno> {
        Ok(self.children(dir).ok_or(Errno::Notdir)?.get(name).copied())
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
        if path != "/" && path.split('/').skip(1).any(|c| c.is_empty() || c == "." || c == ".." || c.len() > MAX_NAME_LEN) {
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
        self.nodes.push(Some(Node { ino, mount, parent, linked: true, is_root: false, open: 0, atim: now, mtim: now, ctim: now, kind }));
        id
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
        if self.output_files_created >= self.output_files_limit {
            return Err(FsError::Limit(LimitExceeded { limit: LimitKind::OutputFiles, value: self.output_files_limit }));
        }
        self.output_files_created += 1;
        let node = self.new_node(mount, parent, kind, now);
        self.insert_child(parent, name, node);
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

/// Splits a guest path and applies the checks that do not need the tree.
fn parse_path(path: &str) -> Result<ParsedPath<'_>, Errno> {
    if path.is_empty() {
        return Err(Errno::Noent);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(Errno::Nametoolong);
    }
    if path.starts_with('/') {
        // Absolute paths would name the host's root: wasmtime-wasi's preopens refuse them with
        // EPERM too. (wasi-libc turns a guest's absolute paths into preopen-relative ones.)
        return Err(Errno::Perm);
    }
    if path.contains('\0') {
        return Err(Errno::Inval);
    }
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if components.iter().any(|c| c.len() > MAX_NAME_LEN) {
        return Err(Errno::Nametoolong);
    }
    Ok(ParsedPath { components, trailing_slash: path.ends_with('/') })
}

/// Checks that an input file's path is a plain relative path.
fn check_relative_file_path(path: &str) -> Result<(), MountError> {
    let bad = |reason| Err(MountError::BadFilePath { path: path.to_string(), reason });
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.len() > MAX_PATH_LEN {
        return bad("it is too long");
    }
    if path.contains('\0') {
        return bad("it contains NUL");
    }
    if path.starts_with('/') {
        return bad("it must be relative");
    }
    for component in path.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return bad("it has an empty, `.` or `..` component");
        }
        if component.len() > MAX_NAME_LEN {
            return bad("a component is too long");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600_000_000_000;

    fn bytes(b: &[u8]) -> Arc<[u8]> {
        Arc::from(b)
    }

    fn inputs() -> Vec<(String, Arc<[u8]>)> {
        // Deliberately unsorted: the result must not depend on the order given.
        vec![
            ("zeta.txt".into(), bytes(b"zeta zeta")),
            ("sub/deeper/c.bin".into(), bytes(&[0, 1, 2, 255])),
            ("a.txt".into(), bytes(b"alpha")),
            ("sub/b.txt".into(), bytes(b"bravo")),
        ]
    }

    /// A filesystem with `/input` (mount 0) and `/output` (mount 1).
    fn fs(output_bytes: u64, output_files: u64) -> (Vfs, NodeId, NodeId) {
        let mut vfs = Vfs::new(T0, output_bytes, output_files);
        let input = vfs.add_read_only_mount("/input", inputs()).unwrap();
        let output = vfs.add_writable_mount("/output").unwrap();
        let (i, o) = (vfs.mount_root(input).unwrap(), vfs.mount_root(output).unwrap());
        (vfs, i, o)
    }

    fn names(vfs: &Vfs, dir: NodeId) -> Vec<String> {
        vfs.read_dir(dir, 0).unwrap().map(|e| e.name.to_string()).collect()
    }

    fn write_file(vfs: &mut Vfs, dir: NodeId, path: &str, data: &[u8]) -> Result<NodeId, FsError> {
        let node = vfs.open(dir, path, OpenOptions { create: true, truncate: true, write: true, ..Default::default() }, T0 + 5)?;
        vfs.write_at(node, 0, data, T0 + 5)?;
        vfs.release(node);
        Ok(node)
    }

    #[test]
    fn errno_numbers_match_the_witx() {
        // Positions in the witx `errno` enum.
        let expected = [
            (Errno::Success, 0),
            (Errno::TooBig, 1),
            (Errno::Acces, 2),
            (Errno::Badf, 8),
            (Errno::Busy, 10),
            (Errno::Exist, 20),
            (Errno::Fault, 21),
            (Errno::Fbig, 22),
            (Errno::Ilseq, 25),
            (Errno::Inval, 28),
            (Errno::Io, 29),
            (Errno::Isdir, 31),
            (Errno::Mfile, 33),
            (Errno::Nametoolong, 37),
            (Errno::Noent, 44),
            (Errno::Nomem, 48),
            (Errno::Nospc, 51),
            (Errno::Notdir, 54),
            (Errno::Notempty, 55),
            (Errno::Notsup, 58),
            (Errno::Overflow, 61),
            (Errno::Perm, 63),
            (Errno::Rofs, 69),
            (Errno::Spipe, 70),
            (Errno::Xdev, 75),
            (Errno::Notcapable, 76),
        ];
        for (errno, number) in expected {
            assert_eq!(errno.raw(), number, "{errno:?}");
        }
    }

    #[test]
    fn inputs_are_mounted_with_deterministic_metadata() {
        let (vfs, input, output) = fs(1 << 20, 100);
        assert_eq!(names(&vfs, input), [".", "..", "a.txt", "sub", "zeta.txt"]);
        let sub = vfs.lookup(input, "sub").unwrap();
        assert_eq!(names(&vfs, sub), [".", "..", "b.txt", "deeper"]);
        // Inodes in sorted-path order: root 1, a.txt 2, sub 3, sub/b.txt 4, sub/deeper 5, c.bin 6,
        // zeta.txt 7, then the output root 8.
        let ino = |path: &str| vfs.stat(vfs.lookup(input, path).unwrap()).unwrap().ino;
        assert_eq!([ino("."), ino("a.txt"), ino("sub"), ino("sub/b.txt"), ino("sub/deeper"), ino("sub/deeper/c.bin"), ino("zeta.txt")], [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(vfs.stat(output).unwrap().ino, 8);
        let stat = vfs.stat(vfs.lookup(input, "sub/deeper/c.bin").unwrap()).unwrap();
        assert_eq!(stat, Stat { dev: 0, ino: 6, kind: FileKind::RegularFile, nlink: 1, size: 4, atim: T0, mtim: T0, ctim: T0 });
        assert_eq!(vfs.stat(output).unwrap().dev, 1);
        // The same set of files in another order gives the same filesystem.
        let mut other = Vfs::new(T0, 1 << 20, 100);
        let mut reversed = inputs();
        reversed.reverse();
        other.add_read_only_mount("/input", reversed).unwrap();
        let root = other.mount_root(0).unwrap();
        assert_eq!(other.stat(other.lookup(root, "sub/deeper/c.bin").unwrap()).unwrap(), stat);
    }

    #[test]
    fn input_bytes_are_shared_not_copied() {
        let shared = bytes(b"big input");
        let mut vfs = Vfs::new(T0, 0, 0);
        vfs.add_read_only_mount("/input", [("x".to_string(), shared.clone())]).unwrap();
        let node = vfs.lookup(vfs.mount_root(0).unwrap(), "x").unwrap();
        assert_eq!(vfs.file_bytes(node).unwrap().as_ptr(), shared.as_ptr());
    }

    #[test]
    fn bad_mounts_are_typed_errors() {
        let mut vfs = Vfs::new(T0, 0, 0);
        for path in ["", "a/../b", "/a/./b", "/abs", "a//b", "a/", "x\0y"] {
            let result = vfs.add_read_only_mount("/input", [(path.to_string(), bytes(b""))]);
            assert!(matches!(result, Err(MountError::BadFilePath { .. })), "{path:?}: {result:?}");
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(vfs.add_read_only_mount("/input", [(long, bytes(b""))]), Err(MountError::BadFilePath { .. })));
        let conflict = vfs.add_read_only_mount("/input", [("a".to_string(), bytes(b"")), ("a/b".to_string(), bytes(b""))]);
        assert_eq!(conflict, Err(MountError::Conflict { path: "a".into() }));
        assert_eq!(vfs.mount_count(), 0, "a refused mount adds nothing");
        for path in ["input", "/in/../x", "/in/", ""] {
            assert!(matches!(vfs.add_writable_mount(path), Err(MountError::BadMountPath { .. })), "{path:?}");
        }
        vfs.add_writable_mount("/output").unwrap();
        assert!(matches!(vfs.add_writable_mount("/output"), Err(MountError::DuplicateMount { .. })));
        assert!(vfs.add_read_only_mount("/input", []).is_ok());
        assert_eq!(vfs.mount_path(1), Some("/input"));
    }

    #[test]
    fn path_resolution_stays_inside_the_mount() {
        let (vfs, input, _) = fs(1 << 20, 100);
        let sub = vfs.lookup(input, "sub").unwrap();
        assert_eq!(vfs.lookup(input, "sub/./deeper/../b.txt"), vfs.lookup(input, "sub/b.txt"));
        assert_eq!(vfs.lookup(input, "sub//b.txt"), vfs.lookup(input, "sub/b.txt"));
        assert_eq!(vfs.lookup(input, "."), Ok(input));
        assert_eq!(vfs.lookup(sub, ".."), Ok(input), "`..` below the mount root is fine");
        assert_eq!(vfs.lookup(sub, "../a.txt"), vfs.lookup(input, "a.txt"));
        for escape in ["..", "../etc/passwd", "sub/../../x", "sub/deeper/../../../input"] {
            assert_eq!(vfs.lookup(input, escape), Err(Errno::Perm), "{escape}");
        }
        assert_eq!(vfs.lookup(sub, "../../x"), Err(Errno::Perm));
        assert_eq!(vfs.lookup(input, "/etc/passwd"), Err(Errno::Perm));
        assert_eq!(vfs.lookup(input, ""), Err(Errno::Noent));
        assert_eq!(vfs.lookup(input, "missing"), Err(Errno::Noent));
        assert_eq!(vfs.lookup(input, "a.txt/"), Err(Errno::Notdir));
        assert_eq!(vfs.lookup(input, "a.txt/x"), Err(Errno::Notdir));
        assert_eq!(vfs.lookup(input, "a.txt/.."), Err(Errno::Notdir));
        assert!(vfs.lookup(input, "sub/").is_ok());
        assert_eq!(vfs.lookup(input, &"x".repeat(MAX_NAME_LEN + 1)), Err(Errno::Nametoolong));
        assert_eq!(vfs.lookup(input, &"a/".repeat(MAX_PATH_LEN)), Err(Errno::Nametoolong));
        let file = vfs.lookup(input, "a.txt").unwrap();
        assert_eq!(vfs.lookup(file, "x"), Err(Errno::Notdir), "a file is no base directory");
    }

    #[test]
    fn read_only_mounts_refuse_every_change() {
        let (mut vfs, input, output) = fs(1 << 20, 100);
        let write = OpenOptions { write: true, ..Default::default() };
        let create = OpenOptions { create: true, write: true, ..Default::default() };
        assert_eq!(vfs.open(input, "a.txt", write, T0), Err(Errno::Rofs.into()));
        assert_eq!(vfs.open(input, "a.txt", OpenOptions { truncate: true, ..Default::default() }, T0), Err(Errno::Rofs.into()));
        assert_eq!(vfs.open(input, "new.txt", create, T0), Err(Errno::Rofs.into()));
        assert_eq!(vfs.create_dir(input, "d", T0), Err(Errno::Rofs.into()));
        assert_eq!(vfs.unlink_file(input, "a.txt", T0), Err(Errno::Rofs));
        assert_eq!(vfs.remove_dir(input, "sub/deeper", T0), Err(Errno::Notempty));
        assert_eq!(vfs.rename(input, "a.txt", input, "b.txt", T0), Err(Errno::Rofs));
        assert_eq!(vfs.rename(input, "a.txt", output, "a.txt", T0), Err(Errno::Xdev));
        let file = vfs.open(input, "a.txt", OpenOptions::default(), T0).unwrap();
        assert_eq!(vfs.write_at(file, 0, b"x", T0), Err(Errno::Rofs.into()));
        assert_eq!(vfs.set_size(file, 0, T0), Err(Errno::Rofs.into()));
        assert_eq!(vfs.set_times(file, Some(1), None, T0), Err(Errno::Rofs));
        let mut buf = [0u8; 16];
        let n = vfs.read_at(file, 1, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"lpha");
        assert_eq!(vfs.read_at(file, u64::MAX, &mut buf), Ok(0));
        assert_eq!(names(&vfs, input), [".", "..", "a.txt", "sub", "zeta.txt"]);
        assert_eq!(vfs.output_files_created(), 0);
    }

    #[test]
    fn files_are_created_written_renamed_and_removed() {
        let (mut vfs, _, output) = fs(1 << 20, 100);
        vfs.create_dir(output, "a", T0 + 1).unwrap();
        vfs.create_dir(output, "a/b", T0 + 2).unwrap();
        assert_eq!(vfs.create_dir(output, "a/b", T0), Err(Errno::Exist.into()));
        assert_eq!(vfs.create_dir(output, ".", T0), Err(Errno::Exist.into()));
        assert_eq!(vfs.create_dir(output, "x/y", T0), Err(Errno::Noent.into()));
        let one = write_file(&mut vfs, output, "a/b/one.txt", b"one").unwrap();
        let stat = vfs.stat(one).unwrap();
        assert_eq!((stat.size, stat.mtim, stat.ctim, stat.dev), (3, T0 + 5, T0 + 5, 1));
        let file = vfs.open(output, "a/b/one.txt", OpenOptions { write: true, ..Default::default() }, T0).unwrap();
        vfs.write_at(file, 3, b"+two", T0 + 9).unwrap();
        vfs.release(file);
        assert_eq!(vfs.stat(one).unwrap().mtim, T0 + 9);
        let exclusive = OpenOptions { create: true, exclusive: true, write: true, ..Default::default() };
        assert_eq!(vfs.open(output, "a/b/one.txt", exclusive, T0), Err(Errno::Exist.into()));
        assert_eq!(vfs.open(output, "a/b/one.txt", OpenOptions { directory: true, ..Default::default() }, T0), Err(Errno::Notdir.into()));
        assert_eq!(vfs.open(output, "new/", OpenOptions { create: true, ..Default::default() }, T0), Err(Errno::Isdir.into()));
        vfs.rename(output, "a/b/one.txt", output, "a/moved.txt", T0).unwrap();
        assert_eq!(vfs.remove_dir(output, "a/b/one.txt", T0), Err(Errno::Noent));
        write_file(&mut vfs, output, "gone.txt", b"x").unwrap();
        assert_eq!(vfs.remove_dir(output, "gone.txt", T0), Err(Errno::Notdir));
        vfs.unlink_file(output, "gone.txt", T0).unwrap();
        assert_eq!(vfs.unlink_file(output, "a", T0), Err(Errno::Isdir));
        assert_eq!(vfs.remove_dir(output, "a", T0), Err(Errno::Notempty));
        vfs.remove_dir(output, "a/b", T0).unwrap();
        assert_eq!(vfs.remove_dir(output, ".", T0), Err(Errno::Inval));
        let outputs = vfs.collect_outputs();
        assert_eq!(outputs.keys().collect::<Vec<_>>(), ["a/moved.txt"]);
        assert_eq!(outputs["a/moved.txt"], b"one+two");
        assert_eq!(vfs.output_bytes_used(), 7);
        // a, a/b, one.txt and gone.txt were created; deleting gives nothing back.
        assert_eq!(vfs.output_files_created(), 4);
        // Truncation on open and set_size.
        let node = vfs.open(output, "a/moved.txt", OpenOptions { truncate: true, write: true, ..Default::default() }, T0).unwrap();
        assert_eq!(vfs.size(node), Ok(0));
        vfs.set_size(node, 3, T0).unwrap();
        assert_eq!(vfs.file_bytes(node).unwrap(), [0, 0, 0]);
        assert_eq!(vfs.output_bytes_used(), 3);
        vfs.write_at(node, 5, b"z", T0).unwrap();
        assert_eq!(vfs.file_bytes(node).unwrap(), [0, 0, 0, 0, 0, b'z']);
        vfs.release(node);
    }

    #[test]
    fn renames_follow_posix() {
        let (mut vfs, _, output) = fs(1 << 20, 100);
        vfs.create_dir(output, "d", T0).unwrap();
        vfs.create_dir(output, "d/e", T0).unwrap();
        vfs.create_dir(output, "empty", T0).unwrap();
        write_file(&mut vfs, output, "f", b"f").unwrap();
        write_file(&mut vfs, output, "g", b"gg").unwrap();
        assert_eq!(vfs.rename(output, "d", output, "d/e/x", T0), Err(Errno::Inval));
        assert_eq!(vfs.rename(output, "d", output, "d/x", T0), Err(Errno::Inval));
        assert_eq!(vfs.rename(output, "d", output, "f", T0), Err(Errno::Notdir));
        assert_eq!(vfs.rename(output, "f", output, "d", T0), Err(Errno::Isdir));
        assert_eq!(vfs.rename(output, "empty", output, "d", T0), Err(Errno::Notempty));
        assert_eq!(vfs.rename(output, "f/", output, "h", T0), Err(Errno::Notdir));
        assert_eq!(vfs.rename(output, "missing", output, "h", T0), Err(Errno::Noent));
        assert_eq!(vfs.rename(output, ".", output, "h", T0), Err(Errno::Inval));
        vfs.rename(output, "f", output, "f", T0).unwrap();
        vfs.rename(output, "d", output, "empty", T0).unwrap();
        assert!(vfs.lookup(output, "empty/e").is_ok());
        // A file replaces a file, and the replaced bytes leave the quota.
        assert_eq!(vfs.output_bytes_used(), 3);
        vfs.rename(output, "g", output, "f", T0).unwrap();
        assert_eq!(vfs.output_bytes_used(), 2);
        assert_eq!(names(&vfs, output), [".", "..", "empty", "f"]);
        let e = vfs.lookup(output, "empty/e").unwrap();
        assert_eq!(vfs.lookup(e, "../.."), Ok(output), "parents follow the move");
    }

    #[test]
    fn unlinked_open_files_live_until_closed() {
        let (mut vfs, _, output) = fs(100, 100);
        let node = write_file(&mut vfs, output, "tmp", b"data").unwrap();
        vfs.retain(node).unwrap();
        vfs.unlink_file(output, "tmp", T0).unwrap();
        assert_eq!(vfs.stat(node).unwrap().nlink, 0);
        assert_eq!(vfs.file_bytes(node).unwrap(), b"data");
        assert_eq!(vfs.output_bytes_used(), 4, "still held");
        vfs.release(node);
        assert_eq!(vfs.stat(node), Err(Errno::Badf));
        assert_eq!(vfs.output_bytes_used(), 0);
        // A removed directory that is still open accepts no new entries.
        vfs.create_dir(output, "d", T0).unwrap();
        let dir = vfs.open(output, "d", OpenOptions::default(), T0).unwrap();
        vfs.remove_dir(output, "d", T0).unwrap();
        assert_eq!(vfs.create_dir(dir, "x", T0), Err(Errno::Noent.into()));
        assert_eq!(vfs.lookup(dir, ".."), Err(Errno::Noent));
        vfs.release(dir);
    }

    #[test]
    fn output_quotas_stop_the_job_before_allocating() {
        let (mut vfs, _, output) = fs(10, 3);
        let bytes_limit = FsError::Limit(LimitExceeded { limit: LimitKind::OutputBytes, value: 10 });
        let files_limit = FsError::Limit(LimitExceeded { limit: LimitKind::OutputFiles, value: 3 });
        let node = write_file(&mut vfs, output, "a", b"0123456789").unwrap();
        let file = vfs.open(output, "a", OpenOptions { write: true, ..Default::default() }, T0).unwrap();
        assert_eq!(vfs.write_at(file, 10, b"x", T0), Err(bytes_limit));
        assert_eq!(vfs.write_at(file, 1 << 40, b"x", T0), Err(bytes_limit));
        assert_eq!(vfs.set_size(file, 1 << 40, T0), Err(bytes_limit));
        assert_eq!(vfs.write_at(file, u64::MAX - 1, b"xyz", T0), Err(Errno::Fbig.into()));
        assert_eq!(vfs.write_at(file, u64::MAX, b"", T0), Ok(()), "an empty write changes nothing");
        assert_eq!(vfs.size(node), Ok(10));
        vfs.write_at(file, 0, b"ABCDEFGHIJ", T0).unwrap(); // overwriting within the size is fine
        assert_eq!(vfs.file_bytes(file).unwrap(), b"ABCDEFGHIJ");
        vfs.set_size(file, 4, T0).unwrap();
        vfs.release(file);
        assert_eq!(vfs.output_bytes_used(), 4);
        let b = write_file(&mut vfs, output, "b", b"012345").unwrap();
        assert_eq!(vfs.output_bytes_used(), 10);
        assert_eq!(vfs.write_at(b, 6, b"!", T0), Err(bytes_limit));
        vfs.unlink_file(output, "b", T0).unwrap();
        assert_eq!(vfs.output_bytes_used(), 4, "deleting gives bytes back");
        vfs.create_dir(output, "d", T0).unwrap();
        // Three creations so far (a, b, d): the fourth stops the job, whatever was deleted.
        assert_eq!(write_file(&mut vfs, output, "c", b""), Err(files_limit));
        assert_eq!(vfs.create_dir(output, "e", T0), Err(files_limit));
        assert_eq!(names(&vfs, output), [".", "..", "a", "d"]);
        // Reading past the quota is no write: still fine.
        assert!(vfs.lookup(output, "a").is_ok());
    }

    #[test]
    fn readdir_cookies_resume_where_they_stopped() {
        let (vfs, input, _) = fs(10, 3);
        let all: Vec<(u64, String)> = vfs.read_dir(input, 0).unwrap().map(|e| (e.next, e.name.to_string())).collect();
        assert_eq!(all, [(1, "."), (2, ".."), (3, "a.txt"), (4, "sub"), (5, "zeta.txt")].map(|(n, s)| (n, s.to_string())));
        let rest: Vec<&str> = vfs.read_dir(input, 3).unwrap().map(|e| e.name).collect();
        assert_eq!(rest, ["sub", "zeta.txt"]);
        assert_eq!(vfs.read_dir(input, u64::MAX).unwrap().count(), 0);
        let file = vfs.lookup(input, "a.txt").unwrap();
        assert!(matches!(vfs.read_dir(file, 0), Err(Errno::Notdir)));
        let dots: Vec<u64> = vfs.read_dir(input, 0).unwrap().take(2).map(|e| e.ino).collect();
        assert_eq!(dots, [1, 1], "the mount root is its own parent");
        let sub = vfs.lookup(input, "sub").unwrap();
        let kinds: Vec<FileKind> = vfs.read_dir(sub, 0).unwrap().map(|e| e.kind).collect();
        assert_eq!(kinds, [FileKind::Directory, FileKind::Directory, FileKind::RegularFile, FileKind::Directory]);
    }

    #[test]
    fn set_times_stamps_ctim_with_now() {
        let (mut vfs, _, output) = fs(10, 3);
        let node = write_file(&mut vfs, output, "a", b"x").unwrap();
        vfs.set_times(node, Some(7), None, T0 + 100).unwrap();
        let stat = vfs.stat(node).unwrap();
        assert_eq!((stat.atim, stat.mtim, stat.ctim), (7, T0 + 5, T0 + 100));
    }
}
