//! A delivered trace log (`trace.jsonl`) against the receipt, without replay
//! (`gridbox verify --no-replay`), and the first link where a replay's log differs from it.

use gridbox_compute::{TraceEntry, merkle, trace_log};

use super::{Basis, Verification};
use crate::digest::Digest;
use crate::receipt::Receipt;

/// Rows for `entries` against the receipt's `trace`: every entry numbered in order and following
/// the one before it (the first that does not is named), then the length, the final root and
/// the Merkle root.
pub(super) fn check(report: &mut Verification, receipt: &Receipt, entries: &[TraceEntry]) {
    let mut before = [0u8; 32];
    let mut broken = None;
    for (position, entry) in entries.iter().enumerate() {
        if entry.index != position as u64 {
            broken = Some((position, format!("entry {position} ({}) is numbered {}", entry.link.op, entry.index)));
            break;
        }
        if !entry.follows(&before) {
            let after = if position == 0 { "the empty chain".to_string() } else { format!("entry {}", position - 1) };
            broken = Some((position, format!("entry {position} ({}): its root {} does not follow {after}", entry.link.op, Digest(entry.root))));
            break;
        }
        before = entry.root;
    }
    match broken {
        Some((position, what)) => report.push_compared(Basis::Log, format!("trace.log[{position}]"), "each entry follows the one before it", what, false),
        None => report.push(Basis::Log, "trace.log", "each entry follows the one before it", "each entry follows the one before it"),
    }
    report.push(Basis::Log, "trace.log length", receipt.trace.length, entries.len());
    let last = entries.last().map_or([0; 32], |entry| entry.root);
    report.push(Basis::Log, "trace.log final root", receipt.trace.root, Digest(last));
    report.push(Basis::Log, "trace.log_root", receipt.trace.log_root, Digest(merkle::root(&trace_log::leaves(entries))));
}

/// The first position where two logs differ, with what each holds there (`absent` past the end
/// of one): `None` when they are the same.
pub(super) fn first_difference(delivered: &[TraceEntry], replayed: &[TraceEntry]) -> Option<(usize, String, String)> {
    let position = (0..delivered.len().max(replayed.len())).find(|&i| delivered.get(i) != replayed.get(i))?;
    Some((position, describe(delivered.get(position)), describe(replayed.get(position))))
}

fn describe(entry: Option<&TraceEntry>) -> String {
    match entry {
        Some(entry) => format!("{} -> {}", entry.link.op, Digest(entry.link.output)),
        None => "absent".into(),
    }
}
