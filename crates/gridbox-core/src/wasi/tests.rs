//! Tests of the preview1 functions through real wasm calls: hostile arguments, limits, clocks.

use std::sync::Arc;

use wasmtime::Linker;

use super::*;
use crate::limits::{LimitExceeded, LimitKind};
use wasmtime::{Config, Engine, Instance, Memory, Module, Store, Val};

const T0: u64 = 1_767_225_600_000_000_000;
const FUEL: u64 = 10_000_000_000;
const ENOTSUP: i32 = 58;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const EISDIR: i32 = 31;
const EMFILE: i32 = 33;
const ENAMETOOLONG: i32 = 37;
const ENOENT: i32 = 44;
const ENOTDIR: i32 = 54;
const EPERM: i32 = 63;
const EROFS: i32 = 69;
const ESPIPE: i32 = 70;
const EXDEV: i32 = 75;
const EEXIST: i32 = 20;

/// Every shadowed function with its wasm parameter types, written from the witx. A module
/// importing them all instantiates only if `add_to_linker` defines them with these types.
const SIGNATURES: &[(&str, &str)] = &[
    ("fd_advise", "i32 i64 i64 i32"),
    ("fd_allocate", "i32 i64 i64"),
    ("fd_close", "i32"),
    ("fd_datasync", "i32"),
    ("fd_fdstat_get", "i32 i32"),
    ("fd_fdstat_set_flags", "i32 i32"),
    ("fd_fdstat_set_rights", "i32 i64 i64"),
    ("fd_filestat_get", "i32 i32"),
    ("fd_filestat_set_size", "i32 i64"),
    ("fd_filestat_set_times", "i32 i64 i64 i32"),
    ("fd_pread", "i32 i32 i32 i64 i32"),
    ("fd_prestat_get", "i32 i32"),
    ("fd_prestat_dir_name", "i32 i32 i32"),
    ("fd_pwrite", "i32 i32 i32 i64 i32"),
    ("fd_read", "i32 i32 i32 i32"),
    ("fd_readdir", "i32 i32 i32 i64 i32"),
    ("fd_renumber", "i32 i32"),
    ("fd_seek", "i32 i64 i32 i32"),
    ("fd_sync", "i32"),
    ("fd_tell", "i32 i32"),
    ("fd_write", "i32 i32 i32 i32"),
    ("path_create_directory", "i32 i32 i32"),
    ("path_filestat_get", "i32 i32 i32 i32 i32"),
    ("path_filestat_set_times", "i32 i32 i32 i32 i64 i64 i32"),
    ("path_link", "i32 i32 i32 i32 i32 i32 i32"),
    ("path_open", "i32 i32 i32 i32 i32 i64 i64 i32 i32"),
    ("path_readlink", "i32 i32 i32 i32 i32 i32"),
    ("path_remove_directory", "i32 i32 i32"),
    ("path_rename", "i32 i32 i32 i32 i32 i32"),
    ("path_symlink", "i32 i32 i32 i32 i32"),
    ("path_unlink_file", "i32 i32 i32"),
    ("poll_oneoff", "i32 i32 i32 i32"),
    ("args_get", "i32 i32"),
    ("args_sizes_get", "i32 i32"),
    ("environ_get", "i32 i32"),
    ("environ_sizes_get", "i32 i32"),
    ("proc_exit", "i32"),
    ("proc_raise", "i32"),
    ("sched_yield", ""),
    ("random_get", "i32 i32"),
    ("clock_res_get", "i32 i32"),
    ("clock_time_get", "i32 i64 i32"),
];

/// A module that imports every function and exports a wrapper of the same name (host
/// functions must be called from wasm to see the caller's memory), a 10-page memory and
/// `burn`, which spends fuel. `proc_exit` returns nothing, as in the witx.
fn test_module() -> String {
    let result = |name: &str| if name == "proc_exit" { "" } else { "(result i32)" };
    let mut wat = String::from("(module\n");
    for (name, params) in SIGNATURES {
        wat += &format!("  (import \"wasi_snapshot_preview1\" \"{name}\" (func ${name} (param {params}) {}))\n", result(name));
    }
    wat += "  (memory (export \"memory\") 10)\n";
    for (name, params) in SIGNATURES {
        let gets: String = (0..params.split_whitespace().count()).map(|i| format!("local.get {i} ")).collect();
        wat += &format!("  (func (export \"{name}\") (param {params}) {} {gets} call ${name})\n", result(name));
    }
    wat += "  (func (export \"burn\") (param $n i32) (result i32) (loop $l local.get $n i32.const 1 i32.sub local.tee $n br_if $l) i32.const 0)\n";
    wat + ")\n"
}

struct TestState {
    det: DeterministicWasi,
}

fn config() -> WasiConfig {
    WasiConfig {
        start_unix_ns: T0,
        stdin: Arc::from(&b"hello stdin"[..]),
        stdio_bytes: 1 << 20,
        output_bytes: 1 << 20,
        output_files: 100,
        fuel_budget: FUEL,
        args: vec!["job.wasm".into(), "--flag".into()],
        env: vec![("A".into(), "1".into()), ("LANG".into(), "C".into())],
        random: super::random::JobRandom::new(crate::Digest::of(b"test job"), 0, "secure"),
    }
}

fn engine() -> Engine {
    let mut config = Config::new();
    config.consume_fuel(true);
    Engine::new(&config).expect("engine")
}

fn linker(engine: &Engine) -> Linker<TestState> {
    let mut linker = Linker::new(engine);
    add_to_linker(&mut linker, |s: &mut TestState| &mut s.det).expect("define");
    linker
}

fn store(engine: &Engine, config: WasiConfig) -> Store<TestState> {
    let mut det = DeterministicWasi::new(config);
    let inputs = [("a.txt", &b"alpha"[..]), ("sub/b.txt", b"bravo"), ("zeta.txt", b"zeta")];
    assert_eq!(det.mount_read_only("/input", inputs.map(|(n, b)| (n.to_string(), Arc::from(b)))).unwrap(), 3);
    assert_eq!(det.mount_writable("/output").unwrap(), 4);
    let mut store = Store::new(engine, TestState { det });
    store.set_fuel(FUEL).expect("fuel");
    store
}

struct Harness {
    store: Store<TestState>,
    instance: Instance,
    memory: Memory,
}

