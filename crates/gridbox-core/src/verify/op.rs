//! One op of a run, checked alone (`gridbox check-op`; spec/trace.md): the entry is proven to be
//! in the log the receipt commits to, its chain step is checked, its inputs are loaded from the
//! kept tensors by hash, and the op is recomputed on the CPU reference. Cost: O(log n) hashes and
//! one op, not a replay.

use std::path::Path;

use gridbox_compute::reference::{self, ReferenceError};
use gridbox_compute::{TraceEntry, merkle, trace_log};

use crate::digest::Digest;
use crate::kept_tensors::{self, KeptTensorError};
use crate::limits::LimitKind;
use crate::manifest::ResolvedManifest;
use crate::receipt::Receipt;

/// One step of the check, in the order they are made; the first that fails ends the check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OpStep {
    /// `signature`, `proof`, `chain`, `input hash` or `output`.
    pub check: &'static str,
    /// Whether it held.
    pub ok: bool,
    /// What was compared.
    pub detail: String,
}

/// An inclusion proof: the sibling hashes from leaf `index` up to the root of `size` leaves.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InclusionProof {
    /// The entry.
    pub index: u64,
    /// Leaves in the tree.
    pub size: u64,
    /// Leaf first.
    pub siblings: Vec<Digest>,
}

/// The result of checking one entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OpReport {
    /// The entry.
    pub index: u64,
    /// Its op (`create` and `read` included).
    pub op: String,
    /// The steps made.
    pub steps: Vec<OpStep>,
    /// The entry's proof, as computed from the log.
    pub proof: InclusionProof,
}

impl OpReport {
    /// Whether every step held.
    pub fn ok(&self) -> bool {
        self.steps.iter().all(|step| step.ok)
    }

    /// The step that failed.
    pub fn failed(&self) -> Option<&OpStep> {
        self.steps.iter().find(|step| !step.ok)
    }

    /// `ok`, or what failed: `signature invalid`, `proof failed`, `chain broken`, `input hash
    /// differs`, `output differs`.
    pub fn verdict(&self) -> &'static str {
        match self.failed().map(|step| step.check) {
            None => "ok",
            Some("signature") => "signature invalid",
            Some("proof") => "proof failed",
            Some("chain") => "chain broken",
            Some("input hash") => "input hash differs",
            Some(_) => "output differs",
        }
    }

    fn step(&mut self, check: &'static str, ok: bool, detail: String) -> bool {
        self.steps.push(OpStep { check, ok, detail });
        ok
    }
}

/// The entry could not be checked either way.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckOpError {
    /// There is no such entry.
    #[error("entry {index} is not in the log, which has {len} entries")]
    NoEntry {
        /// Asked for.
        index: u64,
        /// In the log.
        len: usize,
    },
    /// A tensor it needs is missing or not a tensor file.
    #[error("tensor {hash} cannot be loaded")]
    Tensor {
        /// Its hash.
        hash: Digest,
        /// Why.
        #[source]
        source: KeptTensorError,
    },
    /// The receipt's manifest cannot be read (for its tensor memory limit).
    #[error("the receipt's manifest cannot be read")]
    Manifest(#[source] crate::manifest::ManifestError),
    /// The op cannot be recomputed here (an op this gridbox does not know, a result above the
    /// job's own tensor memory limit).
    #[error("the op cannot be recomputed here")]
    Reference(#[source] ReferenceError),
    /// The provider did not hand out a tensor the entry names (`gridbox spot-check`): one it
    /// committed to and should be able to produce, so a spot check counts it as failed.
    #[error("the provider could not produce tensor {hash}: {reason}")]
    Unavailable {
        /// Its hash.
        hash: Digest,
        /// What the provider answered.
        reason: String,
    },
}

/// Checks entry `index` of `entries` (the delivered log) against `receipt`, with the tensors
/// kept in `tensors`. A failed step is in the report; an error means it could not be checked.
pub fn check_op(receipt: &Receipt, entries: &[TraceEntry], index: u64, tensors: &Path, threads: usize) -> Result<OpReport, CheckOpError> {
    let position = usize::try_from(index).ok().filter(|&i| i < entries.len()).ok_or(CheckOpError::NoEntry { index, len: entries.len() })?;
    let leaves = trace_log::leaves(entries);
    let proof_of = |at: usize| merkle::prove(&leaves, at).unwrap_or_default();
    let entry = ProvenEntry { entry: entries[position].clone(), siblings: proof_of(position) };
    let previous = position.checked_sub(1).map(|at| ProvenEntry { entry: entries[at].clone(), siblings: proof_of(at) });
    check_entry(receipt, &entry, previous.as_ref(), leaves.len() as u64, &mut |hash| load(tensors, hash), threads)
}

/// An entry with its inclusion proof (sibling hashes, leaf first), as a provider hands it out
/// (`GET /v1/jobs/{id}/trace/{index}`) or as computed from a delivered log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvenEntry {
    /// The entry.
    pub entry: TraceEntry,
    /// Its audit path in the tree of `size` leaves.
    pub siblings: Vec<[u8; 32]>,
}

