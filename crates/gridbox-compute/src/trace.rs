//! The trace: a BLAKE3 hash chain with one link per bridge call.

/// Domain separation for the chain: a trace root can never collide with any other gridbox hash.
const CHAIN_CONTEXT: &str = "gridbox 2026-11 trace chain v1";

/// One recorded bridge call: the op, its encoded parameters, the hashes of its input tensors and
/// the hash of its output tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLink {
    /// The op's name as written in the ABI (for example `"matmul"`).
    pub op: String,
    /// The op's parameters in the ABI's little-endian encoding.
    pub params: Vec<u8>,
    /// BLAKE3 of each input tensor, in argument order.
    pub inputs: Vec<[u8; 32]>,
    /// BLAKE3 of the output tensor.
    pub output: [u8; 32],
}

/// A BLAKE3 hash chain over bridge calls.
///
/// `root_0 = 0^32` and `root_{n+1} = BLAKE3-derive-key(CHAIN_CONTEXT, root_n || encode(link_n))`,
/// where `encode` length-prefixes every variable-length field so that no two different links
/// encode to the same bytes. An empty chain (a job that never called the bridge) has root `0^32`
/// and length 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceChain {
    root: [u8; 32],
    len: u64,
}

impl TraceChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one call and returns the new root.
    pub fn append(&mut self, link: &TraceLink) -> [u8; 32] {
        self.root = chain_step(&self.root, link);
        self.len += 1;
        self.root
    }

    /// The current root: the commitment to every call so far.
    pub fn root(&self) -> [u8; 32] {
        self.root
    }

    /// How many calls have been recorded.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no call has been recorded.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// One step of the chain: the root after `link`, given the root before it.
pub fn chain_step(before: &[u8; 32], link: &TraceLink) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_derive_key(CHAIN_CONTEXT);
    hasher.update(before);
    write_link(&mut hasher, link);
    *hasher.finalize().as_bytes()
}

/// Feeds `encode(link)` to `hasher`: the op and the parameters length-prefixed (u64 LE), the
/// number of inputs (u64 LE), each input hash, the output hash. The chain and the trace log's
/// Merkle leaves (spec/trace.md) share it.
pub(crate) fn write_link(hasher: &mut blake3::Hasher, link: &TraceLink) {
    write_bytes(hasher, link.op.as_bytes());
    write_bytes(hasher, &link.params);
    hasher.update(&(link.inputs.len() as u64).to_le_bytes());
    for input in &link.inputs {
        hasher.update(input);
    }
    hasher.update(&link.output);
}

fn write_bytes(hasher: &mut blake3::Hasher, bytes: &[u8]) {
    hasher.update(&(bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(op: &str, params: &[u8]) -> TraceLink {
        TraceLink { op: op.into(), params: params.to_vec(), inputs: vec![[1; 32]], output: [2; 32] }
    }

    #[test]
    fn empty_chain_has_zero_root() {
        let chain = TraceChain::new();
        assert_eq!(chain.root(), [0; 32]);
        assert!(chain.is_empty());
    }

    #[test]
    fn same_calls_give_same_root_and_order_matters() {
        let (mut a, mut b, mut c) = (TraceChain::new(), TraceChain::new(), TraceChain::new());
        a.append(&link("add", b"x"));
        a.append(&link("mul", b"y"));
        b.append(&link("add", b"x"));
        b.append(&link("mul", b"y"));
        c.append(&link("mul", b"y"));
        c.append(&link("add", b"x"));
        assert_eq!(a, b);
        assert_ne!(a.root(), c.root());
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        // "ab" + "c" must not hash like "a" + "bc".
        let mut a = TraceChain::new();
        let mut b = TraceChain::new();
        a.append(&link("ab", b"c"));
        b.append(&link("a", b"bc"));
        assert_ne!(a.root(), b.root());
    }
}
