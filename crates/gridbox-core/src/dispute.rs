//! Disputes (`gridbox dispute`; spec/trace.md, "Disputes"): two signed receipts of the same job
//! that disagree, and their trace logs. A binary search over the chain roots finds the first
//! link where the two differ, in at most `ceil(log2 n) + 1` comparisons; there both agree on
//! every earlier link, so when they also agree on the link's op, parameters and inputs, one op
//! recomputed on the CPU reference says who is wrong. Anything else (the links themselves
//! differ, one log ends early, the traces agree but the results do not) is a difference in the
//! job's own wasm code, which only a replay of the job settles, and the verdict says so.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use gridbox_compute::reference::{self, ReferenceError};
use gridbox_compute::{Tensor, TraceEntry};

use crate::digest::Digest;
use crate::engine::JobEngine;
use crate::job::{Job, JobRun, RunError};
use crate::kept_tensors;
use crate::limits::LimitKind;
use crate::manifest::{ManifestError, ResolvedManifest};
use crate::receipt::{Receipt, ReceiptError};
use crate::verify::{ReplayFailure, log_mismatch, replay_run};

/// One side of a dispute: its receipt, the trace log delivered with it, and (optionally) the
/// tensors it kept (`gridbox run --keep-tensors`).
#[derive(Debug, Clone, Copy)]
pub struct Party<'a> {
    /// The signed receipt.
    pub receipt: &'a Receipt,
    /// Its trace log (`trace.jsonl`).
    pub log: &'a [TraceEntry],
    /// Its kept tensors, if delivered.
    pub tensors: Option<&'a Path>,
}

/// What a full replay needs: the module, the inputs, and an engine to run them on.
pub struct Replay<'a> {
    /// Where the replay runs (any backend gives the same bytes).
    pub engine: &'a JobEngine,
    /// The job's module.
    pub module: Arc<[u8]>,
    /// Its inputs, by name.
    pub inputs: BTreeMap<String, Arc<[u8]>>,
    /// Wall-time limit of the replay in ms; default [`default_replay_time_ms`].
    pub time_ms: Option<u64>,
}

/// Which receipt a verdict names as wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Wrong {
    /// Receipt A.
    A,
    /// Receipt B.
    B,
    /// Both.
    #[serde(rename = "both")]
    Both,
    /// Neither: there is no dispute.
    #[serde(rename = "neither")]
    Neither,
}

impl Wrong {
    fn of(a: bool, b: bool) -> Wrong {
        match (a, b) {
            (true, true) => Wrong::Both,
            (true, false) => Wrong::A,
            (false, true) => Wrong::B,
            (false, false) => Wrong::Neither,
        }
    }

    /// `A`, `B`, `both` or `neither`.
    pub fn as_str(self) -> &'static str {
        match self {
            Wrong::A => "A",
            Wrong::B => "B",
            Wrong::Both => "both",
            Wrong::Neither => "neither",
        }
    }
}

/// What the verdict rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled {
    /// The receipts agree on everything a run determines: nothing to settle.
    Agreement,
    /// A party's log does not match its own receipt.
    Log,
    /// One op recomputed on the CPU reference at the first differing link.
    Op,
    /// A full replay of the job.
    Replay,
    /// Nothing: the dispute needs what was not given (the verdict's `needs`).
    Undecided,
}

/// The outcome of a dispute. `wrong` is `None` when it is undecided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// Which receipt is wrong; `None`: undecided.
    pub wrong: Option<Wrong>,
    /// What settled it.
    pub settled_by: Settled,
    /// Why, in a sentence.
    pub reason: String,
    /// The first link where the two logs differ, if they do.
    pub index: Option<u64>,
    /// The op of that link (A's, or B's where A's log has ended).
    pub op: Option<String>,
    /// The larger of the two logs' lengths: the job's recorded bridge calls.
    pub calls: u64,
    /// Chain roots compared between the two logs (the final roots included).
    pub chain_states_compared: u32,
    /// The most that may be compared: `ceil(log2 calls) + 1`.
    pub bound: u32,
    /// Ops recomputed on the CPU reference (0 or 1).
    pub ops_recomputed: u32,
    /// Whether the job was replayed.
    pub replayed: bool,
    /// When undecided: what would decide it.
    pub needs: Option<String>,
}

