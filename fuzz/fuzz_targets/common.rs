//! A harness that calls gridbox's host functions from wasm with fuzzer-chosen arguments: the
//! functions see a real job's memory, fuel and state, exactly as in a run.

#![allow(dead_code)] // Each target uses part of it.

use std::sync::{Arc, OnceLock};

use gridbox_abi::{CORE_FUNCTIONS, CORE_PARAMS, FN_CREATE, IMPORT_MODULE, OP_PARAMS, Op};
use gridbox_compute::{Backend, Stop, TensorGrant, TensorSession, TraceLevel};
use gridbox_core::bridge::{self, BridgeHost};
use gridbox_core::wasi::random::JobRandom;
use gridbox_core::wasi::{self, DeterministicWasi, PREVIEW1_MODULE, WasiConfig};
use gridbox_core::{Digest, LimitExceeded};
use wasmtime::{Engine, Instance, Linker, Module, Store, Trap, Val};

/// The job state the host functions reach.
pub struct State {
    wasi: DeterministicWasi,
    bridge: BridgeHost,
}

/// One host function as the harness calls it: its import, its parameter types, whether it
/// returns an i32.
pub struct Function {
    pub module: &'static str,
    pub name: &'static str,
    pub params: Vec<&'static str>,
    /// The parameters' names (WASI only; empty for the bridge).
    pub param_names: Vec<&'static str>,
    pub returns: bool,
}

/// Every WASI function, or every tensor bridge function.
pub fn functions(bridge_only: bool) -> Vec<Function> {
    if bridge_only {
        // The ABI's own lists: the core functions first (in `CORE_FUNCTIONS` order), then the ops.
        let bridge =
            |name: &'static str, params: usize| Function { module: IMPORT_MODULE, name, params: vec!["i32"; params], param_names: vec![], returns: true };
        let mut all: Vec<Function> = CORE_FUNCTIONS.iter().zip(CORE_PARAMS).map(|(name, params)| bridge(name, params)).collect();
        all.extend(Op::ALL.iter().map(|op| bridge(op.name(), OP_PARAMS)));
        all
    } else {
        wasi::SIGNATURES
            .iter()
            .zip(wasi::PARAMETER_NAMES)
            .map(|((name, types, returns), (_, names))| Function {
                module: PREVIEW1_MODULE,
                name,
                params: types.split_whitespace().collect(),
                param_names: names.split_whitespace().collect(),
                returns: *returns,
            })
            .collect()
    }
}

/// Memory pages of the harness module: small, so that fuzzed pointers often land near the end.
pub const PAGES: u32 = 2;

fn module_text(functions: &[Function]) -> String {
    let mut wat = String::from("(module\n");
    for (index, f) in functions.iter().enumerate() {
        let result = if f.returns { "(result i32)" } else { "" };
        wat += &format!("  (import \"{}\" \"{}\" (func $f{index} (param {}) {result}))\n", f.module, f.name, f.params.join(" "));
    }
    wat += &format!("  (memory (export \"memory\") {PAGES})\n");
    for (index, f) in functions.iter().enumerate() {
        let result = if f.returns { "(result i32)" } else { "" };
        let gets: String = (0..f.params.len()).map(|i| format!("local.get {i} ")).collect();
        wat += &format!("  (func (export \"w{index}\") (param {}) {result} {gets} call $f{index})\n", f.params.join(" "));
    }
    wat + ")\n"
}

/// The engine, linker and compiled module, made once per process.
pub struct Harness {
    engine: Engine,
    linker: Linker<State>,
    module: Module,
    pub functions: Vec<Function>,
}

