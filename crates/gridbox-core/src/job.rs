//! Running one job: a module, its resolved manifest and its inputs, to an [`Outcome`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gridbox_compute::{Stop, TensorGrant, TensorKeeper, TensorSession, TraceChain, TraceLog};
use wasmtime::{ResourceLimiter, Store, Trap, UpdateDeadline};

use crate::bridge::BridgeHost;
use crate::digest::Digest;
use crate::engine::{EPOCH_TICK, JobEngine};
use crate::errors::BoxError;
use crate::fault::ProviderFault;
use crate::limits::{LimitExceeded, LimitKind};
use crate::manifest::{Capability, LimitValues, ManifestError, ResolvedManifest};
use crate::mounts::{mount_files, output_name};
use crate::trap_names::trap_name;
use crate::wasi::random::JobRandom;
use crate::wasi::vfs::MountError;
use crate::wasi::{DeterministicWasi, JobExit, StdioEcho, WasiConfig};

/// Where the job's inputs are mounted, read-only.
pub const INPUT_DIR: &str = "/input";
/// Where the job writes its outputs.
pub const OUTPUT_DIR: &str = "/output";
/// The job's `argv[0]`, the same on every host.
pub const ARGV0: &str = "job.wasm";

/// Why a run has no outcome: the job was refused before it ran, the host stopped it, or the
/// provider failed. No receipt is made for any of these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The bytes are not a wasm binary at all.
    #[error(
        "the module is {looks_like}, not WebAssembly: build the job for wasm32-wasip1 (`cargo build --release --target wasm32-wasip1`) and pass the .wasm file"
    )]
    NotWasm {
        /// What the bytes look like instead.
        looks_like: &'static str,
    },
    /// The bytes are not a valid wasm module, or its imports have the wrong types.
    #[error("invalid wasm module")]
    InvalidModule(#[source] BoxError),
    /// The module does not export a `_start` function of type `() -> ()`.
    #[error("the module has no `_start` function of type () -> (): build it as a wasm32-wasip1 command")]
    MissingStart,
    /// The module imports something gridbox does not provide.
    #[error("the module imports `{import}`, which gridbox does not provide")]
    UnknownImport {
        /// `module::name`.
        import: String,
    },
    /// The module imports a socket function.
    #[error("the module imports `{import}`: gridbox jobs have no sockets")]
    NoSockets {
        /// `module::name`.
        import: String,
    },
    /// The module imports a tensor op the manifest's `[tensor] ops` does not grant.
    #[error("the module imports `{import}`, an op the manifest's `tensor.ops` does not grant")]
    OpNotGranted {
        /// `module::name`.
        import: String,
    },
    /// The module imports something from a capability the manifest did not ask for.
    #[error("the module imports `{import}`, which needs the `{cap}` capability the manifest does not ask for: run with `--capability {cap}` or add \"{cap}\" to the manifest's `capabilities`", cap = .capability.as_str())]
    ImportNotGranted {
        /// `module::name`.
        import: String,
        /// The capability it needs.
        capability: Capability,
    },
    /// The module's hash is not the one the manifest names.
    #[error("the module's BLAKE3 is {actual}, but the manifest's `module` is {expected}")]
    ModuleMismatch {
        /// What the manifest names.
        expected: Digest,
        /// What the module hashes to.
        actual: Digest,
    },
    /// The manifest names an input that was not given.
    #[error("input {name:?} is in the manifest but was not given")]
    MissingInput {
        /// The input's name.
        name: String,
    },
    /// An input was given that the manifest does not name.
    #[error("input {name:?} was given but is not in the manifest")]
    UnexpectedInput {
        /// The input's name.
        name: String,
    },
    /// An input's bytes do not hash to what the manifest names.
    #[error("input {name:?} has BLAKE3 {actual}, but the manifest names {expected}")]
    InputMismatch {
        /// The input's name.
        name: String,
        /// What the manifest names.
        expected: Digest,
        /// What the given bytes hash to.
        actual: Digest,
    },
    /// The manifest was refused.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A mount the manifest asks for cannot be made (its files are over the `output_bytes`
    /// quota, or their paths do not fit).
    #[error("manifest key `mounts.{guest:?}`: {source}")]
    Mount {
        /// The mount's guest path.
        guest: String,
        /// Why.
        #[source]
        source: MountError,
    },
    /// The engine or the job's sandbox could not be set up: a problem of the host, not the job.
    #[error("cannot set up the run: {what}")]
    Engine {
        /// What could not be set up.
        what: &'static str,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The provider's device or host failed while the job ran. The job did nothing wrong and
    /// can be run again, here or elsewhere.
    #[error(transparent)]
    ProviderFault(#[from] ProviderFault),
    /// The host stopped the run through its [`RunMonitor`] (a service shutting down). The run
    /// has no outcome and no receipt; it can be run again from the start.
    #[error("the run was stopped by the host before it ended")]
    Cancelled,
}

impl RunError {
    /// Whether the provider is at fault (its engine, device or host), not the job: the run can
    /// be tried again, and nothing about it may be recorded as the job's.
    pub fn is_provider_fault(&self) -> bool {
        matches!(self, RunError::Engine { .. } | RunError::ProviderFault(_))
    }
}

/// A job ready to run: a module, its resolved manifest and inputs whose hashes all match.
#[derive(Clone)]
pub struct Job {
    module: Arc<[u8]>,
    manifest: ResolvedManifest,
    inputs: BTreeMap<String, Arc<[u8]>>,
}

impl Job {
    /// Checks the module and every input against the manifest.
    pub fn new(module: Arc<[u8]>, manifest: ResolvedManifest, inputs: BTreeMap<String, Arc<[u8]>>) -> Result<Self, RunError> {
        let actual = Digest::of(&module);
        if actual != manifest.manifest().module {
            return Err(RunError::ModuleMismatch { expected: manifest.manifest().module, actual });
        }
        for (name, expected) in &manifest.manifest().inputs {
            let bytes = inputs.get(name).ok_or_else(|| RunError::MissingInput { name: name.clone() })?;
            let actual = Digest::of(bytes);
            if actual != *expected {
                return Err(RunError::InputMismatch { name: name.clone(), expected: *expected, actual });
            }
        }
        if let Some(name) = inputs.keys().find(|name| !manifest.manifest().inputs.contains_key(*name)) {
            return Err(RunError::UnexpectedInput { name: name.clone() });
        }
        // Writable mounts start with their files in the `output_bytes` quota: refuse a job whose
        // files alone are over it now, not when it starts.
        let limit = manifest.limits().get(LimitKind::OutputBytes);
        let mut total = 0u64;
        for (guest, spec) in manifest.manifest().mounts.iter().filter(|(_, spec)| spec.writable) {
            let bytes = mount_files(spec, &inputs).iter().map(|(_, bytes)| bytes.len() as u64).sum::<u64>();
            total = total.saturating_add(bytes);
            if total > limit {
                return Err(RunError::Mount { guest: guest.clone(), source: MountError::OverQuota { path: guest.clone(), bytes, limit } });
            }
        }
        Ok(Job { module, manifest, inputs })
    }

    /// The module's bytes.
    pub fn module(&self) -> &[u8] {
        &self.module
    }

    /// The resolved manifest.
    pub fn manifest(&self) -> &ResolvedManifest {
        &self.manifest
    }

    /// The inputs by name.
    pub fn inputs(&self) -> &BTreeMap<String, Arc<[u8]>> {
        &self.inputs
    }
}

/// How a run ended. Every variant is reproducible, except a wall-time limit, which depends on
/// the host's speed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "status", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Outcome {
    /// `_start` returned (code 0) or the job called `proc_exit`.
    Exited {
        /// The exit code, 0 to 125.
        code: u32,
    },
    /// The job trapped.
    Trapped {
        /// The kind of trap (`unreachable`, `memory_out_of_bounds`, ...; `host` for a host call
        /// that stopped the job).
        trap: String,
        /// For `host` traps, the host's message; empty otherwise.
        message: String,
    },
    /// The job was stopped by one of its limits.
    LimitExceeded {
        /// Which limit.
        limit: LimitKind,
        /// Its value.
        value: u64,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited { code } => write!(f, "exited with code {code}"),
            Outcome::Trapped { trap, message } if message.is_empty() => write!(f, "trapped: {trap}"),
            Outcome::Trapped { trap, message } => write!(f, "trapped: {trap}: {message}"),
            Outcome::LimitExceeded { limit, value } => write!(f, "stopped by the {limit} limit of {value}"),
        }
    }
}

