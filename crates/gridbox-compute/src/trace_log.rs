//! The trace log: the trace chain's links kept one by one, each with its index and the chain
//! root after it, and the Merkle root over them that receipts commit to (`trace.log_root`;
//! spec/trace.md).
//!
//! The Merkle root is computed as links arrive, in O(log n) memory, whether or not the entries
//! are kept. The entries themselves are kept only when the session is asked to
//! ([`TraceLog::keeping`]: `gridbox run --out`, a verifier's replay). Their number is bounded by
//! fuel: every recorded call costs at least [`crate::ops::CALL_BASE_FUEL`] (100) fuel, so a job
//! with fuel F records at most F / 100 entries, each of a bounded size (an op name, at most
//! [`gridbox_abi::MAX_OP_PARAMS`] parameters of 8 bytes and [`gridbox_abi::MAX_OP_INPUTS`] input
//! hashes, its output and root: under 3 KiB, about 250 bytes for a typical two-input op).

use crate::merkle::{self, Frontier, Hash};
use crate::trace::{TraceLink, chain_step};

/// One entry of the log: link `index`, and the chain root after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Position in the chain, from 0.
    pub index: u64,
    /// The recorded call.
    pub link: TraceLink,
    /// The chain's root after this link.
    pub root: Hash,
}

impl TraceEntry {
    /// Its Merkle leaf ([`merkle::leaf_hash`]).
    pub fn leaf(&self) -> Hash {
        merkle::leaf_hash(self.index, &self.link, &self.root)
    }

    /// Whether this entry follows a chain whose root was `before`: `chain_step(before, link)`
    /// is its `root`.
    pub fn follows(&self, before: &Hash) -> bool {
        chain_step(before, &self.link) == self.root
    }
}

/// The log of one run: its Merkle root, and its entries when kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceLog {
    frontier: Frontier,
    len: u64,
    entries: Option<Vec<TraceEntry>>,
}

impl TraceLog {
    /// A log that computes its root only.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log that also keeps every entry.
    pub fn keeping() -> Self {
        TraceLog { entries: Some(Vec::new()), ..Self::default() }
    }

    /// Records `link`, after which the chain's root is `root`.
    pub fn push(&mut self, link: &TraceLink, root: Hash) {
        let index = self.len;
        self.frontier.push(merkle::leaf_hash(index, link, &root));
        self.len += 1;
        if let Some(entries) = &mut self.entries {
            entries.push(TraceEntry { index, link: link.clone(), root });
        }
    }

    /// The Merkle root over every entry (all zeros when there is none).
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// How many entries were recorded.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries, when they were kept.
    pub fn entries(&self) -> Option<&[TraceEntry]> {
        self.entries.as_deref()
    }
}

/// The Merkle leaves of `entries`, in order.
pub fn leaves(entries: &[TraceEntry]) -> Vec<Hash> {
    entries.iter().map(TraceEntry::leaf).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceChain;

    #[test]
    fn the_log_root_is_the_merkle_root_of_its_entries_and_each_follows_the_last() {
        let mut chain = TraceChain::new();
        let (mut kept, mut bare) = (TraceLog::keeping(), TraceLog::new());
        for i in 0..7u8 {
            let link = TraceLink { op: "relu".into(), params: vec![i], inputs: vec![[i; 32]], output: [i + 1; 32] };
            let root = chain.append(&link);
            kept.push(&link, root);
            bare.push(&link, root);
        }
        let entries = kept.entries().unwrap();
        assert_eq!(kept.root(), merkle::root(&leaves(entries)));
        assert_eq!(bare.root(), kept.root());
        assert_eq!(bare.entries(), None);
        assert_eq!(entries.last().unwrap().root, chain.root());
        let mut before = [0; 32];
        for entry in entries {
            assert!(entry.follows(&before));
            before = entry.root;
        }
        assert!(!entries[3].follows(&entries[1].root));
        assert_eq!(TraceLog::new().root(), [0; 32]);
    }
}
