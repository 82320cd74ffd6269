//! The two implementations under test: the same wasm module, instantiated once over gridbox's
//! deterministic WASI and once over wasmtime-wasi with a host temporary folder, and a way to make
//! one call on either and read back its errno and results.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use gridbox_core::Digest;
use gridbox_core::wasi::random::JobRandom;
use gridbox_core::wasi::vfs::FileKind;
use gridbox_core::wasi::{self, DeterministicWasi, WasiConfig};
use wasmtime::{Config, Engine, Instance, Linker, Memory, Module, Store, Val};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use super::calls::Call;

/// The preview1 functions the sequences use, with their wasm parameter types (from the witx).
const IMPORTS: &[(&str, &str)] = &[
    ("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32"),
    ("fd_read", "i32 i32 i32 i32"),
    ("fd_write", "i32 i32 i32 i32"),
    ("fd_pread", "i32 i32 i32 i64 i32"),
    ("fd_pwrite", "i32 i32 i32 i64 i32"),
    ("fd_seek", "i32 i64 i32 i32"),
    ("fd_tell", "i32 i32"),
    ("fd_filestat_set_size", "i32 i64"),
    ("path_rename", "i32 i32 i32 i32 i32 i32"),
    ("path_unlink_file", "i32 i32 i32"),
    ("path_create_directory", "i32 i32 i32"),
    ("path_remove_directory", "i32 i32 i32"),
    ("fd_readdir", "i32 i32 i32 i64 i32"),
    ("path_filestat_get", "i32 i32 i32 i32 i32"),
    ("fd_filestat_get", "i32 i32"),
    ("fd_close", "i32"),
];

// Where the arguments and results live in the module's one page of memory.
const RESULT: usize = 0;
const FILESTAT: usize = 64;
const IOVEC: usize = 256;
const PATH_A: usize = 1024;
const PATH_B: usize = 4096;
const DATA: usize = 8192;
const DATA_MAX: usize = 8192;
const DIRENTS: usize = 16384;
const DIRENTS_LEN: usize = 32768;

/// The files of `/input`, the same on both sides.
pub(crate) const INPUT_FILES: &[(&str, &[u8])] = &[("a", b"input a"), ("d/e", b"input d/e")];

/// A module that imports the functions and exports a wrapper of each under the same name (a
/// host function sees the caller's memory only when called from wasm), and its memory.
fn module_text() -> String {
    let mut wat = String::from("(module\n");
    for (name, params) in IMPORTS {
        wat += &format!("  (import \"wasi_snapshot_preview1\" \"{name}\" (func ${name} (param {params}) (result i32)))\n");
    }
    wat += "  (memory (export \"memory\") 1)\n";
    for (name, params) in IMPORTS {
        let gets: String = (0..params.split_whitespace().count()).map(|i| format!("local.get {i} ")).collect();
        wat += &format!("  (func (export \"{name}\") (param {params}) (result i32) {gets}call ${name})\n");
    }
    wat + ")\n"
}

/// What every sequence shares: one engine (with fuel, which gridbox's WASI charges), the
/// compiled module and both linkers.
pub(crate) struct Shared {
    engine: Engine,
    module: Module,
    gridbox: Linker<DeterministicWasi>,
    host: Linker<WasiP1Ctx>,
}