/// What one run produced.
#[derive(Debug, Clone)]
pub struct JobRun {
    /// How it ended.
    pub outcome: Outcome,
    /// Fuel consumed, including what host calls charged.
    pub fuel_used: u64,
    /// Everything the job wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything the job wrote to stderr.
    pub stderr: Vec<u8>,
    /// Regular files under `/output`, by path relative to it, and under the manifest's writable
    /// mounts, by absolute guest path (see [`crate::mounts::output_name`]).
    pub outputs: BTreeMap<String, Vec<u8>>,
    /// The chain of bridge calls.
    pub trace: TraceChain,
    /// The chain's log: its Merkle root (the receipt's `trace.log_root`), and its entries when
    /// [`RunOptions::keep_trace_log`] asked for them.
    pub trace_log: TraceLog,
    /// For people, never part of the receipt: the full error text when the job trapped (with a
    /// backtrace whose format belongs to wasmtime), or what the job was doing when a memory or
    /// table limit stopped it.
    pub detail: Option<String>,
    /// The first paths the job tried to open that did not exist (for people, never part of the
    /// receipt): often the reason a job failed.
    pub missing_paths: Vec<String>,
}

/// Per-store state of a running job.
pub struct RunState {
    pub(crate) files: DeterministicWasi,
    pub(crate) bridge: BridgeHost,
    limiter: JobLimiter,
}

