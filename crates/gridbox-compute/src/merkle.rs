//! The Merkle tree over the trace log (spec/trace.md): the commitment that lets anyone check
//! one entry of a run with O(log n) hashes instead of the whole log.
//!
//! The tree's shape is RFC 9162's (Certificate Transparency): the root of one leaf is the leaf;
//! the root of n > 1 leaves is `node(root(first k), root(rest))`, where k is the largest power of
//! two below n. An odd count is thus never padded or duplicated: the last subtree is smaller.
//! Leaves and nodes are hashed under different BLAKE3 derive-key contexts, so a node can never
//! pass for a leaf. No leaves: the root is all zeros.

use crate::trace::{TraceLink, write_link};

/// Domain separation for leaves.
const LEAF_CONTEXT: &str = "gridbox 2026-11 trace log leaf v1";
/// Domain separation for internal nodes.
const NODE_CONTEXT: &str = "gridbox 2026-11 trace log node v1";

/// A 32-byte hash.
pub type Hash = [u8; 32];

/// The leaf of log entry `index`: `BLAKE3-derive-key(LEAF_CONTEXT, index_u64_le || encode(link)
/// || root_after)`, `encode` as the chain's ([`crate::trace::write_link`]).
pub fn leaf_hash(index: u64, link: &TraceLink, root_after: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new_derive_key(LEAF_CONTEXT);
    hasher.update(&index.to_le_bytes());
    write_link(&mut hasher, link);
    hasher.update(root_after);
    *hasher.finalize().as_bytes()
}

/// An internal node: `BLAKE3-derive-key(NODE_CONTEXT, left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = blake3::Hasher::new_derive_key(NODE_CONTEXT);
    hasher.update(left);
    hasher.update(right);
    *hasher.finalize().as_bytes()
}

/// The largest power of two strictly below `n` (n >= 2).
fn split(n: usize) -> usize {
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The root of `leaves` (all zeros for none).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => [0; 32],
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// The inclusion proof of leaf `index`: the sibling hashes from the leaf up to the root
/// (RFC 9162's audit path). `None` when `index` is not a leaf.
pub fn prove(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut path = Vec::new();
    let (mut lo, mut hi, mut at) = (0, leaves.len(), index);
    // Walk down, collecting siblings root-first; reversed at the end.
    while hi - lo > 1 {
        let k = split(hi - lo);
        if at < k {
            path.push(root(&leaves[lo + k..hi]));
            hi = lo + k;
        } else {
            path.push(root(&leaves[lo..lo + k]));
            lo += k;
            at -= k;
        }
    }
    path.reverse();
    Some(path)
}

/// Whether `siblings` proves that `leaf` is leaf `index` of a tree of `size` leaves with root
/// `root` (RFC 9162, section 2.1.3.2).
pub fn verify(leaf: &Hash, index: u64, size: u64, siblings: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode, mut hash) = (index, size - 1, *leaf);
    for sibling in siblings {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            hash = node_hash(sibling, &hash);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && hash == *root
}

/// The root computed leaf by leaf in O(log n) memory: the roots of the perfect subtrees so far,
/// largest first. Gives the same root as [`root`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    /// (leaf count, root) of each perfect subtree, sizes strictly decreasing.
    subtrees: Vec<(u64, Hash)>,
}

impl Frontier {
    /// Adds the next leaf.
    pub fn push(&mut self, leaf: Hash) {
        let mut carry = (1u64, leaf);
        while let Some(&(size, left)) = self.subtrees.last() {
            if size != carry.0 {
                break;
            }
            self.subtrees.pop();
            carry = (size * 2, node_hash(&left, &carry.1));
        }
        self.subtrees.push(carry);
    }

    /// The root of every leaf pushed (all zeros for none).
    pub fn root(&self) -> Hash {
        let mut subtrees = self.subtrees.iter().rev();
        let Some(&(_, mut acc)) = subtrees.next() else { return [0; 32] };
        for (_, left) in subtrees {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n as u64)
            .map(|i| leaf_hash(i, &TraceLink { op: "add".into(), params: i.to_le_bytes().to_vec(), inputs: vec![[i as u8; 32]], output: [7; 32] }, &[9; 32]))
            .collect()
    }

    #[test]
    fn empty_tree_has_zero_root_and_one_leaf_is_its_own_root() {
        assert_eq!(root(&[]), [0; 32]);
        assert_eq!(Frontier::default().root(), [0; 32]);
        let one = leaves(1);
        assert_eq!(root(&one), one[0]);
        assert_eq!(prove(&one, 0), Some(vec![]));
        assert!(verify(&one[0], 0, 1, &[], &one[0]));
        assert_eq!(prove(&one, 1), None);
    }

    #[test]
    fn odd_counts_are_split_at_the_largest_power_of_two() {
        let l = leaves(3);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        let l = leaves(5);
        let four = node_hash(&node_hash(&l[0], &l[1]), &node_hash(&l[2], &l[3]));
        assert_eq!(root(&l), node_hash(&four, &l[4]));
        // A leaf is never a node: the same bytes under the two contexts differ.
        assert_ne!(node_hash(&l[0], &l[1]), leaf_hash(0, &TraceLink { op: String::new(), params: vec![], inputs: vec![], output: l[0] }, &l[1]));
    }

    #[test]
    fn every_proof_verifies_and_any_change_fails() {
        for n in 1..=33usize {
            let l = leaves(n);
            let r = root(&l);
            let mut frontier = Frontier::default();
            l.iter().for_each(|leaf| frontier.push(*leaf));
            assert_eq!(frontier.root(), r, "size {n}");
            let depth = (n as f64).log2().ceil() as usize;
            for i in 0..n {
                let path = prove(&l, i).unwrap();
                assert!(path.len() <= depth, "size {n} index {i}: {} siblings", path.len());
                assert!(verify(&l[i], i as u64, n as u64, &path, &r), "size {n} index {i}");
                // Another index, leaf or root (the size is committed by the root: a tree of another
                // size has another root).
                for j in (0..n).filter(|&j| j != i) {
                    assert!(!verify(&l[i], j as u64, n as u64, &path, &r), "size {n}: leaf {i} passed as {j}");
                }
                assert!(!verify(&l[i], n as u64, n as u64, &path, &r));
                assert!(!verify(&[0xaa; 32], i as u64, n as u64, &path, &r));
                assert!(!verify(&l[i], i as u64, n as u64, &path, &[0; 32]));
                // Each sibling changed, one dropped, one added.
                for s in 0..path.len() {
                    let mut bad = path.clone();
                    bad[s][0] ^= 1;
                    assert!(!verify(&l[i], i as u64, n as u64, &bad, &r), "size {n} index {i} sibling {s}");
                }
                if !path.is_empty() {
                    assert!(!verify(&l[i], i as u64, n as u64, &path[..path.len() - 1], &r));
                }
                let mut longer = path.clone();
                longer.push([0; 32]);
                assert!(!verify(&l[i], i as u64, n as u64, &longer, &r));
            }
        }
    }
}