impl Shared {
    pub(crate) fn new() -> Self {
        let mut config = Config::new();
        config.consume_fuel(true);
        let engine = Engine::new(&config).expect("engine");
        let module = Module::new(&engine, wat::parse_str(module_text()).expect("wat")).expect("module");
        let mut gridbox = Linker::new(&engine);
        wasi::add_to_linker(&mut gridbox, |wasi: &mut DeterministicWasi| wasi).expect("gridbox's WASI");
        let mut host = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut host, |ctx: &mut WasiP1Ctx| ctx).expect("wasmtime-wasi");
        Shared { engine, module, gridbox, host }
    }

    /// gridbox's side: `/input` (fd 3, read-only) and an empty `/output` (fd 4), quotas far
    /// above anything a sequence does.
    pub(crate) fn gridbox(&self) -> Side<DeterministicWasi> {
        let mut wasi = DeterministicWasi::new(WasiConfig {
            start_unix_ns: 1_767_225_600_000_000_000,
            stdin: Arc::from(&b""[..]),
            stdio_bytes: 1 << 20,
            output_bytes: OUTPUT_BYTES,
            output_files: 1 << 20,
            fuel_budget: FUEL,
            args: vec!["differential.wasm".into()],
            env: Vec::new(),
            random: JobRandom::new(Digest::of(b"differential"), 0, "secure"),
        });
        let files = INPUT_FILES.iter().map(|(name, bytes)| (name.to_string(), Arc::from(*bytes)));
        assert_eq!(wasi.mount_read_only("/input", files).expect("mount /input"), 3);
        assert_eq!(wasi.mount_writable("/output").expect("mount /output"), 4);
        Side::new(&self.engine, &self.gridbox, &self.module, wasi)
    }

    /// wasmtime-wasi's side: `input` (read-only, holding [`INPUT_FILES`]) preopened as fd 3 and
    /// `output` (empty, writable) as fd 4, both folders of `root`.
    pub(crate) fn host(&self, root: &Path) -> Side<WasiP1Ctx> {
        let (input, output) = (root.join("input"), root.join("output"));
        for (name, bytes) in INPUT_FILES {
            let path = input.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("input folder");
            std::fs::write(path, bytes).expect("input file");
        }
        std::fs::create_dir(&output).expect("output folder");
        let ctx = WasiCtxBuilder::new()
            // File calls run on this thread rather than hop to a blocking pool: same results, faster.
            .allow_blocking_current_thread(true)
            .preopened_dir(&input, "/input", FsPerms::ReadOnly)
            .expect("preopen /input")
            .preopened_dir(&output, "/output", FsPerms::ReadWrite)
            .expect("preopen /output")
            .build_p1();
        Side::new(&self.engine, &self.host, &self.module, ctx)
    }
}

/// gridbox's output quota: far above what a sequence writes, except through a position moved
/// far out.
pub(crate) const OUTPUT_BYTES: u64 = 1 << 30;

/// Fuel for a whole sequence: far more than it uses.
const FUEL: u64 = u64::MAX / 4;

/// What a call gave back besides its errno, when it succeeded. Only what both sides define the
/// same way is kept: no timestamps, inode or device numbers, link counts or readdir cookies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Nothing,
    /// A new descriptor (numbers may differ between the sides).
    Fd(u32),
    Count(u32),
    /// The bytes a read returned.
    Bytes(Vec<u8>),
    Position(u64),
    /// A filestat's file type, and its size for a regular file (a host folder has a size that
    /// depends on its filesystem; gridbox's are 0).
    Stat {
        filetype: u8,
        size: Option<u64>,
    },
    /// A whole listing: names and file types, sorted by name (listing order is the host's).
    Entries(Vec<(String, u8)>),
}

/// A call's errno (0 for success) and what it returned, or the trap that stopped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Done { errno: i32, value: Value },
    Trap(String),
}

impl Outcome {
    pub(crate) fn errno(&self) -> Option<i32> {
        match self {
            Outcome::Done { errno, .. } => Some(*errno),
            Outcome::Trap(_) => None,
        }
    }
}

pub(crate) const FILETYPE_DIRECTORY: u8 = 3;
pub(crate) const FILETYPE_REGULAR_FILE: u8 = 4;

/// One instance of the module with its store.
pub(crate) struct Side<T: 'static> {
    store: Store<T>,
    instance: Instance,
    memory: Memory,
}

fn i(value: usize) -> Val {
    Val::I32(value as i32)
}

fn fd(value: u32) -> Val {
    Val::I32(value as i32)
}

