//! The engine a command runs jobs on, on the device `--device` names.

use anyhow::{Context, Result};
use gridbox_compute::{Backend, DeviceChoice};
use gridbox_core::{JobEngine, Policy};

/// An engine on the chosen device, saying on stderr which one it is.
pub(crate) fn engine_on(policy: &Policy, device: DeviceChoice) -> Result<JobEngine> {
    let (backend, fallback) = Backend::select(device, policy.kernel_threads).with_context(|| format!("--device {device}"))?;
    match (&backend, fallback) {
        (Backend::Cpu { .. }, Some(why)) => eprintln!("gridbox: tensor ops on the CPU ({why})"),
        (backend, _) => eprintln!("gridbox: tensor ops on {}", backend.name()),
    }
    Ok(JobEngine::with_backend(policy, backend)?)
}
