//! The wasmtime engine configured for determinism, and a cache of prepared modules (in memory,
//! over an optional [`CompiledCache`] on disk).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
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
    engine: Engine,
    nans: NanCanonicalization,
    linker: Linker<RunState>,
    config_fingerprint: [u8; 32],
    backend: Backend,
    cache: Mutex<ModuleCache>,
    disk: Option<CompiledCache>,
    ticker: Option<JoinHandle<()>>,
    stop_ticker: Arc<AtomicBool>,
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
        let engine = Engine::new(&config).map_err(|e| RunError::Engine { what: "the wasm engine", source: e.into() })?;

        let mut linker = Linker::new(&engine);
        let linker_error = |e: wasmtime::Error| RunError::Engine { what: "the job linker", source: e.into() };
        wasi::add_to_linker(&mut linker, |state: &mut RunState| &mut state.files).map_err(linker_error)?;
        bridge::add_to_linker(&mut linker, |state: &mut RunState| &mut state.bridge).map_err(linker_error)?;

        let config_fingerprint = config_fingerprint(&engine, nans);

        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
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
                        next = now + EPOCH_TICK;
                    }
                })
                .map_err(|e| RunError::Engine { what: "the epoch thread", source: e.into() })?
        };
        Ok(JobEngine {
            engine,
            nans,
            linker,
            config_fingerprint,
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
        &self.engine
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
        let key = CacheKey { module: hash, engine: self.config_fingerprint };
        let cached = self.lock_cache().entries.get(&key).cloned();
        let prepared = match cached {
            Some(prepared) => prepared,
            None => {
                if !module.starts_with(b"\0asm") {
                    return Err(RunError::NotWasm { looks_like: looks_like(module) });
                }
                let compiled = self.compile(&key, module)?;
                check_imports(&compiled)?;
                match compiled.get_export("_start") {
                    Some(wasmtime::ExternType::Func(ty)) if ty.params().len() == 0 && ty.results().len() == 0 => {}
                    _ => return Err(RunError::MissingStart),
                }
                let instance_pre = self.linker.instantiate_pre(&compiled).map_err(|e| RunError::InvalidModule(e.into()))?;
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

    /// `module` compiled: taken from the disk cache if it holds a sound copy, else compiled and
    /// stored there. The disk cache is only ever a shortcut: what it holds is exactly what
    /// compiling gives, so a run cannot tell the difference.
    fn compile(&self, key: &CacheKey, module: &[u8]) -> Result<Module, RunError> {
        if let Some(compiled) = self.disk.as_ref().and_then(|disk| disk.load(&self.engine, key)) {
            return Ok(compiled);
        }
        let compiled = match self.nans {
            NanCanonicalization::Eager => Module::new(&self.engine, module),
            NanCanonicalization::AtObservation => {
                let rewritten = nan_rewrite::rewrite(module).map_err(|e| match e {
                    // A bug of gridbox's, not the job's fault.
                    nan_rewrite::RewriteError::Internal(_) => RunError::Engine { what: "the NaN rewrite", source: e.into() },
                    e => RunError::InvalidModule(e.into()),
                })?;
                Module::new(&self.engine, rewritten)
            }
        }
        .map_err(|e| RunError::InvalidModule(e.into()))?;
        if let Some(disk) = &self.disk {
            disk.store(key, &compiled);
        }
        Ok(compiled)
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