impl<T: 'static> Side<T> {
    fn new(engine: &Engine, linker: &Linker<T>, module: &Module, data: T) -> Self {
        let mut store = Store::new(engine, data);
        store.set_fuel(FUEL).expect("fuel");
        let instance = linker.instantiate(&mut store, module).expect("instantiate");
        let memory = instance.get_memory(&mut store, "memory").expect("memory");
        Side { store, instance, memory }
    }

    pub(crate) fn data(&self) -> &T {
        self.store.data()
    }

    /// Calls the wrapper of `name`; its errno, or the trap's message.
    fn call(&mut self, name: &str, args: &[Val]) -> Result<i32, String> {
        let func = self.instance.get_func(&mut self.store, name).expect("export");
        let mut results = [Val::I32(0)];
        func.call(&mut self.store, args, &mut results).map_err(|error| format!("{error:?}"))?;
        Ok(results[0].unwrap_i32())
    }

    fn poke(&mut self, at: usize, bytes: &[u8]) {
        self.memory.data_mut(&mut self.store)[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn peek(&self, at: usize, len: usize) -> &[u8] {
        &self.memory.data(&self.store)[at..at + len]
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.peek(at, 4).try_into().expect("4 bytes"))
    }

    fn u64_at(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.peek(at, 8).try_into().expect("8 bytes"))
    }

    /// Puts a path at `at`; its (pointer, length) arguments.
    fn path(&mut self, at: usize, path: &str) -> [Val; 2] {
        self.poke(at, path.as_bytes());
        [i(at), i(path.len())]
    }

    /// Sets up one iovec over `len` bytes at [`DATA`]; the (iovs, count) arguments.
    fn iovec(&mut self, len: usize) -> [Val; 2] {
        self.poke(IOVEC, &(DATA as u32).to_le_bytes());
        self.poke(IOVEC + 4, &(len as u32).to_le_bytes());
        [i(IOVEC), i(1)]
    }

    /// Makes `call` on this side, `gridbox` saying which fd numbers of the call are this side's.
    pub(crate) fn run(&mut self, call: &Call, gridbox: bool) -> Outcome {
        let side = |fd: super::calls::Fd| if gridbox { fd.gridbox } else { fd.host };
        // Stale results must not pass for new ones.
        self.poke(RESULT, &[0; 64]);
        self.poke(FILESTAT, &[0; 64]);
        let (name, args, value): (&str, Vec<Val>, fn(&Self) -> Value) = match call {
            Call::Open { dir, path, oflags, rights, fdflags } => {
                let [p, n] = self.path(PATH_A, path);
                let args =
                    vec![fd(side(*dir)), i(0), p, n, i(*oflags as usize), Val::I64(*rights as i64), Val::I64(*rights as i64), i(*fdflags as usize), i(RESULT)];
                ("path_open", args, |s| Value::Fd(s.u32_at(RESULT)))
            }
            Call::Read { fd: f, len } | Call::Pread { fd: f, len, .. } => {
                let len = (*len as usize).min(DATA_MAX);
                self.poke(DATA, &vec![0; len]);
                let [iovs, count] = self.iovec(len);
                let (name, mut args) = match call {
                    Call::Pread { offset, .. } => ("fd_pread", vec![fd(side(*f)), iovs, count, Val::I64(*offset as i64)]),
                    _ => ("fd_read", vec![fd(side(*f)), iovs, count]),
                };
                args.push(i(RESULT));
                (name, args, |s| Value::Bytes(s.peek(DATA, s.u32_at(RESULT) as usize).to_vec()))
            }
            Call::Write { fd: f, data } | Call::Pwrite { fd: f, data, .. } => {
                self.poke(DATA, data);
                let [iovs, count] = self.iovec(data.len());
                let (name, mut args) = match call {
                    Call::Pwrite { offset, .. } => ("fd_pwrite", vec![fd(side(*f)), iovs, count, Val::I64(*offset as i64)]),
                    _ => ("fd_write", vec![fd(side(*f)), iovs, count]),
                };
                args.push(i(RESULT));
                (name, args, |s| Value::Count(s.u32_at(RESULT)))
            }
            Call::Seek { fd: f, offset, whence } => {
                ("fd_seek", vec![fd(side(*f)), Val::I64(*offset), i(*whence as usize), i(RESULT)], |s| Value::Position(s.u64_at(RESULT)))
            }
            Call::Tell { fd: f } => ("fd_tell", vec![fd(side(*f)), i(RESULT)], |s| Value::Position(s.u64_at(RESULT))),
            Call::SetSize { fd: f, size } => ("fd_filestat_set_size", vec![fd(side(*f)), Val::I64(*size as i64)], |_| Value::Nothing),
            Call::Rename { old_dir, old, new_dir, new } => {
                let [op, on] = self.path(PATH_A, old);
                let [np, nn] = self.path(PATH_B, new);
                ("path_rename", vec![fd(side(*old_dir)), op, on, fd(side(*new_dir)), np, nn], |_| Value::Nothing)
            }
            Call::Unlink { dir, path } | Call::Mkdir { dir, path } | Call::Rmdir { dir, path } => {
                let name = match call {
                    Call::Unlink { .. } => "path_unlink_file",
                    Call::Mkdir { .. } => "path_create_directory",
                    _ => "path_remove_directory",
                };
                let [p, n] = self.path(PATH_A, path);
                (name, vec![fd(side(*dir)), p, n], |_| Value::Nothing)
            }
            Call::PathStat { dir, path } => {
                let [p, n] = self.path(PATH_A, path);
                ("path_filestat_get", vec![fd(side(*dir)), i(1), p, n, i(FILESTAT)], Self::filestat)
            }
            Call::FdStat { fd: f } => ("fd_filestat_get", vec![fd(side(*f)), i(FILESTAT)], Self::filestat),
            Call::Close { fd: f } => ("fd_close", vec![fd(side(*f))], |_| Value::Nothing),
            Call::Readdir { fd: f } => return self.readdir(side(*f)),
        };
        match self.call(name, &args) {
            Ok(0) => Outcome::Done { errno: 0, value: value(self) },
            Ok(errno) => Outcome::Done { errno, value: Value::Nothing },
            Err(trap) => Outcome::Trap(trap),
        }
    }

    fn filestat(&self) -> Value {
        let filetype = self.peek(FILESTAT + 16, 1)[0];
        let size = (filetype == FILETYPE_REGULAR_FILE).then(|| self.u64_at(FILESTAT + 32));
        Value::Stat { filetype, size }
    }

    /// Lists directory `dir` whole: calls `fd_readdir` from cookie 0, and again from the last
    /// entry read whole while the buffer comes back full.
    fn readdir(&mut self, dir: u32) -> Outcome {
        let mut entries = Vec::new();
        let mut cookie = 0u64;
        for _ in 0..64 {
            let args = [fd(dir), i(DIRENTS), i(DIRENTS_LEN), Val::I64(cookie as i64), i(RESULT)];
            match self.call("fd_readdir", &args) {
                Ok(0) => {}
                Ok(errno) => return Outcome::Done { errno, value: Value::Nothing },
                Err(trap) => return Outcome::Trap(trap),
            }
            let used = self.u32_at(RESULT) as usize;
            let buffer = self.peek(DIRENTS, used).to_vec();
            let mut at = 0;
            while at + 24 <= buffer.len() {
                let name_len = u32::from_le_bytes(buffer[at + 16..at + 20].try_into().expect("4 bytes")) as usize;
                let Some(name) = buffer.get(at + 24..at + 24 + name_len) else { break };
                cookie = u64::from_le_bytes(buffer[at..at + 8].try_into().expect("8 bytes"));
                entries.push((String::from_utf8_lossy(name).into_owned(), buffer[at + 20]));
                at += 24 + name_len;
            }
            if used < DIRENTS_LEN {
                entries.sort();
                return Outcome::Done { errno: 0, value: Value::Entries(entries) };
            }
        }
        Outcome::Trap("fd_readdir never reached the end of the listing".into())
    }
}