impl Verdict {
    /// `no dispute`, `A is wrong`, `B is wrong`, `both are wrong`, or `undecided: needs ...`.
    pub fn summary(&self) -> String {
        match (self.wrong, &self.needs) {
            (None, Some(needs)) => format!("undecided: needs {needs}"),
            (None, None) => "undecided".into(),
            (Some(Wrong::Neither), _) => "no dispute".into(),
            (Some(Wrong::Both), _) => "both are wrong".into(),
            (Some(side), _) => format!("{} is wrong", side.as_str()),
        }
    }
}

/// A dispute that cannot be had: nothing is said of either receipt.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DisputeError {
    /// A receipt's signature does not hold: it binds its signer to nothing.
    #[error("receipt {party}'s signature is invalid")]
    Signature {
        /// `A` or `B`.
        party: &'static str,
        /// Why.
        #[source]
        source: ReceiptError,
    },
    /// The receipts are of different manifests.
    #[error("not the same job: receipt A's manifest is {a}, receipt B's is {b}")]
    NotTheSameJob {
        /// BLAKE3 of A's manifest text.
        a: Digest,
        /// BLAKE3 of B's.
        b: Digest,
    },
    /// The shared manifest cannot be read.
    #[error("the receipts' manifest cannot be read")]
    Manifest(#[source] ManifestError),
    /// The replay could not be run here: a module or input that is not the job's, or a fault of
    /// this machine.
    #[error("the replay could not be run here")]
    Replay(#[source] RunError),
    /// The replay did not end within its time limit.
    #[error("the replay did not end within {0} ms")]
    ReplayTimedOut(u64),
}

/// Settles a dispute between `a` and `b`. `replay` is needed only when the first difference is
/// not a single op's output (the verdict says so when it is missing); `threads` for the CPU
/// reference. An error means the dispute could not be had at all.
pub fn dispute(a: Party<'_>, b: Party<'_>, replay: Option<&Replay<'_>>, threads: usize) -> Result<Verdict, DisputeError> {
    for (party, side) in [("A", &a), ("B", &b)] {
        side.receipt.check_signature().map_err(|source| DisputeError::Signature { party, source })?;
    }
    // The text, not the receipt's own `manifest.blake3`, is what was run.
    let (hash_a, hash_b) = (Digest::of(a.receipt.manifest.text.as_bytes()), Digest::of(b.receipt.manifest.text.as_bytes()));
    if hash_a != hash_b {
        return Err(DisputeError::NotTheSameJob { a: hash_a, b: hash_b });
    }
    let calls = a.log.len().max(b.log.len()) as u64;
    let mut verdict = Verdict {
        wrong: None,
        settled_by: Settled::Undecided,
        reason: String::new(),
        index: None,
        op: None,
        calls,
        chain_states_compared: 0,
        bound: bound(calls),
        ops_recomputed: 0,
        replayed: false,
        needs: None,
    };
    // A party whose log is not the one its receipt commits to has delivered no evidence for
    // its receipt: it loses before anything is compared.
    let (log_a, log_b) = (log_mismatch(a.receipt, a.log), log_mismatch(b.receipt, b.log));
    if log_a.is_some() || log_b.is_some() {
        let reasons: Vec<String> = [("A", log_a.as_ref()), ("B", log_b.as_ref())]
            .into_iter()
            .filter_map(|(party, problem)| problem.map(|p| format!("receipt {party}'s log does not match its receipt: {p}")))
            .collect();
        return Ok(decided(verdict, Wrong::of(log_a.is_some(), log_b.is_some()), Settled::Log, reasons.join("; ")));
    }
    let first = first_difference(a.log, b.log, &mut verdict.chain_states_compared);
    let Some(k) = first else {
        return traces_agree(verdict, a.receipt, b.receipt, replay);
    };
    let (entry_a, entry_b) = (a.log.get(k), b.log.get(k));
    verdict.index = Some(k as u64);
    verdict.op = entry_a.or(entry_b).map(|entry| entry.link.op.clone());
    let at = format!("the logs first differ at entry {k}");
    let (Some(entry_a), Some(entry_b)) = (entry_a, entry_b) else {
        let ended = if entry_a.is_none() { "A" } else { "B" };
        let why = format!("{at}: receipt {ended}'s log has ended there, so the job itself took another path");
        return by_replay(verdict, a.receipt, b.receipt, replay, why);
    };
    let (link_a, link_b) = (&entry_a.link, &entry_b.link);
    if link_a.op != link_b.op || link_a.params != link_b.params || link_a.inputs != link_b.inputs {
        // Every earlier link agrees, reads included, so the job saw the same answers up to
        // here and must have made the same call: a party's link is not the job's.
        let why = format!("{at}, where the calls themselves differ ({} on one side, {} on the other)", link_a.op, link_b.op);
        return by_replay(verdict, a.receipt, b.receipt, replay, why);
    }
    if matches!(link_a.op.as_str(), "create" | "read") {
        // The tensor crossed the wasm boundary: what it holds is the job's memory, which only a
        // replay recomputes.
        let why = format!("{at}, a {} whose tensor comes from the job's memory", link_a.op);
        return by_replay(verdict, a.receipt, b.receipt, replay, why);
    }
    recompute(verdict, (a, entry_a), (b, entry_b), replay, threads, at)
}

/// `ceil(log2 n) + 1` (1 for n <= 1).
fn bound(n: u64) -> u32 {
    let ceil_log2 = if n <= 1 { 0 } else { u64::BITS - (n - 1).leading_zeros() };
    ceil_log2 + 1
}

fn decided(mut verdict: Verdict, wrong: Wrong, settled_by: Settled, reason: String) -> Verdict {
    verdict.wrong = Some(wrong);
    verdict.settled_by = settled_by;
    verdict.reason = reason;
    verdict
}

fn undecided(mut verdict: Verdict, needs: &str, reason: String) -> Verdict {
    verdict.needs = Some(needs.into());
    verdict.reason = reason;
    verdict
}

/// The first position where the chain roots of `a` and `b` differ, or where one log has ended
/// while the other goes on; `None` when the logs are the same. A hash chain, once it differs,
/// differs ever after, so "differs at i" is monotone in `i` and a binary search finds the first
/// such `i`. Each root comparison is counted in `compared`.
///
/// Equal lengths `n`: the final roots are compared first (1); if they differ the answer lies in
/// `[0, n - 1]`, `n` candidates, found in at most `ceil(log2 n)` more. Lengths `m < n`: the
/// answer lies in `[0, m]` (`m` itself: the shorter log ended), `m + 1` candidates, at most
/// `ceil(log2 (m + 1)) <= ceil(log2 n) + 1` comparisons.
fn first_difference(a: &[TraceEntry], b: &[TraceEntry], compared: &mut u32) -> Option<usize> {
    let mut differs = |i: usize| {
        *compared += 1;
        a[i].root != b[i].root
    };
    let (mut low, mut high) = if a.len() == b.len() {
        let n = a.len();
        if n == 0 || !differs(n - 1) {
            return None;
        }
        (0, n - 1)
    } else {
        (0, a.len().min(b.len()))
    };
    // Invariant: every position below `low` agrees; `high` differs (or is where a log ended).
    while low < high {
        let middle = low + (high - low) / 2;
        if differs(middle) { high = middle } else { low = middle + 1 }
    }
    Some(low)
}

/// Both logs are the same: any difference in the results comes from the job's own code.
fn traces_agree(verdict: Verdict, a: &Receipt, b: &Receipt, replay: Option<&Replay<'_>>) -> Result<Verdict, DisputeError> {
    let differing = result_fields(a).into_iter().zip(result_fields(b)).filter(|(x, y)| x != y).map(|(x, _)| x.0).collect::<Vec<_>>();
    if differing.is_empty() {
        let reason = "the receipts agree on the trace and on every result (outcome, fuel, stdout, stderr, outputs)".to_string();
        return Ok(decided(verdict, Wrong::Neither, Settled::Agreement, reason));
    }
    let why = format!("the traces agree, but {} differ: the difference is in the job's own wasm code", differing.join(", "));
    by_replay(verdict, a, b, replay, why)
}

/// The fields of a receipt a run determines besides its trace, named, as text to compare.
fn result_fields(receipt: &Receipt) -> Vec<(&'static str, String)> {
    let outputs: Vec<String> = receipt.outputs.iter().map(|(name, blob)| format!("{name:?}={}", blob.blake3)).collect();
    vec![
        ("outcome", serde_json::to_string(&receipt.outcome).unwrap_or_default()),
        ("fuel_used", receipt.fuel_used.to_string()),
        ("stdout", receipt.stdout.blake3.to_hex()),
        ("stderr", receipt.stderr.blake3.to_hex()),
        ("outputs", outputs.join(",")),
    ]
}

/// What a run gives for the fields of [`result_fields`] and the trace.
fn run_fields(run: &JobRun) -> Vec<(&'static str, String)> {
    let outputs: Vec<String> = run.outputs.iter().map(|(name, bytes)| format!("{name:?}={}", Digest::of(bytes))).collect();
    vec![
        ("outcome", serde_json::to_string(&run.outcome).unwrap_or_default()),
        ("fuel_used", run.fuel_used.to_string()),
        ("stdout", Digest::of(&run.stdout).to_hex()),
        ("stderr", Digest::of(&run.stderr).to_hex()),
        ("outputs", outputs.join(",")),
    ]
}

/// The first field where `receipt` differs from `run`, trace first.
fn differs_from_run(receipt: &Receipt, run: &JobRun) -> Option<&'static str> {
    let trace = (receipt.trace.root != Digest(run.trace.root()) || receipt.trace.length != run.trace.len()).then_some("trace");
    trace.or_else(|| result_fields(receipt).into_iter().zip(run_fields(run)).find(|(x, y)| x != y).map(|(x, _)| x.0))
}

