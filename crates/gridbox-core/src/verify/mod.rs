//! Verification: check a receipt's signature and commitments, replay the job and compare.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use gridbox_compute::TraceEntry;

use crate::artifacts::Artifacts;
use crate::digest::{BlobRef, Digest};
use crate::engine::JobEngine;
use crate::errors::error_chain;
use crate::job::{Job, JobRun, Outcome, RunError, RunOptions};
use crate::limits::LimitKind;
use crate::manifest::{Manifest, ResolvedManifest};
use crate::receipt::Receipt;

mod log;
pub mod op;
mod request;
pub mod spot;

pub use op::{CheckOpError, OpReport, ProvenEntry, TensorSource, check_entry, check_op};

/// What a check rests on: whether gridbox checked the field itself, and how, or only reports
/// what the provider says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Basis {
    /// The Ed25519 signature over the receipt, and who made it.
    Signature,
    /// The receipt agrees with itself (a hash over its own text, a field against its manifest).
    Commitment,
    /// The bytes the verifier brought (module, inputs, delivered files) hash to the receipt's.
    Evidence,
    /// The manifest the client asked for matches the receipt's.
    Request,
    /// Replaying the job here gave the same value.
    Replay,
    /// The delivered trace log agrees with the receipt's trace (each chain step, the length, the
    /// final root, the Merkle root), checked without replaying (spec/trace.md).
    Log,
    /// The provider's word, which nothing here can check (its backend, its runtime version, a
    /// limit its policy chose).
    Claim,
}

impl Basis {
    /// How reports name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Signature => "signature",
            Basis::Commitment => "commitment",
            Basis::Evidence => "evidence",
            Basis::Request => "request",
            Basis::Replay => "replay",
            Basis::Log => "log",
            Basis::Claim => "claim",
        }
    }
}

/// One compared field.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// The field, e.g. `outputs["freq.tsv"]`.
    pub field: String,
    /// What the receipt says (or, for [`Basis::Request`], what the client asked for).
    pub expected: String,
    /// What verification found.
    pub got: String,
    /// Whether they agree. [`Basis::Claim`] rows are always ok: nothing was checked.
    pub ok: bool,
    /// What the check rests on.
    pub basis: Basis,
}

/// Every check made, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verification {
    /// The checks.
    pub checks: Vec<Check>,
    /// Whether the receipt's signer was one of the keys the verifier trusts. `false` when no
    /// keys were given: then a valid signature only says that *someone* signed it.
    pub signer_pinned: bool,
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

    /// A check whose values agree when their texts do.
    fn push(&mut self, basis: Basis, field: impl Into<String>, expected: impl ToString, got: impl ToString) {
        let (expected, got) = (expected.to_string(), got.to_string());
        let ok = expected == got;
        self.checks.push(Check { field: field.into(), expected, got, ok, basis });
    }

    /// A check whose values were compared as structures, shown as text.
    fn push_compared(&mut self, basis: Basis, field: impl Into<String>, expected: impl ToString, got: impl ToString, ok: bool) {
        self.checks.push(Check { field: field.into(), expected: expected.to_string(), got: got.to_string(), ok, basis });
    }

    /// A row that reports the provider's word.
    fn claim(&mut self, field: impl Into<String>, says: impl ToString, note: impl ToString) {
        self.checks.push(Check { field: field.into(), expected: says.to_string(), got: note.to_string(), ok: true, basis: Basis::Claim });
    }

    fn blob(&mut self, basis: Basis, field: String, expected: Option<&BlobRef>, got: Option<&[u8]>) {
        self.push(basis, field, describe(expected), describe(got.map(BlobRef::of).as_ref()));
    }
}

fn describe(blob: Option<&BlobRef>) -> String {
    match blob {
        Some(blob) => format!("{} ({} bytes)", blob.blake3, blob.size),
        None => "absent".into(),
    }
}

/// What the verifier brings: the module, the inputs, optionally the artifacts the provider
/// delivered alongside the receipt, and optionally the manifest the client asked for.
pub struct Evidence {
    /// The module's bytes.
    pub module: Arc<[u8]>,
    /// Inputs by name.
    pub inputs: BTreeMap<String, Arc<[u8]>>,
    /// The delivered stdout, stderr and output files, if any.
    pub artifacts: Option<Artifacts>,
    /// The manifest the client built and sent (before the provider's policy filled in its
    /// unset limits). Without it, a provider (or anyone between it and the client) could have
    /// run the job with other arguments, environment, seed or limits, and the receipt would
    /// still be consistent with itself.
    pub requested: Option<Manifest>,
    /// The delivered trace log (`trace.jsonl`), if any: checked against the receipt, and
    /// compared with a replay's to name the first link where they differ.
    pub trace: Option<Vec<TraceEntry>>,
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

/// How a verifier replays, and whom it trusts.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Wall-time limit of the replay, in ms; default [`default_replay_time_ms`] of the manifest's.
    pub replay_time_ms: Option<u64>,
    /// The providers' public keys the verifier trusts. Empty: the signer is not pinned, which the
    /// report says.
    pub trusted_keys: Vec<VerifyingKey>,
    /// Do not replay: check the delivered trace log against the receipt instead (cheap; says
    /// nothing of whether the ops were computed right: see `check_op`).
    pub no_replay: bool,
}