fn i(value: i32) -> Val {
    Val::I32(value)
}

fn l(value: i64) -> Val {
    Val::I64(value)
}

impl Harness {
    fn new() -> Self {
        Self::with(config())
    }

    fn with(config: WasiConfig) -> Self {
        let engine = engine();
        let module = Module::new(&engine, wat::parse_str(test_module()).expect("wat")).expect("module");
        let mut store = store(&engine, config);
        let instance = linker(&engine).instantiate(&mut store, &module).expect("instantiate");
        let memory = instance.get_memory(&mut store, "memory").expect("memory");
        Harness { store, instance, memory }
    }

    fn call(&mut self, name: &str, args: &[Val]) -> wasmtime::Result<i32> {
        let func = self.instance.get_func(&mut self.store, name).expect("export");
        let mut results = vec![Val::I32(0); func.ty(&self.store).results().len()];
        func.call(&mut self.store, args, &mut results)?;
        Ok(results.first().map_or(0, Val::unwrap_i32))
    }

    /// Calls `name` and returns its errno; panics on a trap.
    fn errno(&mut self, name: &str, args: &[Val]) -> i32 {
        self.call(name, args).unwrap_or_else(|e| panic!("{name} trapped: {e:?}"))
    }

    fn trap(&mut self, name: &str, args: &[Val]) -> wasmtime::Error {
        match self.call(name, args) {
            Ok(errno) => panic!("{name} returned {errno} instead of trapping"),
            Err(error) => error,
        }
    }

    fn poke(&mut self, at: usize, bytes: &[u8]) {
        self.memory.data_mut(&mut self.store)[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn peek(&self, at: usize, len: usize) -> Vec<u8> {
        self.memory.data(&self.store)[at..at + len].to_vec()
    }

    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.peek(at, 4).try_into().unwrap())
    }

    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.peek(at, 8).try_into().unwrap())
    }

    /// Puts `text` at `at` and returns (pointer, length) arguments.
    fn text(&mut self, at: usize, text: &str) -> [Val; 2] {
        self.poke(at, text.as_bytes());
        [i(at as i32), i(text.len() as i32)]
    }

    /// Puts one iovec at `at` pointing to `data` placed at `at + 8`; returns (iovs, 1).
    fn iovec(&mut self, at: usize, data: &[u8]) -> [Val; 2] {
        let buf = at + 8;
        self.poke(at, &(buf as u32).to_le_bytes());
        self.poke(at + 4, &(data.len() as u32).to_le_bytes());
        self.poke(buf, data);
        [i(at as i32), i(1)]
    }

    fn det(&self) -> &DeterministicWasi {
        &self.store.data().det
    }

    /// Opens `path` under `dir_fd` and returns the new fd.
    fn open(&mut self, dir_fd: i32, path: &str, oflags: i32, rights: i64, fdflags: i32) -> Result<i32, i32> {
        let [p, n] = self.text(1000, path);
        let errno = self.errno("path_open", &[i(dir_fd), i(0), p, n, i(oflags), l(rights), l(rights), i(fdflags), i(900)]);
        if errno == 0 { Ok(self.u32(900) as i32) } else { Err(errno) }
    }

    fn write(&mut self, fd: i32, data: &[u8]) -> i32 {
        let [iovs, count] = self.iovec(2000, data);
        self.errno("fd_write", &[i(fd), iovs, count, i(904)])
    }

    fn now(&mut self, clock: i32) -> u64 {
        assert_eq!(self.errno("clock_time_get", &[i(clock), l(0), i(800)]), 0);
        self.u64(800)
    }
}

const READ: i64 = abi::RIGHTS_FD_READ as i64 | abi::RIGHTS_FD_SEEK as i64 | abi::RIGHTS_FD_READDIR as i64;
const WRITE: i64 = abi::RIGHTS_FD_WRITE as i64;
const CREAT: i32 = abi::OFLAGS_CREAT as i32;
const TRUNC: i32 = abi::OFLAGS_TRUNC as i32;
const EXCL: i32 = abi::OFLAGS_EXCL as i32;
const DIRECTORY: i32 = abi::OFLAGS_DIRECTORY as i32;

#[test]
fn every_function_is_defined_with_the_witx_signature() {
    let mut names: Vec<&str> = SIGNATURES.iter().map(|(n, _)| *n).collect();
    // The list the code makes agrees with the witx, name for name and type for type.
    for (name, types, returns) in super::SIGNATURES {
        let written = SIGNATURES.iter().find(|(n, _)| n == name).map(|(_, t)| *t);
        assert_eq!(written, Some(types.trim()), "{name}");
        assert_eq!(*returns, *name != "proc_exit", "{name}");
    }
    let mut defined = FUNCTIONS.to_vec();
    names.sort();
    defined.sort();
    assert_eq!(names, defined);
    // Instantiating checks the types.
    let mut h = Harness::new();
    assert_eq!(h.write(1, b"captured"), 0);
    assert_eq!(h.u32(904), 8);
    assert_eq!(h.det().stdout(), b"captured");
    assert_eq!(h.errno("random_get", &[i(0), i(16)]), 0);
}

#[test]
fn stdio_reads_and_writes_memory_buffers() {
    let mut h = Harness::new();
    assert_eq!(h.write(2, b"to stderr"), 0);
    assert_eq!(h.det().stderr(), b"to stderr");
    // Two iovecs: 5 bytes then 100.
    h.poke(3000, &[0x1c, 0x0c, 0, 0, 5, 0, 0, 0, 0x80, 0x0c, 0, 0, 100, 0, 0, 0]);
    assert_eq!(h.errno("fd_read", &[i(0), i(3000), i(2), i(904)]), 0);
    assert_eq!(h.u32(904), 11);
    assert_eq!(h.peek(0x0c1c, 5), b"hello");
    assert_eq!(h.peek(0x0c80, 6), b" stdin");
    assert_eq!(h.errno("fd_read", &[i(0), i(3000), i(2), i(904)]), 0);
    assert_eq!(h.u32(904), 0, "end of file");
    assert_eq!(h.errno("fd_read", &[i(1), i(3000), i(2), i(904)]), EBADF);
    assert_eq!(h.errno("fd_seek", &[i(1), l(0), i(0), i(904)]), ESPIPE);
    assert_eq!(h.errno("fd_pwrite", &[i(1), i(3000), i(1), l(0), i(904)]), ESPIPE);
    // Stdio is no terminal, and it has no filesystem metadata.
    assert_eq!(h.errno("fd_fdstat_get", &[i(1), i(800)]), 0);
    assert_eq!(h.peek(800, 1), [abi::FILETYPE_UNKNOWN]);
    assert_eq!(h.u64(808), abi::RIGHTS_FD_WRITE);
    assert_eq!(h.errno("fd_filestat_get", &[i(0), i(800)]), 0);
    assert_eq!(h.peek(800, 64), [0; 64]);
}

