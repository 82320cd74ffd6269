//! The wasmtime engine configured for determinism, and a cache of prepared modules (in memory,
//! over an optional [`CompiledCache`] on disk).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use wasmtime::{Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, OptLevel, PoolingAllocationConfig};

use gridbox_abi::{CORE_FUNCTIONS, IMPORT_MODULE, Op};
use gridbox_compute::Backend;

use crate::bridge;
use crate::compiled_cache::{CacheKey, CompiledCache};
use crate::digest::Digest;
use crate::job::{RunError, RunState};
use crate::limits::LimitKind;
use crate::manifest::{Capability, Policy};
use crate::nan_rewrite;
use crate::wasi::{self, PREVIEW1_MODULE};

/// How often the epoch advances: the resolution of wall-time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How many prepared modules the cache keeps before evicting the oldest.
const MODULE_CACHE_ENTRIES: usize = 64;

/// How many jobs may be instantiated at once in one engine (pooling allocator slots).
const POOL_SLOTS: u32 = 64;

/// How an engine makes the bits of NaNs deterministic (spec/determinism.md, "NaNs"). Both give
/// the same results, bit for bit, and the same fuel; they differ in speed.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NanCanonicalization {
    /// wasmtime canonicalises the NaN of every float operation as it happens.
    Eager,
    /// Modules are rewritten ([`nan_rewrite`]) to canonicalise NaNs only where their bits can be
    /// observed. The default: float-heavy code runs up to twice as fast.
    AtObservation,
}

/// A compiled module with its imports checked and resolved against the job linker.
pub struct PreparedModule {
    /// BLAKE3 of the module's bytes.
    pub hash: Digest,
    pub(crate) instance_pre: InstancePre<RunState>,
}

/// A wasmtime engine set up for deterministic jobs, with its linker and module cache.
///
/// Create one per process and share it: compiled modules are cached by BLAKE3(module) and the
/// engine's configuration (in memory, and on disk with [`JobEngine::with_compiled_cache`]), and
/// instances come from a pooling allocator.
pub struct JobEngine {
    /// The engine jobs run on, configured for `nans`.
    main: Wasm,
    nans: NanCanonicalization,
    /// An eager engine for modules the NaN rewrite cannot take (a function at wasm's limits on
    /// locals or size once rewritten): made at first need, ticked by the epoch thread too.
    fallback: Arc<OnceLock<Wasm>>,
    fallbacks: AtomicU64,
    backend: Backend,
    cache: Mutex<ModuleCache>,
    disk: Option<CompiledCache>,
    ticker: Option<JoinHandle<()>>,
    stop_ticker: Arc<AtomicBool>,
}

/// A wasmtime engine, the job linker on it, and its configuration fingerprint.
struct Wasm {
    engine: Engine,
    linker: Linker<RunState>,
    fingerprint: [u8; 32],
}

impl Wasm {
    fn new(config: &Config, nans: NanCanonicalization) -> Result<Self, RunError> {
        let engine = Engine::new(config).map_err(|e| RunError::Engine { what: "the wasm engine", source: e.into() })?;
        let mut linker = Linker::new(&engine);
        let linker_error = |e: wasmtime::Error| RunError::Engine { what: "the job linker", source: e.into() };
        wasi::add_to_linker(&mut linker, |state: &mut RunState| &mut state.files).map_err(linker_error)?;
        bridge::add_to_linker(&mut linker, |state: &mut RunState| &mut state.bridge).map_err(linker_error)?;
        let fingerprint = config_fingerprint(&engine, nans);
        Ok(Wasm { engine, linker, fingerprint })
    }
}

#[derive(Default)]
struct ModuleCache {
    entries: HashMap<CacheKey, Arc<PreparedModule>>,
    order: VecDeque<CacheKey>,
}

impl JobEngine {
    /// An engine on the CPU backend able to run any job `policy` allows: the pooling
    /// allocator's slots are sized to the policy's caps on memory and table size.
    pub fn new(policy: &Policy) -> Result<Self, RunError> {
        Self::with_backend(policy, Backend::cpu(policy.kernel_threads))
    }

