//! The engine a command runs jobs on, on the device `--device` names, and the line that says
//! which device that is.

use anyhow::{Context, Result};
use gridbox_compute::{Backend, DeviceChoice};
use gridbox_core::{Capability, Job, JobEngine, Policy};

/// An engine on the device `--device` chose (auto when absent), not yet announced: the line that
/// says which device runs tensor ops is printed by [`DeviceEngine::announce`], once the job is
/// known to be one that uses them, or if `--device` was given.
pub(crate) struct DeviceEngine {
    engine: JobEngine,
    /// Why auto fell back to the CPU.
    fallback: Option<String>,
    /// `--device` was given: the user asked, so the line is printed whatever the job.
    explicit: bool,
}

/// An engine on `device` (`None`: auto, a CUDA GPU if there is one). Prints nothing: a job that
/// does not use tensors, or that is refused, has no use for the device line.
pub(crate) fn engine_on(policy: &Policy, device: Option<DeviceChoice>) -> Result<DeviceEngine> {
    let choice = device.unwrap_or_default();
    let (backend, fallback) = Backend::select(choice, policy.kernel_threads).with_context(|| format!("--device {choice}"))?;
    let fallback = match backend {
        Backend::Cpu { .. } => fallback.map(|why| why.to_string()),
        _ => None,
    };
    Ok(DeviceEngine { engine: JobEngine::with_backend(policy, backend)?, fallback, explicit: device.is_some() })
}

impl DeviceEngine {
    /// Checks `job`'s module (compiling it, which the run then reuses), so that a refusal is
    /// the only thing said about a job that cannot run; then says which device runs its tensor
    /// ops if it uses them or `--device` was given.
    pub(crate) fn announce(&self, job: &Job) -> Result<()> {
        let manifest = job.manifest().manifest();
        let ops = manifest.tensor.as_ref().map(|t| t.granted_ops()).unwrap_or_default();
        self.engine.prepare(job.module(), &manifest.capabilities, &ops)?;
        self.announce_if(manifest.capabilities.contains(&Capability::Tensor));
        Ok(())
    }

    /// The engine itself, for a service that owns it.
    pub(crate) fn into_engine(self) -> JobEngine {
        self.engine
    }

    /// Says on stderr which device runs tensor ops, if `tensors` or `--device` was given.
    pub(crate) fn announce_if(&self, tensors: bool) {
        if !(tensors || self.explicit) {
            return;
        }
        match &self.fallback {
            Some(why) => eprintln!("gridbox: tensor ops on the CPU ({why})"),
            None => eprintln!("gridbox: tensor ops on {}", self.engine.backend().name()),
        }
    }
}

impl std::ops::Deref for DeviceEngine {
    type Target = JobEngine;

    fn deref(&self) -> &JobEngine {
        &self.engine
    }
}