/// Enforces the memory and table limits, trapping with [`LimitExceeded`] rather than letting
/// `memory.grow` fail, so the job stops with the limit named.
struct JobLimiter {
    memory_limit: u64,
    table_limit: u64,
}

impl ResourceLimiter for JobLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        // Modules may have at most one memory (the pooling allocator enforces it), so the desired
        // size of this memory is the job's total.
        if desired as u64 > self.memory_limit {
            let exceeded = wasmtime::Error::new(LimitExceeded { limit: LimitKind::MemoryBytes, value: self.memory_limit });
            return Err(exceeded.context(format!("the job's memory would grow to {desired} bytes")));
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired as u64 > self.table_limit {
            let exceeded = wasmtime::Error::new(LimitExceeded { limit: LimitKind::TableElements, value: self.table_limit });
            return Err(exceeded.context(format!("the job's table would grow to {desired} elements")));
        }
        Ok(true)
    }
}

/// Options that change how a run is carried out but never its result.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run under this wall-time limit (ms) instead of the manifest's: verifiers replay on
    /// machines of other speeds, so they choose their own. A run it stops ends as the wall-time
    /// limit does (`limit_exceeded`/`wall_time_ms`, naming the manifest's value).
    pub wall_time_ms: Option<u64>,
    /// Lets another thread watch the run's fuel and stop it.
    pub monitor: Option<Arc<RunMonitor>>,
    /// Shown the job's stdout and stderr as it writes them (they are kept for the receipt
    /// either way).
    pub echo: Option<StdioEcho>,
    /// Keep the trace log's entries in [`JobRun::trace_log`] (for `trace.jsonl`, or to find the
    /// first link where a replay differs). Their number is bounded by fuel: see
    /// [`gridbox_compute::trace_log`].
    pub keep_trace_log: bool,
    /// Hand every tensor the trace names to this keeper (`gridbox run --keep-tensors`).
    pub keep_tensors: Option<Arc<dyn TensorKeeper>>,
}

/// A window onto a running job from another thread: the fuel it has used so far (updated every
/// epoch tick) and a switch that stops it at the next tick with [`RunError::Cancelled`].
#[derive(Debug, Default)]
pub struct RunMonitor {
    fuel_used: AtomicU64,
    cancelled: Arc<AtomicBool>,
}

impl RunMonitor {
    /// Fuel used as of the last tick.
    pub fn fuel_used(&self) -> u64 {
        self.fuel_used.load(Ordering::Relaxed)
    }

    /// Asks the run to stop.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }
}

/// The error a cancelled run traps with.
#[derive(Debug)]
pub(crate) struct CancelledByHost;

impl std::fmt::Display for CancelledByHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("cancelled by the host")
    }
}

impl std::error::Error for CancelledByHost {}