#[test]
fn stdio_limit_refuses_the_whole_write_and_traps() {
    let mut h = Harness::with(WasiConfig { stdio_bytes: 10, ..config() });
    assert_eq!(h.write(1, b"12345"), 0);
    assert_eq!(h.write(2, b"1234"), 0);
    let [iovs, count] = h.iovec(2000, b"ab");
    let error = h.trap("fd_write", &[i(1), iovs, count, i(904)]);
    assert_eq!(error.downcast_ref::<LimitExceeded>(), Some(&LimitExceeded { limit: LimitKind::StdioBytes, value: 10 }));
    assert_eq!(h.det().stdout(), b"12345", "nothing of the refused write is kept");
}

#[test]
fn hostile_pointers_and_lengths_are_efault_never_panics() {
    let mut h = Harness::new();
    let end = 10 * 65536;
    // The iovec array itself past the end, or wrapping around.
    assert_eq!(h.errno("fd_write", &[i(1), i(end - 4), i(1), i(904)]), EFAULT);
    assert_eq!(h.errno("fd_write", &[i(1), i(-1), i(1), i(904)]), EFAULT);
    assert_eq!(h.errno("fd_read", &[i(0), i(0), i(i32::MAX), i(904)]), EFAULT);
    assert_eq!(h.errno("fd_write", &[i(1), i(0), i(-1), i(904)]), EFAULT, "a huge iovec count");
    // An iovec whose buffer is past the end.
    h.poke(0, &[0xff, 0xff, 0xff, 0xff, 16, 0, 0, 0]);
    assert_eq!(h.errno("fd_write", &[i(1), i(0), i(1), i(904)]), EFAULT);
    h.poke(0, &((end - 8) as u32).to_le_bytes());
    assert_eq!(h.errno("fd_read", &[i(0), i(0), i(1), i(904)]), EFAULT);
    assert_eq!(h.det().stdout(), b"", "a faulting write writes nothing");
    // Result pointers past the end.
    let [iovs, count] = h.iovec(2000, b"x");
    assert_eq!(h.errno("fd_write", &[i(1), iovs, count, i(end - 2)]), EFAULT);
    assert_eq!(h.errno("fd_read", &[i(0), iovs, count, i(-4)]), EFAULT);
    assert_eq!(h.errno("clock_time_get", &[i(0), l(0), i(end - 7)]), EFAULT);
    assert_eq!(h.errno("fd_fdstat_get", &[i(3), i(end - 23)]), EFAULT);
    assert_eq!(h.errno("fd_filestat_get", &[i(3), i(end - 63)]), EFAULT);
    assert_eq!(h.errno("fd_prestat_dir_name", &[i(3), i(end - 2), i(100)]), EFAULT);
    // Paths past the end of memory, or wrapping.
    assert_eq!(h.errno("path_open", &[i(3), i(0), i(end - 3), i(10), i(0), l(0), l(0), i(0), i(900)]), EFAULT);
    assert_eq!(h.errno("path_filestat_get", &[i(3), i(0), i(-1), i(2), i(800)]), EFAULT);
    assert_eq!(h.errno("path_create_directory", &[i(4), i(0), i(-1)]), EFAULT);
    let [p, n] = h.text(1000, "x");
    assert_eq!(h.errno("path_rename", &[i(4), p, n, i(4), i(end), i(1)]), EFAULT);
    // A path that is not UTF-8.
    h.poke(100, &[0xff, 0xfe]);
    assert_eq!(h.errno("path_create_directory", &[i(4), i(100), i(2)]), 25);
    // Descriptors that were never opened.
    for fd in [5, 99, -1, i32::MAX] {
        assert_eq!(h.errno("fd_write", &[i(fd), i(2000), i(1), i(904)]), EBADF, "{fd}");
        assert_eq!(h.errno("fd_close", &[i(fd)]), EBADF);
        assert_eq!(h.errno("fd_seek", &[i(fd), l(0), i(0), i(904)]), EBADF);
        assert_eq!(h.errno("fd_prestat_get", &[i(fd), i(800)]), EBADF);
        assert_eq!(h.errno("fd_readdir", &[i(fd), i(0), i(100), l(0), i(904)]), EBADF);
        assert_eq!(h.errno("path_open", &[i(fd), i(0), i(1000), i(1), i(0), l(0), l(0), i(0), i(900)]), EBADF);
        assert_eq!(h.errno("fd_renumber", &[i(fd), i(1)]), EBADF);
    }
    // Unknown flag bits and clocks.
    assert_eq!(h.errno("clock_time_get", &[i(4), l(0), i(800)]), EINVAL);
    assert_eq!(h.errno("clock_res_get", &[i(-1), i(800)]), EINVAL);
    assert_eq!(h.errno("path_open", &[i(4), i(0), i(1000), i(1), i(0x100), l(0), l(0), i(0), i(900)]), EINVAL);
    // 65,537 iovecs that all cover the same 64 KiB: more than 4 GiB in total. Refused
    // without allocating anything of that size.
    for index in 0..65_537usize {
        h.poke(65_536 + index * 8, &[0, 0, 0, 0, 0, 0, 1, 0]);
    }
    assert_eq!(h.errno("fd_write", &[i(1), i(65_536), i(65_537), i(904)]), EINVAL);
    let file = h.open(4, "big", CREAT, WRITE, 0).unwrap();
    assert_eq!(h.errno("fd_write", &[i(file), i(65_536), i(65_537), i(904)]), EINVAL);
    assert_eq!(h.det().vfs().output_bytes_used(), 0);
}