impl Harness {
    pub fn get(bridge_only: bool) -> &'static Harness {
        static WASI: OnceLock<Harness> = OnceLock::new();
        static BRIDGE: OnceLock<Harness> = OnceLock::new();
        let cell = if bridge_only { &BRIDGE } else { &WASI };
        cell.get_or_init(|| {
            let engine = Engine::new(&gridbox_core::engine::deterministic_config()).expect("engine");
            let mut linker = Linker::new(&engine);
            wasi::add_to_linker(&mut linker, |s: &mut State| &mut s.wasi).expect("wasi");
            bridge::add_to_linker(&mut linker, |s: &mut State| &mut s.bridge).expect("bridge");
            let functions = functions(bridge_only);
            let module = Module::new(&engine, wat::parse_str(module_text(&functions)).expect("wat")).expect("module");
            Harness { engine, linker, module, functions }
        })
    }

    /// A fresh job: stdin, an input tree (fd 3), an output folder (fd 4), a writable mount at `/`
    /// holding the same files (fd 5), a small tensor quota.
    pub fn instantiate(&self, fuel: u64) -> (Store<State>, Instance) {
        let mut wasi = DeterministicWasi::new(WasiConfig {
            start_unix_ns: 1_767_225_600_000_000_000,
            stdin: Arc::from(&b"stdin bytes"[..]),
            stdio_bytes: 1 << 16,
            output_bytes: 1 << 16,
            output_files: 64,
            fuel_budget: fuel,
            args: vec!["job.wasm".into(), "-x".into()],
            env: vec![("K".into(), "V".into())],
            random: JobRandom::new(Digest::of(b"fuzz"), 0, "secure"),
        });
        let inputs = [("a.txt", &b"alpha"[..]), ("sub/b.txt", b"bravo"), ("sub/deeper/c.bin", b"\x00\x01")];
        wasi.mount_read_only("/input", inputs.map(|(n, b)| (n.to_string(), Arc::from(b)))).expect("mount");
        wasi.mount_writable("/output").expect("mount");
        // fd 5: a writable mount at `/` that starts with files (shared until written: copy on
        // write, quota accounting of starting files, renames and unlinks over them).
        wasi.mount("/", inputs.map(|(n, b)| (n.to_string(), Arc::from(b))), true).expect("mount");
        let grant = TensorGrant { ops: Op::ALL.iter().copied().collect(), max_bytes: 1 << 20, max_tensors: 64, trace_level: TraceLevel::Full };
        let session = TensorSession::new(grant, Backend::cpu(1).for_job(Stop::never()).expect("cpu"));
        let mut store = Store::new(&self.engine, State { wasi, bridge: BridgeHost::new(session) });
        store.set_fuel(fuel).expect("fuel");
        // The engine interrupts at epoch deadlines (wall-time limits); with no ticker here the
        // deadline must be far away, or every call traps at entry and nothing is tested.
        store.set_epoch_deadline(u64::MAX);
        let instance = self.linker.instantiate(&mut store, &self.module).expect("instantiate");
        (store, instance)
    }
}

/// Reads the fuzzer's bytes as numbers, often small or near interesting edges.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Input { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn byte(&mut self) -> u8 {
        let (first, rest) = self.bytes.split_first().map_or((0, &[][..]), |(f, r)| (*f, r));
        self.bytes = rest;
        first
    }

    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.bytes.len());
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        head
    }

    fn raw(&mut self) -> u64 {
        let mut word = [0u8; 8];
        let part = self.take(8);
        word[..part.len()].copy_from_slice(part);
        u64::from_le_bytes(word)
    }

    /// A value for one wasm parameter.
    pub fn value(&mut self, ty: &str) -> Val {
        let memory = u64::from(PAGES) * 65536;
        let raw = self.raw();
        let v = match self.byte() % 8 {
            0 => raw % 16,
            1 => raw % 4096,
            2 => memory - (raw % 64),
            3 => raw % memory,
            4 => u64::MAX - raw % 4,
            5 => u64::from(u32::MAX) - raw % 4,
            6 => 1 << (raw % 64),
            _ => raw,
        };
        if ty == "i64" { Val::I64(v as i64) } else { Val::I32(v as i32) }
    }
}

/// Whether a host function's error is one a job may meet: a trap, a limit, an exit, a misuse
/// named by the host. Anything else (a panic never gets here) is fine too, but must not be a
/// provider fault on the CPU.
pub fn check_error(error: &wasmtime::Error) {
    assert!(error.downcast_ref::<gridbox_core::ProviderFault>().is_none(), "a CPU run met a provider fault: {error:?}");
    let _ = (error.downcast_ref::<Trap>(), error.downcast_ref::<LimitExceeded>());
}

