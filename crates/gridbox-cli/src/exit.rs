//! Exit statuses of `gridbox`, in one place (the README and `gridbox help` list them).

use gridbox_core::{Outcome, RunError};

/// The job trapped (as `wasmtime run`: 128 + SIGABRT).
pub(crate) const TRAPPED: u8 = 134;
/// A limit stopped the job.
pub(crate) const LIMIT: u8 = 135;
/// gridbox refused the job or the command (bad module, manifest, flags, files).
pub(crate) const REFUSED: u8 = 136;
/// The provider failed while the job ran (this machine's GPU, driver or host): there is no
/// outcome and no receipt, and the job can be run again.
pub(crate) const PROVIDER_FAULT: u8 = 138;
/// `gridbox verify`: a field did not match.
pub(crate) const MISMATCH: u8 = 1;
/// `gridbox verify`: verification could not be carried out.
pub(crate) const VERIFY_ERROR: u8 = 2;

/// The exit status for a job that ended with `outcome`: its own code, or what stopped it.
pub(crate) fn for_outcome(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Exited { code } => u8::try_from(*code).unwrap_or(1),
        Outcome::Trapped { .. } => TRAPPED,
        _ => LIMIT,
    }
}

/// The exit status for an error from `command`'s work: a provider fault if the chain holds
/// one, else `otherwise`.
pub(crate) fn for_error(error: &anyhow::Error, otherwise: u8) -> u8 {
    let provider = error.chain().any(|cause| cause.downcast_ref::<RunError>().is_some_and(RunError::is_provider_fault));
    if provider { PROVIDER_FAULT } else { otherwise }
}