    /// An engine whose jobs' tensor ops run on `backend`.
    pub fn with_backend(policy: &Policy, backend: Backend) -> Result<Self, RunError> {
        Self::with_nan_canonicalization(policy, backend, NanCanonicalization::AtObservation)
    }

    /// An engine whose jobs' tensor ops run on `backend`, making NaNs deterministic as `nans`
    /// says (the results are the same either way; [`JobEngine::with_backend`] picks the faster).
    pub fn with_nan_canonicalization(policy: &Policy, backend: Backend, nans: NanCanonicalization) -> Result<Self, RunError> {
        let mut pool = PoolingAllocationConfig::new();
        pool.total_core_instances(POOL_SLOTS)
            .total_memories(POOL_SLOTS)
            .total_tables(POOL_SLOTS)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(usize::try_from(policy.max(LimitKind::MemoryBytes)).unwrap_or(usize::MAX))
            .table_elements(usize::try_from(policy.max(LimitKind::TableElements)).unwrap_or(usize::MAX));
        let mut config = config_for(nans);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let main = Wasm::new(&config, nans)?;
        let fallback: Arc<OnceLock<Wasm>> = Arc::new(OnceLock::new());

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = main.engine.clone();
            let fallback = fallback.clone();
            let stop = stop_ticker.clone();
            std::thread::Builder::new()
                .name("gridbox-epoch".into())
                .spawn(move || {
                    // Parked rather than asleep between ticks, so that `Drop` can wake it: a
                    // process then exits at once instead of waiting out the tick (10 ms, most
                    // of a cached hello world's run). A spurious wake-up only loops.
                    let mut next = Instant::now() + EPOCH_TICK;
                    while !stop.load(Ordering::Acquire) {
                        let now = Instant::now();
                        if now < next {
                            std::thread::park_timeout(next - now);
                            continue;
                        }
                        engine.increment_epoch();
                        if let Some(fallback) = fallback.get() {
                            fallback.engine.increment_epoch();
                        }
                        next = now + EPOCH_TICK;
                    }
                })
                .map_err(|e| RunError::Engine { what: "the epoch thread", source: e.into() })?
        };
        Ok(JobEngine {
            main,
            nans,
            fallback,
            fallbacks: AtomicU64::new(0),
            backend,
            cache: Mutex::new(ModuleCache::default()),
            disk: None,
            ticker: Some(ticker),
            stop_ticker,
        })
    }

    /// This engine, keeping the modules it compiles in `cache` and taking them from there
    /// instead of compiling them again (in this process or a later one).
    #[must_use]
    pub fn with_compiled_cache(mut self, cache: CompiledCache) -> Self {
        self.disk = Some(cache);
        self
    }

    /// The tensor backend jobs' bridge calls run on.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The underlying wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.main.engine
    }

    /// How many modules this engine has run with eager canonicalisation because the NaN rewrite
    /// could not take them (see [`JobEngine::with_nan_canonicalization`]); tests hold it to 0
    /// for modules the rewrite should take.
    pub fn eager_fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// The eager engine for modules the rewrite cannot take, made at first need.
    fn fallback(&self) -> Result<&Wasm, RunError> {
        if let Some(fallback) = self.fallback.get() {
            return Ok(fallback);
        }
        // On-demand instances: a fallback is rare, and the job's limiter still bounds memory and
        // tables. Two threads may both build one; the first stored is used.
        let built = Wasm::new(&deterministic_config(), NanCanonicalization::Eager)?;
        Ok(self.fallback.get_or_init(|| built))
    }

    /// Compiles `module` (or takes it from the cache) and checks its imports against the
    /// capabilities and tensor ops granted, refusing it before anything runs.
    pub fn prepare(&self, module: &[u8], granted: &[Capability], ops: &BTreeSet<Op>) -> Result<Arc<PreparedModule>, RunError> {
        self.prepare_hashed(Digest::of(module), module, granted, ops)
    }

    /// [`JobEngine::prepare`] for a module whose hash is already known to be `hash` (a [`Job`]
    /// checked it), so that a cache hit costs no hashing.
    ///
    /// [`Job`]: crate::job::Job
    pub(crate) fn prepare_hashed(&self, hash: Digest, module: &[u8], granted: &[Capability], ops: &BTreeSet<Op>) -> Result<Arc<PreparedModule>, RunError> {
        let key = CacheKey { module: hash, engine: self.main.fingerprint };
        let cached = self.lock_cache().entries.get(&key).cloned();
        let prepared = match cached {
            Some(prepared) => prepared,
            None => {
                if !module.starts_with(b"\0asm") {
                    return Err(RunError::NotWasm { looks_like: looks_like(module) });
                }
                let (compiled, wasm) = self.compile(&key, module)?;
                check_imports(&compiled)?;
                match compiled.get_export("_start") {
                    Some(wasmtime::ExternType::Func(ty)) if ty.params().len() == 0 && ty.results().len() == 0 => {}
                    _ => return Err(RunError::MissingStart),
                }
                let instance_pre = wasm.linker.instantiate_pre(&compiled).map_err(|e| RunError::InvalidModule(e.into()))?;
                let prepared = Arc::new(PreparedModule { hash, instance_pre });
                let mut cache = self.lock_cache();
                if cache.entries.insert(key, prepared.clone()).is_none() {
                    cache.order.push_back(key);
                }
                while cache.order.len() > MODULE_CACHE_ENTRIES {
                    if let Some(old) = cache.order.pop_front() {
                        cache.entries.remove(&old);
                    }
                }
                prepared
            }
        };
        // Grants differ between jobs that share a module, so they are checked every time.
        for import in prepared.instance_pre.module().imports() {
            let name = || format!("{}::{}", import.module(), import.name());
            let needs = if import.module() == PREVIEW1_MODULE { Capability::Wasi } else { Capability::Tensor };
            if !granted.contains(&needs) {
                return Err(RunError::ImportNotGranted { import: name(), capability: needs });
            }
            if let Some(op) = Op::from_name(import.name())
                && import.module() == IMPORT_MODULE
                && !ops.contains(&op)
            {
                return Err(RunError::OpNotGranted { import: name() });
            }
        }
        Ok(prepared)
    }

    /// `module` compiled, and the engine it was compiled for: taken from the disk cache if it
    /// holds a sound copy, else compiled and stored there. The disk cache is only ever a
    /// shortcut: what it holds is exactly what compiling gives, so a run cannot tell the
    /// difference.
    ///
    /// With [`NanCanonicalization::AtObservation`], a module the rewrite cannot take, or whose
    /// rewrite wasmtime refuses (a function pushed past wasm's limits on locals or body size, or
    /// a bug of the rewrite's), runs as it is on the eager fallback engine: the same results,
    /// slower. Only a module wasmtime refuses as it is counts as invalid.
    fn compile(&self, key: &CacheKey, module: &[u8]) -> Result<(Module, &Wasm), RunError> {
        if self.nans == NanCanonicalization::AtObservation {
            if let Some(compiled) = self.cached(&self.main, key) {
                return Ok((compiled, &self.main));
            }
            if let Ok(rewritten) = nan_rewrite::rewrite(module)
                && let Ok(compiled) = Module::new(&self.main.engine, rewritten)
            {
                self.store(key, &compiled);
                return Ok((compiled, &self.main));
            }
            // An invalid module is the job's, refused with wasmtime's words about its own bytes
            // (not the rewritten ones) and without building the fallback engine.
            Module::validate(&self.main.engine, module).map_err(|e| RunError::InvalidModule(e.into()))?;
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        let wasm = match self.nans {
            NanCanonicalization::Eager => &self.main,
            NanCanonicalization::AtObservation => self.fallback()?,
        };
        let key = CacheKey { module: key.module, engine: wasm.fingerprint };
        if let Some(compiled) = self.cached(wasm, &key) {
            return Ok((compiled, wasm));
        }
        let compiled = Module::new(&wasm.engine, module).map_err(|e| RunError::InvalidModule(e.into()))?;
        self.store(&key, &compiled);
        Ok((compiled, wasm))
    }

    /// The disk cache's sound copy of `key` for `wasm`'s engine, if it has one.
    fn cached(&self, wasm: &Wasm, key: &CacheKey) -> Option<Module> {
        self.disk.as_ref().and_then(|disk| disk.load(&wasm.engine, key))
    }

    fn store(&self, key: &CacheKey, compiled: &Module) {
        if let Some(disk) = &self.disk {
            disk.store(key, compiled);
        }
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, ModuleCache> {
        // The cache holds no invariant a panic could break mid-update, so poison is ignored.
        self.cache.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for JobEngine {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Release);
        if let Some(ticker) = self.ticker.take() {
            ticker.thread().unpark();
            let _ = ticker.join();
        }
    }
}

/// The engine settings that make runs reproducible (see spec/determinism.md), for modules run as
/// they are: NaNs canonicalised by wasmtime after every float operation
/// ([`NanCanonicalization::Eager`]).
///
/// Threads need no setting: wasmtime is built without its `threads` feature, so a module with a
/// shared memory fails validation.
pub fn deterministic_config() -> Config {
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .cranelift_nan_canonicalization(true)
        .wasm_relaxed_simd(true)
        .relaxed_simd_deterministic(true)
        .cranelift_opt_level(OptLevel::Speed);
    config
}

/// The engine settings for `nans`: [`deterministic_config`], or for modules that went through
/// [`nan_rewrite::rewrite`]: wasmtime's canonicalisation off, and the fuel table under which the
/// rewritten module uses the fuel the original does.
pub fn config_for(nans: NanCanonicalization) -> Config {
    let mut config = deterministic_config();
    if nans == NanCanonicalization::AtObservation {
        config.cranelift_nan_canonicalization(false).operator_cost(nan_rewrite::operator_cost());
    }
    config
}

/// What a compiled module depends on besides its own bytes: wasmtime's compatibility hash of the
/// engine (its version, target, CPU features, compiler flags and settings, the fuel table),
/// gridbox's version and the NaN rewrite's, in one BLAKE3.
fn config_fingerprint(engine: &Engine, nans: NanCanonicalization) -> [u8; 32] {
    /// `Hash` into BLAKE3, whose output, unlike `DefaultHasher`'s, is the same in every build.
    struct Blake3Hasher(blake3::Hasher);
    impl Hasher for Blake3Hasher {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
        fn finish(&self) -> u64 {
            let bytes = self.0.finalize();
            u64::from_le_bytes(bytes.as_bytes()[..8].try_into().unwrap_or_default())
        }
    }
    let mut hasher = Blake3Hasher(blake3::Hasher::new());
    hasher.write(concat!("gridbox ", env!("CARGO_PKG_VERSION"), " engine\n").as_bytes());
    match nans {
        NanCanonicalization::Eager => hasher.write(b"nans eager\n"),
        NanCanonicalization::AtObservation => hasher.write(format!("nans at observation, rewrite {}\n", nan_rewrite::REWRITE_VERSION).as_bytes()),
    }
    engine.precompile_compatibility_hash().hash(&mut hasher);
    *hasher.0.finalize().as_bytes()
}

/// Refuses imports gridbox does not provide, naming the first one.
fn check_imports(module: &Module) -> Result<(), RunError> {
    for import in module.imports() {
        let name = format!("{}::{}", import.module(), import.name());
        if import.module() == PREVIEW1_MODULE {
            if import.name().starts_with("sock_") {
                return Err(RunError::NoSockets { import: name });
            }
            if wasi::is_preview1_function(import.name()) {
                continue;
            }
        }
        if import.module() == IMPORT_MODULE && (CORE_FUNCTIONS.contains(&import.name()) || Op::from_name(import.name()).is_some()) {
            continue;
        }
        return Err(RunError::UnknownImport { import: name });
    }
    Ok(())
}

/// What a file that is not wasm seems to be, for the error that says so.
fn looks_like(bytes: &[u8]) -> &'static str {
    match bytes {
        [0x7f, b'E', b'L', b'F', ..] => "a native ELF executable",
        [b'M', b'Z', ..] => "a Windows executable",
        [0xcf, 0xfa, 0xed, 0xfe, ..] | [0xca, 0xfe, 0xba, 0xbe, ..] => "a macOS executable",
        [b'(', ..] | [b'\n', b'(', ..] | [b' ', ..] => "text (WebAssembly text format? gridbox takes the binary format)",
        [] => "an empty file",
        _ => "not a WebAssembly binary",
    }
}