/// Runs a sequence of calls chosen by `input` on a fresh job.
pub fn run_calls(bridge_only: bool, data: &[u8]) {
    let harness = Harness::get(bridge_only);
    let mut input = Input::new(data);
    let (mut store, instance) = harness.instantiate(50_000_000);
    // Seed memory with the input's first bytes: handles, shapes, params, iovecs, paths.
    let seed_len = usize::from(input.byte()) * 16;
    let seed = input.take(seed_len).to_vec();
    let memory = instance.get_memory(&mut store, "memory").expect("memory");
    memory.data_mut(&mut store)[..seed.len()].copy_from_slice(&seed);
    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        // For the bridge, most steps are well-formed calls (a small tensor made, an op on live
        // handles with small parameters), so that the fuzzer reaches the kernels and not only
        // the argument checks; the rest are raw calls with arbitrary arguments.
        let (index, args) = match input.byte() % 4 {
            0 | 1 if bridge_only => well_formed_call(harness, &mut input, &mut store, memory),
            0 | 1 => well_formed_wasi_call(harness, &mut input, &mut store, memory),
            _ => {
                let index = usize::from(input.byte()) % harness.functions.len();
                let args: Vec<Val> = harness.functions[index].params.iter().map(|ty| input.value(ty)).collect();
                (index, args)
            }
        };
        let function = &harness.functions[index];
        let func = instance.get_func(&mut store, &format!("w{index}")).expect("export");
        let mut results = vec![Val::I32(0); usize::from(function.returns)];
        let result = func.call(&mut store, &args, &mut results);
        if std::env::var_os("GRIDBOX_FUZZ_TRACE").is_some() {
            // `GRIDBOX_FUZZ_TRACE=1 cargo fuzz run TARGET -- -runs=0` shows what the corpus
            // reaches: each call's return code or the root cause of its trap.
            let shown = result.as_ref().map(|()| results.first().and_then(Val::i32)).map_err(|e| e.root_cause().to_string());
            eprintln!("call {} {shown:?}", function.name);
        }
        if let Err(error) = result {
            check_error(&error);
            // A trap ends the job, as it would a real one.
            break;
        }
    }
}

/// Where well-formed calls put their arguments: the second page, away from the seeded bytes.
const ARGS_AT: usize = 65536;

/// A create of a small tensor (rank 0-4, dims 0-4, any dtype, fuzzed element bytes) or an op on
/// 1-3 handles among the first 8 with 0-4 small parameters; returns the function and arguments.
fn well_formed_call(harness: &Harness, input: &mut Input<'_>, store: &mut Store<State>, memory: wasmtime::Memory) -> (usize, Vec<Val>) {
    let mut put = |offset: usize, bytes: &[u8]| memory.data_mut(&mut *store)[ARGS_AT + offset..ARGS_AT + offset + bytes.len()].copy_from_slice(bytes);
    let at = |offset: usize| Val::I32((ARGS_AT + offset) as i32);
    if input.byte().is_multiple_of(2) {
        // create(dtype, shape_ptr, rank, data_ptr, data_len, out_handle_ptr)
        // f32, i32, f16, bf16: 4 bytes an element for the first two, 2 for the others.
        let dtype = input.byte() % 4;
        let size = if dtype < 2 { 4 } else { 2 };
        let rank = usize::from(input.byte() % 5);
        let dims: Vec<u32> = (0..rank).map(|_| u32::from(input.byte() % 5)).collect();
        let elements: usize = dims.iter().map(|&d| d as usize).product();
        for (i, dim) in dims.iter().enumerate() {
            put(i * 4, &dim.to_le_bytes());
        }
        let data: Vec<u8> = (0..elements * size).map(|_| input.byte()).collect();
        put(64, &data);
        let args = vec![Val::I32(i32::from(dtype)), at(0), Val::I32(rank as i32), at(64), Val::I32(data.len() as i32), at(32)];
        let create = CORE_FUNCTIONS.iter().position(|&name| name == FN_CREATE).unwrap_or(0);
        (create, args)
    } else {
        // op(inputs_ptr, n_inputs, params_ptr, n_params, out_handle_ptr)
        // The ops follow the core functions in `functions(true)`.
        let op = CORE_FUNCTIONS.len() + usize::from(input.byte()) % (harness.functions.len() - CORE_FUNCTIONS.len());
        let n_inputs = 1 + usize::from(input.byte() % 3);
        for i in 0..n_inputs {
            put(i * 4, &u32::from(1 + input.byte() % 8).to_le_bytes());
        }
        let n_params = usize::from(input.byte() % 5);
        for i in 0..n_params {
            let value = i64::from(input.byte() % 12) - 3;
            put(16 + i * 8, &value.to_le_bytes());
        }
        let args = vec![at(0), Val::I32(n_inputs as i32), at(16), Val::I32(n_params as i32), at(56)];
        (op, args)
    }
}