#[test]
fn writes_far_past_the_end_are_refused_before_allocating() {
    let mut h = Harness::with(WasiConfig { output_bytes: 1000, ..config() });
    let fd = h.open(4, "f", CREAT, READ | WRITE, 0).unwrap();
    let [iovs, count] = h.iovec(2000, b"abc");
    // An offset that is negative as an off_t, or a range that would end past i64::MAX, is
    // EINVAL (as in Linux, under wasmtime-wasi).
    assert_eq!(h.errno("fd_pwrite", &[i(fd), iovs, count, l(-2), i(904)]), EINVAL);
    assert_eq!(h.errno("fd_pwrite", &[i(fd), iovs, count, l(i64::MAX), i(904)]), EINVAL);
    assert_eq!(h.det().vfs().output_bytes_used(), 0);
    let error = h.trap("fd_pwrite", &[i(fd), iovs, count, l(1 << 40), i(904)]);
    assert_eq!(error.downcast_ref::<LimitExceeded>(), Some(&LimitExceeded { limit: LimitKind::OutputBytes, value: 1000 }));
    assert_eq!(h.det().vfs().output_bytes_used(), 0);
}

/// File offsets are off_t, truncating needs write access, and O_DIRECTORY only opens: the
/// answers of Linux under wasmtime-wasi. Found by tests/wasi_differential.rs.
#[test]
fn offsets_truncation_and_open_flags_answer_as_linux_does() {
    let mut h = Harness::new();
    let writer = h.open(4, "f", CREAT, WRITE, 0).unwrap();
    assert_eq!(h.write(writer, b"abc"), 0);
    let reader = h.open(4, "f", 0, READ, 0).unwrap();
    let [iovs, count] = h.iovec(2000, b"xyz");
    // An offset above i64::MAX is negative as an off_t: EINVAL, even before the access.
    for offset in [-1, i64::MIN] {
        assert_eq!(h.errno("fd_pread", &[i(reader), iovs, count, l(offset), i(904)]), EINVAL);
        assert_eq!(h.errno("fd_pread", &[i(writer), iovs, count, l(offset), i(904)]), EINVAL);
        assert_eq!(h.errno("fd_pwrite", &[i(reader), iovs, count, l(offset), i(904)]), EINVAL);
    }
    // A range ending past i64::MAX: EINVAL after the access; at i64::MAX itself, end of file.
    assert_eq!(h.errno("fd_pread", &[i(writer), iovs, count, l(i64::MAX), i(904)]), EBADF);
    assert_eq!(h.errno("fd_pread", &[i(reader), iovs, count, l(i64::MAX), i(904)]), EINVAL);
    assert_eq!(h.errno("fd_pread", &[i(reader), iovs, i(0), l(i64::MAX), i(904)]), 0);
    // fd_read and fd_write use the position the same way.
    assert_eq!(h.errno("fd_seek", &[i(reader), l(i64::MAX), i(0), i(800)]), 0);
    assert_eq!(h.errno("fd_seek", &[i(reader), l(1), i(1), i(800)]), 0);
    assert_eq!(h.errno("fd_read", &[i(reader), iovs, count, i(904)]), EINVAL);
    assert_eq!(h.errno("fd_seek", &[i(writer), l(i64::MAX - 1), i(0), i(800)]), 0);
    assert_eq!(h.write(writer, b"xyz"), EINVAL);
    // ftruncate: EINVAL for a file not open for writing and for a negative size.
    assert_eq!(h.errno("fd_filestat_set_size", &[i(reader), l(1)]), EINVAL);
    assert_eq!(h.errno("fd_filestat_set_size", &[i(writer), l(-1)]), EINVAL);
    assert_eq!(h.errno("fd_filestat_set_size", &[i(4), l(1)]), EBADF);
    assert_eq!(h.det().vfs().output_bytes_used(), 3, "nothing refused changed the file");
    // O_DIRECTORY with O_CREAT, O_EXCL or O_TRUNC is EINVAL, whether the path exists or not.
    let [p, n] = h.text(1000, "d");
    assert_eq!(h.errno("path_create_directory", &[i(4), p, n]), 0);
    for oflags in [DIRECTORY | CREAT, DIRECTORY | EXCL, DIRECTORY | TRUNC] {
        assert_eq!(h.open(4, "d", oflags, READ, 0), Err(EINVAL));
        assert_eq!(h.open(4, "missing", oflags, READ, 0), Err(EINVAL));
    }
    // O_CREAT on a directory is EISDIR.
    assert_eq!(h.open(4, "d", CREAT, READ, 0), Err(EISDIR));
    assert!(h.open(4, "d", DIRECTORY, READ, 0).is_ok());
}

