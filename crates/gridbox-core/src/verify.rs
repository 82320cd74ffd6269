//! Verification: check a receipt's signature and commitments, replay the job and compare.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::artifacts::Artifacts;
use crate::digest::{BlobRef, Digest};
use crate::engine::JobEngine;
use crate::errors::error_chain;
use crate::job::{Job, JobRun, Outcome, RunError, RunOptions};
use crate::limits::LimitKind;
use crate::manifest::ResolvedManifest;
use crate::receipt::Receipt;

/// One compared field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// The field, e.g. `outputs["freq.tsv"]`.
    pub field: String,
    /// What the receipt says.
    pub expected: String,
    /// What verification found.
    pub got: String,
    /// Whether they agree. Informational rows (runtime version) are always ok.
    pub ok: bool,
}

/// Every check made, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Verification {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|check| check.ok)
    }

    /// The first check that failed.
    pub fn first_mismatch(&self) -> Option<&Check> {
        self.checks.iter().find(|check| !check.ok)
    }

    fn push(&mut self, field: impl Into<String>, expected: impl ToString, got: impl ToString) {
        let (expected, got) = (expected.to_string(), got.to_string());
        let ok = expected == got;
        self.checks.push(Check { field: field.into(), expected, got, ok });
    }

    fn info(&mut self, field: &str, expected: impl ToString, got: impl ToString) {
        self.checks.push(Check { field: field.into(), expected: expected.to_string(), got: got.to_string(), ok: true });
    }

    fn blob(&mut self, field: String, expected: Option<&BlobRef>, got: Option<&[u8]>) {
        self.push(field, describe(expected), describe(got.map(BlobRef::of).as_ref()));
    }
}

fn describe(blob: Option<&BlobRef>) -> String {
    match blob {
        Some(blob) => format!("{} ({} bytes)", blob.blake3, blob.size),
        None => "absent".into(),
    }
}

/// What the verifier brings: the module, the inputs, and optionally the artifacts the provider
/// delivered alongside the receipt.
pub struct Evidence {
    /// The module's bytes.
    pub module: Arc<[u8]>,
    /// Inputs by name.
    pub inputs: BTreeMap<String, Arc<[u8]>>,
    /// The delivered stdout, stderr and output files, if any.
    pub artifacts: Option<Artifacts>,
}

/// Verification could not be carried out, so nothing can be said about the receipt either way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The replay met a fault of this machine (its engine or device), not of the job.
    #[error("the replay could not be run here")]
    Replay(#[source] RunError),
    /// The replay did not end within the verifier's time limit.
    #[error("the replay did not end within {0} ms (raise the verifier's time limit)")]
    ReplayTimedOut(u64),
}

/// How a verifier replays.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Wall-time limit of the replay, in ms; default [`default_replay_time_ms`] of the manifest's.
    pub replay_time_ms: Option<u64>,
}

/// The replay's default time limit: ten times the job's own (a verifier's machine may be
/// slower, and a CPU replays what a GPU ran), and at least a minute.
pub fn default_replay_time_ms(manifest_wall_time_ms: u64) -> u64 {
    manifest_wall_time_ms.saturating_mul(10).max(60_000)
}