/// Settles by replaying the job, or leaves it undecided when no replay was given.
fn by_replay(mut verdict: Verdict, a: &Receipt, b: &Receipt, replay: Option<&Replay<'_>>, why: String) -> Result<Verdict, DisputeError> {
    let Some(replay) = replay else {
        return Ok(undecided(verdict, "a replay (the module and inputs)", format!("{why}; only a replay of the job can settle it")));
    };
    let run = run_replay(a, replay)?;
    verdict.replayed = true;
    let (field_a, field_b) = (differs_from_run(a, &run), differs_from_run(b, &run));
    let mut found: Vec<String> = [("A", field_a), ("B", field_b)]
        .into_iter()
        .filter_map(|(party, field)| field.map(|field| format!("receipt {party}'s {field} differs from the replay's")))
        .collect();
    if found.is_empty() {
        // Cannot happen for receipts that differ in what a run determines; said rather than hidden.
        found.push("both receipts agree with the replay".into());
    }
    Ok(decided(verdict, Wrong::of(field_a.is_some(), field_b.is_some()), Settled::Replay, format!("{why}; settled by a full replay: {}", found.join("; "))))
}

fn run_replay(receipt: &Receipt, replay: &Replay<'_>) -> Result<JobRun, DisputeError> {
    let manifest = ResolvedManifest::from_canonical_text(&receipt.manifest.text).map_err(DisputeError::Manifest)?;
    let job = Job::new(replay.module.clone(), manifest, replay.inputs.clone()).map_err(DisputeError::Replay)?;
    replay_run(replay.engine, &job, replay.time_ms, false).map_err(|failure| match failure {
        ReplayFailure::TimedOut(limit) => DisputeError::ReplayTimedOut(limit),
        ReplayFailure::Run(error) => DisputeError::Replay(error),
    })
}