#[test]
fn files_can_be_created_written_seeked_and_read_back() {
    let mut h = Harness::new();
    let fd = h.open(4, "notes.txt", CREAT | EXCL, READ | WRITE, 0).unwrap();
    assert_eq!(fd, 5, "lowest free descriptor");
    assert_eq!(h.open(4, "notes.txt", CREAT | EXCL, READ, 0), Err(EEXIST));
    assert_eq!(h.write(fd, b"hello world"), 0);
    assert_eq!(h.errno("fd_tell", &[i(fd), i(800)]), 0);
    assert_eq!(h.u64(800), 11);
    assert_eq!(h.errno("fd_seek", &[i(fd), l(-5), i(1), i(800)]), 0);
    assert_eq!(h.u64(800), 6);
    assert_eq!(h.errno("fd_seek", &[i(fd), l(-100), i(1), i(800)]), EINVAL);
    assert_eq!(h.errno("fd_seek", &[i(fd), l(-1), i(0), i(800)]), EINVAL);
    assert_eq!(h.errno("fd_seek", &[i(fd), l(0), i(3), i(800)]), EINVAL);
    assert_eq!(h.errno("fd_seek", &[i(fd), l(-2), i(2), i(800)]), 0);
    assert_eq!(h.u64(800), 9);
    let [iovs, count] = h.iovec(2000, &[0; 16]);
    assert_eq!(h.errno("fd_read", &[i(fd), iovs, count, i(904)]), 0);
    assert_eq!((h.u32(904), h.peek(2008, 2)), (2, b"ld".to_vec()));
    // pread and pwrite leave the position alone.
    assert_eq!(h.errno("fd_pread", &[i(fd), iovs, count, l(0), i(904)]), 0);
    assert_eq!(h.peek(2008, h.u32(904) as usize), b"hello world");
    let [wiovs, wcount] = h.iovec(3000, b"HELLO");
    assert_eq!(h.errno("fd_pwrite", &[i(fd), wiovs, wcount, l(0), i(904)]), 0);
    assert_eq!(h.errno("fd_tell", &[i(fd), i(800)]), 0);
    assert_eq!(h.u64(800), 11);
    assert_eq!(h.errno("fd_filestat_get", &[i(fd), i(800)]), 0);
    assert_eq!(h.peek(816, 1), [abi::FILETYPE_REGULAR_FILE]);
    assert_eq!((h.u64(800), h.u64(824), h.u64(832)), (1, 1, 11), "dev, nlink, size");
    assert!(h.u64(848) >= T0, "mtim from the virtual clock");
    assert_eq!(h.errno("fd_filestat_set_size", &[i(fd), l(4)]), 0);
    assert_eq!(h.errno("fd_close", &[i(fd)]), 0);
    assert_eq!(h.errno("fd_close", &[i(fd)]), EBADF);
    // Append mode writes at the end whatever the position.
    let fd = h.open(4, "notes.txt", 0, WRITE, abi::FDFLAGS_APPEND as i32).unwrap();
    assert_eq!(h.write(fd, b"!"), 0);
    assert_eq!(h.errno("fd_fdstat_get", &[i(fd), i(800)]), 0);
    assert_eq!(h.peek(802, 2), [1, 0], "append flag reported");
    assert_eq!(h.errno("fd_fdstat_set_flags", &[i(fd), i(0)]), 0);
    assert_eq!(h.errno("fd_fdstat_set_flags", &[i(fd), i(abi::FDFLAGS_SYNC as i32)]), EINVAL);
    assert_eq!(h.write(fd, b"?"), 0, "now at position 5");
    let [iovs, count] = h.iovec(2000, b"");
    assert_eq!(h.errno("fd_read", &[i(fd), iovs, count, i(904)]), EBADF, "not opened for reading");
    assert_eq!(h.errno("fd_advise", &[i(fd), l(0), l(0), i(1)]), 0);
    assert_eq!(h.errno("fd_advise", &[i(fd), l(0), l(0), i(9)]), EINVAL);
    assert_eq!(h.errno("fd_allocate", &[i(fd), l(0), l(10)]), ENOTSUP);
    assert_eq!(h.errno("fd_sync", &[i(fd)]), 0);
    assert_eq!(h.errno("fd_datasync", &[i(fd)]), 0);
    assert_eq!(h.errno("fd_fdstat_set_rights", &[i(fd), l(0), l(0)]), 0);
    // Truncation on open.
    let fd2 = h.open(4, "notes.txt", TRUNC, WRITE, 0).unwrap();
    assert_eq!(h.write(fd2, b"new"), 0);
    assert_eq!(h.det().collect_outputs()["notes.txt"], b"new");
}

#[test]
fn inputs_are_read_only_and_mounts_cannot_be_escaped() {
    let mut h = Harness::new();
    let fd = h.open(3, "a.txt", 0, READ, 0).unwrap();
    let [iovs, count] = h.iovec(2000, &[0; 8]);
    assert_eq!(h.errno("fd_read", &[i(fd), iovs, count, i(904)]), 0);
    assert_eq!(h.peek(2008, 5), b"alpha");
    assert_eq!(h.write(fd, b"x"), EBADF);
    assert_eq!(h.open(3, "a.txt", 0, READ | WRITE, 0), Err(EROFS));
    assert_eq!(h.open(3, "a.txt", TRUNC, READ, 0), Err(EROFS));
    assert_eq!(h.open(3, "new.txt", CREAT, WRITE, 0), Err(EROFS));
    assert_eq!(h.open(3, "missing", 0, READ, 0), Err(ENOENT));
    assert_eq!(h.open(3, "../etc/passwd", 0, READ, 0), Err(EPERM));
    assert_eq!(h.open(3, "sub/../../output/x", CREAT, WRITE, 0), Err(EPERM));
    assert_eq!(h.open(3, "/etc/passwd", 0, READ, 0), Err(EPERM));
    assert_eq!(h.open(3, "a.txt/", 0, READ, 0), Err(ENOTDIR));
    assert_eq!(h.open(3, "a.txt", DIRECTORY, READ, 0), Err(ENOTDIR));
    assert_eq!(h.open(3, &"x".repeat(300), 0, READ, 0), Err(ENAMETOOLONG));
    assert_eq!(h.open(fd, "x", 0, READ, 0), Err(ENOTDIR), "a file is no directory fd");
    let [p, n] = h.text(1000, "sub");
    assert_eq!(h.errno("path_create_directory", &[i(3), p, n]), EEXIST);
    let [q, m] = h.text(1100, "new");
    assert_eq!(h.errno("path_create_directory", &[i(3), q, m]), EROFS);
    assert_eq!(h.errno("path_remove_directory", &[i(3), p, n]), 55);
    let [p, n] = h.text(1000, "a.txt");
    assert_eq!(h.errno("path_unlink_file", &[i(3), p, n]), EROFS);
    assert_eq!(h.errno("path_filestat_set_times", &[i(3), i(0), p, n, l(0), l(0), i(2)]), EROFS);
    assert_eq!(h.errno("path_rename", &[i(3), p, n, i(4), p, n]), EXDEV);
    assert_eq!(h.errno("path_link", &[i(3), i(0), p, n, i(4), p, n]), ENOTSUP);
    assert_eq!(h.errno("path_symlink", &[p, n, i(4), p, n]), ENOTSUP);
    assert_eq!(h.errno("path_readlink", &[i(3), p, n, i(0), i(10), i(904)]), EINVAL);
    let [q, m] = h.text(1100, "nope");
    assert_eq!(h.errno("path_readlink", &[i(3), q, m, i(0), i(10), i(904)]), ENOENT);
    // Metadata comes from the filesystem: inode in sorted order, dev = mount, start time.
    assert_eq!(h.errno("path_filestat_get", &[i(3), i(0), p, n, i(800)]), 0);
    assert_eq!((h.u64(800), h.u64(808), h.u64(824), h.u64(832)), (0, 2, 1, 5));
    assert_eq!((h.u64(840), h.u64(848), h.u64(856)), (T0, T0, T0));
    // Preopens.
    assert_eq!(h.errno("fd_prestat_get", &[i(3), i(800)]), 0);
    assert_eq!((h.peek(800, 1)[0], h.u32(804)), (0, 6));
    assert_eq!(h.errno("fd_prestat_dir_name", &[i(4), i(800), i(7)]), 0);
    assert_eq!(h.peek(800, 7), b"/output");
    assert_eq!(h.errno("fd_prestat_dir_name", &[i(4), i(800), i(6)]), ENAMETOOLONG);
    assert_eq!(h.errno("fd_prestat_get", &[i(fd), i(800)]), EBADF, "not a preopen");
    assert_eq!(h.errno("fd_fdstat_get", &[i(3), i(800)]), 0);
    assert_eq!((h.peek(800, 1)[0], h.u64(808)), (abi::FILETYPE_DIRECTORY, abi::PREOPEN_RIGHTS_BASE));
    assert_eq!(h.errno("fd_read", &[i(3), i(2000), i(1), i(904)]), EISDIR);
}

