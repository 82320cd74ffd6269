//! The engine a command runs jobs on, on the device `--device` names, with the compiled-module
//! cache, and the line that says which device runs a job's tensor ops.

use anyhow::{Context, Result};
use gridbox_compute::{Backend, DeviceChoice};
use gridbox_core::{Capability, Job, JobEngine, Policy};

use crate::cache::{CacheArgs, compiled_cache};

/// An engine on the device `--device` chose (auto when absent), not yet announced: the line that
/// says which device runs tensor ops is printed by [`DeviceEngine::announce_device`], if jobs
/// may use tensors or `--device` was given.
pub(crate) struct DeviceEngine {
    engine: JobEngine,
    /// Why auto fell back to the CPU.
    fallback: Option<String>,
    /// `--device` was given: the user asked, so the line is printed whatever the job.
    explicit: bool,
    /// The job (or any job a server runs) may use the tensor bridge.
    tensors: bool,
}

/// An engine on `device` (`None`: auto, a CUDA GPU if there is one), keeping compiled modules
/// in the cache `cache` allows. Prints nothing: a job that does not use tensors, or that is
/// refused, has no use for the device line.
///
/// `tensors` says whether the jobs it runs may use the tensor bridge. If they may not and no
/// `--device` was given, no GPU is looked for (loading the driver costs tens of milliseconds,
/// and a job without the tensor capability cannot make a tensor call): the backend is the CPU.
pub(crate) fn engine_on(policy: &Policy, device: Option<DeviceChoice>, tensors: bool, cache: &CacheArgs) -> Result<DeviceEngine> {
    let (backend, fallback) = match device {
        None if !tensors => (Backend::cpu(policy.kernel_threads), None),
        _ => {
            let choice = device.unwrap_or_default();
            let (backend, fallback) = Backend::select(choice, policy.kernel_threads).with_context(|| format!("--device {choice}"))?;
            let fallback = match backend {
                Backend::Cpu { .. } => fallback.map(|why| why.to_string()),
                _ => None,
            };
            (backend, fallback)
        }
    };
    let mut engine = JobEngine::with_backend(policy, backend)?;
    if let Some(cache) = compiled_cache(cache) {
        engine = engine.with_compiled_cache(cache);
    }
    Ok(DeviceEngine { engine, fallback, explicit: device.is_some(), tensors })
}

impl DeviceEngine {
    /// Checks `job`'s module (compiling it, which the run then reuses), so that a refusal is
    /// the only thing said about a job that cannot run; then says which device runs its tensor
    /// ops if it uses them or `--device` was given.
    pub(crate) fn announce(&self, job: &Job) -> Result<()> {
        let manifest = job.manifest().manifest();
        let ops = manifest.tensor.as_ref().map(|t| t.granted_ops()).unwrap_or_default();
        self.engine.prepare(job.module(), &manifest.capabilities, &ops)?;
        self.announce_device();
        Ok(())
    }

    /// The engine itself, for a service that owns it.
    pub(crate) fn into_engine(self) -> JobEngine {
        self.engine
    }

    /// Says on stderr which device runs tensor ops, if jobs may use them or `--device` was given.
    pub(crate) fn announce_device(&self) {
        if !(self.tensors || self.explicit) {
            return;
        }
        match &self.fallback {
            Some(why) => eprintln!("gridbox: tensor ops on the CPU ({why})"),
            None => eprintln!("gridbox: tensor ops on {}", self.engine.backend().name()),
        }
    }
}

/// Whether `manifest` grants the tensor bridge (`None`, a manifest that could not be read: no).
pub(crate) fn uses_tensors(manifest: Option<&gridbox_core::Manifest>) -> bool {
    manifest.is_some_and(|m| m.capabilities.contains(&Capability::Tensor))
}

impl std::ops::Deref for DeviceEngine {
    type Target = JobEngine;

    fn deref(&self) -> &JobEngine {
        &self.engine
    }
}