impl JobEngine {
    /// Runs `job` to completion. Once it starts, every ending the job causes (exit, trap, limit)
    /// is an [`Outcome`]; errors mean it was refused before it started, stopped by the host
    /// ([`RunError::Cancelled`]), or met a fault of the provider ([`RunError::ProviderFault`]).
    pub fn run(&self, job: &Job, options: RunOptions) -> Result<JobRun, RunError> {
        let manifest = job.manifest.manifest();
        // `Job::new` checked that the module hashes to the manifest's `module`.
        let ops = manifest.tensor.as_ref().map(|t| t.granted_ops()).unwrap_or_default();
        let prepared = self.prepare_hashed(manifest.module, &job.module, &manifest.capabilities, &ops)?;
        let limits = job.manifest.limits();
        let wall_ms = options.wall_time_ms.unwrap_or(limits.get(LimitKind::WallTimeMs));
        // Kernels inside a bridge call stop at the same limit (epochs cannot reach them there).
        let deadline = Instant::now().checked_add(Duration::from_millis(wall_ms) + EPOCH_TICK);
        let stop = Stop::new(deadline, options.monitor.as_ref().map(|monitor| monitor.cancelled.clone()));
        let mut state = self.job_state(job, limits, stop)?;
        if let Some(echo) = &options.echo {
            state.files.set_echo(echo.clone());
        }
        if options.keep_trace_log {
            state.bridge.session_mut().keep_log();
        }
        if let Some(keeper) = &options.keep_tensors {
            state.bridge.session_mut().keep_tensors(keeper.clone());
        }
        // The engine the module was compiled for: the main one, or the eager fallback.
        let mut store = Store::new(prepared.instance_pre.module().engine(), state);
        store.limiter(|state| &mut state.limiter);
        let fuel = limits.get(LimitKind::Fuel);
        store.set_fuel(fuel).map_err(|e| RunError::Engine { what: "the job's fuel", source: e.into() })?;
        let ticks = wall_ms.div_ceil(EPOCH_TICK.as_millis() as u64).saturating_add(1);
        match options.monitor.clone() {
            None => {
                store.epoch_deadline_trap();
                store.set_epoch_deadline(ticks);
            }
            Some(monitor) => {
                // Wake every tick to publish fuel and look at the switch; the wall-time limit is
                // then counted here. None of this can change the job's result.
                let mut elapsed = 0u64;
                store.epoch_deadline_callback(move |context| {
                    elapsed += 1;
                    monitor.fuel_used.store(fuel.saturating_sub(context.get_fuel().unwrap_or(0)), Ordering::Relaxed);
                    if monitor.cancelled.load(Ordering::Relaxed) {
                        return Err(CancelledByHost.into());
                    }
                    if elapsed >= ticks {
                        return Err(Trap::Interrupt.into());
                    }
                    Ok(UpdateDeadline::Continue(1))
                });
                store.set_epoch_deadline(1);
            }
        }

        let result = prepared.instance_pre.instantiate(&mut store).and_then(|instance| {
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call(&mut store, ())
        });
        if let Err(error) = &result
            && error.downcast_ref::<CancelledByHost>().is_some()
        {
            return Err(RunError::Cancelled);
        }
        let remaining = store.get_fuel().unwrap_or(0);
        let (outcome, detail) = classify(result, limits)?;
        let fuel_used = limits.get(LimitKind::Fuel).saturating_sub(remaining);
        let mut state = store.into_data();
        let trace_log = state.bridge.session_mut().take_trace_log();
        Ok(JobRun {
            outcome,
            fuel_used,
            stdout: state.files.stdout().to_vec(),
            stderr: state.files.stderr().to_vec(),
            outputs: state
                .files
                .writable_mounts()
                .flat_map(|(guest, files)| files.into_iter().map(move |(path, bytes)| (output_name(guest, &path), bytes)))
                .collect(),
            trace: state.bridge.session().trace().clone(),
            trace_log,
            detail,
            missing_paths: state.files.missing_paths().to_vec(),
        })
    }