#[test]
fn directories_are_listed_in_name_order_with_preview1_buffer_rules() {
    let mut h = Harness::new();
    // Everything: ".", "..", "a.txt", "sub", "zeta.txt".
    assert_eq!(h.errno("fd_readdir", &[i(3), i(4000), i(1000), l(0), i(904)]), 0);
    let used = h.u32(904) as usize;
    assert_eq!(used, 5 * 24 + 1 + 2 + 5 + 3 + 8);
    let mut names = Vec::new();
    let mut at = 4000;
    while at < 4000 + used {
        let next = h.u64(at);
        let namlen = h.u32(at + 16) as usize;
        names.push((next, h.peek(at + 8, 8), h.peek(at + 20, 1)[0], String::from_utf8(h.peek(at + 24, namlen)).unwrap()));
        at += 24 + namlen;
    }
    let listed: Vec<(u64, &str)> = names.iter().map(|(n, _, _, s)| (*n, s.as_str())).collect();
    assert_eq!(listed, [(1, "."), (2, ".."), (3, "a.txt"), (4, "sub"), (5, "zeta.txt")]);
    assert_eq!(names[3].2, abi::FILETYPE_DIRECTORY);
    assert_eq!(names[2].2, abi::FILETYPE_REGULAR_FILE);
    // A buffer too small: the last entry is cut and the whole buffer counts as used.
    assert_eq!(h.errno("fd_readdir", &[i(3), i(4000), i(24 + 1 + 10), l(0), i(904)]), 0);
    assert_eq!(h.u32(904), 35);
    assert_eq!(h.errno("fd_readdir", &[i(3), i(4000), i(0), l(0), i(904)]), 0);
    assert_eq!(h.u32(904), 0);
    // Resuming from a cookie.
    assert_eq!(h.errno("fd_readdir", &[i(3), i(4000), i(1000), l(4), i(904)]), 0);
    assert_eq!(h.u32(904), 24 + 8);
    assert_eq!(h.peek(4024, 8), b"zeta.txt");
    assert_eq!(h.errno("fd_readdir", &[i(3), i(4000), i(1000), l(-1), i(904)]), 0);
    assert_eq!(h.u32(904), 0);
    // Not a directory; buffer past the end.
    let fd = h.open(3, "a.txt", 0, READ, 0).unwrap();
    assert_eq!(h.errno("fd_readdir", &[i(fd), i(4000), i(100), l(0), i(904)]), ENOTDIR);
    assert_eq!(h.errno("fd_readdir", &[i(3), i(10 * 65536 - 10), i(100), l(0), i(904)]), EFAULT);
    // A subdirectory opened by path lists its own entries, `..` being the mount root.
    let sub = h.open(3, "sub", DIRECTORY, READ, 0).unwrap();
    assert_eq!(h.errno("fd_readdir", &[i(sub), i(4000), i(1000), l(0), i(904)]), 0);
    assert_eq!(h.u32(904), 3 * 24 + 1 + 2 + 5);
    assert_eq!(h.u64(4000 + 24 + 1 + 8), 1, "`..` is the root, inode 1");
}

#[test]
fn directories_files_and_renames_in_the_output() {
    let mut h = Harness::new();
    let [p, n] = h.text(1000, "a");
    assert_eq!(h.errno("path_create_directory", &[i(4), p, n]), 0);
    assert_eq!(h.errno("path_create_directory", &[i(4), p, n]), EEXIST);
    let fd = h.open(4, "a/one.txt", CREAT, WRITE, 0).unwrap();
    assert_eq!(h.write(fd, b"one"), 0);
    assert_eq!(h.errno("fd_close", &[i(fd)]), 0);
    let [o, on] = h.text(1000, "a/one.txt");
    let [q, qn] = h.text(1100, "moved.txt");
    assert_eq!(h.errno("path_rename", &[i(4), o, on, i(4), q, qn]), 0);
    assert_eq!(h.errno("path_rename", &[i(4), o, on, i(4), q, qn]), ENOENT);
    let [x, xn] = h.text(1200, ".");
    assert_eq!(h.errno("path_rename", &[i(4), q, qn, i(4), x, xn]), EINVAL);
    assert_eq!(h.errno("path_unlink_file", &[i(4), p, n]), EISDIR);
    assert_eq!(h.errno("path_remove_directory", &[i(4), p, n]), 0);
    assert_eq!(h.errno("path_filestat_set_times", &[i(4), i(0), q, qn, l(5), l(6), i(1 | 4)]), 0);
    assert_eq!(h.errno("path_filestat_get", &[i(4), i(0), q, qn, i(800)]), 0);
    assert_eq!((h.u64(840), h.u64(848)), (5, 6));
    assert_eq!(h.errno("path_filestat_set_times", &[i(4), i(0), q, qn, l(5), l(6), i(1 | 2)]), EINVAL);
    let outputs = h.det().collect_outputs();
    assert_eq!(outputs.keys().collect::<Vec<_>>(), ["moved.txt"]);
    assert_eq!(outputs["moved.txt"], b"one");
    // Renumbering: the target must be open; it is closed and replaced.
    let fd = h.open(4, "moved.txt", 0, READ, 0).unwrap();
    let other = h.open(4, ".", DIRECTORY, READ, 0).unwrap();
    assert_eq!(h.errno("fd_renumber", &[i(fd), i(other)]), 0);
    assert_eq!(h.errno("fd_tell", &[i(other), i(800)]), 0);
    assert_eq!(h.errno("fd_tell", &[i(fd), i(800)]), EBADF);
    assert_eq!(h.errno("fd_renumber", &[i(other), i(77)]), EBADF);
}