/// Paths a well-formed WASI call uses: names that exist in the harness's tree, new ones, and
/// the awkward ones (dots, trailing slashes, escapes, empty, long).
const PATHS: &[&str] = &[
    "a.txt",
    "sub",
    "sub/b.txt",
    "sub/deeper",
    "sub/deeper/c.bin",
    "new",
    "new/",
    "new/x",
    "x",
    "y/",
    ".",
    "..",
    "../x",
    "/abs",
    "",
    "sub/../a.txt",
    "sub/./deeper/",
    "a.txt/",
    "new/../../x",
];

/// A call of a random WASI function whose arguments are chosen by name: descriptors 0-9,
/// paths from [`PATHS`] (or a 255- or 256-byte name) with their lengths, iovecs over a small
/// buffer, result pointers into spare memory, small flags, offsets and sizes.
fn well_formed_wasi_call(harness: &Harness, input: &mut Input<'_>, store: &mut Store<State>, memory: wasmtime::Memory) -> (usize, Vec<Val>) {
    let index = usize::from(input.byte()) % harness.functions.len();
    let function = &harness.functions[index];
    let mut put = |offset: usize, bytes: &[u8]| memory.data_mut(&mut *store)[ARGS_AT + offset..ARGS_AT + offset + bytes.len()].copy_from_slice(bytes);
    // Layout of the second page: two path strings at 0 and 512, an iovec array at 1024
    // pointing at a 256-byte buffer at 2048, results at 4096.
    let mut next_path = 0usize;
    let mut last_len = 0i64;
    let mut args = Vec::new();
    for (ty, name) in function.params.iter().zip(&function.param_names) {
        let value: i64 = match *name {
            "fd" | "old_fd" | "new_fd" | "to" => i64::from(input.byte() % 10),
            "path" | "old_path" | "new_path" => {
                let path = match input.byte() % 24 {
                    22 => "n".repeat(255),
                    23 => "n".repeat(256),
                    pick => PATHS[usize::from(pick) % PATHS.len()].to_string(),
                };
                let at = next_path * 512;
                next_path = (next_path + 1) % 2;
                put(at, path.as_bytes());
                last_len = path.len() as i64;
                (ARGS_AT + at) as i64
            }
            "path_len" | "old_path_len" | "new_path_len" => last_len,
            "iovs" => {
                let count = 1 + usize::from(input.byte() % 2);
                for i in 0..count {
                    let len = u32::from(input.byte());
                    put(1024 + i * 8, &((ARGS_AT + 2048 + i * 128) as u32).to_le_bytes());
                    put(1024 + i * 8 + 4, &len.min(128).to_le_bytes());
                }
                put(2048, &[input.byte(); 8]);
                last_len = count as i64;
                (ARGS_AT + 1024) as i64
            }
            "iovs_len" => last_len,
            "buf" => {
                last_len = i64::from(input.byte());
                (ARGS_AT + 2048) as i64
            }
            "buf_len" => last_len,
            "result" | "events" | "subs" => (ARGS_AT + 4096) as i64,
            "oflags" => i64::from(input.byte() % 16),
            "fdflags" | "flags" | "fst_flags" => i64::from(input.byte() % 32),
            "dirflags" | "old_flags" => i64::from(input.byte() % 2),
            "whence" => i64::from(input.byte() % 3),
            "offset" => i64::from(input.byte() as i8),
            "size" | "cookie" | "nsubscriptions" => i64::from(input.byte() % 16),
            "base" | "inheriting" => -1,
            _ => match input.value(ty) {
                Val::I64(v) => v,
                Val::I32(v) => i64::from(v),
                _ => 0,
            },
        };
        args.push(if *ty == "i64" { Val::I64(value) } else { Val::I32(value as i32) });
    }
    (index, args)
}