    fn job_state(&self, job: &Job, limits: LimitValues, stop: Stop) -> Result<RunState, RunError> {
        let manifest = job.manifest.manifest();
        let hash = job.manifest.hash();
        let mut argv = vec![ARGV0.to_string()];
        argv.extend(manifest.args.iter().cloned());
        let stdin = match &manifest.stdin {
            Some(name) => job.inputs.get(name).cloned().unwrap_or_else(|| Arc::from(Vec::new())),
            None => Arc::from(Vec::new()),
        };
        let mut files = DeterministicWasi::new(WasiConfig {
            start_unix_ns: manifest.start_time_unix.saturating_mul(1_000_000_000),
            stdin,
            stdio_bytes: limits.get(LimitKind::StdioBytes),
            output_bytes: limits.get(LimitKind::OutputBytes),
            output_files: limits.get(LimitKind::OutputFiles),
            fuel_budget: limits.get(LimitKind::Fuel),
            args: argv,
            env: manifest.env.iter().map(|(key, value)| (key.clone(), value.clone())).collect(),
            random: JobRandom::new(hash, manifest.seed, "secure"),
        });
        let inputs = job.inputs.iter().map(|(name, bytes)| (name.clone(), bytes.clone()));
        // `Manifest::validate` rules out inputs that cannot share the folder; should one slip
        // through, it is the job's manifest at fault, never the provider.
        files.mount_read_only(INPUT_DIR, inputs).map_err(|source| RunError::Mount { guest: INPUT_DIR.into(), source })?;
        files.mount_writable(OUTPUT_DIR).map_err(|e| RunError::Engine { what: "the output folder", source: e.into() })?;
        for (guest, spec) in &manifest.mounts {
            files.mount(guest, mount_files(spec, &job.inputs), spec.writable).map_err(|source| RunError::Mount { guest: guest.clone(), source })?;
        }
        Ok(RunState {
            files,
            bridge: BridgeHost::new(TensorSession::new(
                TensorGrant {
                    ops: manifest.tensor.as_ref().map(|t| t.granted_ops()).unwrap_or_default(),
                    max_bytes: limits.get(LimitKind::TensorBytes),
                    max_tensors: limits.get(LimitKind::TensorCount),
                    trace_level: manifest.tensor.as_ref().map(|t| t.trace).unwrap_or_default(),
                },
                self.backend().for_job(stop).map_err(ProviderFault::DeviceSetup)?,
            )),
            limiter: JobLimiter { memory_limit: limits.get(LimitKind::MemoryBytes), table_limit: limits.get(LimitKind::TableElements) },
        })
    }
}

/// Turns the result of instantiating and running `_start` into an outcome, or into the
/// provider fault that stopped it.
fn classify(result: wasmtime::Result<()>, limits: LimitValues) -> Result<(Outcome, Option<String>), ProviderFault> {
    let error = match result {
        Ok(()) => return Ok((Outcome::Exited { code: 0 }, None)),
        Err(error) => error,
    };
    if let Some(JobExit(code)) = error.downcast_ref::<JobExit>() {
        return Ok((Outcome::Exited { code: *code }, None));
    }
    let error = match error.downcast::<ProviderFault>() {
        Ok(fault) => return Err(fault),
        Err(error) => error,
    };
    let detail = Some(format!("{error:?}"));
    if let Some(exceeded) = error.downcast_ref::<LimitExceeded>() {
        // What the job was doing when it hit the limit, as the host put it ("the job's memory
        // would grow to N bytes"), without the backtrace.
        let what = error.chain().map(|cause| cause.to_string()).find(|message| message.starts_with("the job"));
        return Ok((Outcome::LimitExceeded { limit: exceeded.limit, value: exceeded.value }, what));
    }
    let outcome = match error.downcast_ref::<Trap>() {
        // The limit says it all; a backtrace of where the job happened to be would not help.
        Some(Trap::OutOfFuel) => return Ok((Outcome::LimitExceeded { limit: LimitKind::Fuel, value: limits.get(LimitKind::Fuel) }, None)),
        Some(Trap::Interrupt) => return Ok((Outcome::LimitExceeded { limit: LimitKind::WallTimeMs, value: limits.get(LimitKind::WallTimeMs) }, None)),
        Some(trap) => Outcome::Trapped { trap: trap_name(*trap).into(), message: String::new() },
        None => Outcome::Trapped { trap: "host".into(), message: error.root_cause().to_string() },
    };
    Ok((outcome, detail))
}