#[test]
fn output_file_quota_traps() {
    let mut h = Harness::with(WasiConfig { output_files: 2, ..config() });
    assert!(h.open(4, "one", CREAT, WRITE, 0).is_ok());
    let [p, n] = h.text(1000, "d");
    assert_eq!(h.errno("path_create_directory", &[i(4), p, n]), 0);
    let [p, n] = h.text(1000, "e");
    let error = h.trap("path_create_directory", &[i(4), p, n]);
    assert_eq!(error.downcast_ref::<LimitExceeded>(), Some(&LimitExceeded { limit: LimitKind::OutputFiles, value: 2 }));
}

#[test]
fn descriptors_are_capped() {
    let mut h = Harness::new();
    for _ in 5..MAX_OPEN_FDS {
        h.open(3, "a.txt", 0, READ, 0).unwrap();
    }
    assert_eq!(h.open(3, "a.txt", 0, READ, 0), Err(EMFILE));
    assert_eq!(h.open(4, "new", CREAT, WRITE, 0), Err(EMFILE));
    assert!(h.det().collect_outputs().is_empty(), "EMFILE creates nothing");
    assert_eq!(h.errno("fd_close", &[i(700)]), 0);
    assert_eq!(h.open(3, "a.txt", 0, READ, 0), Ok(700), "the lowest free number is reused");
}

#[test]
fn the_clock_is_virtual_and_driven_by_fuel_and_sleep() {
    let mut h = Harness::new();
    assert_eq!(h.errno("clock_res_get", &[i(1), i(800)]), 0);
    assert_eq!(h.u64(800), 1);
    let real = h.now(0);
    let mono = h.now(1);
    assert!((T0..T0 + 1_000_000).contains(&real), "{real}");
    assert!(mono >= real - T0);
    h.call("burn", &[i(100_000)]).unwrap();
    let later = h.now(1);
    assert!(later >= mono + 100_000, "{mono} -> {later}: fuel moves the clock");
    let (process, thread) = (h.now(2), h.now(3));
    assert!(process >= later && thread >= process, "cpu clocks are the same virtual time");
    // A relative 1.5 s sleep (what std::thread::sleep does): returns at once, clock moved.
    let mut sub = [0u8; 48];
    sub[0..8].copy_from_slice(&42u64.to_le_bytes());
    sub[16..20].copy_from_slice(&1u32.to_le_bytes());
    sub[24..32].copy_from_slice(&1_500_000_000u64.to_le_bytes());
    h.poke(5000, &sub);
    let before = h.now(1);
    let started = std::time::Instant::now();
    assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(1), i(904)]), 0);
    assert!(started.elapsed() < std::time::Duration::from_millis(500), "no real sleep");
    assert_eq!(h.u32(904), 1);
    assert_eq!(h.u64(6000), 42);
    assert_eq!((h.peek(6008, 2), h.peek(6010, 1)[0]), (vec![0, 0], abi::EVENTTYPE_CLOCK));
    let after = h.now(1);
    assert!(after >= before + 1_500_000_000 && after < before + 1_501_000_000, "{before} -> {after}");
    assert!(h.det().slept_ns() >= 1_500_000_000);
    // An absolute realtime deadline in the past fires at once without moving the clock.
    sub[16..20].copy_from_slice(&0u32.to_le_bytes());
    sub[24..32].copy_from_slice(&T0.to_le_bytes());
    sub[40..42].copy_from_slice(&1u16.to_le_bytes());
    h.poke(5000, &sub);
    let slept = h.det().slept_ns();
    assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(1), i(904)]), 0);
    assert_eq!(h.u32(904), 1);
    assert_eq!(h.det().slept_ns(), slept);
    // A descriptor subscription is ready at once, and then clocks do not fire.
    let mut fd_sub = [0u8; 48];
    fd_sub[0..8].copy_from_slice(&7u64.to_le_bytes());
    fd_sub[8] = abi::EVENTTYPE_FD_READ;
    fd_sub[16..20].copy_from_slice(&0u32.to_le_bytes());
    let mut bad_sub = fd_sub;
    bad_sub[0..8].copy_from_slice(&8u64.to_le_bytes());
    bad_sub[16..20].copy_from_slice(&99u32.to_le_bytes());
    let mut long_sleep = [0u8; 48];
    long_sleep[16..20].copy_from_slice(&1u32.to_le_bytes());
    long_sleep[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
    h.poke(5000, &long_sleep);
    h.poke(5048, &fd_sub);
    h.poke(5096, &bad_sub);
    assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(3), i(904)]), 0);
    assert_eq!(h.u32(904), 2);
    assert_eq!((h.u64(6000), h.peek(6008, 2), h.u64(6016)), (7, vec![0, 0], 11), "stdin has 11 bytes");
    assert_eq!((h.u64(6032), h.peek(6040, 2)), (8, vec![EBADF as u8, 0]));
    assert_eq!(h.det().slept_ns(), slept);
    // Nothing to wait for, bad subscriptions, events past memory.
    assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(0), i(904)]), EINVAL);
    h.poke(5008, &[9]);
    assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(1), i(904)]), EINVAL);
    assert_eq!(h.errno("poll_oneoff", &[i(5000), i(10 * 65536 - 31), i(1), i(904)]), EFAULT);
    assert_eq!(h.errno("poll_oneoff", &[i(5000), i(6000), i(-1), i(904)]), EFAULT);
    // Time never goes back.
    let mut last = 0;
    for _ in 0..10 {
        let now = h.now(1);
        assert!(now >= last);
        last = now;
    }
}

#[test]
fn the_same_calls_give_the_same_bytes() {
    let run = || {
        let mut h = Harness::new();
        h.call("burn", &[i(1000)]).unwrap();
        let now = h.now(0);
        let fd = h.open(4, "t", CREAT, WRITE, 0).unwrap();
        assert_eq!(h.write(fd, format!("{now}").as_bytes()), 0);
        assert_eq!(h.errno("fd_filestat_get", &[i(fd), i(800)]), 0);
        (now, h.peek(800, 64), h.det().collect_outputs())
    };
    assert_eq!(run(), run());
}