/// The replay's default time limit: ten times the job's own (a verifier's machine may be
/// slower, and a CPU replays what a GPU ran), and at least a minute.
pub fn default_replay_time_ms(manifest_wall_time_ms: u64) -> u64 {
    manifest_wall_time_ms.saturating_mul(10).max(60_000)
}

/// Why a verifier's replay gave no run to compare.
pub(crate) enum ReplayFailure {
    /// It did not end within the verifier's time limit (ms).
    TimedOut(u64),
    /// It was refused or the provider's machine failed.
    Run(RunError),
}

/// Runs `job` as a verifier replays it: under `time_ms`, by default [`default_replay_time_ms`]
/// of the job's own limit, where a stop by that limit is the verifier giving up, not an outcome.
pub(crate) fn replay_run(engine: &JobEngine, job: &Job, time_ms: Option<u64>, keep_trace_log: bool) -> Result<JobRun, ReplayFailure> {
    let limit = time_ms.unwrap_or_else(|| default_replay_time_ms(job.manifest().limits().get(LimitKind::WallTimeMs)));
    let run = engine.run(job, RunOptions { wall_time_ms: Some(limit), keep_trace_log, ..RunOptions::default() }).map_err(ReplayFailure::Run)?;
    if let Outcome::LimitExceeded { limit: LimitKind::WallTimeMs, .. } = run.outcome {
        return Err(ReplayFailure::TimedOut(limit));
    }
    Ok(run)
}

/// Why `entries` is not the log `receipt` commits to, if it is not: the first failing check of
/// [`log::check`] (an entry misnumbered or not following the one before it, the length, the
/// final root, the Merkle root).
pub fn log_mismatch(receipt: &Receipt, entries: &[gridbox_compute::TraceEntry]) -> Option<String> {
    let mut report = Verification::default();
    log::check(&mut report, receipt, entries);
    report.first_mismatch().map(|check| format!("{}: {} (the receipt: {})", check.field, check.got, check.expected))
}