/// Both links make the same call on the same inputs and disagree on its output: recompute it
/// on the CPU reference, from either party's kept tensors (checked against the input hashes).
fn recompute(
    mut verdict: Verdict,
    (a, entry_a): (Party<'_>, &TraceEntry),
    (b, entry_b): (Party<'_>, &TraceEntry),
    replay: Option<&Replay<'_>>,
    threads: usize,
    at: String,
) -> Result<Verdict, DisputeError> {
    let link = &entry_a.link;
    let Some(inputs) = load_inputs(&link.inputs, [a.tensors, b.tensors]) else {
        let why = format!("{at} ({}, same inputs, different outputs), but its input tensors were not delivered", link.op);
        return match replay {
            Some(_) => by_replay(verdict, a.receipt, b.receipt, replay, why),
            None => Ok(undecided(verdict, "the input tensors (--tensors-a or --tensors-b) or a replay", why)),
        };
    };
    let manifest = ResolvedManifest::from_canonical_text(&a.receipt.manifest.text).map_err(DisputeError::Manifest)?;
    let max_bytes = manifest.limits().get(LimitKind::TensorBytes);
    verdict.ops_recomputed = 1;
    let (out_a, out_b) = (Digest(entry_a.link.output), Digest(entry_b.link.output));
    match reference::run_op(&link.op, &link.params, &inputs, max_bytes, threads) {
        Ok(output) => {
            let got = Digest(output.content_hash());
            let reason = format!("{at} ({}, same inputs): the CPU reference gives {got}; A says {out_a}, B says {out_b}", link.op);
            Ok(decided(verdict, Wrong::of(out_a != got, out_b != got), Settled::Op, reason))
        }
        Err(ReferenceError::Op { op, error }) => {
            // The session records only calls that succeeded: an output for a call the reference
            // refuses is wrong on both sides.
            let reason = format!("{at}: the CPU reference refuses {op} on these inputs ({error}), yet both receipts record an output");
            Ok(decided(verdict, Wrong::Both, Settled::Op, reason))
        }
        Err(other) => {
            verdict.ops_recomputed = 0;
            let why = format!("{at}: the op cannot be recomputed here ({other})");
            match replay {
                Some(_) => by_replay(verdict, a.receipt, b.receipt, replay, why),
                None => Ok(undecided(verdict, "a replay (the module and inputs)", why)),
            }
        }
    }
}

/// Each input by hash from the first folder that holds a file hashing to it; `None` if one is
/// in neither.
fn load_inputs(hashes: &[[u8; 32]], dirs: [Option<&Path>; 2]) -> Option<Vec<Tensor>> {
    hashes
        .iter()
        .map(|hash| {
            dirs.iter().flatten().find_map(|dir| match kept_tensors::load(dir, hash) {
                Ok((tensor, got)) if got.0 == *hash => Some(tensor),
                _ => None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use gridbox_compute::{TraceChain, TraceLink};

    use super::*;

    fn log(outputs: &[u8]) -> Vec<TraceEntry> {
        let mut chain = TraceChain::new();
        let mut entries = Vec::new();
        for (index, &output) in outputs.iter().enumerate() {
            let link = TraceLink { op: "relu".into(), params: vec![], inputs: vec![[1; 32]], output: [output; 32] };
            let root = chain.append(&link);
            entries.push(TraceEntry { index: index as u64, link, root });
        }
        entries
    }

    #[test]
    fn the_bound_is_ceil_log2_plus_one() {
        let cases = [(0, 1), (1, 1), (2, 2), (3, 3), (4, 3), (5, 4), (1024, 11), (1025, 12), (10_002, 15)];
        for (n, expected) in cases {
            assert_eq!(bound(n), expected, "n = {n}");
        }
    }

    #[test]
    fn bisection_finds_every_first_difference_within_the_bound() {
        for n in [1usize, 2, 3, 7, 8, 9, 100] {
            let honest = log(&vec![7; n]);
            let mut compared = 0;
            assert_eq!(first_difference(&honest, &honest, &mut compared), None);
            assert_eq!(compared, 1);
            for k in 0..n {
                let mut outputs = vec![7; n];
                outputs[k] = 8;
                let mut compared = 0;
                assert_eq!(first_difference(&honest, &log(&outputs), &mut compared), Some(k), "n = {n}");
                assert!(compared <= bound(n as u64), "n = {n}, k = {k}: {compared} comparisons");
            }
            // One log longer than the other, agreeing on the shorter one.
            let longer = log(&vec![7; n + 1]);
            let mut compared = 0;
            assert_eq!(first_difference(&honest, &longer, &mut compared), Some(n));
            assert!(compared <= bound(n as u64 + 1), "n = {n}: {compared}");
        }
    }
}