/// A folder tree: every path below the root, and what is there.
pub(crate) type Tree = BTreeMap<String, Node>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Dir,
    File(Vec<u8>),
}

/// gridbox's `/output` tree, read from its filesystem.
pub(crate) fn gridbox_tree(wasi: &DeterministicWasi) -> Tree {
    let vfs = wasi.vfs();
    let root = vfs.mount_root(1).expect("/output is the second mount");
    let mut tree = Tree::new();
    let mut pending = vec![(root, String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        // Skip `.` and `..`.
        let entries: Vec<(String, FileKind)> = vfs.read_dir(dir, 2).expect("directory").map(|e| (e.name.to_string(), e.kind)).collect();
        for (name, kind) in entries {
            let node = vfs.lookup(dir, &name).expect("listed name");
            let path = format!("{prefix}{name}");
            match kind {
                FileKind::Directory => {
                    tree.insert(path.clone(), Node::Dir);
                    pending.push((node, format!("{path}/")));
                }
                FileKind::RegularFile => {
                    tree.insert(path, Node::File(vfs.file_bytes(node).expect("file").to_vec()));
                }
            }
        }
    }
    tree
}

/// The host's tree under `root`.
pub(crate) fn host_tree(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut pending = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let name = entry.file_name().into_string().expect("UTF-8 name");
            let path = format!("{prefix}{name}");
            if entry.file_type().expect("file type").is_dir() {
                tree.insert(path.clone(), Node::Dir);
                pending.push((entry.path(), format!("{path}/")));
            } else {
                tree.insert(path, Node::File(std::fs::read(entry.path()).expect("read")));
            }
        }
    }
    tree
}
