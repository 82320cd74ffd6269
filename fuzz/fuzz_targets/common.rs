//! A harness that calls gridbox's host functions from wasm with fuzzer-chosen arguments: the
//! functions see a real job's memory, fuel and state, exactly as in a run.

#![allow(dead_code)] // Each target uses part of it.

use std::sync::{Arc, OnceLock};

use gridbox_abi::{CORE_FUNCTIONS, IMPORT_MODULE, Op};
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
    pub returns: bool,
}

/// Every WASI function, or every tensor bridge function.
pub fn functions(bridge_only: bool) -> Vec<Function> {
    if bridge_only {
        let mut all: Vec<Function> = vec![
            Function { module: IMPORT_MODULE, name: CORE_FUNCTIONS[0], params: vec!["i32"; 6], returns: true },
            Function { module: IMPORT_MODULE, name: CORE_FUNCTIONS[1], params: vec!["i32"; 3], returns: true },
            Function { module: IMPORT_MODULE, name: CORE_FUNCTIONS[2], params: vec!["i32"; 5], returns: true },
            Function { module: IMPORT_MODULE, name: CORE_FUNCTIONS[3], params: vec!["i32"; 1], returns: true },
        ];
        all.extend(Op::ALL.iter().map(|op| Function { module: IMPORT_MODULE, name: op.name(), params: vec!["i32"; 5], returns: true }));
        all
    } else {
        wasi::SIGNATURES
            .iter()
            .map(|(name, types, returns)| Function { module: PREVIEW1_MODULE, name, params: types.split_whitespace().collect(), returns: *returns })
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

    /// A fresh job: stdin, an input tree, an output folder, a small tensor quota.
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
        let grant = TensorGrant { ops: Op::ALL.iter().copied().collect(), max_bytes: 1 << 20, max_tensors: 64, trace_level: TraceLevel::Full };
        let session = TensorSession::new(grant, Backend::cpu(1).for_job(Stop::never()).expect("cpu"));
        let mut store = Store::new(&self.engine, State { wasi, bridge: BridgeHost::new(session) });
        store.set_fuel(fuel).expect("fuel");
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
        let function = &harness.functions[usize::from(input.byte()) % harness.functions.len()];
        let index = harness.functions.iter().position(|f| std::ptr::eq(f, function)).unwrap_or(0);
        let args: Vec<Val> = function.params.iter().map(|ty| input.value(ty)).collect();
        let func = instance.get_func(&mut store, &format!("w{index}")).expect("export");
        let mut results = vec![Val::I32(0); usize::from(function.returns)];
        if let Err(error) = func.call(&mut store, &args, &mut results) {
            check_error(&error);
            // A trap ends the job, as it would a real one.
            break;
        }
    }
}