/// Where [`check_entry`] gets a tensor by hash: a folder of kept tensors, or a provider asked
/// over the network. It returns the tensor and the hash it actually has; an error means the
/// tensor could not be had (the check cannot be completed).
pub type TensorSource<'a> = dyn FnMut(&[u8; 32]) -> Result<(gridbox_compute::Tensor, Digest), CheckOpError> + 'a;

/// Checks one proven entry against `receipt` (spec/trace.md, "gridbox check-op"): the
/// signature, its proof and, past entry 0, `previous`'s (the entry before it) against
/// `trace.log_root` of a tree of `size` leaves, its chain step, its inputs' hashes and its
/// output. `check_op` and `gridbox spot-check` share it, so a local check and a remote sample
/// are the same check.
pub fn check_entry(
    receipt: &Receipt,
    proven: &ProvenEntry,
    previous: Option<&ProvenEntry>,
    size: u64,
    tensors: &mut TensorSource<'_>,
    threads: usize,
) -> Result<OpReport, CheckOpError> {
    let entry = &proven.entry;
    let index = entry.index;
    let root = receipt.trace.log_root.0;
    let mut report = OpReport {
        index,
        op: entry.link.op.clone(),
        steps: Vec::new(),
        proof: InclusionProof { index, size, siblings: proven.siblings.iter().map(|s| Digest(*s)).collect() },
    };
    let signature = receipt.check_signature();
    if !report.step("signature", signature.is_ok(), signature.map_or_else(|e| e.to_string(), |()| "valid (strict Ed25519)".into())) {
        return Ok(report);
    }
    let proven_at = |p: &ProvenEntry| p.entry.index < size && merkle::verify(&p.entry.leaf(), p.entry.index, size, &p.siblings, &root);
    let detail = format!("entry {index}'s leaf and {} siblings against trace.log_root {}", proven.siblings.len(), receipt.trace.log_root);
    if !report.step("proof", proven_at(proven), detail) {
        return Ok(report);
    }
    let before = match index.checked_sub(1) {
        None => [0; 32],
        Some(wanted) => {
            let detail = format!("entry {wanted} (the root before entry {index}) against trace.log_root");
            // The entry before must be the one at `index - 1`: a proof for any other position
            // would let a provider pick a root that makes the chain step hold.
            let ok = previous.is_some_and(|p| p.entry.index == wanted && proven_at(p));
            if !report.step("proof", ok, detail) {
                return Ok(report);
            }
            previous.map_or([0; 32], |p| p.entry.root)
        }
    };
    let detail = format!("root {} + entry {index} -> {}", Digest(before), Digest(entry.root));
    if !report.step("chain", entry.follows(&before), detail) {
        return Ok(report);
    }
    let mut inputs = Vec::with_capacity(entry.link.inputs.len());
    for (at, hash) in entry.link.inputs.iter().enumerate() {
        let (tensor, got) = tensors(hash)?;
        if !report.step("input hash", got.0 == *hash, format!("input {at}: expected {}, the kept file hashes to {got}", Digest(*hash))) {
            return Ok(report);
        }
        inputs.push(tensor);
    }
    let expected = Digest(entry.link.output);
    if matches!(entry.link.op.as_str(), "create" | "read") {
        // Nothing to recompute: the tensor that crossed the boundary is the one kept.
        let (_, got) = tensors(&entry.link.output)?;
        report.step("output", got == expected, format!("{}: the kept tensor hashes to {got}, the entry says {expected}", entry.link.op));
        return Ok(report);
    }
    let manifest = ResolvedManifest::from_canonical_text(&receipt.manifest.text).map_err(CheckOpError::Manifest)?;
    let max_bytes = manifest.limits().get(LimitKind::TensorBytes);
    match reference::run_op(&entry.link.op, &entry.link.params, &inputs, max_bytes, threads) {
        Ok(output) => {
            let got = Digest(output.content_hash());
            report.step("output", got == expected, format!("the CPU reference gives {got}, the entry says {expected}"));
        }
        Err(ReferenceError::Op { op, error }) => {
            report.step("output", false, format!("the CPU reference refuses {op} on these inputs ({error}); the entry says it gave {expected}"));
        }
        Err(other) => return Err(CheckOpError::Reference(other)),
    }
    Ok(report)
}

fn load(dir: &Path, hash: &[u8; 32]) -> Result<(gridbox_compute::Tensor, Digest), CheckOpError> {
    kept_tensors::load(dir, hash).map_err(|source| CheckOpError::Tensor { hash: Digest(*hash), source })
}