/// Checks `receipt` against `evidence` and a fresh replay of the job. A mismatch is a failed
/// check in the report; an error means this machine could not replay the job.
pub fn verify(engine: &JobEngine, receipt: &Receipt, evidence: &Evidence, options: VerifyOptions) -> Result<Verification, VerifyError> {
    let mut report = Verification::default();
    let signature = match receipt.check_signature() {
        Ok(()) => "valid".to_string(),
        Err(e) => e.to_string(),
    };
    report.push(Basis::Signature, "signature", "valid", signature);
    if options.trusted_keys.is_empty() {
        report.claim("signer", &receipt.public_key, "not pinned: no trusted keys were given, so any key's valid signature passes");
    } else {
        let trusted = options.trusted_keys.iter().any(|key| hex::encode(key.as_bytes()) == receipt.public_key);
        report.signer_pinned = trusted;
        report.push_compared(Basis::Signature, "signer", "one of the trusted keys", &receipt.public_key, trusted);
    }
    report.claim("runtime", format!("{} {}", receipt.runtime.name, receipt.runtime.version), format!("replayed with gridbox {}", env!("CARGO_PKG_VERSION")));
    report.claim("backend", &receipt.backend, format!("replayed on {}", engine.backend().name()));

    report.push(Basis::Commitment, "manifest", receipt.manifest.blake3, Digest::of(receipt.manifest.text.as_bytes()));
    let manifest = ResolvedManifest::from_canonical_text(&receipt.manifest.text);
    report.blob(Basis::Evidence, "module".into(), Some(&receipt.module), Some(&evidence.module));
    match &manifest {
        Ok(manifest) => {
            report.push(Basis::Commitment, "manifest.module", manifest.manifest().module, receipt.module.blake3);
            let named: BTreeSet<&String> = manifest.manifest().inputs.keys().collect();
            let committed: BTreeSet<&String> = receipt.inputs.keys().collect();
            report.push(Basis::Commitment, "manifest.inputs", format!("{committed:?}"), format!("{named:?}"));
            for (name, hash) in &manifest.manifest().inputs {
                if let Some(blob) = receipt.inputs.get(name) {
                    report.push(Basis::Commitment, format!("manifest.inputs[{name:?}]"), blob.blake3, hash);
                }
            }
            let level = manifest.manifest().tensor.as_ref().map(|t| t.trace).unwrap_or_default();
            report.push(Basis::Commitment, "trace.level", receipt.trace.level.as_str(), level.as_str());
            if let Some(requested) = &evidence.requested {
                request::compare(&mut report, requested, manifest.manifest());
            }
        }
        Err(e) => report.push(Basis::Commitment, "manifest.text", "a canonical resolved manifest", error_chain(e)),
    }
    let names: BTreeSet<&String> = receipt.inputs.keys().chain(evidence.inputs.keys()).collect();
    for name in names {
        report.blob(Basis::Evidence, format!("inputs[{name:?}]"), receipt.inputs.get(name), evidence.inputs.get(name).map(|b| &b[..]));
    }

    if let Some(artifacts) = &evidence.artifacts {
        report.blob(Basis::Evidence, "delivered stdout".into(), Some(&receipt.stdout), artifacts.stdout.as_deref());
        report.blob(Basis::Evidence, "delivered stderr".into(), Some(&receipt.stderr), artifacts.stderr.as_deref());
        compare_outputs(&mut report, Basis::Evidence, "delivered outputs", &receipt.outputs, &artifacts.outputs);
    }

    if let Some(entries) = &evidence.trace {
        log::check(&mut report, receipt, entries);
    }
    if options.no_replay {
        if evidence.trace.is_none() {
            report.push(Basis::Log, "trace.log", "a delivered trace.jsonl to check without replaying", "absent");
        }
        return Ok(report);
    }
    if let Outcome::LimitExceeded { limit: LimitKind::WallTimeMs, .. } = receipt.outcome {
        report.push(Basis::Replay, "outcome", &receipt.outcome, "not replayable: where a wall-time limit stops a job depends on the host's speed");
        return Ok(report);
    }
    let replay = match manifest {
        Err(e) => Err(error_chain(&e)),
        Ok(manifest) => match Job::new(evidence.module.clone(), manifest, evidence.inputs.clone()) {
            Err(e) => Err(error_chain(&e)),
            Ok(job) => match replay_run(engine, &job, options.replay_time_ms, evidence.trace.is_some()) {
                Ok(run) => Ok(run),
                Err(ReplayFailure::TimedOut(limit)) => return Err(VerifyError::ReplayTimedOut(limit)),
                Err(ReplayFailure::Run(e)) if e.is_provider_fault() => return Err(VerifyError::Replay(e)),
                Err(ReplayFailure::Run(e)) => Err(error_chain(&e)),
            },
        },
    };
    match replay {
        Ok(run) => compare_run(&mut report, receipt, &run, evidence.trace.as_deref()),
        Err(reason) => report.push(Basis::Replay, "replay", "the job runs", format!("refused: {reason}")),
    }
    Ok(report)
}

fn compare_run(report: &mut Verification, receipt: &Receipt, run: &JobRun, delivered: Option<&[TraceEntry]>) {
    // The outcome is compared as a structure: two outcomes that print alike are not thereby equal.
    report.push_compared(Basis::Replay, "outcome", &receipt.outcome, &run.outcome, receipt.outcome == run.outcome);
    report.push(Basis::Replay, "fuel_used", receipt.fuel_used, run.fuel_used);
    report.blob(Basis::Replay, "stdout".into(), Some(&receipt.stdout), Some(&run.stdout));
    report.blob(Basis::Replay, "stderr".into(), Some(&receipt.stderr), Some(&run.stderr));
    compare_outputs(report, Basis::Replay, "outputs", &receipt.outputs, &run.outputs);
    report.push(Basis::Replay, "trace.root", receipt.trace.root, Digest(run.trace.root()));
    report.push(Basis::Replay, "trace.length", receipt.trace.length, run.trace.len());
    report.push(Basis::Replay, "trace.log_root", receipt.trace.log_root, Digest(run.trace_log.root()));
    if receipt.trace.root != Digest(run.trace.root())
        && let (Some(delivered), Some(replayed)) = (delivered, run.trace_log.entries())
        && let Some((position, theirs, ours)) = log::first_difference(delivered, replayed)
    {
        report.push_compared(Basis::Replay, format!("trace first difference: entry {position}"), theirs, ours, false);
    }
}

fn compare_outputs(report: &mut Verification, basis: Basis, label: &str, expected: &BTreeMap<String, BlobRef>, got: &BTreeMap<String, Vec<u8>>) {
    let names: BTreeSet<&String> = expected.keys().chain(got.keys()).collect();
    if names.is_empty() {
        report.push(basis, label, "none", "none");
    }
    for name in names {
        report.blob(basis, format!("{label}[{name:?}]"), expected.get(name), got.get(name).map(|b| &b[..]));
    }
}