#[test]
fn random_arguments_never_panic_the_host() {
    // A fixed xorshift stream of arguments biased towards edge values; the host may return
    // any errno or trap with a limit, but must never panic.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let end = 10 * 65536i64;
    let mut h = Harness::with(WasiConfig { output_bytes: 1 << 16, output_files: 1 << 20, ..config() });
    // Plausible memory contents: small pointers and lengths, text, directory names.
    for at in (0..65536).step_by(8) {
        let word = next();
        let (ptr, len) = ((word % 4096) as u32, ((word >> 32) % 64) as u32);
        h.poke(at, &ptr.to_le_bytes());
        h.poke(at + 4, &len.to_le_bytes());
    }
    h.poke(1000, b"a.txt\0sub/b.txt\0../x\0.\0..\0zeta.txt\0sub/deeper//c.bin");
    let mut calls = 0;
    for round in 0..400 {
        for (name, params) in SIGNATURES {
            let args: Vec<Val> = params
                .split_whitespace()
                .map(|ty| {
                    let word = next();
                    let value: i64 = match word % 8 {
                        0 => 0,
                        1 => -1,
                        2 => (word >> 8) as i64 % 8,
                        3 => (word >> 8) as i64 % end,
                        4 => end - ((word >> 8) as i64 % 64),
                        5 => i64::MAX - ((word >> 8) as i64 % 4),
                        6 => 1000 + (word >> 8) as i64 % 60,
                        _ => (word >> 8) as i64 % 4096,
                    };
                    if ty == "i64" { l(value) } else { i(value as i32) }
                })
                .collect();
            if let Err(error) = h.call(name, &args) {
                let limit = error.downcast_ref::<LimitExceeded>().is_some();
                let exit = *name == "proc_exit" && (error.downcast_ref::<super::JobExit>().is_some() || format!("{error:#}").contains("invalid exit status"));
                assert!(limit || exit, "round {round}: {name}({args:?}) trapped: {error:?}");
                // A store that stopped on a limit or an exit is done; start a fresh one.
                h = Harness::with(WasiConfig { output_bytes: 1 << 16, output_files: 1 << 20, ..config() });
            }
            calls += 1;
        }
    }
    assert_eq!(calls, 400 * SIGNATURES.len());
}

#[test]
fn a_module_without_memory_traps_clearly() {
    let engine = engine();
    let wat = r#"(module
        (import "wasi_snapshot_preview1" "fd_close" (func $close (param i32) (result i32)))
        (func (export "run") (result i32) i32.const 3 call $close))"#;
    let module = Module::new(&engine, wat::parse_str(wat).unwrap()).unwrap();
    let mut store = store(&engine, config());
    let instance = linker(&engine).instantiate(&mut store, &module).unwrap();
    let run = instance.get_typed_func::<(), i32>(&mut store, "run").unwrap();
    let error = run.call(&mut store, ()).unwrap_err();
    assert!(format!("{error:?}").contains("does not export a linear memory named \"memory\""), "{error:?}");
}

#[test]
fn arguments_environment_and_random_bytes_come_from_the_config() {
    let mut h = Harness::new();
    assert_eq!(h.errno("args_sizes_get", &[i(900), i(904)]), 0);
    assert_eq!((h.u32(900), h.u32(904)), (2, "job.wasm\0--flag\0".len() as u32));
    assert_eq!(h.errno("args_get", &[i(2000), i(3000)]), 0);
    assert_eq!((h.u32(2000), h.u32(2004)), (3000, 3009));
    assert_eq!(h.peek(3000, 16), b"job.wasm\0--flag\0");
    assert_eq!(h.errno("environ_sizes_get", &[i(900), i(904)]), 0);
    assert_eq!((h.u32(900), h.u32(904)), (2, "A=1\0LANG=C\0".len() as u32));
    assert_eq!(h.errno("environ_get", &[i(2000), i(3000)]), 0);
    assert_eq!(h.peek(3000, 11), b"A=1\0LANG=C\0");
    // A buffer past the end is EFAULT and writes nothing, not even the pointers.
    h.poke(2100, &[0xAA; 8]);
    assert_eq!(h.errno("args_get", &[i(2100), i(10 * 65536 - 4)]), EFAULT);
    assert_eq!(h.peek(2100, 8), [0xAA; 8]);
    // Random bytes: the config's stream, front to back; EFAULT takes nothing from it.
    let mut expected = super::random::JobRandom::new(crate::Digest::of(b"test job"), 0, "secure");
    let mut want = [0u8; 48];
    expected.fill(&mut want);
    assert_eq!(h.errno("random_get", &[i(4000), i(16)]), 0);
    assert_eq!(h.errno("random_get", &[i(10 * 65536 - 8), i(16)]), EFAULT);
    assert_eq!(h.errno("random_get", &[i(4016), i(32)]), 0);
    assert_eq!(h.peek(4000, 48), want);
    assert_eq!(h.errno("sched_yield", &[]), 0);
    assert_eq!(h.errno("proc_raise", &[i(6)]), ENOTSUP);
    let exit = h.trap("proc_exit", &[i(7)]);
    assert_eq!(exit.downcast_ref::<super::JobExit>(), Some(&super::JobExit(7)));
}

/// Strings that end exactly at the top of a 4 GiB memory: offsets must not overflow.
#[test]
fn arguments_fit_at_the_very_top_of_a_4_gib_memory() {
    let wat = r#"(module
        (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
        (memory (export "memory") 65536)
        (func (export "go") (param i32 i32) (result i32) local.get 0 local.get 1 call $args_get))"#;
    let engine = engine();
    let module = Module::new(&engine, wat::parse_str(wat).unwrap()).unwrap();
    let mut store = store(&engine, config());
    let instance = linker(&engine).instantiate(&mut store, &module).unwrap();
    let go = instance.get_typed_func::<(i32, i32), i32>(&mut store, "go").unwrap();
    let total = "job.wasm\0--flag\0".len() as i64;
    let top = (1i64 << 32) - total;
    assert_eq!(go.call(&mut store, (0, top as i32)).unwrap(), 0);
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    let data = memory.data(&store);
    assert_eq!(&data[top as usize..], b"job.wasm\0--flag\0");
    assert_eq!(u32::from_le_bytes(data[4..8].try_into().unwrap()), (top + 9) as u32);
    // One byte further is EFAULT.
    assert_eq!(go.call(&mut store, (0, (top + 1) as i32)).unwrap(), EFAULT);
}