/// Checks `receipt` against `evidence` and a fresh replay of the job. A mismatch is a failed
/// check in the report; an error means this machine could not replay the job.
pub fn verify(engine: &JobEngine, receipt: &Receipt, evidence: &Evidence, options: VerifyOptions) -> Result<Verification, VerifyError> {
    let mut report = Verification::default();
    let signature = match receipt.check_signature() {
        Ok(()) => "valid".to_string(),
        Err(e) => e.to_string(),
    };
    report.push("signature", "valid", signature);
    report.info("runtime", format!("{} {}", receipt.runtime.name, receipt.runtime.version), format!("gridbox {}", env!("CARGO_PKG_VERSION")));
    report.info("backend", &receipt.backend, engine.backend().name());

    report.push("manifest", receipt.manifest.blake3, Digest::of(receipt.manifest.text.as_bytes()));
    let manifest = ResolvedManifest::from_canonical_text(&receipt.manifest.text);
    report.blob("module".into(), Some(&receipt.module), Some(&evidence.module));
    if let Ok(manifest) = &manifest {
        report.push("manifest.module", manifest.manifest().module, receipt.module.blake3);
        let named: BTreeSet<&String> = manifest.manifest().inputs.keys().collect();
        let committed: BTreeSet<&String> = receipt.inputs.keys().collect();
        report.push("manifest.inputs", format!("{committed:?}"), format!("{named:?}"));
        for (name, hash) in &manifest.manifest().inputs {
            if let Some(blob) = receipt.inputs.get(name) {
                report.push(format!("manifest.inputs[{name:?}]"), blob.blake3, hash);
            }
        }
    }
    let names: BTreeSet<&String> = receipt.inputs.keys().chain(evidence.inputs.keys()).collect();
    for name in names {
        report.blob(format!("inputs[{name:?}]"), receipt.inputs.get(name), evidence.inputs.get(name).map(|b| &b[..]));
    }

    if let Some(artifacts) = &evidence.artifacts {
        report.blob("delivered stdout".into(), Some(&receipt.stdout), artifacts.stdout.as_deref());
        report.blob("delivered stderr".into(), Some(&receipt.stderr), artifacts.stderr.as_deref());
        compare_outputs(&mut report, "delivered outputs", &receipt.outputs, &artifacts.outputs);
    }

    if let Outcome::LimitExceeded { limit: LimitKind::WallTimeMs, .. } = receipt.outcome {
        report.push("outcome", &receipt.outcome, "not replayable: where a wall-time limit stops a job depends on the host's speed");
        return Ok(report);
    }
    let replay = match manifest {
        Err(e) => Err(error_chain(&e)),
        Ok(manifest) => match Job::new(evidence.module.clone(), manifest, evidence.inputs.clone()) {
            Err(e) => Err(error_chain(&e)),
            Ok(job) => {
                let limit = options.replay_time_ms.unwrap_or_else(|| default_replay_time_ms(job.manifest().limits().get(LimitKind::WallTimeMs)));
                match engine.run(&job, RunOptions { wall_time_ms: Some(limit), ..RunOptions::default() }) {
                    Ok(run) if matches!(run.outcome, Outcome::LimitExceeded { limit: LimitKind::WallTimeMs, .. }) => {
                        return Err(VerifyError::ReplayTimedOut(limit));
                    }
                    Ok(run) => Ok(run),
                    Err(e) if e.is_provider_fault() => return Err(VerifyError::Replay(e)),
                    Err(e) => Err(error_chain(&e)),
                }
            }
        },
    };
    match replay {
        Ok(run) => compare_run(&mut report, receipt, &run),
        Err(reason) => report.push("replay", "the job runs", format!("refused: {reason}")),
    }
    Ok(report)
}

fn compare_run(report: &mut Verification, receipt: &Receipt, run: &JobRun) {
    report.push("outcome", &receipt.outcome, &run.outcome);
    report.push("fuel_used", receipt.fuel_used, run.fuel_used);
    report.blob("stdout".into(), Some(&receipt.stdout), Some(&run.stdout));
    report.blob("stderr".into(), Some(&receipt.stderr), Some(&run.stderr));
    compare_outputs(report, "outputs", &receipt.outputs, &run.outputs);
    report.push("trace.root", receipt.trace.root, Digest(run.trace.root()));
    report.push("trace.length", receipt.trace.length, run.trace.len());
}

fn compare_outputs(report: &mut Verification, label: &str, expected: &BTreeMap<String, BlobRef>, got: &BTreeMap<String, Vec<u8>>) {
    let names: BTreeSet<&String> = expected.keys().chain(got.keys()).collect();
    if names.is_empty() {
        report.push(label, "none", "none");
    }
    for name in names {
        report.blob(format!("{label}[{name:?}]"), expected.get(name), got.get(name).map(|b| &b[..]));
    }
}
